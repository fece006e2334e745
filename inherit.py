"""Inheritune: build an n-layer student from a trained reference, grow it until it matches, compare runs.

    python inherit.py --ref out-gpt2_large/ckpt.pt --n_layer 18 --out out-student/ckpt.pt
    python inherit.py --ref gpt2-medium --layers 0-11,14 --parts attn,mlp --out student.pt
    python inherit.py grow --ref out-shakespeare/ckpt.pt --config config/inheritune_shakespeare.py
    python inherit.py compare ref=out-shakespeare student=out-demo/student --out out-demo/inheritune.png

The student copies the reference's token and position embeddings (and so the tied head), blocks
layers[0..n-1] and final layernorm; everything not inherited is initialised exactly as a model trained
from scratch with the same seed. The reference is this project's checkpoint, a nanoGPT / LLM-Inheritune
GPT-2 checkpoint, or a Hugging Face GPT-2 (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, or a local
model folder, read offline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from model import GPT, CheckpointError, load_checkpoint, load_model, save_checkpoint, source_sha256

PARTS = {
    "attn": ("attn.c_attn", "attn.c_proj"),
    "mlp": ("mlp.c_fc", "mlp.c_proj"),
    "ln": ("ln_1", "ln_2"),
}


class InheritError(ValueError):
    """A student that cannot be built from the reference as asked."""


@dataclass(frozen=True)
class InheritSpec:
    """What a student takes from its reference."""

    layers: tuple[int, ...]  # reference blocks, in order; student block i is reference block layers[i]
    parts: tuple[str, ...] = ("attn", "mlp", "ln")
    embeddings: bool = True  # token embedding (= the tied head) and position embedding
    ln_f: bool = True


def parse_layers(text: str) -> tuple[int, ...]:
    """'0-11,14' -> (0, 1, ..., 11, 14)."""
    layers: list[int] = []
    for item in text.split(","):
        lo, sep, hi = item.strip().partition("-")
        try:
            layers.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise InheritError(f"bad layer list {text!r}: expected numbers and ranges like '0-11,14'") from None
    return tuple(layers)


def parse_parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise InheritError(f"unknown parts {unknown or text!r}; choose from {', '.join(PARTS)}")
    return parts


def make_spec(
    ref_layers: int, n_layer: int | None, layers: str = "", parts: str = "attn,mlp,ln", **flags
) -> InheritSpec:
    """Check a request against a reference of ref_layers blocks; n_layer alone means blocks 0..n-1."""
    chosen = parse_layers(layers) if layers else None
    if chosen is None:
        if n_layer is None:
            raise InheritError("give the student's depth (n_layer) or its layers")
        chosen = tuple(range(n_layer))
    elif n_layer is not None and n_layer != len(chosen):
        raise InheritError(f"n_layer {n_layer} does not match the {len(chosen)} layers listed")
    if len(chosen) < 1:
        raise InheritError("the student needs at least 1 layer")
    if len(chosen) > ref_layers:
        raise InheritError(f"the student asks for {len(chosen)} layers but the reference has only {ref_layers}")
    bad = [i for i in chosen if not 0 <= i < ref_layers]
    if bad:
        raise InheritError(f"layers {bad} do not exist in the {ref_layers}-layer reference (0..{ref_layers - 1})")
    if len(set(chosen)) != len(chosen):
        raise InheritError(f"layers {list(chosen)} repeat a layer")
    if list(chosen) != sorted(chosen):
        raise InheritError(f"layers {list(chosen)} must keep the reference's order")
    return InheritSpec(layers=chosen, parts=parse_parts(parts), **flags)


def build_student(ref: GPT, spec: InheritSpec, seed: int = 1337, dropout: float = 0.0) -> GPT:
    """A fresh model initialised as from scratch (same seed), with the inherited tensors copied in."""
    torch.manual_seed(seed)
    student = GPT(replace(ref.config, n_layer=len(spec.layers), dropout=dropout))
    state = student.state_dict()
    ref_state = ref.state_dict()
    copied = []
    if spec.embeddings:
        copied += ["transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"]
    if spec.ln_f:
        copied += [k for k in state if k.startswith("transformer.ln_f.")]
    for i, j in enumerate(spec.layers):
        for part in spec.parts:
            for module in PARTS[part]:
                prefix = f"transformer.h.{i}.{module}."
                for key in [k for k in state if k.startswith(prefix)]:
                    state[key] = ref_state[f"transformer.h.{j}.{module}.{key.removeprefix(prefix)}"]
    for key in copied:
        state[key] = ref_state[key]
    student.load_state_dict(state)
    return student


def check_width(ref: GPT, n_embd: int, n_head: int) -> None:
    if (n_embd, n_head) != (ref.config.n_embd, ref.config.n_head):
        raise InheritError(
            f"mismatched width: the student is configured with n_embd {n_embd}, n_head {n_head}, "
            f"the reference has n_embd {ref.config.n_embd}, n_head {ref.config.n_head}"
        )


def provenance(source: str, ref: GPT, ref_ckpt: dict, spec: InheritSpec) -> dict:
    return {
        "source": str(source),
        "source_sha256": source_sha256(source),
        "reference_n_layer": ref.config.n_layer,
        "reference_val_loss": ref_ckpt.get("best_val_loss"),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},
    }


def inherit(source: str, spec_args: dict, seed: int = 1337, dropout: float = 0.0) -> tuple[GPT, dict]:
    """Load the reference, check the request, build the student; returns it with its provenance."""
    ref, ref_ckpt = load_model(source)
    spec = make_spec(ref.config.n_layer, **spec_args)
    return build_student(ref, spec, seed, dropout), provenance(source, ref, ref_ckpt, spec)


# ----------------------------------------------------------------------------- build command


def build_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="inherit.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ref", required=True, help="reference: checkpoint path, gpt2[-medium|-large|-xl], or HF folder")
    p.add_argument("--n_layer", type=int, help="student depth: inherits blocks 0..n_layer-1")
    p.add_argument("--layers", default="", help="reference blocks to inherit, in order, e.g. '0-11,14'")
    p.add_argument("--parts", default="attn,mlp,ln", help="parts of each block: any of attn, mlp, ln")
    p.add_argument("--embeddings", action=argparse.BooleanOptionalAction, default=True,
                   help="inherit token + position embeddings and the tied head")  # fmt: skip
    p.add_argument("--ln_f", action=argparse.BooleanOptionalAction, default=True, help="inherit the final layernorm")
    p.add_argument("--seed", type=int, default=1337, help="initialisation of what is not inherited")
    p.add_argument("--out", required=True, help="student checkpoint to write (train.py init_from=...)")
    args = p.parse_args(argv)
    spec_args = dict(
        n_layer=args.n_layer, layers=args.layers, parts=args.parts, embeddings=args.embeddings, ln_f=args.ln_f
    )
    try:
        student, origin = inherit(args.ref, spec_args, args.seed)
    except (InheritError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": student.state_dict(), "model_args": asdict(student.config), "inherit": origin}, out)
    size = f"{student.config.n_layer} layers, {student.get_num_params() / 1e6:.2f}M parameters"
    print(f"student: {size}, from the {origin['reference_n_layer']}-layer {args.ref}: layers {origin['layers']}")
    print(f"wrote {out}; train it with: python train.py CONFIG --init_from={out}")
    return 0


# ----------------------------------------------------------------------------- runs: reading and comparing


def eval_records(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {out_dir} a training run's out_dir?")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["kind"] == "eval"]


def run_summary(name: str, out_dir: str | Path) -> dict:
    ckpt = load_checkpoint(Path(out_dir) / "ckpt.pt")
    last = eval_records(out_dir)[-1]
    n_params = sum(v.numel() for k, v in ckpt["model"].items() if k not in ("lm_head.weight", "transformer.wpe.weight"))
    return {
        "model": name, "layers": ckpt["model_args"]["n_layer"], "params": n_params, "steps": ckpt["iter_num"],
        "tokens": last["tokens"], "val_loss": last["val_loss"],
    }  # fmt: skip


def format_table(rows: list[dict], target: float | None = None) -> str:
    head = f"{'model':<28} {'layers':>6} {'params':>9} {'steps':>7} {'val loss':>9}"
    lines = [head + (f" {'gap':>8}" if target is not None else ""), "-" * (len(head) + (9 if target else 0))]
    for r in rows:
        line = f"{r['model']:<28} {r['layers']:>6} {r['params'] / 1e6:>8.2f}M {r['steps']:>7} {r['val_loss']:>9.4f}"
        lines.append(line + (f" {r['val_loss'] - target:>+8.4f}" if target is not None else ""))
    return "\n".join(lines)


def plot_curves(runs: dict[str, str | Path], out: Path, target: float | None = None, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, out_dir in runs.items():
        records = [r for r in eval_records(out_dir) if r["iter"] > 0]
        ax.plot([r["iter"] for r in records], [r["val_loss"] for r in records], marker="o", ms=3, label=name)
    if target is not None:
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:.3f}")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def compare_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="inherit.py compare", description="Table and val-loss plot of several runs.")
    p.add_argument("runs", nargs="+", help="NAME=OUT_DIR of each run, in table order")
    p.add_argument("--out", default="", help="PNG of the val-loss curves; a .json of the table is written beside it")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    runs = dict(r.split("=", 1) if "=" in r else (Path(r).name, r) for r in args.runs)
    try:
        rows = [run_summary(name, d) for name, d in runs.items()]
    except (FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(rows))
    if args.out:
        out = Path(args.out)
        plot_curves(runs, out, title=args.title)
        out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


# ----------------------------------------------------------------------------- growth


def train_command(config: str, nproc: int, overrides: list[str]) -> list[str]:
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else:
        launcher = [sys.executable]
    return [*launcher, str(Path(__file__).with_name("train.py")), config, *overrides]


def round_finished(out_dir: Path, max_iters: int) -> bool:
    ckpt = out_dir / "ckpt.pt"
    return ckpt.exists() and load_checkpoint(ckpt)["iter_num"] >= max_iters


def grow_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="inherit.py grow",
        description="Inheritune's growth loop: inherit n = start, start + step, ... layers from the reference, "
        "train each student with CONFIG, stop at the first whose val loss matches the reference's.",
    )
    p.add_argument("--ref", required=True, help="reference checkpoint; its best_val_loss is the target")
    p.add_argument("--config", required=True, help="training config of each round (its max_iters is T)")
    p.add_argument("--start", type=int, default=0, help="first depth; default: half the reference's layers")
    p.add_argument("--step", type=int, default=2)
    p.add_argument("--target", type=float, default=None, help="val loss to reach (default: the reference's)")
    p.add_argument("--out_dir", default="out-grow", help="one sub-folder per round, plus grow.json and grow.png")
    p.add_argument("--nproc", type=int, default=1, help="processes per round (torchrun when above 1)")
    p.add_argument("overrides", nargs="*", help="--key=value overrides for train.py, after a '--'")
    args = p.parse_args(argv)
    from train import parse_config  # here, not at the top: train.py imports this module

    try:
        ref_ckpt = load_checkpoint(args.ref)
        cfg = parse_config([args.config, *args.overrides])
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ref_layers = ref_ckpt["model_args"]["n_layer"]
    target = args.target if args.target is not None else ref_ckpt.get("best_val_loss")
    if target is None or target == float("inf"):
        print(f"error: {args.ref} records no val loss; give --target", file=sys.stderr)
        return 1
    start = args.start or max(1, ref_layers // 2)
    if not 1 <= start <= ref_layers or args.step < 1:
        print(f"error: --start must be in 1..{ref_layers} and --step at least 1", file=sys.stderr)
        return 1
    del ref_ckpt
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "grow.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"target": target, "rounds": []}
    done = {r["layers"]: r for r in state["rounds"]}
    print(f"target val loss {target:.4f} ({ref_layers}-layer reference {args.ref}); T = {cfg.max_iters} steps")

    n = start
    while True:
        round_dir = out_dir / f"n{n}"
        if n in done:
            print(f"round n={n}: finished earlier, val loss {done[n]['val_loss']:.4f}")
        else:
            resume = (round_dir / "ckpt.pt").exists() and not round_finished(round_dir, cfg.max_iters)
            init = ["--init_from=resume"] if resume else ["--init_from=inherit", f"--inherit_from={args.ref}"]
            cmd = train_command(
                args.config, args.nproc, [*args.overrides, f"--n_layer={n}", f"--out_dir={round_dir}", *init]
            )
            print(f"round n={n}: {'resuming' if resume else 'training'}: {' '.join(cmd)}", flush=True)
            t0 = time.time()
            if not round_finished(round_dir, cfg.max_iters):
                result = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                if result.returncode != 0:
                    print(
                        f"error: round n={n} failed (exit code {result.returncode}); rerun to resume", file=sys.stderr
                    )
                    return 1
            row = {**run_summary(f"inheritune n={n}", round_dir), "time_s": round(time.time() - t0, 1)}
            row["gap"] = row["val_loss"] - target
            done[n] = row
            state["rounds"].append(row)
            state_path.write_text(json.dumps(state, indent=2) + "\n")
        if done[n]["val_loss"] <= target or n >= ref_layers:
            break
        n = min(n + args.step, ref_layers)

    rows = [done[k] for k in sorted(done)]
    print(format_table(rows, target))
    matched = [r for r in rows if r["val_loss"] <= target]
    print(f"smallest matching student: n={matched[0]['layers']}" if matched else "no student matched the target")
    plot_curves(
        {r["model"]: out_dir / f"n{r['layers']}" for r in rows}, out_dir / "grow.png", target, "Inheritune growth"
    )
    print(f"wrote {state_path} and {out_dir / 'grow.png'}")
    return 0


def main(argv: list[str]) -> int:
    commands = {"grow": grow_main, "compare": compare_main}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return build_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
