"""Training runs on disk, and their comparison.

    python runs.py compare "reference=out-shakespeare" "student=out-demo/inheritune" --out cmp.png
    python runs.py compare cpt=out-cpt/replay0 scratch=out-cpt/sweep/L8 --corpus data/python,data/shakespeare
    python runs.py train --config config/train_shakespeare.py --seeds 1,2,3 --out_dir "out-seeds/{seed}/reference"
    python runs.py compare "reference=out-seeds/{seed}/reference" ... --seeds 1,2,3   (mean and spread)

A run folder (train.py's out_dir) holds:
  config.json    {"config": the resolved training config, "model": {"model_args", "params",
                  "scaling_params"}, "inherit": how a student was built, "continued_from": the trained
                  model the run continued from, with the tokens it had seen (both null where none),
                  "corpus": {resolved training folder: weight}}
  metrics.jsonl  one JSON object per line: {"kind": "train" | "eval", "iter", "tokens", "train_loss",
                 "lr", ...}; eval lines add "val_loss" (of the mixture) and "val_losses" (of each corpus),
                 train lines "ms_per_iter", "tokens_per_s", "mfu"
  ckpt.pt        the latest checkpoint, best.pt the one of the lowest val loss (checkpoint.Checkpoint)
  sharded/       an FSDP run's checkpoints instead: step folders, `latest` and `best` naming one of them
train.py writes it through this module; the growth loop, scaling fits and `compare` read it through
`read_run`, which never loads a checkpoint, and launch their runs through `launch_training`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from configurator import SHAPE_KEYS, SOURCE_KEYS, parse_config
from inheritune import compat
from runtime import UserError, atomic_file, output_file, run_command, write_json

CONFIG_FILE, METRICS_FILE = "config.json", "metrics.jsonl"
DIVERGED_EXIT = 3  # train.py's exit code when the loss or the weights became NaN/inf
INTERRUPTED_EXIT = 130  # a run stopped by Ctrl-C or SIGTERM before its end (saved: rerunning resumes it)
SEED_FIELD = "{seed}"  # in run folders and overrides given with --seeds: replaced by each seed


class RunError(UserError):
    """A folder that is not a training run (or not one yet)."""


# ----------------------------------------------------------------------------- writing (train.py)


def write_config(out_dir: Path, config: dict, model: dict, inherit: dict | None, continued_from: dict | None) -> None:
    """config.json; the training corpora are also recorded resolved from where training runs, so that runs
    compare by corpus from any other folder."""
    record = {"config": config, "model": model, "inherit": inherit, "continued_from": continued_from}
    write_json(out_dir / CONFIG_FILE, record | {"corpus": resolved_mixture(config["data_dir"])})


def resolved_mixture(data_dir: str | dict[str, float]) -> dict[str, float]:
    """{resolved folder: weight}, the weights summing to 1, of a data_dir (one folder or a mixture)."""
    mixture = data_dir if isinstance(data_dir, dict) else {data_dir: 1.0}
    total = sum(mixture.values())
    return {os.path.realpath(path): weight / total for path, weight in mixture.items()}


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records. A last line without its newline that does not parse is what a crash in the
    middle of an append leaves: it is ignored, with a warning; a line that does not parse anywhere else is a
    RunError naming the file and the line."""
    text = path.read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines) and not text.endswith("\n"):
                print(f"warning: {path}: its last line is torn (a crash mid-write?); ignored", file=sys.stderr)
                break
            raise RunError(f"{path}: line {number} is not JSON ({e})") from e
    return records


class MetricsLog:
    """metrics.jsonl: one JSON object per log or eval record (master process only)."""

    def __init__(self, out_dir: Path, resume_iter: int | None) -> None:
        self.path = out_dir / METRICS_FILE
        if resume_iter is not None and self.path.exists():
            # Drop what an interrupted run logged after its last checkpoint: resumed curves stay single-valued.
            kept = [record for record in read_metrics(self.path) if record["iter"] <= resume_iter]
            with atomic_file(self.path) as f:
                f.write("".join(json.dumps(record) + "\n" for record in kept).encode())
        elif resume_iter is None:
            self.path.write_text("")

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def link_checkpoint(source: Path, dest: Path) -> None:
    """dest := source, a checkpoint just written: a hard link costs no I/O; where the filesystem has none
    (gcsfuse, s3fs, some network mounts) a copy. Either is renamed into place, so dest is always whole."""
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


