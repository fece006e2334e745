"""Which small model should I build? Every way of building an n-layer model from a trained reference, trained
on the same data, seed and step budget, evaluated on every corpus, side by side in one report.

    python recipe.py --reference out-gpt2_large/ckpt.pt --config config/inheritune_gpt2_large_18.py \
        --n_layer 18 --nproc 8 --out_dir out-recipe-large
    python recipe.py --reference out-shakespeare/ckpt.pt --config config/train_shakespeare.py --n_layer 4 \
        --methods first,bi,scratch --out_dir out-recipe -- --max_iters=50

1. The reference is analysed on the config's first corpus (analyze.py: attention rank and mass, Block
   Influence, angular distance) and each measure's layers are printed.
2. Each method trains a student of every --n_layer in out_dir/n{n}/{method}, by train.py with the config
   (its max_iters is the budget; scratch-2x trains twice as long), its seed and data. The methods:
   first (Inheritune), bi, angular, stack (the paper's hybrid stacking), half_width (every layer, so one
   run for all n), distill (a student from scratch taught by the reference), scratch and scratch-2x
   (from scratch at the reference's width for the budget and twice it, the paper's baselines), and, when
   asked, grow (grow.py's loop from the analysis's suggested depth: the first lazy layer, else half the
   reference's; --grow_step more layers per round until a student reaches the reference's val loss).
3. The reference is evaluated by the same estimate (train.py eval_only), and out_dir gets report.md (the
   table, the loss curves, the analysis plots), report.json and curves.png.
Running the same command again skips finished runs and resumes interrupted ones. Overrides for train.py go
after `--`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from analyze import (
    LAYER_METHODS,
    AnalysisSettings,
    analyze_model,
    describe_choices,
    describe_collapse,
    describe_suggestion,
    layer_choices,
    plot_heads,
    plot_layers,
    starting_depth,
)
from checkpoint import Checkpoint, describe, latest_checkpoint, source_sha256
from configurator import DATASET, TrainConfig, parse_config
from evaluation import format_task_table, loadable_tasks, run_tasks
from inherit import InheritError, check_width, inherit_half_width
from runs import CONFIG_FILE, RunError, Runner, changed_settings, plot_curves, read_run, summary, wait_for
from runtime import UserError, command_main, output_folder, resolve_device_name, write_json

METHODS = {
    "first": "the first n blocks (Inheritune)",
    "bi": "the n blocks of largest Block Influence (ShortGPT)",
    "angular": "all but the span of least angular distance (Gromov et al.)",
    "stack": "the first ceil(n/2) blocks, twice (the paper's hybrid stacking)",
    "half_width": "every layer at half the width (the paper's half-width baseline)",
    "distill": "from scratch, distilled from the reference (the paper's KD baseline)",
    "scratch": "from scratch for the same steps",
    "scratch-2x": "from scratch for twice the steps",
    "grow": "the growth loop: the first n blocks from the analysis's suggested n, grown until the reference's loss",
}
DEFAULT_METHODS = "first,bi,angular,stack,distill,scratch,scratch-2x"
# Students that carry what the reference learnt (its blocks, or its teacher's logits): their tokens seen add its own.
CARRY_REFERENCE = {*LAYER_METHODS, "stack", "half_width", "grow", "distill"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="recipe.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    reference_help = "the trained reference: a checkpoint, a Hugging Face model or a GGUF file"
    p.add_argument("--reference", required=True, help=reference_help)
    p.add_argument("--config", required=True, help="training config of every student (its max_iters is the budget)")
    p.add_argument("--n_layer", required=True, help="student depths, comma-separated, each below the reference's")
    methods_help = "comma-separated, of: " + "; ".join(f"{k}: {v}" for k, v in METHODS.items())
    p.add_argument("--methods", default=DEFAULT_METHODS, help=methods_help)
    p.add_argument("--distill_alpha", type=float, default=0.4, help="distill's weight on the KL (the paper's: 0.4)")
    p.add_argument("--grow_start", type=int, default=0, help="grow's first depth (default: the analysis's suggestion)")
    p.add_argument("--grow_step", type=int, default=2, help="layers grow adds per round")
    p.add_argument(
        "--num_seqs", type=int, default=AnalysisSettings.num_seqs, help="sequences of the analysis and bi/angular"
    )
    p.add_argument("--seq_len", type=int, default=AnalysisSettings.seq_len, help="their length (at most block_size)")
    p.add_argument("--tasks", default="", help="lm-eval tasks to score every model on (evaluation.py tasks)")
    p.add_argument("--tasks_limit", type=int, default=None, help="only the first K examples of each task")
    p.add_argument("--include_path", default="", help="folder of extra task YAMLs, e.g. tasks on local data")
    p.add_argument("--out_dir", default="out-recipe", help="one folder per run, the analysis, report.md")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun when above 1)")
    p.add_argument("overrides", nargs="*", help="--key=value overrides for train.py, after a '--'")
    return p.parse_args(argv)


@command_main
def main(argv: list[str]) -> int:
    return recipe(make_plan(parse_args(argv), shlex.join(["python", "recipe.py", *argv])))


# ----------------------------------------------------------------------------- the plan, checked before training


@dataclass(frozen=True)
class Plan:
    """What one call of the recipe does, checked against the reference and the config before anything runs."""

    reference: str
    ref: Checkpoint  # the reference's description (no weights)
    config: str
    cfg: TrainConfig  # the config with the overrides: every student's
    overrides: list[str]
    depths: list[int]
    methods: list[str]
    tasks: list[str]
    tasks_limit: int | None
    include_path: str
    num_seqs: int
    seq_len: int  # of the analysis and the measured choices: at most the config's block_size
    distill_alpha: float
    grow_start: int
    grow_step: int
    out_dir: Path
    nproc: int
    command: str  # the command line, for the report

    @property
    def ref_layers(self) -> int:
        return self.ref.model_args["n_layer"]


def make_plan(args: argparse.Namespace, command: str) -> Plan:
    ref = describe(args.reference)
    ref_layers = ref.model_args["n_layer"]
    ns = depths(args.n_layer, ref_layers)
    methods = check_methods(args.methods, ref)
    if "grow" in methods and (args.grow_step < 1 or not 0 <= args.grow_start < ref_layers):
        raise UserError(f"grow needs --grow_step >= 1 and --grow_start in 1..{ref_layers - 1} (0: the suggestion)")
    cfg = parse_config([args.config, *args.overrides])
    check_methods_width(methods, ref, cfg)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if tasks:
        loadable_tasks(tasks, args.include_path)
    if args.seq_len > cfg.block_size:
        # the students measure at most block_size tokens: the analysis measures as many, so that they agree
        print(f"--seq_len {args.seq_len} is longer than the config's block_size: measuring {cfg.block_size}")
    return Plan(
        reference=args.reference,
        ref=ref,
        config=args.config,
        cfg=cfg,
        overrides=args.overrides,
        depths=ns,
        methods=methods,
        tasks=tasks,
        tasks_limit=args.tasks_limit,
        include_path=args.include_path,
        num_seqs=args.num_seqs,
        seq_len=min(args.seq_len, cfg.block_size),
        distill_alpha=args.distill_alpha,
        grow_start=args.grow_start,
        grow_step=args.grow_step,
        out_dir=output_folder(args.out_dir),
        nproc=args.nproc,
        command=command,
    )


def depths(text: str, ref_layers: int) -> list[int]:
    try:
        ns = sorted({int(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise UserError(f"--n_layer {text!r}: expected depths like 12,16") from None
    bad = [n for n in ns if not 1 <= n < ref_layers]
    if not ns or bad:
        raise UserError(
            f"--n_layer {text!r}: each depth must be in 1..{ref_layers - 1} (the reference has {ref_layers})"
        )
    return ns


def check_methods(text: str, ref: Checkpoint) -> list[str]:
    """The methods asked for, each one the reference allows."""
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"unknown methods {unknown or text!r}; choose from {', '.join(METHODS)}")
    args = ref.model_args
    if "half_width" in methods and args["n_head"] % 2:
        raise UserError(f"half_width halves the reference's {args['n_head']} heads: an odd number")
    return methods


def check_methods_width(methods: list[str], ref: Checkpoint, cfg: TrainConfig) -> None:
    """inherit.check_width for the methods that take the reference's width: its students, and a Llama-family
    reference's models from scratch (its architecture, nothing inherited)."""
    from_scratch = ("distill", "scratch", "scratch-2x") if ref.model_args.get("rope") else ()
    inheriting = [m for m in methods if m in LAYER_METHODS or m in ("stack", "grow", *from_scratch)]
    if inheriting:
        try:
            check_width(ref.model_args, cfg.n_embd, cfg.n_head)
        except InheritError as e:
            raise InheritError(f"{', '.join(inheriting)} take the reference's width: {e}") from None


