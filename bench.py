"""Benchmark the training step of a config: ms/iter, tokens/s, MFU and peak memory.

    python bench.py config/train_shakespeare.py
    python bench.py config/train_gpt2_large.py --batch_size=4 --variants=eager,compiled --steps=20

Variants, each in a fresh process so that peak memory and compile caches are its own:
  eager     train.py's train_step (fused AdamW, autocast, grad clipping), torch.compile off
  compiled  the same step with torch.compile, as train.py compiles (GPT.compile_blocks)
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

What fits where, before launching: --memory prints the memory one process of --nproc needs for the config's
model (its shapes on the meta device, no weights read) under DDP and FSDP, with float32 weights or bf16-true:
    python bench.py config/inheritune_openllama_3b_13.py --memory --nproc=8
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch._guards import TracingContext, tracing
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from checkpoint import describe
from configurator import TRUE_BF16, ConfigError, TrainConfig, parse_config
from inheritune.training import (
    Teacher,
    deferred_reduction,
    load_teacher,
    make_optimizer,
    planned_model,
    shard,
    train_step,
)
from model import GPT, GPT2_VOCAB, GPTConfig
from runtime import (
    Runtime,
    UserError,
    autocast_context,
    command_main,
    peak_flops_of,
    resolve_device_name,
    resolve_dtype,
    tf32_matmuls,
)

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
        with tf32_matmuls():  # as train.py trains
            queue.put(measure_variant(cfg, variant, steps, warmup))
    except UserError as e:
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
        if variant == "compiled":
            model.compile_blocks()  # as train.py compiles
        # train.py's own checks: the teacher reads GPT-2's tokens, as the benchmark's, and block_size of them
        gpt2 = {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB}
        teacher = load_teacher(cfg, device, dtype, gpt2, model) if variant == "distill" else None
        step = lambda: train_step(model, optimizer, scaler, batches, ctx, cfg.grad_clip, teacher)  # noqa: E731
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


# ----------------------------------------------------------------------------- what fits where


@dataclass
class Memory:
    """Bytes of training state one process holds between steps (GiB in the table)."""

    setting: str
    weights: int
    grads: int  # FSDP holding back its reduction also holds every unit's unsharded gradients
    adamw: int  # its two moments, in the weights' dtype

    @property
    def state(self) -> int:
        return self.weights + self.grads + self.adamw


def local_elements(params: list[torch.Tensor], world_size: int, fsdp: bool) -> int:
    """Elements of the weights one process holds: all, or under FSDP2 its shard of each: dim 0 cut in
    world_size parts of ceil(rows / world_size) rows (the first process's; the last may hold fewer)."""
    if not fsdp:
        return sum(p.numel() for p in params)
    return sum(math.ceil(p.shape[0] / world_size) * (p.numel() // p.shape[0]) for p in params)


def estimate_memory(model: GPT, cfg: TrainConfig, world_size: int, parallel: str, true_bf16: bool) -> Memory:
    """One process's training state under `parallel` with float32 weights or bf16-true: exact, from the shapes."""
    fsdp = parallel == "fsdp"
    weight_bytes = 2 if true_bf16 else 4
    params = list(model.parameters())  # a tied wte/lm_head once
    local = local_elements(params, world_size, fsdp)
    grads = local * weight_bytes
    micro_batches = cfg.gradient_accumulation_steps // world_size
    if fsdp and micro_batches > 1 and not cfg.fsdp_reduce_every_micro_batch:
        grads += sum(p.numel() for p in params) * weight_bytes  # accumulated in the reduction's dtype
    setting = parallel + (" bf16-true" if true_bf16 else "")
    return Memory(setting, local * weight_bytes, grads, 2 * local * weight_bytes)


# ----------------------------------------------------------------------------- the peak of a step, traced


def compute_dtype(cfg: TrainConfig, true_bf16: bool) -> torch.dtype:
    """What the GPUs this is for compute in: the config's dtype ('auto' is bfloat16 there), bf16-true bfloat16."""
    if true_bf16 or cfg.dtype in ("auto", "bfloat16", TRUE_BF16):
        return torch.bfloat16
    return getattr(torch, cfg.dtype)


def teacher_model(cfg: TrainConfig) -> GPT | None:
    """The config's distillation teacher on the meta device (its source's shapes, no weights read)."""
    if not cfg.teacher:
        return None
    with torch.device("meta"):
        return GPT(GPTConfig.from_model_args(describe(cfg.teacher).model_args))


def make_fake(model: torch.nn.Module, param_dtype: torch.dtype, fake_mode: FakeTensorMode) -> torch.nn.Module:
    """A copy of a meta model whose parameters (in param_dtype) and buffers are fake CPU tensors of fake_mode:
    shapes and dtypes, no memory. Tied parameters stay tied."""
    model = copy.deepcopy(model)
    made: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for tensors in (module._parameters, module._buffers):
            for name, t in tensors.items():
                if t is None:
                    continue
                if id(t) not in made:
                    is_param = isinstance(t, torch.nn.Parameter)
                    with fake_mode:
                        fake = torch.empty(t.shape, dtype=param_dtype if is_param else t.dtype)
                    made[id(t)] = torch.nn.Parameter(fake, t.requires_grad) if is_param else fake
                tensors[name] = made[id(t)]
    return model


class StepTracker(MemTracker):
    """torch's MemTracker over the micro-batches of a step. MemTracker refuses a second forward pass of one model
    (its per-module statistics, which this does not read, are per pass): they are cleared before each."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def _pre_fw_hook(self, module: torch.nn.Module, inputs: object) -> None:
        if module is self.model and not self._mod_tracker.is_bw:
            self.reset_mod_stats()
        super()._pre_fw_hook(module, inputs)

    def _update_peak_stats(self, peak_state: object) -> None:
        """The step's peak only, after each op: MemTracker also updates every tracked module's own peak, a walk over
        all modules at every op that made a trace's time grow with the square of the depth."""
        for device, snapshot in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < snapshot["Total"]:
                self._peak_mem[device] = snapshot["Total"]
                self._peak_mem_snap[device] = dict(snapshot)


def traced_peak(
    meta: GPT, teacher: GPT | None, cfg: TrainConfig, world_size: int, parallel: str, true_bf16: bool
) -> int:
    """The most one process's tensors take at any moment of train.py's step, traced by torch's MemTracker on fake
    tensors (every tensor allocated and freed as the real step does, none computed): its weights, gradients and
    AdamW state, activations, logits and their float32 copies, the teacher, FSDP's gathered units. Two
    micro-batches where a process takes more, the second holding the first's gradients. Under FSDP the model is
    sharded as train.py shards it, over the fake default process group of world_size processes that the caller
    set up; under DDP the gradients live from the start, as DDP's gradient buckets (of which they are views) do."""
    dtype = compute_dtype(cfg, true_bf16)
    rt = Runtime(0, world_size, torch.device("cpu"), dtype, torch.bfloat16 if true_bf16 else torch.float32)
    fake_mode = FakeTensorMode()
    model = make_fake(meta, rt.param_dtype, fake_mode)
    distill = teacher and Teacher(
        make_fake(teacher, dtype, fake_mode).eval(), cfg.distill_alpha, cfg.distill_temperature
    )
    model.gradient_checkpointing = cfg.gradient_checkpointing
    model.transformer.wte.weight.requires_grad_(not cfg.freeze_embedding)
    if parallel == "fsdp":
        shard(model, replace(cfg, cpu_offload=False), rt)  # outside the fake mode: its device mesh is real
    tracker = StepTracker(model)
    tracker.track_external(model, distill and distill.model)
    micro_batches = min(2, cfg.gradient_accumulation_steps // world_size)
    with fake_mode, sharding_propagation_apart(), tracker:
        optimizer = make_optimizer(model, cfg, rt)
        if parallel == "ddp" and world_size > 1:
            for p in model.parameters():
                p.grad = torch.zeros_like(p) if p.requires_grad else None
        tokens = (cfg.batch_size, meta.config.block_size)
        batches = [(torch.zeros(tokens, dtype=torch.long), torch.zeros(tokens, dtype=torch.long))] * micro_batches
        scaler = torch.amp.GradScaler("cpu", enabled=False)  # float16's loss scaling: in place, and it reads values
        no_sync = deferred_reduction(model, model, cfg)
        train_step(
            model, optimizer, scaler, batches, autocast_context(rt.device, dtype), cfg.grad_clip, distill, no_sync
        )
    return tracker.get_tracker_snapshot("peak")[rt.device]["Total"]


def sharding_propagation_apart() -> AbstractContextManager:
    """FSDP's DTensors work out each op's output shape by running it on tensors of the full, unsharded shape,
    in the fake mode they find (a tracing context's first, else the active one). MemTracker leaves out what runs
    in a fake mode other than the one it was entered in, but the active one is that mode: without a fake mode of
    their own those full-size tensors are counted (a 2-layer GPT-2's AdamW step counted twice its whole
    unsharded state per process of 8). In eager code only DTensor's propagation reads a tracing context."""
    return tracing(TracingContext(FakeTensorMode()))


@contextmanager
def fake_process_group(world_size: int) -> Iterator[None]:
    """torch's fake default process group of world_size processes (collectives that move nothing), for FSDP's
    trace; this process must have none of its own."""
    if dist.is_initialized():
        raise ValueError("bench.py --memory traces FSDP in a process of its own: this one has a process group")
    dist.init_process_group("fake", rank=0, world_size=world_size, store=dist.HashStore())
    try:
        yield
    finally:
        dist.destroy_process_group()


def print_memory(cfg: TrainConfig, world_size: int) -> None:
    cfg.check_processes(world_size)
    model = planned_model(cfg)
    teacher = teacher_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    compute = {"float32": "float32 (bf16-true: bfloat16)", "float16": "float16"}.get(cfg.dtype, "bfloat16")
    print(
        f"{params / 1e6:,.1f}M parameters ({model.config.n_layer} layers, width {model.config.n_embd}), "
        f"{world_size} processes, micro-batch {cfg.batch_size} x {model.config.block_size}, computing in {compute}"
        + (", gradient checkpointing" if cfg.gradient_checkpointing else "")
        + (f", teacher of {sum(p.numel() for p in teacher.parameters()) / 1e6:,.1f}M parameters" if teacher else "")
    )
    gib = 2**30
    print(f"{'GiB per process':<16} {'weights':>8} {'grads':>8} {'AdamW':>8} {'step peak':>10}")
    host = []
    with fake_process_group(world_size):
        for parallel in ("ddp", "fsdp") if cfg.dtype != "float16" else ("ddp",):
            for true_bf16 in (False, True):
                m = estimate_memory(model, cfg, world_size, parallel, true_bf16)
                peak = traced_peak(model, teacher, cfg, world_size, parallel, true_bf16)
                if parallel == "fsdp" and cfg.cpu_offload:  # FSDP keeps them in host memory, the AdamW step too
                    host.append(m.state)
                    peak -= m.state
                    m = replace(m, weights=0, grads=0, adamw=0)
                print(
                    f"{m.setting:<16} {m.weights / gib:>8.2f} {m.grads / gib:>8.2f} {m.adamw / gib:>8.2f} "
                    f"{peak / gib:>10.2f}"
                )
    if cfg.dtype == "float16":
        print("fsdp: refused with float16 (train.py's FSDP computes in bfloat16 or float32)")
    if host:
        print(
            f"cpu_offload: FSDP's weights, gradients and AdamW state are in CPU memory, {host[0] / gib:.2f} GiB "
            f"per process ({host[1] / gib:.2f} bf16-true)"
        )
    print(
        "step peak: one step traced on fake tensors (torch's MemTracker), the state included; the CUDA context, "
        "kernels' workspaces and the allocator's slack come on top"
    )


@command_main
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    variants_help = f"comma-separated subset of {VARIANTS} (distill needs --teacher)"
    parser.add_argument("--variants", default="eager,compiled,plain", help=variants_help)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--bench_peak_flops", type=float, default=0.0, help="device peak FLOP/s for MFU")
    parser.add_argument("--memory", action="store_true", help="print the memory estimate instead of measuring")
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) of the memory estimate")
    args, rest = parser.parse_known_args(argv)
    if args.memory:
        if args.nproc < 1:
            parser.error("--nproc must be at least 1")
        print_memory(parse_config(rest), args.nproc)
        return 0
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    cfg = parse_config(rest)
    if "distill" in variants and not cfg.teacher:
        raise ConfigError("the distill variant needs a teacher: --teacher=PATH (any model source)")
    peak, peak_label = peak_for(cfg, args.bench_peak_flops)
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