# ----------------------------------------------------------------------------- reading


@dataclass
class Run:
    out_dir: Path
    config: dict  # the training config
    model: dict  # model_args and parameter counts
    inherit: dict | None
    continued_from: dict | None
    records: list[dict]  # metrics.jsonl, in order
    corpus: dict[str, float] | None = None  # the training corpora resolved when it trained (None: older runs)

    @property
    def evals(self) -> list[dict]:
        return [r for r in self.records if r["kind"] == "eval"]

    @property
    def last_eval(self) -> dict:
        if not self.evals:
            raise RunError(f"{self.out_dir} has no eval yet")
        return self.evals[-1]

    @property
    def diverged(self) -> dict | None:
        """train.py's record of the loss or weights becoming NaN/inf ({"iter", "error"}), where they did."""
        return next((r for r in self.records if r["kind"] == "diverged"), None)

    def finished(self) -> bool:
        """Whether the run evaluated at its last step, max_iters."""
        return bool(self.evals) and self.last_eval["iter"] >= self.config["max_iters"]

    def val_loss(self, record: dict, corpus: str = "") -> float:
        """An eval's val loss: of the training mixture, or of one corpus (training or held-out), named by any
        path to its folder (./data/python finds data/python)."""
        if not corpus:
            return record["val_loss"]
        losses = record.get("val_losses", {})
        found = [name for name in losses if same_folder(name, corpus)]
        if not found:
            known = ", ".join(losses) or "none"
            raise RunError(f"{self.out_dir} evaluates no corpus {corpus!r} (its corpora: {known})")
        return losses[found[0]]

    @property
    def kind(self) -> str:
        """How the run's model started: "scratch", "inherit" (a student of a reference) or "continued" (from a
        trained model: continual pre-training). A resumed run keeps the kind of its first start."""
        if self.continued_from:
            return "continued"
        return "inherit" if self.inherit else "scratch"

    @property
    def training_corpus(self) -> str:
        """The training mixture as one comparable string: resolved folders and their weights (resolved from
        here for runs that did not record them)."""
        mixture = self.corpus or resolved_mixture(self.config["data_dir"])
        return ",".join(sorted(f"{path}:{weight:.4g}" for path, weight in mixture.items()))

    def curve(self, corpus: str = "") -> tuple[list[int], list[float]]:
        """Steps and val losses of every eval, step 0 included: the loss a continued run starts from is the
        baseline that forgetting is measured against."""
        return [r["iter"] for r in self.evals], [self.val_loss(r, corpus) for r in self.evals]


def same_folder(a: str, b: str) -> bool:
    """Whether two paths name one folder, as written (normalised) or resolved from here."""
    return os.path.normpath(a) == os.path.normpath(b) or os.path.realpath(a) == os.path.realpath(b)


def read_run(out_dir: str | Path) -> Run:
    out_dir = Path(out_dir)
    config_path, metrics_path = out_dir / CONFIG_FILE, out_dir / METRICS_FILE
    for path in (config_path, metrics_path):
        if not path.exists():
            raise RunError(f"{path} not found: is {out_dir} a training run's out_dir?")
    try:
        record = compat.run_record(json.loads(config_path.read_text()))
        records = read_metrics(metrics_path)
        parts = (record["config"], record["model"], record["inherit"], record["continued_from"])
        return Run(out_dir, *parts, records, record.get("corpus"))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise RunError(
            f"{out_dir} holds no readable run ({type(e).__name__}: {e}): is it a training run's out_dir?"
        ) from e


# ----------------------------------------------------------------------------- launching


def train_command(config: str, nproc: int, overrides: list[str]) -> list[str]:
    """train.py with a config and overrides, under torchrun when nproc > 1."""
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else:
        launcher = [sys.executable]
    return [*launcher, str(Path(__file__).with_name("train.py")), config, *overrides]


