import json
import shutil

import numpy as np
import pytest
import torch

import evaluation
import train
from checkpoint import Checkpoint, load_model
from data.format import open_tokens, write_meta
from data.tokenizer import gpt2_encoding
from model import GPT, GPTConfig
from tests.conftest import ROOT, TINY_QA_ARGS

TEXTS = [
    "Hello world",
    "ROMEO: Wherefore art thou, Romeo?\n\n  \t  It's 12345 o'clock; they'll've gone.",
    "naïve café — 日本語 ünïcödé 🙂   trailing   ",
    "def f(x):\n    return x ** 2  # comment\n",
]


def random_checkpoint(path, bias: bool) -> str:
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=32, bias=bias))
    with torch.no_grad():  # non-trivial values everywhere, the layernorms included
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    Checkpoint.of(model).save(path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("bias", [True, False])
def test_export_gives_transformers_the_same_logits_and_tokens(tmp_path, bias):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = random_checkpoint(tmp_path / "ckpt.pt", bias)
    assert evaluation.main(["export", "--model", source, "--out", str(tmp_path / "hf")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ours, _ = load_model(source)
    ours.eval()
    idx = torch.randint(0, 50257, (3, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = ours(idx, idx)
        theirs = hf(idx).logits
    assert theirs.shape == (3, 64, 50257)  # the padding rows are gone
    torch.testing.assert_close(theirs, logits[..., :50257], atol=1e-5, rtol=0)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    enc = gpt2_encoding()
    for text in [*TEXTS, (ROOT / "model.py").read_text()]:
        assert tokenizer(text)["input_ids"] == enc.encode_ordinary(text)
    assert len(tokenizer) == 50257 and tokenizer.eos_token_id == 50256
    assert json.loads((tmp_path / "hf" / "inheritune.json").read_text())["source"] == source


class ConsecutiveWindows:
    """A val sampler that draws batch k's windows at offsets k*B*T, (k*B + 1)*T, ...: train.py's loss estimate
    then covers the split's consecutive windows exactly once, as evaluation.py's loss does."""

    def __init__(self, k: int, block_size: int) -> None:
        self.k, self.block_size = k, block_size

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        first = self.k * size
        return np.arange(first, first + size) * self.block_size


@pytest.mark.slow
def test_loss_equals_what_train_reports_on_a_split_of_many_windows(tiny_config, shakespeare_dir, tmp_path, monkeypatch):
    cfg = tiny_config(data_dir=str(tmp_path / "data"), max_iters=10, eval_interval=10, eval_iters=6)
    windows = cfg.eval_iters * cfg.batch_size  # 24 windows of 32 tokens
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(shakespeare_dir / "train.bin", data / "train.bin")
    val = np.array(open_tokens(shakespeare_dir, "val")[: windows * cfg.block_size + 1])
    (data / "val.bin").write_bytes(val.tobytes())
    write_meta(data, {"tokenizer": "gpt2", "vocab_size": 50257})
    real_rng = train.batch_rng
    val_stream = train.EVAL_STREAMS["val"]

    def sampler(seed, stream, iter_num, index):
        return (
            ConsecutiveWindows(index, cfg.block_size)
            if stream == val_stream
            else real_rng(seed, stream, iter_num, index)
        )

    monkeypatch.setattr(train, "batch_rng", sampler)
    reported = train.train(cfg)["val_loss"]
    out = tmp_path / "loss.json"
    argv = ["loss", "--model", f"{cfg.out_dir}/ckpt.pt", "--data", str(data), "--device", "cpu", "--out", str(out)]
    assert evaluation.main([*argv, "--batch_size", "5"]) == 0  # batches that do not align with train.py's
    result = json.loads(out.read_text())
    assert result["tokens"] == windows * cfg.block_size
    assert result["loss"] == pytest.approx(reported, abs=1e-5)
    assert result["perplexity"] == pytest.approx(np.exp(reported), rel=1e-5)
    assert 6.0 < result["loss"] < 10.5  # a trained model's loss, far from the untrained 10.8


def test_loss_covers_the_split_once_and_is_deterministic(shakespeare_dir, tmp_path):
    assert evaluation.windows(np.arange(10), 4) == [(0, 4), (4, 4), (8, 1)]
    source = random_checkpoint(tmp_path / "ckpt.pt", bias=False)
    model, _ = load_model(source)
    tokens = open_tokens(shakespeare_dir, "val")[:1000]
    first = evaluation.corpus_loss(model.eval(), tokens, 4, torch.device("cpu"), torch.float32)
    again = evaluation.corpus_loss(model, tokens, 7, torch.device("cpu"), torch.float32)
    assert first["tokens"] == again["tokens"] == 999
    assert first["loss"] == pytest.approx(again["loss"], abs=1e-6)  # batching does not change it


def test_loss_refuses_out_of_vocab_tokens(tmp_path, capsys):
    source = random_checkpoint(tmp_path / "ckpt.pt", bias=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "val.bin").write_bytes(np.array([1, 2, 60000, 3], np.uint16).tobytes())
    assert evaluation.main(["loss", "--model", source, "--data", str(data), "--device", "cpu"]) == 1
    assert "token id 60000 is outside the model's vocabulary of 50257" in capsys.readouterr().err


@pytest.mark.slow
def test_local_lm_eval_task_runs_end_to_end_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the task's data_files are relative to the repository root
    source = random_checkpoint(tmp_path / "ckpt.pt", bias=True)
    out = tmp_path / "tasks.json"
    argv = ["tasks", "--model", source, *TINY_QA_ARGS, "--device", "cpu", "--out", str(out)]
    assert evaluation.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["limit"] == 4
    metrics = result["tasks"]["tiny_qa"]
    assert {"acc", "acc_norm"} <= metrics.keys()
    assert metrics["acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert "| tiny_qa (acc) |" in capsys.readouterr().out


@pytest.mark.slow
def test_hub_tasks_offline_fail_fast_naming_the_task_and_the_remedy(tmp_path, capsys):
    source = random_checkpoint(tmp_path / "ckpt.pt", bias=True)
    argv = ["tasks", "--model", source, "--tasks", "arc_easy,no_such_task", "--device", "cpu"]
    assert evaluation.main(argv) == 1
    err = capsys.readouterr().err
    assert "task arc_easy: its data cannot be loaded" in err and "--include_path" in err
    assert "task no_such_task: unknown" in err


def test_table_puts_checkpoints_side_by_side(tmp_path, capsys):
    files = {
        "ref-loss": {"data": "data/shakespeare", "split": "val", "loss": 2.853},
        "ref-tasks": {"tasks": {"hellaswag": {"acc": 0.3, "acc_norm": 0.4}, "sciq": {"acc": 0.8, "acc_norm": 0.7}}},
        "student-tasks": {
            "tasks": {
                "hellaswag": {"acc": 0.31, "acc_norm": 0.42},
                "sciq": {"acc": 0.78},
                "lambada_openai": {"acc": 0.3, "perplexity": 40.5},
            }
        },
    }
    for name, record in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    argv = [
        "table",
        f"reference={tmp_path}/ref-loss.json",
        f"reference={tmp_path}/ref-tasks.json",
        f"student={tmp_path}/student-tasks.json",
        "--out",
        str(tmp_path / "table.md"),
    ]
    assert evaluation.main(argv) == 0
    lines = (tmp_path / "table.md").read_text().splitlines()
    header = (
        "| model | val loss (data/shakespeare) | hellaswag (acc_norm) | sciq (acc) | lambada_openai (acc) "
        "| lambada_openai (perplexity)"
    )
    assert lines[0] == header + " | avg acc |"
    assert lines[2] == "| reference | 2.8530 | 40.00 | 80.00 |  |  | 60.00 |"
    assert lines[3] == "| student |  | 42.00 | 78.00 | 30.00 | 40.50 | 50.00 |"


def test_loss_refuses_a_corpus_of_another_tokenizer_than_the_models(shakespeare_dir, tmp_path, capsys):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32, vocab_size=70031))
    llama = {"tokenizer": "my-llama", "tokenizer_fingerprint": "0123456789abcdef", "vocab_size": 70031}
    Checkpoint.of(model, tokenizer=llama).save(tmp_path / "llama.pt")
    bare = tmp_path / "bare"  # nanoGPT's openwebtext: bins only, GPT-2 ids
    bare.mkdir()
    shutil.copy(shakespeare_dir / "val.bin", bare / "val.bin")
    for data in (shakespeare_dir, bare):  # every GPT-2 id is below 70,031: only the tokenizers tell them apart
        argv = ["loss", "--model", str(tmp_path / "llama.pt"), "--data", str(data), "--device", "cpu"]
        assert evaluation.main([*argv, "--max_tokens", "100"]) == 1
        err = capsys.readouterr().err
        assert f"{data} was made with the tokenizer gpt2, the model reads my-llama" in err


@pytest.mark.slow
def test_tags_and_groups_report_each_member_and_the_groups_aggregate_written_before_the_table(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(ROOT)  # the tasks' data_files are relative to the repository root
    source = random_checkpoint(tmp_path / "ckpt.pt", bias=True)
    out = tmp_path / "tasks.json"
    argv = ["tasks", "--model", source, *TINY_QA_ARGS, "--device", "cpu", "--out", str(out)]
    argv[argv.index("tiny_qa")] = "tiny_tag,tiny_group"

    def table_fails(rows):
        raise RuntimeError("the table fails after the evaluation")

    monkeypatch.setattr(evaluation, "format_task_table", table_fails)
    with pytest.raises(RuntimeError, match="after the evaluation"):
        evaluation.main(argv)
    result = json.loads(out.read_text())  # the evaluation's results were written first
    assert set(result["tasks"]) == {"tiny_qa_tagged", "tiny_qa", "tiny_group"}
    assert result["groups"] == {"tiny_group": ["tiny_qa"]}
    assert result["tasks"]["tiny_group"]["acc"] == result["tasks"]["tiny_qa"]["acc"]  # the mean of one member
    monkeypatch.undo()
    assert evaluation.main(["table", f"student={out}"]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    assert header == "| model | tiny_qa_tagged (acc) | tiny_qa (acc) | tiny_group (acc) | avg acc |"
    accs = [result["tasks"][task]["acc"] for task in ("tiny_qa_tagged", "tiny_qa")]  # a group is not counted twice
    assert row.endswith(f"| {100 * sum(accs) / 2:.2f} |")


@pytest.mark.slow
def test_the_template_task_scores_answers_after_one_space(monkeypatch):
    monkeypatch.chdir(ROOT)  # the task's data_files are relative to the repository root
    task = evaluation.task_index(str(ROOT / "tests" / "lm_eval_tasks")).load(["tiny_qa"])["tasks"]["tiny_qa"]
    task.build_all_requests(limit=2, rank=0, world_size=1)
    pairs = [instance.arguments for instance in task.instances]
    assert ("Question: Who wrote Hamlet?\nAnswer:", " William Shakespeare") in pairs
    assert all(context.endswith("Answer:") and answer[0] == " " != answer[1] for context, answer in pairs)


def test_a_group_without_an_aggregate_has_no_column_and_its_members_do():
    output = {  # lm-eval 0.4.13's results for a group whose YAML has no aggregate_metric_list
        "results": {
            "qa_a": {"alias": "qa_a", "sample_len": 4, "acc,none": 0.25, "acc_stderr,none": 0.25},
            "qa_b": {"alias": "qa_b", "sample_len": 4, "acc,none": 0.75, "acc_stderr,none": "N/A"},
            "qa_group": {"alias": "qa_group", "name": "qa_group"},
        },
    }
    tasks = evaluation.reported_metrics(output)
    assert tasks == {"qa_a": {"acc": 0.25}, "qa_b": {"acc": 0.75}, "qa_group": {}}
    table = evaluation.format_task_table({"m": {"tasks": tasks, "groups": {"qa_group": ["qa_a", "qa_b"]}}})
    assert table.splitlines()[::2] == ["| model | qa_a (acc) | qa_b (acc) | avg acc |", "| m | 25.00 | 75.00 | 50.00 |"]


def test_table_joins_every_file_of_a_name_and_refuses_a_figure_given_twice(tmp_path, capsys):
    folder = tmp_path / "lr=3e-4"  # a folder named after a setting, as sweeps name them
    folder.mkdir()
    files = {
        "a": {"tasks": {"sciq": {"acc": 0.5}, "piqa": {"acc": 0.6}}},
        "b": {"tasks": {"arc_easy": {"acc": 0.3}, "lambada_openai": {"acc": 0.3}, "empty_group": {}}},
        "val": {"data": "data/shakespeare", "split": "val", "loss": 2.5},
        "train": {"data": "data/shakespeare", "split": "train", "loss": 2.25},
        "val-again": {"data": "data/shakespeare", "split": "val", "loss": 2.75},
        "runs": [{"name": "a", "final_val_loss": 2.5}],  # runs.py compare's JSON, not ours
        "text_loss": {"loss": "x"},  # hand-made ones
        "task_list": {"tasks": [1, 2]},
        "text_metric": {"tasks": {"sciq": {"acc": "high"}}},
    }
    for name, record in files.items():
        (folder / f"{name}.json").write_text(json.dumps(record))
    argv = ["table", *(f"student={folder}/{name}.json" for name in ("a", "b", "val", "train")), f"{folder}/a.json"]
    assert evaluation.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "| model | val loss (data/shakespeare) | train loss (data/shakespeare) | sciq (acc) | piqa (acc) "
        "| arc_easy (acc) | lambada_openai (acc) | avg acc |"
    )
    assert lines[2] == "| student | 2.5000 | 2.2500 | 50.00 | 60.00 | 30.00 | 30.00 | 42.50 |"
    assert lines[3] == "| a |  |  | 50.00 | 60.00 |  |  | 55.00 |"  # a path alone, '=' and all
    for again, figure in (("val-again", "val loss (data/shakespeare)"), ("a", "sciq")):
        assert (
            evaluation.main(
                ["table", f"student={folder}/val.json", f"student={folder}/a.json", f"student={folder}/{again}.json"]
            )
            == 1
        )
        assert f"student: {figure} is in both {folder}/" in capsys.readouterr().err
    for name in ("runs", "text_loss", "task_list", "text_metric"):
        assert evaluation.main(["table", f"x={folder}/{name}.json"]) == 1
        assert (
            f"{name}.json is not the JSON of `evaluation.py loss` or `evaluation.py tasks`" in capsys.readouterr().err
        )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dtype", "bf16"], "argument --dtype: invalid choice: 'bf16'"),
        (["--dtype", "float64"], "argument --dtype: invalid choice: 'float64'"),
        (["--batch_size", "0"], "argument --batch_size: must be at least 1, got 0"),
        (["--batch_size", "abc"], "argument --batch_size: expected an integer, got 'abc'"),
        (["--max_tokens", "-5"], "argument --max_tokens: must be at least 0, got -5"),
    ],
)
def test_bad_loss_options_are_one_line(flags, message, tmp_path, capsys):
    argv = ["loss", "--model", str(tmp_path / "ckpt.pt"), "--data", str(tmp_path), *flags]
    with pytest.raises(SystemExit) as exit_:
        evaluation.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def nanogpt_checkpoint_over_a_corpus_prepared_again(root) -> tuple[str, str]:
    """A nanoGPT checkpoint (no tokenizer record; GPT-2's 50,304 padded rows) whose config names data/shk,
    and data/shk as it is after being prepared again with another tokenizer; (checkpoint, corpus) paths."""
    torch.manual_seed(0)
    args = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32, "bias": True, "vocab_size": 50304}
    model = GPT(GPTConfig(**args))
    torch.save({"model": model.state_dict(), "model_args": args, "config": {"dataset": "shk"}}, root / "nanogpt.pt")
    data = root / "data" / "shk"
    data.mkdir(parents=True)
    np.arange(200, dtype=np.uint16).tofile(data / "val.bin")
    bpe = {"tokenizer": "my-bpe", "tokenizer_fingerprint": "0123456789abcdef", "vocab_size": 1000, "dtype": "uint16"}
    write_meta(data, bpe | {"splits": {}})
    return str(root / "nanogpt.pt"), str(data)


def test_loss_refuses_a_nanogpt_checkpoint_on_its_corpus_prepared_again_with_another_tokenizer(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # nanoGPT's data/<dataset>
    source, data = nanogpt_checkpoint_over_a_corpus_prepared_again(tmp_path)
    assert Checkpoint.load(source, weights=False).vocabulary() == {"tokenizer": "gpt2", "vocab_size": 50257}
    assert evaluation.main(["loss", "--model", source, "--data", data, "--device", "cpu"]) == 1
    assert f"{data} was made with the tokenizer my-bpe, the model reads gpt2" in capsys.readouterr().err


def test_losses_over_other_spans_of_a_corpus_get_their_own_columns_and_one_corpus_one_name(tmp_path, capsys):
    source = random_checkpoint(tmp_path / "ckpt.pt", bias=False)
    data = tmp_path / "data"
    data.mkdir()
    np.arange(1, 301, dtype=np.uint16).tofile(data / "val.bin")  # bare bins: GPT-2 ids
    runs = {"all": [f"{data}/"], "head": [str(data), "--max_tokens", "100"]}  # one folder, spelt two ways
    for name, flags in runs.items():
        argv = ["loss", "--model", source, "--data", *flags, "--device", "cpu", "--out", str(tmp_path / f"{name}.json")]
        assert evaluation.main(argv) == 0
    records = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in runs}
    assert records["all"]["data"] == records["head"]["data"] == str(data)
    assert (records["all"]["max_tokens"], records["head"]["max_tokens"]) == (None, 100)
    assert (records["all"]["tokens"], records["head"]["tokens"]) == (299, 100)
    capsys.readouterr()
    assert evaluation.main(["table", f"m={tmp_path}/all.json", f"m={tmp_path}/head.json"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == f"| model | val loss ({data}) | val loss ({data}, first 100 tokens) |"
