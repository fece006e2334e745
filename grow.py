"""Inheritune's growth loop: inherit n = start, start + step, ... layers from the reference, train each
student with CONFIG, stop at the first whose final val loss matches the reference's.

    python grow.py --inherit_from out-gpt2_medium/ckpt.pt --config config/inheritune_gpt2_medium_16.py \
        --start_depth 12 --step 2 --nproc 8 --out_dir out-grow-medium -- --eval_iters=100

Each round n trains in out_dir/n{n} by running train.py (torchrun when --nproc > 1) with
init_from='inherit' and n_layer=n; the config's max_iters is T. The target is the reference's
best_val_loss, read from its checkpoint, or --target (a Hugging Face reference records none). The
table goes to out_dir/grow.json and the val curves of every round to out_dir/grow.png. Rerunning the
same command after an interruption skips finished rounds and resumes an unfinished one from its
checkpoint. Overrides for train.py go after `--`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analyze import starting_depth
from checkpoint import describe, source_sha256
from configurator import parse_config
from runs import CONFIG_FILE, Run, RunError, Runner, format_table, plot_curves, read_run, summary
from runtime import UserError, command_main, output_folder, write_json


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="grow.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source_help = "the reference: a checkpoint (its best_val_loss is the target) or a Hugging Face model "
    source_help += "(then give --target)"
    p.add_argument("--inherit_from", required=True, help=source_help)
    p.add_argument("--config", required=True, help="training config of each round (its max_iters is T)")
    p.add_argument("--start_depth", type=int, default=0, help="first depth; default: half the reference's layers")
    p.add_argument("--step", type=int, default=2)
    p.add_argument("--target", type=float, default=None, help="val loss to reach (default: the reference's)")
    p.add_argument("--out_dir", default="out-grow", help="one sub-folder per round, plus grow.json and grow.png")
    p.add_argument("--nproc", type=int, default=1, help="processes per round (torchrun when above 1)")
    p.add_argument("overrides", nargs="*", help="--key=value overrides for train.py, after a '--'")
    return p.parse_args(argv)


@command_main
def main(argv: list[str]) -> int:
    return grow_to_target(parse_args(argv))


def reference_facts(source: str) -> tuple[int, float | None]:
    """The reference's depth and best val loss, without loading its weights: from its checkpoint through a
    memory map, or from a Hugging Face model's or GGUF file's config (which records no val loss)."""
    ref = describe(source)
    return ref.model_args["n_layer"], ref.best_val_loss


def grow_to_target(args: argparse.Namespace) -> int:
    output_folder(args.out_dir)
    ref_layers, ref_loss = reference_facts(args.inherit_from)
    cfg = parse_config([args.config, *args.overrides])
    target = args.target if args.target is not None else ref_loss
    if target is None or target == float("inf"):
        raise UserError(f"{args.inherit_from} records no val loss; give --target (e.g. its loss by evaluation.py loss)")
    start = args.start_depth or starting_depth(ref_layers)
    if not 1 <= start <= ref_layers or args.step < 1:
        raise UserError(f"--start_depth must be in 1..{ref_layers} and --step at least 1")
    print(f"target val loss {target:.4f} ({ref_layers}-layer reference {args.inherit_from}); T = {cfg.max_iters} steps")
    rows = grow_rounds(args, start, ref_layers, target)
    out_dir = Path(args.out_dir)
    print(format_table(rows, target))
    matched = [r for r in rows if not r["diverged"] and r["val_loss"] <= target]
    print(f"smallest matching student: n={matched[0]['layers']}" if matched else "no student matched the target")
    runs = {r["model"]: [read_run(out_dir / f"n{r['layers']}")] for r in rows}
    plot_curves(runs, out_dir / "grow.png", target, "Inheritune growth")
    print(f"wrote {out_dir / 'grow.json'} and {out_dir / 'grow.png'}")
    return 0


def grow_rounds(args: argparse.Namespace, start: int, ref_layers: int, target: float) -> list[dict]:
    """Train students of start, start + step, ... layers (at most the reference's) in out_dir/n{n} until one
    reaches the target val loss or diverges; each round's row, by depth, kept in out_dir/grow.json. A round
    trained earlier is reused only where it trained with these settings from this reference file; its gap is
    to this target, which grow.json then records."""
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "grow.json"
    runner = Runner(args.config, args.nproc, times_path=state_path)
    sha256 = source_sha256(args.inherit_from)
    init = ["--init_from=inherit", f"--inherit_from={args.inherit_from}"]
    rows: dict[int, dict] = {}
    n = start
    while True:
        round_dir = out_dir / f"n{n}"
        overrides = [*args.overrides, f"--n_layer={n}"]
        if (round_dir / CONFIG_FILE).exists():
            check_reference(round_dir, sha256)
        run = runner.train(round_dir, overrides, init)
        rows[n] = round_row(run, n, target, runner.seconds(round_dir))
        write_json(state_path, {"target": target, "rounds": [rows[k] for k in sorted(rows)], "times": runner.times})
        if run.diverged:  # a deeper student of the same settings is no answer: the loop ends here
            print(f"round n={n}: diverged (NaN/inf); the growth stops there; delete {round_dir} to retrain it")
            break
        if rows[n]["val_loss"] <= target or n >= ref_layers:
            break
        n = min(n + args.step, ref_layers)
    return [rows[k] for k in sorted(rows)]


def round_row(run: Run, n: int, target: float, seconds: float | None) -> dict:
    """A round's line of the table: its summary, its gap to the target (none for a diverged round, whose val loss
    is of its last good eval) and its wall-clock."""
    row = summary(f"inheritune n={n}", run) | {"time_s": seconds}
    return row | {"gap": None if row["diverged"] else row["val_loss"] - target}


def check_reference(round_dir: Path, sha256: str) -> None:
    """A round that inherited from another file of the reference's name is refused, not reused beside new ones
    (another budget or config is refused by the runner)."""
    recorded = (read_run(round_dir).inherit or {}).get("source_sha256")
    if recorded not in (None, sha256):
        raise RunError(
            f"{round_dir} inherited from another reference file (sha256 {recorded[:12]}..., now {sha256[:12]}...): "
            f"give another --out_dir"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