def launch_training(
    config: str, out_dir: Path, overrides: list[str], init: list[str], nproc: int
) -> tuple[int, float | None]:
    """Train a run in out_dir as train.py's own process(es): nothing when it has finished or diverged (exit code
    DIVERGED_EXIT), resumed from its checkpoint when it was interrupted, else started with the `init` overrides.
    Returns the exit code and the seconds it trained (None where it launched nothing). A run that trained with
    other settings than these is refused (RunError), not reused or continued."""
    if (out_dir / CONFIG_FILE).exists():
        run = read_run(out_dir)
        refuse_changed_plan(run, config, [*overrides, *init])
        if run.diverged:
            print(f"{out_dir}: diverged earlier (at step {run.diverged['iter']}); delete it to train it again")
            return DIVERGED_EXIT, None
        if run.finished():
            print(f"{out_dir}: finished earlier")
            return 0, None
    from checkpoint import checkpoint_paths  # here: runs.py's own commands start without torch

    resume = bool(checkpoint_paths(out_dir))  # what train.py's init_from='resume' finds (latest_checkpoint)
    start = ["--init_from=resume"] if resume else init
    cmd = train_command(config, nproc, [*overrides, f"--out_dir={out_dir}", *start])
    print(f"{out_dir}: {'resuming' if resume else 'training'}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    code = wait_for(cmd)
    seconds = time.time() - t0
    if code == 0 and not read_run(out_dir).finished():  # train.py saved and exited on SIGTERM/SIGINT
        return INTERRUPTED_EXIT, seconds
    return code, seconds


class Runner:
    """The runs of a plan (recipe.py's methods, grow.py's rounds, scaling.py's grid, runs.py's seeds), trained one
    after another, each in its own folder by launch_training: finished runs are skipped, interrupted ones
    resumed, one trained with other settings refused, one that diverged (its folder records it) not trained
    again. Each run's wall-clock, summed over the calls that trained it, is kept in `times_path` where one is
    given. A run that fails stops the plan with a RunError saying how to resume."""

    def __init__(self, config: str, nproc: int = 1, times_path: Path | None = None) -> None:
        self.config, self.nproc, self.times_path = config, nproc, times_path
        saved = json.loads(times_path.read_text()) if times_path is not None and times_path.exists() else {}
        self.times: dict[str, float] = saved.get("times", {})

    def train(self, out_dir: Path, overrides: list[str], init: list[str] | tuple = ()) -> Run:
        """The run in out_dir, trained to its end or to divergence (`.diverged` says which: its folder records
        it, whatever exit code torchrun makes of train.py's)."""
        parse_config([self.config, *overrides, *init])  # a config error is one line now, not a failed run
        code, seconds = launch_training(self.config, out_dir, overrides, list(init), self.nproc)
        if seconds is not None:
            self.times[str(out_dir)] = round(self.times.get(str(out_dir), 0) + seconds, 1)
            self.save_times()
        run = read_run(out_dir) if (out_dir / CONFIG_FILE).exists() else None
        if code == INTERRUPTED_EXIT and not (run and run.diverged):
            raise RunError(f"the run in {out_dir} was interrupted; run the same command to resume")
        if run is None or (code != 0 and not run.diverged):
            raise RunError(f"the run in {out_dir} failed (exit code {code}); run the same command to resume")
        return run

    def seconds(self, out_dir: Path) -> float | None:
        return self.times.get(str(out_dir))

    def save_times(self) -> None:
        """times into times_path, beside whatever else the caller keeps there (a report, a growth table)."""
        if self.times_path is not None:
            saved = json.loads(self.times_path.read_text()) if self.times_path.exists() else {}
            self.times_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.times_path, saved | {"times": self.times})


# Settings that change no result of a run (where it is written, how it logs, which kernels): a run trained with
# other values of these is still the run asked for.
BOOKKEEPING = {
    "out_dir",
    "eval_interval",
    "log_interval",
    "always_save_checkpoint",
    "wandb_log",
    "wandb_project",
    "wandb_run_name",
    "wandb_mode",
    "compile",
    "device",
    "backend",
    "peak_flops",
    "parallel",
    "cpu_offload",
    "fsdp_reduce_every_micro_batch",
}


