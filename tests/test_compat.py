"""inheritune/compat.py is the one place that reads older formats: each rule is called where its docstring
says and nowhere else, no other module names an old format, and each rule reads what it says."""

import ast
import inspect
import json
import re
from pathlib import Path

import torch

import runs
import scaling
from checkpoint import Checkpoint
from inheritune import compat
from model import GPT, GPTConfig
from tests.conftest import ROOT

# The names and values of the old formats compat.py translates: no other module of the project may hold them.
OLD_FORMAT_CONSTANTS = (
    "init",
    "padded_vocab_size",
    "non_embedding_params",
    "inherit_embeddings",
    "inherit_ln_f",
    50304,
)


def project_modules() -> list[Path]:
    """The project's Python files but the tests and compat.py itself."""
    files = [*ROOT.glob("*.py"), *ROOT.glob("data/**/*.py"), *ROOT.glob("inheritune/*.py")]
    return [f for f in files if f.name != "compat.py" or f.parent.name != "inheritune"]


def rules() -> dict[str, object]:
    return {
        name: f
        for name, f in inspect.getmembers(compat, inspect.isfunction)
        if f.__module__ == compat.__name__ and not name.startswith("_")
    }


def declared_callers(rule) -> set[tuple[str, str]]:
    """(file, function) pairs of a rule's "Called in: file.py (function), ..." line."""
    line = re.search(r"Called in: (.+?)\.?$", inspect.getdoc(rule), re.S).group(1)
    return set(re.findall(r"([\w/]+\.py) \(([\w.]+)\)", line))


def compat_calls(path: Path) -> set[tuple[str, str, str]]:
    """(rule, file, enclosing function as Class.method or function) of each compat.<rule>(...) call in a file."""
    found = set()

    def visit(node: ast.AST, scope: list[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = [*scope, node.name]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "compat"
        ):
            found.add((node.func.attr, str(path.relative_to(ROOT)), ".".join(scope)))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(path.read_text()), [])
    return found


def test_every_compat_rule_is_called_where_its_docstring_says_and_nowhere_else():
    calls = set().union(*(compat_calls(path) for path in project_modules()))
    assert rules(), "compat.py holds no rule"
    for name, rule in rules().items():
        declared = declared_callers(rule)
        assert declared, f"compat.{name} says nowhere where it is called"
        called = {(file, function) for rule_name, file, function in calls if rule_name == name}
        assert called == declared, f"compat.{name} is called in {sorted(called)}, its docstring says {sorted(declared)}"
    assert {rule_name for rule_name, _, _ in calls} <= rules().keys()


def test_no_other_module_names_an_old_format():
    for path in project_modules():
        constants = {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)}
        held = [c for c in OLD_FORMAT_CONSTANTS if any(c == v and type(c) is type(v) for v in constants)]
        assert not held, f"{path.relative_to(ROOT)} holds {held}: old formats are read in inheritune/compat.py"


def test_model_args_of_nanogpt_and_this_projects_first_checkpoints_are_gpt2s_vocabulary():
    """Moved from test_model.py with the rule (GPTConfig.from_model_args used to translate them)."""
    args = GPTConfig(scale_attn_by_inverse_layer_idx=True).model_args()
    # nanoGPT's 50304 is GPT-2's vocabulary padded; this project's first checkpoints recorded the padding.
    assert GPTConfig.from_model_args(compat.model_args({**args, "vocab_size": 50304})).vocab_size == 50257
    assert GPTConfig.from_model_args(compat.model_args({**args, "padded_vocab_size": 50304})).vocab_size == 50257


def test_an_old_checkpoint_file_loads_in_the_current_names(tmp_path):
    """A checkpoint of before 2026-12-03: `init`, `padded_vocab_size` and nanoGPT's padded rows and loss tensor."""
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=50257))
    args = {**model.config.model_args(), "vocab_size": 50304, "padded_vocab_size": 50304}
    source = {"source": "ref.pt", "source_sha256": "ab", "tokens_seen": 7}
    state = {"model": model.state_dict(), "model_args": args, "init": source, "best_val_loss": torch.tensor(2.5)}
    torch.save(state, tmp_path / "old.pt")
    ckpt = Checkpoint.load(tmp_path / "old.pt")
    assert ckpt.continued_from == source and ckpt.best_val_loss == 2.5 and type(ckpt.best_val_loss) is float
    assert ckpt.model_args["vocab_size"] == 50257 and "padded_vocab_size" not in ckpt.model_args
    assert ckpt.vocabulary() == {"tokenizer": "gpt2", "vocab_size": 50257}


def test_an_old_run_folder_reads_in_the_current_names(tmp_path):
    record = {
        "config": {"max_iters": 10},
        "model": {"model_args": {"n_layer": 2}, "params": 1000, "non_embedding_params": 500},
        "inherit": None,
        "init": {"source": "ref.pt", "tokens_seen": 7},
    }
    (tmp_path / "config.json").write_text(json.dumps(record))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "iter": 10, "tokens": 640, "val_loss": 4.0}))
    run = runs.read_run(tmp_path)
    assert run.continued_from == {"source": "ref.pt", "tokens_seen": 7} and run.kind == "continued"
    assert run.model["scaling_params"] == 500 and "non_embedding_params" not in run.model


def test_a_base_fit_of_before_2026_12_03_reads_in_the_current_form(tmp_path):
    """Its undetermined in `warnings`, its points without their run: each point its own run."""
    base = {
        "form": "chinchilla",
        "params": {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28},
        "warnings": ["2 distinct model sizes N: an exponent needs at least 3 to be determined"],
        "points": [{"N": 1e8, "D": 1e9, "loss": 3.0}, {"N": 1e9, "D": 1e9, "loss": 2.5}],
    }
    (tmp_path / "fit.json").write_text(json.dumps(base))
    read = scaling.read_base(str(tmp_path / "fit.json"))
    assert read["unconstrained"] == base["warnings"]
    assert list(scaling.base_points(read).run) == ["0", "1"]
    current = {**base, "unconstrained": [], "points": [{**p, "run": "a"} for p in base["points"]]}
    assert compat.fit(current) == current  # the current form is left as it is
