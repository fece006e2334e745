"""Benchmark the training step of a config: ms/iter, tokens/s, MFU and peak memory.

    python bench.py config/train_shakespeare.py
    python bench.py config/train_gpt2_large.py --batch_size=4 --variants=eager,compiled --steps=20

Variants, each in a fresh process so that peak memory and compile caches are its own:
  eager     train.py's train_step (fused AdamW, autocast, grad clipping), torch.compile off
  compiled  the same step with torch.compile
  plain     a plain nanoGPT-style loop on the same model: forward, backward, clip, unfused AdamW step
  distill   train_step with the config's teacher (--teacher=PATH): the same step plus the teacher's forward
            and the distillation term (MFU counts the student's training FLOPs only)
The step runs on random tokens, so no prepared corpus is needed and data loading is not timed.
Arguments other than the benchmark's own are config files and --key=value overrides, as for train.py.
MFU is against --bench_peak_flops (or the config's peak_flops), else the device's known peak (runtime.PEAK_FLOPS,
by exact device name); on other devices it is against the matmul throughput measured here, and says so.
On a GPU, GPT-2 medium as the paper trains it (bf16, compile on, 49,152 tokens per step):
    python bench.py config/train_gpt2_medium.py --variants=eager,compiled --steps=20
The cost of distillation, a 16-layer student of GPT-2 medium taught by it:
    python bench.py config/train_gpt2_medium.py --n_layer=16 --variants=eager,distill --teacher=gpt2-medium
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time

import torch

from checkpoint import CheckpointError
from configurator import ConfigError, TrainConfig, parse_config
from hf import ConversionError
from model import GPT, GPT2_VOCAB, GPTConfig
from runtime import autocast_context, peak_flops_of, resolve_device_name, resolve_dtype
from train import load_teacher, train_step

VARIANTS = ("eager", "compiled", "plain", "distill")


def plain_step(model: GPT, optimizer: torch.optim.Optimizer, batches: list, ctx, grad_clip: float) -> None:
    """The training step as nanoGPT's loop writes it (float32 here: no GradScaler needed)."""
    for x, y in batches:
        with ctx:
            _, loss = model(x, y)
        (loss / len(batches)).backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def plain_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    """nanoGPT's optimizer: the same decay groups, fused only on CUDA."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


def measured_matmul_flops(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul: the practical peak of a device with no published one."""
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    for _ in range(3):
        a @ a
    n, t = 10, time.perf_counter()
    for _ in range(n):
        a @ a
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * 2048**3 * n / (time.perf_counter() - t)


def run_variant(cfg: TrainConfig, variant: str, steps: int, warmup: int, queue: mp.Queue) -> None:
    """One variant in its own process: its figures, or the one-line error that stopped it, on the queue."""
    try:
        queue.put(measure_variant(cfg, variant, steps, warmup))
    except (CheckpointError, ConversionError, OSError, ValueError) as e:
        queue.put({"error": str(e)})


def measure_variant(cfg: TrainConfig, variant: str, steps: int, warmup: int) -> dict:
    device = torch.device(resolve_device_name(cfg.device))
    dtype = resolve_dtype(cfg.dtype, device)
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(**cfg.scratch_model_args(GPT2_VOCAB))).to(device)
    accum = cfg.gradient_accumulation_steps
    gen = torch.Generator().manual_seed(0)
    batches = [
        tuple(torch.randint(0, GPT2_VOCAB, (cfg.batch_size, cfg.block_size), generator=gen).to(device) for _ in "xy")
        for _ in range(accum)
    ]
    ctx = autocast_context(device, dtype)
    if variant == "plain":
        optimizer = plain_optimizer(model, cfg)
        step = lambda: plain_step(model, optimizer, batches, ctx, cfg.grad_clip)  # noqa: E731
    else:
        betas = (cfg.beta1, cfg.beta2)
        optimizer = model.configure_optimizers(
            cfg.weight_decay, cfg.learning_rate, betas, device.type, cfg.decay_1d_params
        )
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        step_model = torch.compile(model) if variant == "compiled" else model
        # train.py's own checks: the teacher reads GPT-2's tokens, as the benchmark's, and block_size of them
        gpt2 = {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB}
        teacher = load_teacher(cfg, device, gpt2, model) if variant == "distill" else None
        step = lambda: train_step(step_model, optimizer, scaler, batches, ctx, cfg.grad_clip, teacher)  # noqa: E731
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)  # robust to the other tenants of a shared machine
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device)
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = cfg.tokens_per_iter
    result = dict(
        variant=variant,
        ms_per_iter=1000 * dt,
        tokens_per_s=tokens / dt,
        peak_mem=peak_mem,
        flops=model.flops_per_token() * tokens / dt,
        warmup_s=warmup_s,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        params=model.get_num_params(),
    )
    return result


def peak_for(cfg: TrainConfig, override: float) -> tuple[float, str]:
    device = torch.device(resolve_device_name(cfg.device))
    if override or cfg.peak_flops:
        return override or cfg.peak_flops, "given peak"
    known = peak_flops_of(device)
    if known:
        return known, f"{torch.cuda.get_device_name(device)} bf16 peak"
    measured = measured_matmul_flops(device, resolve_dtype(cfg.dtype, device))
    return measured, f"measured {resolve_dtype(cfg.dtype, device)} matmul peak {measured / 1e9:.0f} GFLOP/s"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    variants_help = f"comma-separated subset of {VARIANTS} (distill needs --teacher)"
    parser.add_argument("--variants", default="eager,compiled,plain", help=variants_help)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--bench_peak_flops", type=float, default=0.0, help="device peak FLOP/s for MFU")
    args, rest = parser.parse_known_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    try:
        cfg = parse_config(rest)
        if "distill" in variants and not cfg.teacher:
            raise ConfigError("the distill variant needs a teacher: --teacher=PATH (any model source)")
        peak, peak_label = peak_for(cfg, args.bench_peak_flops)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    tokens = cfg.tokens_per_iter
    print(f"{cfg.n_layer} layers, width {cfg.n_embd}, {tokens:,} tokens/iter; MFU against {peak_label}")
    print(f"{'variant':<10} {'ms/iter':>10} {'tokens/s':>12} {'MFU':>7} {'peak mem':>10} {'warmup s':>9}")
    ctx = mp.get_context("spawn")
    for variant in variants:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_variant, args=(cfg, variant, args.steps, args.warmup, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"error: variant {variant} failed (exit code {proc.exitcode})", file=sys.stderr)
            return 1
        r = queue.get(timeout=10)
        if "error" in r:
            print(f"error: variant {variant}: {r['error']}", file=sys.stderr)
            return 1
        mfu = 100 * r["flops"] / peak
        print(
            f"{variant:<10} {r['ms_per_iter']:>10.1f} {r['tokens_per_s']:>12,.0f} {mfu:>6.1f}% "
            f"{r['peak_mem'] / 2**20:>7,.0f} MiB {r['warmup_s']:>9.1f}"
        )
    memory = "CUDA max allocated" if r["device"].startswith("cuda") else "process peak RSS"
    print(f"device {r['device']}, dtype {r['dtype']}, {r['params'] / 1e6:.2f}M parameters; peak mem is {memory}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