def refuse_changed_plan(run: Run, config: str, overrides: list[str]) -> None:
    """A finished or interrupted run in a folder that a command would train again with other settings (budget,
    data, reference, model) would be reused or continued as if it were the one asked for: refuse it."""
    changed = changed_settings(run, config, overrides)
    if changed:
        was = ", ".join(f"{key}={old!r}" for key, (old, _) in changed.items())
        now = ", ".join(f"{key}={new!r}" for key, (_, new) in changed.items())
        raise RunError(
            f"{run.out_dir} trained with {was}; this command asks for {now}. "
            f"Give another out_dir, or delete {run.out_dir} to train it again"
        )


def changed_settings(run: Run, config: str, overrides: list[str]) -> dict[str, tuple[object, object]]:
    """{key: (the value the run trained with, the config's with the overrides)} of the settings that differ."""
    planned = asdict(parse_config([config, *overrides]))
    recorded = run.config | started_from(run)  # a resume records init_from='resume', not where the model began
    resumes = planned["init_from"] == "resume"  # train.py continues the run's checkpoint, whatever it began from
    ignored = BOOKKEEPING | ({"init_from", "inherit_from"} if resumes else set())
    ignored |= {key for key in SOURCE_KEYS if planned[key] is None}  # unset: the run recorded its model's value
    if run.continued_from and (resumes or same_folder(planned["init_from"], recorded["init_from"])):
        ignored |= set(SHAPE_KEYS) | {"init_from"}  # the same source (however spelt), so its shape
    return {
        key: (recorded[key], value)
        for key, value in planned.items()
        if key not in ignored and recorded.get(key, value) != value
    }


def started_from(run: Run) -> dict[str, str]:
    """Where a run's model began, as the init_from (and a student's inherit_from) that started it: the model it
    continued from, 'inherit' from its reference, or 'scratch'; config.json records init_from='resume' once
    the run was resumed."""
    if run.continued_from:
        return {"init_from": run.continued_from["source"]}
    if run.inherit:
        return {"init_from": "inherit", "inherit_from": run.inherit["source"]}
    return {"init_from": "scratch"}


def wait_for(cmd: list[str]) -> int:
    """The exit code of a training process. Ctrl-C reaches it too, and train.py then saves at its next step
    boundary: wait for that (subprocess.run would kill it mid-step after 0.25 s) and report INTERRUPTED_EXIT."""
    process = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        return process.wait()
    except KeyboardInterrupt:
        return process.wait() or INTERRUPTED_EXIT


# ----------------------------------------------------------------------------- comparing


def summary(name: str, run: Run, corpora: tuple[str, ...] = ()) -> dict:
    """The table row of a run: its size and final val loss (of the mixture, and of each corpus asked for). A run
    that diverged is named so: its last eval is of before the NaN, no result to compare."""
    last = run.last_eval
    diverged = run.diverged is not None
    row = {
        "model": name + (" (diverged)" if diverged else ""),
        "diverged": diverged,
        "layers": run.model["model_args"]["n_layer"],
        "params": run.model["params"],
        "steps": last["iter"],
        "tokens": last["tokens"],
        "val_loss": last["val_loss"],
    }
    return row | ({"val_losses": {c: run.val_loss(last, c) for c in corpora}} if corpora else {})


def seed_summary(name: str, runs: dict[int, Run], corpora: tuple[str, ...] = ()) -> dict:
    """The table row of one configuration run over several seeds: the mean final val loss and its sample
    standard deviation over seeds, and each seed's own. Every seed must have run the same steps: a mean over
    an unfinished run would compare unlike things."""
    rows = {seed: summary(name, run, corpora) for seed, run in runs.items()}
    first_seed, first = next(iter(rows.items()))
    for seed, row in rows.items():
        run = runs[seed]
        if run.config.get("seed", seed) != seed:
            raise RunError(f"{name}: {run.out_dir} was trained with seed {run.config['seed']}, not {seed}")
        if (row["steps"], row["layers"]) != (first["steps"], first["layers"]):
            raise RunError(
                f"{name}: seed {seed} ran {row['steps']} steps of {row['layers']} layers, seed {first_seed} "
                f"{first['steps']} of {first['layers']}: finish every seed's run before comparing them"
            )
        if [r["iter"] for r in run.evals] != [r["iter"] for r in runs[first_seed].evals]:
            raise RunError(f"{name}: seeds {first_seed} and {seed} evaluated at different steps: one config each")
        losses = [row["val_loss"], *row.get("val_losses", {}).values()]
        if not all(math.isfinite(loss) for loss in losses):
            raise RunError(f"{name}: seed {seed}'s final val loss in {run.out_dir} is not finite")
    losses = [row["val_loss"] for row in rows.values()]
    row = first | {"val_loss": statistics.fmean(losses), "val_loss_sd": sd(losses), "seeds": list(rows)}
    row["val_loss_by_seed"] = losses
    if corpora:
        by_corpus = {c: [r["val_losses"][c] for r in rows.values()] for c in corpora}
        row["val_losses"] = {c: statistics.fmean(v) for c, v in by_corpus.items()}
        row["val_losses_sd"] = {c: sd(v) for c, v in by_corpus.items()}
        row["val_losses_by_seed"] = by_corpus
    return row