def scratch_width(ref: Checkpoint) -> list[str]:
    """The overrides that give a GPT-2 from scratch the reference's width and attention, whatever the config
    says; none for the Llama family, whose models from scratch are its architecture with nothing inherited."""
    if ref.model_args.get("rope"):
        return []
    args = {"scale_attn_by_inverse_layer_idx": False} | ref.model_args
    return [f"--{key}={args[key]}" for key in ("n_embd", "n_head", "bias", "scale_attn_by_inverse_layer_idx")]


def run_overrides(plan: Plan, method: str, n: int) -> list[str]:
    """The train.py overrides of one run: its start (a student, or scratch) and its budget."""
    if method in LAYER_METHODS or method == "stack":
        # bi and angular measure the sequences of the analysis: their choice is the one it printed
        measure = [f"--inherit_measure_seqs={plan.num_seqs}", f"--inherit_measure_len={plan.seq_len}"]
        return [
            f"--n_layer={n}",
            "--init_from=inherit",
            f"--inherit_from={plan.reference}",
            f"--inherit_layers={method}",
            *measure,
        ]
    if method == "half_width":
        return [f"--init_from={plan.out_dir / 'half_width' / 'student.pt'}"]
    width = scratch_width(plan.ref)
    fresh = (
        [*width, "--init_from=scratch"]
        if width
        else ["--init_from=inherit", f"--inherit_from={plan.reference}", "--inherit_parts=none"]
    )
    scratch = [f"--n_layer={n}", *fresh]
    if method == "distill":
        return [*scratch, f"--teacher={plan.reference}", f"--distill_alpha={plan.distill_alpha}"]
    if method == "scratch-2x":
        cfg = plan.cfg
        return [*scratch, f"--max_iters={2 * cfg.max_iters}", f"--lr_decay_iters={2 * cfg.lr_decay_iters}"]
    return scratch


