"""Inheritune's growth loop: inherit n = start, start + step, ... layers from the reference, train each
student with CONFIG, stop at the first whose final val loss matches the reference's.

    python grow.py --inherit_from out-gpt2_medium/ckpt.pt --config config/inheritune_gpt2_medium_16.py \
        --start 12 --step 2 --nproc 8 --out_dir out-grow-medium -- --eval_iters=100

Each round n trains in out_dir/n{n} by running train.py (torchrun when --nproc > 1) with
init_from='inherit' and n_layer=n; the config's max_iters is T. The target is the reference's
best_val_loss, read from its checkpoint, or --target (a Hugging Face reference records none). The
table goes to out_dir/grow.json and the val curves of every round to out_dir/grow.png. Rerunning the
same command after an interruption skips finished rounds and resumes an unfinished one from its
checkpoint. Overrides for train.py go after `--`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from checkpoint import describe, source_sha256
from configurator import parse_config
from runs import (
    DIVERGED_EXIT,
    RunError,
    format_table,
    launch_training,
    plot_curves,
    read_run,
    refuse_changed_plan,
    summary,
)
from runtime import UserError, command_main, write_json


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="grow.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source_help = "the reference: a checkpoint (its best_val_loss is the target) or a Hugging Face model "
    source_help += "(then give --target)"
    p.add_argument("--inherit_from", required=True, help=source_help)
    p.add_argument("--config", required=True, help="training config of each round (its max_iters is T)")
    p.add_argument("--start", type=int, default=0, help="first depth; default: half the reference's layers")
    p.add_argument("--step", type=int, default=2)
    p.add_argument("--target", type=float, default=None, help="val loss to reach (default: the reference's)")
    p.add_argument("--out_dir", default="out-grow", help="one sub-folder per round, plus grow.json and grow.png")
    p.add_argument("--nproc", type=int, default=1, help="processes per round (torchrun when above 1)")
    p.add_argument("overrides", nargs="*", help="--key=value overrides for train.py, after a '--'")
    return p.parse_args(argv)


@command_main
def main(argv: list[str]) -> int:
    return grow(parse_args(argv))


def reference_facts(source: str) -> tuple[int, float | None]:
    """The reference's depth and best val loss, without loading its weights: from its checkpoint through a
    memory map, or from a Hugging Face model's or GGUF file's config (which records no val loss)."""
    ref = describe(source)
    return ref.model_args["n_layer"], ref.best_val_loss


def grow(args: argparse.Namespace) -> int:
    ref_layers, ref_loss = reference_facts(args.inherit_from)
    cfg = parse_config([args.config, *args.overrides])
    target = args.target if args.target is not None else ref_loss
    if target is None or target == float("inf"):
        raise UserError(f"{args.inherit_from} records no val loss; give --target (e.g. its loss by evaluation.py loss)")
    start = args.start or max(1, ref_layers // 2)
    if not 1 <= start <= ref_layers or args.step < 1:
        raise UserError(f"--start must be in 1..{ref_layers} and --step at least 1")
    print(f"target val loss {target:.4f} ({ref_layers}-layer reference {args.inherit_from}); T = {cfg.max_iters} steps")
    out_dir = Path(args.out_dir)
    run = (args.inherit_from, args.config, args.overrides, args.nproc)
    rows = grow_rounds(*run, start, args.step, ref_layers, target, out_dir)
    if rows is None:
        return 1
    print(format_table(rows, target))
    matched = [r for r in rows if not r.get("diverged") and r["val_loss"] <= target]
    print(f"smallest matching student: n={matched[0]['layers']}" if matched else "no student matched the target")
    runs = {r["model"]: [read_run(out_dir / f"n{r['layers']}")] for r in rows}
    plot_curves(runs, out_dir / "grow.png", target, "Inheritune growth")
    print(f"wrote {out_dir / 'grow.json'} and {out_dir / 'grow.png'}")
    return 0


def grow_rounds(
    reference: str,
    config: str,
    overrides: list[str],
    nproc: int,
    start: int,
    step: int,
    ref_layers: int,
    target: float,
    out_dir: Path,
) -> list[dict] | None:
    """Train students of start, start + step, ... layers (at most the reference's) in out_dir/n{n} until one
    reaches the target val loss; each round's row, by depth, kept in out_dir/grow.json (None: a round failed).
    A round recorded there is reused only where it trained with these settings from this reference file; its
    gap is to this target, which grow.json then records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "grow.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"rounds": []}
    state["target"] = target
    sha256 = source_sha256(reference)
    init = ["--init_from=inherit", f"--inherit_from={reference}"]
    done = {r["layers"]: r for r in state["rounds"]}
    for n, row in done.items():
        check_round(out_dir / f"n{n}", config, [*overrides, f"--n_layer={n}", *init], sha256)
        row["gap"] = None if row.get("diverged") else row["val_loss"] - target
    write_json(state_path, state)
    n = start
    while True:
        round_dir = out_dir / f"n{n}"
        if n in done:
            print(f"round n={n}: finished earlier, val loss {done[n]['val_loss']:.4f}")
        else:
            t0 = time.time()
            code = launch_training(config, round_dir, [*overrides, f"--n_layer={n}"], init, nproc)
            if code not in (0, DIVERGED_EXIT):
                print(f"error: round n={n} failed (exit code {code}); rerun to resume", file=sys.stderr)
                return None
            diverged = code == DIVERGED_EXIT
            name = f"inheritune n={n}" + (" (diverged)" if diverged else "")
            row = {**summary(name, read_run(round_dir)), "time_s": round(time.time() - t0, 1), "diverged": diverged}
            row["gap"] = None if diverged else row["val_loss"] - target  # its val loss is of its last good eval
            done[n] = row
            state["rounds"].append(row)
            write_json(state_path, state)
        if done[n].get("diverged"):  # a deeper student of the same settings is no answer: the loop ends here
            print(f"round n={n}: diverged earlier (NaN/inf); the growth stops there; delete {round_dir} to retrain it")
            return [done[k] for k in sorted(done)]
        if done[n]["val_loss"] <= target or n >= ref_layers:
            return [done[k] for k in sorted(done)]
        n = min(n + step, ref_layers)


def check_round(round_dir: Path, config: str, overrides: list[str], sha256: str) -> None:
    """A finished round of another budget, config or reference file is refused, not reused beside new ones."""
    run = read_run(round_dir)
    refuse_changed_plan(run, config, overrides)
    recorded = (run.inherit or {}).get("source_sha256")
    if recorded not in (None, sha256):
        raise RunError(
            f"{round_dir} inherited from another reference file (sha256 {recorded[:12]}..., now {sha256[:12]}...): "
            f"give another --out_dir"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