def sd(values: list[float]) -> float | None:
    """Sample standard deviation (n - 1); None for one value, which has no spread to measure."""
    return statistics.stdev(values) if len(values) > 1 else None


def format_loss(value: float, spread: float | None) -> str:
    return f"{value:.4f}" if spread is None else f"{value:.4f}±{spread:.4f}"


def format_table(rows: list[dict], target: float | None = None, corpora: tuple[str, ...] = ()) -> str:
    width = 15 if any(r.get("val_loss_sd") is not None for r in rows) else 9
    head = f"{'model':<28} {'layers':>6} {'params':>9} {'steps':>7} {'val loss':>{width}}"
    head += "".join(f" {Path(c).name[:12]:>{width}}" for c in corpora)
    lines = [head + (f" {'gap':>8}" if target is not None else ""), "-" * (len(head) + (9 if target else 0))]
    for r in rows:
        line = f"{r['model']:<28} {r['layers']:>6} {r['params'] / 1e6:>8.2f}M {r['steps']:>7}"
        line += f" {format_loss(r['val_loss'], r.get('val_loss_sd')):>{width}}"
        spreads = r.get("val_losses_sd", {})
        line += "".join(f" {format_loss(r['val_losses'][c], spreads.get(c)):>{width}}" for c in corpora)
        lines.append(line + (f" {r['val_loss'] - target:>+8.4f}" if target is not None else ""))
    return "\n".join(lines)


def paired_differences(rows: list[dict], corpora: tuple[str, ...] = ()) -> list[dict]:
    """For each pair of rows run over the same seeds, the difference of final val loss seed by seed (later row
    minus earlier), of the mixture and of each corpus asked for: its mean, its spread, and in how many seeds
    the later row is lower, higher or equal. A difference is worth stating only where its sign holds in
    every seed."""
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            for corpus in ("", *corpora):
                la = a["val_losses_by_seed"][corpus] if corpus else a["val_loss_by_seed"]
                lb = b["val_losses_by_seed"][corpus] if corpus else b["val_loss_by_seed"]
                diffs = [y - x for x, y in zip(la, lb, strict=True)]
                pair = {
                    "rows": [a["model"], b["model"]],
                    "corpus": corpus,
                    "mean": statistics.fmean(diffs),
                    "sd": sd(diffs),
                }
                pair |= {"lower": sum(d < 0 for d in diffs), "higher": sum(d > 0 for d in diffs)}
                pairs.append(pair | {"equal": len(diffs) - pair["lower"] - pair["higher"]})
    return pairs


def format_differences(pairs: list[dict], n_seeds: int) -> str:
    lines = [f"val loss differences, paired by seed (mean±sd over {n_seeds} seeds):"]
    for p in pairs:
        a, b = p["rows"]
        holds = n_seeds in (p["lower"], p["higher"])
        verdict = "holds in every seed" if holds else "not the same sign in every seed"
        counts = f"lower in {p['lower']}, higher in {p['higher']}" + (f", equal in {p['equal']}" if p["equal"] else "")
        on = f" on {Path(p['corpus']).name}" if p["corpus"] else ""
        lines.append(f"  {b} - {a}{on}: {format_loss(p['mean'], p['sd'])}, {counts} of {n_seeds} seeds ({verdict})")
    return "\n".join(lines)