def reference_overrides(plan: Plan) -> list[str]:
    """The train.py overrides of the reference's evaluation on the students' validation batches."""
    return ["--max_iters=0", "--eval_only=True", f"--init_from={plan.reference}"]


def run_dir(out_dir: Path, method: str, n: int) -> Path:
    if method == "half_width":
        return out_dir / "half_width"
    return out_dir / "grow" / f"n{n}" if method == "grow" else out_dir / f"n{n}" / method


# ----------------------------------------------------------------------------- the runs


def recipe(plan: Plan) -> int:
    out_dir = plan.out_dir
    state_path = out_dir / "report.json"
    sha256 = check_same_reference(state_path, plan.reference)
    runs = [(m, n) for n in plan.depths for m in plan.methods if m not in ("half_width", "grow")]
    runs += [("half_width", plan.ref_layers)] * ("half_width" in plan.methods)
    refuse_changed_runs(plan, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    refuse_runs_of_another_reference(out_dir, sha256)
    save_state(state_path, {"reference_sha256": sha256})  # before anything is measured or trained from it
    analysis = analyze_reference(plan, sha256)
    if "half_width" in plan.methods and not (out_dir / "half_width" / "student.pt").exists():
        (out_dir / "half_width").mkdir(exist_ok=True)
        student, origin = inherit_half_width(plan.reference, plan.cfg.seed)
        Checkpoint.of(student, inherit=origin, tokenizer=origin["reference_tokenizer"], tokens=0).save(
            out_dir / "half_width" / "student.pt"
        )

    runner = Runner(plan.config, plan.nproc, times_path=state_path)
    reference_dir = out_dir / "reference"
    runner.train(reference_dir, [*plan.overrides, *reference_overrides(plan)])
    started = time.time()
    for k, (method, n) in enumerate(runs):
        eta = eta_text(started, k, len(runs))
        print(f"run {k + 1}/{len(runs)}: {method}, n = {n} ({METHODS[method]}){eta}", flush=True)
        run = runner.train(run_dir(out_dir, method, n), [*plan.overrides, *run_overrides(plan, method, n)])
        if run.diverged:
            print(f"warning: {method} n={n} diverged (NaN/inf); the report marks it, the others go on", file=sys.stderr)
    times = dict(runner.times)
    if "grow" in plan.methods:
        grown = growth_loop(plan, analysis, reference_dir)
        runs += [("grow", row["layers"]) for row in grown["rounds"]]
        times |= grown["times"]

    rows, corpora = report_rows(out_dir, runs, reference_dir, plan.ref, times)
    if plan.tasks:
        score_tasks(rows, plan, resolve_device_name(plan.cfg.device))
    report = {"reference": plan.reference, "config": plan.config, "overrides": plan.overrides}
    report |= {"corpora": corpora, "rows": rows, "analysis": analysis, "reference_sha256": sha256, "times": times}
    write_json(state_path, report)
    curves = {run_name(row, rows): [read_run(row["out_dir"])] for row in rows}
    plot_curves(curves, out_dir / "curves.png", rows[0]["val_loss"], "every method on one budget")
    (out_dir / "report.md").write_text(report_markdown(report, plan))
    print(markdown_table(rows, corpora))
    print(f"wrote {out_dir / 'report.md'}, {state_path} and {out_dir / 'curves.png'}")
    return 0


def growth_loop(plan: Plan, analysis: dict, reference_dir: Path) -> dict:
    """grow.py, as its own command, from the analysis's suggested depth (the first lazy layer; half the
    reference's when none is lazy) to the reference's val loss by the recipe's own estimate: its grow.json."""
    start = plan.grow_start or starting_depth(plan.ref_layers, analysis["lazy_layers"])
    target = summary("reference", read_run(reference_dir))["val_loss"]
    print(f"grow: from n = {start}, {plan.grow_step} more per round, until val loss {target:.4f}", flush=True)
    folder = plan.out_dir / "grow"
    grow_args = ["--inherit_from", plan.reference, "--config", plan.config, "--out_dir", str(folder)]
    grow_args += ["--start_depth", str(start), "--step", str(plan.grow_step), "--target", repr(target)]
    cmd = [sys.executable, str(Path(__file__).with_name("grow.py")), *grow_args, "--nproc", str(plan.nproc)]
    code = wait_for([*cmd, "--", *plan.overrides])
    if code != 0:
        raise RunError(f"the growth loop in {folder} failed (exit code {code}); run the same command to resume")
    return json.loads((folder / "grow.json").read_text())


def analyze_reference(plan: Plan, sha256: str) -> dict:
    """analyze.py's measures of the reference and the layers each measure keeps for the first depth, into
    out_dir/analysis (once: a second call of the same reference file, by its sha256, reads them)."""
    settings = AnalysisSettings(next(iter(plan.cfg.mixture)), plan.num_seqs, plan.seq_len)
    folder = plan.out_dir / "analysis"
    saved = folder / "analysis.json"
    asked = vars(settings) | {"model": plan.reference, "sha256": sha256}
    earlier = json.loads(saved.read_text()) if saved.exists() else {}
    if earlier.get("settings") == asked:
        result = earlier["models"][0]
    else:
        result = analyze_model(plan.reference, settings, resolve_device_name(plan.cfg.device), plan.depths[0])
        folder.mkdir(parents=True, exist_ok=True)
        plot_layers([result], folder / "layers.png")
        plot_heads([result], folder / "heads.png", settings)
        write_json(saved, {"settings": asked, "models": [result]})
    measures = vars(settings) | {key: result[key] for key in ("block_influence", "angular_distance")}
    choices = {n: layer_choices(plan.reference, measures, n) for n in plan.depths}
    print(describe_collapse(result, settings))
    print(describe_suggestion(result, settings))
    for n in plan.depths:
        print(describe_choices({"choices": choices[n]}))
    keys = ("max_rank", "avg_mass", "collapsed_heads", "lazy_layers", "block_influence", "suggestion")
    return {key: result[key] for key in keys} | {"choices": {str(n): choices[n]["layers"] for n in plan.depths}}


# The train.py keys of a student's run that recipe.py's own flags set (run_overrides).
RECIPE_FLAGS = {
    "inherit_measure_seqs": "--num_seqs",
    "inherit_measure_len": "--seq_len",
    "distill_alpha": "--distill_alpha",
}


def refuse_changed_runs(plan: Plan, runs: list[tuple[str, int]]) -> None:
    """Runs of out_dir trained with other settings than this command gives them are refused before anything is
    measured or trained: each setting named with the flag of the command that changed it, and the runs it was in."""
    trained = {plan.out_dir / "reference": None} | {run_dir(plan.out_dir, method, n): (method, n) for method, n in runs}
    changes: dict[str, list[str]] = {}
    for folder, run in trained.items():
        if not (folder / CONFIG_FILE).exists():  # not started yet: nothing to compare
            continue
        overrides = reference_overrides(plan) if run is None else run_overrides(plan, *run)
        for key, (was, now) in changed_settings(read_run(folder), plan.config, [*plan.overrides, *overrides]).items():
            changes.setdefault(f"{key}: {was!r} then, {now!r} now ({flag_of(key, plan)})", []).append(str(folder))
    if changes:
        listed = "; ".join(f"{change} in {', '.join(folders)}" for change, folders in changes.items())
        raise RunError(
            f"runs in {plan.out_dir} were trained with other settings than this command gives them: {listed}. "
            f"Give another --out_dir, or delete those folders to train them again"
        )


def flag_of(key: str, plan: Plan) -> str:
    """Which part of a recipe command sets a train.py key: a flag of recipe.py, an override after '--', or the
    config file."""
    if key in RECIPE_FLAGS:
        return f"recipe.py {RECIPE_FLAGS[key]}"
    spellings = {key, DATASET} if key == "data_dir" else {key}  # nanoGPT's dataset spells data_dir
    if any(arg.removeprefix("--").partition("=")[0] in spellings for arg in plan.overrides):
        return f"--{key} after '--'"
    return f"the config {plan.config}"


def check_same_reference(state_path: Path, reference: str) -> str:
    """The reference's sha256; refused where this out_dir's runs were trained from another file of the same name:
    their inherited blocks, the analysis and the target would be the old reference's."""
    sha256 = source_sha256(reference)
    recorded = json.loads(state_path.read_text()).get("reference_sha256") if state_path.exists() else None
    if recorded not in (None, sha256):
        raise RunError(
            f"{reference} has changed since the runs in {state_path.parent} were trained from it (sha256 "
            f"{recorded[:12]}..., now {sha256[:12]}...): give another --out_dir"
        )
    return sha256


def refuse_runs_of_another_reference(out_dir: Path, sha256: str) -> None:
    """Every run in out_dir that records the reference it came from (the reference's evaluation its
    continued_from, a student that inherited its inherit, as the half-width student.pt) must have come from
    this file: a report.json lost, or written by a version that recorded the sha256 only after the first run,
    cannot vouch for them."""
    records = {}
    for config in sorted(out_dir.glob("**/config.json")):
        run = read_run(config.parent)
        records[config.parent] = run.continued_from if config.parent == out_dir / "reference" else run.inherit
    student = out_dir / "half_width" / "student.pt"
    if student.exists():
        records[student] = Checkpoint.load(student, weights=False).inherit
    for made, record in records.items():
        recorded = (record or {}).get("source_sha256")
        if recorded not in (None, sha256):
            raise RunError(
                f"{made} was made from another reference file (sha256 {recorded[:12]}..., the reference's "
                f"now {sha256[:12]}...): give another --out_dir"
            )


def save_state(state_path: Path, state: dict) -> None:
    """state into report.json, which keeps the report of an earlier call beside it."""
    saved = json.loads(state_path.read_text()) if state_path.exists() else {}
    write_json(state_path, saved | state)


def eta_text(started: float, done: int, total: int) -> str:
    if done == 0:
        return ""
    left = (time.time() - started) / done * (total - done)
    return f"; about {left / 60:.0f} min left" if left > 60 else ""


# ----------------------------------------------------------------------------- the report


def report_rows(
    out_dir: Path, runs: list[tuple[str, int]], reference_dir: Path, ref: Checkpoint, times: dict[str, float]
) -> tuple[list, list]:
    """The reference's row (its own training's steps and tokens, its val loss by the students' estimate), then
    one per run: size, budget, final val loss of the mixture and of each corpus, the gap to the reference,
    wall-clock time."""
    reference = read_run(reference_dir)
    corpora = list(reference.last_eval["val_losses"])
    rows = [row_of("reference", reference, reference_dir, corpora, None, None)]
    trained_here = ref.config is not None  # a Hugging Face model or GGUF file records no training
    steps = ref.iter_num if trained_here else None
    rows[0] |= {"steps": steps, "tokens": ref.tokens_seen(), "tokens_seen": ref.tokens_seen()}
    for method, n in runs:
        folder = run_dir(out_dir, method, n)
        run = read_run(folder)
        row = row_of(method, run, folder, corpora, rows[0]["val_loss"], times.get(str(folder)))
        carried = ref.tokens_seen() if method in CARRY_REFERENCE else 0  # D_p: what its start or teacher learnt
        row["tokens_seen"] = None if carried is None or row["tokens"] is None else row["tokens"] + carried
        diverged = run.diverged is not None  # its val loss is of its last good eval: no result
        rows.append(row | ({"diverged": True, "gap": None} if diverged else {"diverged": False}))
    return rows, corpora


def row_of(method: str, run, folder: Path, corpora: list[str], ref_loss: float | None, seconds) -> dict:
    row = summary(method, run, tuple(corpora)) | {"method": method, "out_dir": str(folder)}
    inherit = run.inherit or {}
    row["inherited_layers"] = inherit.get("layers") if method != "reference" and inherit.get("parts") else None
    first = run.evals[0]  # the step-0 eval: the model as built, before training (pruned without healing)
    row["val_loss_start"] = first["val_loss"] if first["iter"] == 0 and method != "reference" else None
    row["gap"] = None if ref_loss is None else row["val_loss"] - ref_loss
    steps = [r["ms_per_iter"] for r in run.records if r["kind"] == "train" and "ms_per_iter" in r]
    return row | {"time_s": seconds, "ms_per_iter": statistics.median(steps) if steps else None}


def score_tasks(rows: list[dict], plan: Plan, device: str) -> None:
    """Each model's zero-shot task scores (the reference's, and each run's last checkpoint), kept in its folder's
    tasks.json so that a second call scores nothing again."""
    for row in rows:
        model = plan.reference if row["method"] == "reference" else str(latest_checkpoint(row["out_dir"]))
        saved = Path(row["out_dir"]) / "tasks.json"
        asked = {"tasks": plan.tasks, "limit": plan.tasks_limit}
        if saved.exists() and json.loads(saved.read_text())["asked"] == asked:
            result = json.loads(saved.read_text())
        else:
            print(f"tasks of {row['method']}: {', '.join(plan.tasks)}", flush=True)
            result = run_tasks(model, plan.tasks, plan.include_path, plan.tasks_limit, 8, device) | {"asked": asked}
            write_json(saved, result)
        row["tasks"] = result["tasks"]


def run_name(row: dict, rows: list[dict]) -> str:
    """The method, and the depth where the method has runs of several depths."""
    repeated = [r["method"] for r in rows].count(row["method"]) > 1
    return row["method"] + (f" n={row['layers']}" if repeated else "")


def markdown_table(rows: list[dict], corpora: list[str]) -> str:
    head = "| method | layers | from blocks | params | steps | tokens | tokens seen | val loss before training | "
    head += "val loss | " + "".join(f"{Path(c).name} | " for c in corpora) + "gap | ms/iter | wall-clock |"
    lines = [head, "|" + " --- |" * (12 + len(corpora))]
    for r in rows:
        blocks = ",".join(map(str, r["inherited_layers"])) if r["inherited_layers"] else ""
        gap = f"{r['gap']:+.4f}" if r["gap"] is not None else ""
        clock = f"{r['time_s'] / 60:.1f} min" if r["time_s"] is not None else ""
        step_time = f"{r['ms_per_iter']:.1f}" if r.get("ms_per_iter") is not None else ""
        tokens = [f"{r[key]:,}" if r.get(key) is not None else "" for key in ("tokens", "tokens_seen")]
        steps = r["steps"] if r["steps"] is not None else ""
        start = f"{r['val_loss_start']:.4f}" if r.get("val_loss_start") is not None else ""
        cells = [r["method"], r["layers"], blocks, f"{r['params'] / 1e6:.2f}M", steps, *tokens, start]
        if r.get("diverged"):
            cells += [f"diverged after step {r['steps']}", *([""] * len(corpora)), gap, step_time, clock]
        else:
            cells += [f"{r['val_loss']:.4f}", *(f"{r['val_losses'][c]:.4f}" for c in corpora), gap, step_time, clock]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def report_markdown(report: dict, plan: Plan) -> str:
    parts = [
        f"# Which small model: every method from {report['reference']}",
        "",
        f"Made by `{plan.command}`. Val loss: each run's final eval; before training: its eval at step 0, the",
        "model as built (pruned without healing); gap: to the reference's val loss by the same estimate (the same",
        "batches). Tokens: the run's own; tokens seen adds what a student carries from the reference (its",
        "blocks, or its teacher's logits): the reference's own tokens. ms/iter: the median time of a training",
        "step, the one measure to rank methods by cost; wall-clock: the whole process time over the calls that",
        "trained it (start-up, evals, checkpoints, a teacher's loading included).",
        "",
        markdown_table(report["rows"], report["corpora"]),
        "",
        *([format_task_table({run_name(r, report["rows"]): r for r in report["rows"]}), ""] if plan.tasks else []),
        "![val loss of every run](curves.png)",
        "",
        "The reference's layers (attention rank, heads collapsed, mass, Block Influence, angular distance):",
        "",
        "![per layer](analysis/layers.png)",
        "",
        "Its heads (rank per head, the collapsed ones marked):",
        "",
        "![per head](analysis/heads.png)",
    ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