def plot_curves(
    runs: dict[str, list[Run]], out: Path, target: float | None = None, title: str = "", corpora: tuple[str, ...] = ()
) -> None:
    """Val loss against step of every run: of the mixture, or one panel per corpus asked for. A name with
    several runs (seeds) is drawn as their mean, with the band from the lowest to the highest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = corpora or ("",)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, corpus in zip(axes[0], panels, strict=True):
        for name, group in runs.items():
            steps, losses = seed_curves(group, corpus)
            (line,) = ax.plot(steps, [statistics.fmean(col) for col in losses], marker="o", ms=3, label=name)
            if len(group) > 1:
                low, high = [min(col) for col in losses], [max(col) for col in losses]
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
        if target is not None:
            ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:.3f}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation loss on {corpus}" if corpus else "validation loss")
        ax.set_title(f"{title}: {Path(corpus).name}" if title and corpus else title or Path(corpus).name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def seed_curves(group: list[Run], corpus: str) -> tuple[list[int], list[list[float]]]:
    """The eval steps of a group's runs (the same in each: seed_summary checks), and at each step the val
    losses of all its runs."""
    curves = [run.curve(corpus) for run in group]
    return curves[0][0], [list(col) for col in zip(*(losses for _, losses in curves), strict=True)]


def seeds_list(text: str) -> list[int]:
    """--seeds: comma-separated distinct non-negative integers (numpy's seeds)."""
    seeds = [s.strip() for s in text.split(",")]
    if not all(re.fullmatch("[0-9]+", s) for s in seeds):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of seeds (integers from 0)")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} names a seed twice")
    return seeds


def default_name(out_dir: str) -> str:
    """A run's name when none is given: its folder's name, or for out/NAME/{seed} the last part without {seed}."""
    parts = [part for part in Path(out_dir).parts if SEED_FIELD not in part]
    return parts[-1] if parts else out_dir


def seed_folders(template: str, seeds: list[int]) -> dict[int, str]:
    """The run folder of each seed, from a path holding {seed}."""
    if SEED_FIELD not in template:
        raise RunError(f"{template} holds no {SEED_FIELD}: with --seeds each run folder names its seed")
    return {seed: template.replace(SEED_FIELD, str(seed)) for seed in seeds}


def finite_or_null(value: object) -> object:
    """A record with each NaN or infinite number (a diverged run's loss) as null: JSON has no NaN, and
    strict readers refuse the `NaN` that json.dumps writes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_null(item) for item in value]
    return value


def compare_main(args: argparse.Namespace) -> int:
    pairs = [r.split("=", 1) if "=" in r else (default_name(r), r) for r in args.runs]
    named = dict(pairs)
    corpora = tuple(c for c in args.corpus.split(",") if c)
    seeds = args.seeds or []
    out = plot_file(args.out) if args.out else None
    if len(named) < len(pairs):
        names = [name for name, _ in pairs]
        twice = sorted({name for name in names if names.count(name) > 1})
        raise RunError(f"two runs are named {', '.join(twice)}: name each, as NAME=OUT_DIR")
    if seeds:
        groups = {
            name: {s: read_run(d) for s, d in seed_folders(out_dir, seeds).items()} for name, out_dir in named.items()
        }
        rows = [seed_summary(name, group, corpora) for name, group in groups.items()]
    else:
        groups = {name: {0: read_run(out_dir)} for name, out_dir in named.items()}
        rows = [summary(name, group[0], corpora) for name, group in groups.items()]
    runs = {name: list(group.values()) for name, group in groups.items()}
    if out is not None:
        plot_curves(runs, out, title=args.title, corpora=corpora)
    print(format_table(rows, corpora=corpora))
    differences = paired_differences(rows, corpora) if len(seeds) > 1 else []
    if differences:
        print(format_differences(differences, len(seeds)))
    if out is not None:
        record = {"runs": rows, "differences": differences} if seeds else rows
        write_json(out.with_suffix(".json"), finite_or_null(record))
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def plot_file(name: str) -> Path:
    """The file --out's plot is written to, checked before the work: a name without a suffix is a PNG, as
    matplotlib writes it (it adds .png); another suffix must be a format matplotlib writes, as it takes the
    suffix for the format. lr_0.5 is refused, not made lr_0.5.png: a guess would write a file of another name
    than the one given (and x.json's table would be x.json.json). The plot and its table go neither into a run
    folder nor over a file that an earlier compare did not write."""
    path = output_file(name)
    path = path if path.suffix else output_file(path.with_suffix(".png"))
    formats = plot_formats()
    if path.suffix[1:].lower() not in formats:
        raise RunError(
            f"--out {name}: matplotlib writes no {path.suffix!r} plot (formats: {', '.join(formats)}): end the "
            f"name with one, e.g. {name}.png"
        )
    refuse_overwriting(path, path.with_suffix(".json"))
    return path


def plot_formats() -> list[str]:
    """The file formats (suffixes) matplotlib's savefig writes."""
    from matplotlib.backend_bases import FigureCanvasBase  # here: only a command that plots imports matplotlib

    return sorted(FigureCanvasBase.get_supported_filetypes())


def refuse_overwriting(plot: Path, table: Path) -> None:
    """A comparison written into a run folder would be taken for the run's files (--out RUN/config.png wrote its
    table over the run's config.json); a plot or table of the name that an earlier compare did not write (its
    table beside the plot) is someone else's file."""
    if (plot.parent / CONFIG_FILE).exists() or (plot.parent / METRICS_FILE).exists():
        raise RunError(f"--out {plot}: {plot.parent} is a training run's folder: write the comparison elsewhere")
    earlier = is_compare_table(table)
    for path in (table, plot):
        if path.exists() and not earlier:
            raise RunError(f"--out {plot}: {path} exists and is no output of runs.py compare: give another --out")


def is_compare_table(path: Path) -> bool:
    """Whether a file is the table compare writes: its rows, or {"runs": rows, "differences"} with --seeds."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    rows = record.get("runs") if isinstance(record, dict) else record
    columns = {"model", "layers", "steps", "val_loss"}
    return isinstance(rows, list) and bool(rows) and all(isinstance(r, dict) and columns <= r.keys() for r in rows)


def compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="NAME=OUT_DIR of each run, in table order ({seed} in it with --seeds)")
    p.add_argument("--out", default="", help="PNG of the val-loss curves; the table goes beside it as .json")
    p.add_argument("--title", default="")
    corpus_help = "comma-separated corpora (data_dir paths as in the runs' configs): their val losses beside the "
    p.add_argument("--corpus", default="", help=corpus_help + "mixture's, one plot panel each")
    p.add_argument(
        "--seeds",
        type=seeds_list,
        default=None,
        help="comma-separated seeds: each OUT_DIR holds {seed}; the table gives mean±sd over them and the "
        "differences between rows paired by seed",
    )


def train_main(args: argparse.Namespace) -> int:
    """Train one config once per seed, each in the folder --out_dir names for it."""
    folders = seed_folders(args.out_dir, args.seeds)
    runner = Runner(args.config, args.nproc)
    for i, (seed, folder) in enumerate(folders.items(), 1):
        print(f"seed {seed} ({i} of {len(folders)})", flush=True)
        overrides = [o.replace(SEED_FIELD, str(seed)) for o in args.overrides] + [f"--seed={seed}"]
        if runner.train(Path(folder), overrides).diverged:
            print(f"warning: seed {seed}'s run in {folder} diverged (NaN/inf); the other seeds go on", file=sys.stderr)
    return 0


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="train.py config of every run")
    p.add_argument("--seeds", type=seeds_list, required=True, help="comma-separated seeds, one run each")
    p.add_argument("--out_dir", required=True, help="run folder of each seed, holding {seed}")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun) when more than 1")
    p.add_argument(
        "overrides", nargs="*", help="--key=value overrides for train.py after a '--'; {seed} in any is replaced"
    )


COMMANDS = {
    "compare": (compare_arguments, compare_main, "table and val-loss plot of several runs"),
    "train": (train_arguments, train_main, "train a config once per seed; finished seeds skipped, others resumed"),
}


def main(argv: list[str]) -> int:
    return run_command("runs.py", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
