"""Train a GPT (GPT-2, or the Llama family from a Hugging Face reference), on one process or many: DDP, or
FSDP2 (parallel='fsdp') where the model, its gradients and AdamW state do not fit one GPU.

    python train.py config/train_shakespeare.py --max_iters=100
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_large.py
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_large.py --parallel=fsdp --dtype=bf16-true
    python train.py config/cpt_gpt2_replay5.py          # continual pre-training on a mixture with replay

Config files are plain Python assignments to the keys of TrainConfig (configurator.py, which says what
each key means); `--key=value` arguments override them. The resolved config is printed, saved to
out_dir/config.json and stored in every checkpoint. Batches are a pure function of (seed, iteration,
micro-batch index), so a resumed run, or a run on another number of processes with the same global batch,
sees exactly the same data.

Read top to bottom: where the model comes from, the data of a step, one step, the loss estimate, when to
stop, then the run itself (`run`: set-up, and the loop with its eval, checkpoint and log steps).
"""

from __future__ import annotations

import math
import signal
import sys
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

from analyze import AnalysisSettings
from checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    load_model,
    load_sharded,
    next_save_number,
    save_sharded,
    sharded_step,
    source_sha256,
)
from configurator import CONCERNS, SOURCE_KEYS, ConfigError, ScheduleConfig, TrainConfig, parse_config
from data.batches import batch_rng, get_batch
from data.format import corpus_vocabulary
from data.tokenizer import VOCAB_SIZE as GPT2_VOCAB_SIZE
from data.tokenizer import same_vocabulary
from inherit import inherit
from model import GPT, GPTConfig
from runs import DIVERGED_EXIT, MetricsLog, link_checkpoint, write_config
from runtime import (
    Runtime,
    UserError,
    all_reduce_mean,
    autocast_context,
    command_main,
    peak_flops_of,
    setup_runtime,
    tf32_matmuls,
)

# Streams of the batch sampler: training steps, and the fixed batches that eval estimates use.
TRAIN_STREAM, EVAL_STREAMS = 0, {"train": 1, "val": 2}
ROUNDING_STREAM = 3  # the stochastic rounding of bf16_weight_update='stochastic' (beside the dropout seeds)
# GPT returns its logits of the real vocabulary as a view of the padded ones; nothing writes into them in place,
# the one case where FSDP2's warning about returned views matters.
warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")


class NonFiniteLossError(UserError):
    """Training diverged: the loss or the weights became NaN or infinite."""

    exit_code = DIVERGED_EXIT  # launchers (runs.py) tell a diverged run from a failed one by it


# ----------------------------------------------------------------------------- where the model comes from


@dataclass
class Start:
    """Where a run's model comes from."""

    model: GPT
    resume: Checkpoint | None  # the checkpoint a resumed run continues (optimizer state and all)
    resume_shards: Path | None  # where it is a sharded one: the step folder its weights and AdamW state are read from
    inherit: dict | None  # how a student was built from its reference (inherit.provenance)
    continued_from: dict | None  # the trained model a run continues (continual pre-training), with its D_p
    tokenizer: dict | None  # the vocabulary the model was trained with, where known


def build_model(cfg: TrainConfig, vocab_size: int) -> Start:
    """The model of init_from: from scratch (seeded), a student of inherit_from, out_dir's checkpoint to
    resume, or any model source to continue from; cropped to block_size."""
    if cfg.init_from == "scratch":
        torch.manual_seed(cfg.seed)
        return Start(GPT(GPTConfig(**cfg.scratch_model_args(vocab_size))), None, None, None, None, None)
    if cfg.init_from == "inherit":
        if not cfg.inherit_from:
            raise ConfigError("init_from='inherit' needs inherit_from: the reference to inherit from")
        request = dict(n_layer=cfg.n_layer, layers=cfg.inherit_layers, parts=cfg.inherit_parts)
        width = (cfg.n_embd, cfg.n_head)
        # a measured layer choice (inherit_layers 'bi', 'angular') reads the first corpus
        measure = AnalysisSettings(
            next(iter(cfg.mixture)), cfg.inherit_measure_seqs, min(cfg.inherit_measure_len, cfg.block_size)
        )
        model, origin = inherit(
            cfg.inherit_from, request, cfg.seed, cfg.dropout, width, cfg.fresh_embedding_std, measure
        )
        start = Start(model, None, None, origin, None, origin["reference_tokenizer"])
    elif cfg.init_from == "resume":
        source = latest_checkpoint(cfg.out_dir)
        shards = sharded_step(source)
        if shards is not None:  # the weights are read after sharding (initial_state), each process its part
            ckpt = Checkpoint.load(shards, weights=False)
            model = GPT(GPTConfig.from_model_args(ckpt.model_args, dropout=cfg.dropout))
        else:
            model, ckpt = load_model(source, dropout=cfg.dropout)
            if ckpt.optimizer is None:  # a model file (a student of inherit.py) put where a run's checkpoint goes
                raise CheckpointError(
                    f"{source} holds no optimizer state, so it is no run to resume: train from it with "
                    f"--init_from={source} (a fresh optimizer from its weights)"
                )
        start = Start(model, ckpt, shards, ckpt.inherit, ckpt.continued_from, ckpt.vocabulary())
        refuse_another_model(cfg, ckpt, source)
        if model.config.block_size != cfg.block_size:  # AdamW's moments of wpe have the checkpoint's positions
            raise ConfigError(
                f"a resumed run keeps its block_size, {model.config.block_size}: to train at {cfg.block_size}, "
                f"start a new run from the checkpoint (init_from={source}), which crops it"
            )
    else:
        model, ckpt = load_model(cfg.init_from, dropout=cfg.dropout)
        tokens_seen = cfg.init_tokens_seen or ckpt.tokens_seen()
        source = {"source": cfg.init_from, "source_sha256": source_sha256(cfg.init_from), "tokens_seen": tokens_seen}
        if ckpt.dequantized is not None:  # a GGUF: weights dequantised from these tensor types
            source["dequantized"] = ckpt.dequantized
        start = Start(model, None, None, ckpt.inherit, source, ckpt.vocabulary())
    take_source_architecture(cfg, model)
    if model.config.block_size < cfg.block_size:
        raise ConfigError(f"block_size {cfg.block_size} exceeds the source model's {model.config.block_size}")
    if model.config.block_size > cfg.block_size:
        model.crop_block_size(cfg.block_size)
    return start


def take_source_architecture(cfg: TrainConfig, model: GPT) -> None:
    """The keys a model's source decides (SOURCE_KEYS) set to the model's values, so that config.json and the
    checkpoints record the model trained; a value the config sets otherwise is refused, not ignored."""
    for key in SOURCE_KEYS:
        asked, has = getattr(cfg, key), getattr(model.config, key)
        if asked is not None and asked != has:
            raise ConfigError(
                f"{key}={asked} asked, but the model of init_from={cfg.init_from} has {key}={has}: leave {key} "
                f"unset (it follows the model) or set it to {has}"
            )
        setattr(cfg, key, has)


# the config's shape keys, and what decides which parameters AdamW holds state for
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "bias", "scale_attn_by_inverse_layer_idx", "freeze_embedding")


def changed_keys(cfg: TrainConfig, saved: dict, keys: tuple[str, ...]) -> list[str]:
    """The keys that a checkpoint's config records with another value than cfg's; a key cfg leaves unset (None:
    one of SOURCE_KEYS) follows the checkpoint."""
    return [key for key in keys if key in saved and getattr(cfg, key) not in (None, saved[key])]


def refuse_another_model(cfg: TrainConfig, ckpt: Checkpoint, source: Path) -> None:
    """A resume trains the checkpoint's model whatever the config says: a config that asks for another shape
    than the run's own config did is refused, not ignored (config.json would record the shape not trained)."""
    written = {"freeze_embedding": False} | (ckpt.config or {})  # runs from before the key trained it
    changed = [f"{key} {written[key]} (asked {getattr(cfg, key)})" for key in changed_keys(cfg, written, MODEL_KEYS)]
    if changed:
        raise ConfigError(
            f"a resumed run keeps its model and the config it was started with: {', '.join(changed)}; resume "
            f"with the run's values, or start a new run from the checkpoint (init_from={source})"
        )


# ----------------------------------------------------------------------------- data


def step_batches(cfg: TrainConfig, rt: Runtime, vocab_size: int, iter_num: int) -> list[tuple[torch.Tensor, ...]]:
    """This process's micro-batches of one step. Micro-batch indices are global over all processes,
    so the set of batches in a step does not depend on the number of processes."""
    batches = []
    for index in micro_batch_indices(cfg, rt):
        rng = batch_rng(cfg.seed, TRAIN_STREAM, iter_num, index)
        x, y = get_batch(cfg.mixture, "train", cfg.batch_size, cfg.block_size, vocab_size, rng)
        batches.append((to_device(x, rt.device), to_device(y, rt.device)))
    return batches


class Prefetch:
    """The batches of the next step, built on the host (and their copies to the device queued) right after a
    step is queued, while the device runs it, instead of on an idle device before the step."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, vocab_size: int) -> None:
        self.cfg, self.rt, self.vocab_size = cfg, rt, vocab_size
        self.ready: tuple[int, list[tuple[torch.Tensor, ...]]] | None = None

    def build(self, iter_num: int) -> None:
        self.ready = (iter_num, step_batches(self.cfg, self.rt, self.vocab_size, iter_num))

    def take(self, iter_num: int) -> list[tuple[torch.Tensor, ...]]:
        """Step iter_num's batches: those built ahead, else (the first step of a run) built now."""
        if self.ready is None or self.ready[0] != iter_num:
            self.build(iter_num)
        batches, self.ready = self.ready[1], None
        return batches


def dropout_seeds(cfg: TrainConfig, rt: Runtime, iter_num: int) -> list[int]:
    """The seed of the dropout masks of each of this process's micro-batches, by its global index as its batch:
    the masks too depend only on (seed, iteration, index), so neither a resume nor the number of processes
    changes them."""
    indices = micro_batch_indices(cfg, rt)
    return [int(np.random.SeedSequence([cfg.seed, iter_num, index]).generate_state(1)[0]) for index in indices]


def rounding_seed(cfg: TrainConfig, iter_num: int) -> int:
    """The seed of a step's stochastic rounding of the weights: the same on every process (DDP's replicas must
    round alike) and a function of (seed, iteration) alone, so that a resume rounds as the run would have."""
    return int(np.random.SeedSequence([cfg.seed, iter_num, ROUNDING_STREAM]).generate_state(1)[0])


def micro_batch_indices(cfg: TrainConfig, rt: Runtime) -> range:
    """The global indices of this process's micro-batches in a step."""
    local_steps = cfg.gradient_accumulation_steps // rt.world_size
    return range(rt.rank * local_steps, (rt.rank + 1) * local_steps)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def shared_vocabulary(cfg: TrainConfig) -> dict:
    """The vocabulary that every corpus of the run shares (training and held-out ones), checked before any
    training: each folder there, and all tokenized alike."""
    vocabularies = {}
    for data_dir in [*cfg.mixture, *cfg.eval_data_dirs]:
        if not Path(data_dir).is_dir():
            raise ConfigError(f"corpus folder {data_dir} not found")
        vocabularies[data_dir] = corpus_vocabulary(Path(data_dir))
        if vocabularies[data_dir] is None:
            print(f"warning: {data_dir} has no meta.json or meta.pkl; reading its bins as GPT-2 tokens (nanoGPT's way)")
            vocabularies[data_dir] = {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB_SIZE}
    first, *others = vocabularies
    for data_dir in others:
        if not same_vocabulary(vocabularies[data_dir], vocabularies[first]):  # by fingerprint, not by record
            raise ConfigError(
                f"corpora with different tokenizers cannot mix: {first} has {vocabularies[first]}, "
                f"{data_dir} has {vocabularies[data_dir]}"
            )
    return vocabularies[first]


def check_vocabulary(start: Start, vocab: dict, cfg: TrainConfig) -> None:
    """The model reads the corpora's token ids as they were meant: same tokenizer, no id beyond its vocabulary."""
    if not same_vocabulary(start.tokenizer, vocab):
        name = start.tokenizer["tokenizer"]
        fix = (
            "encode it with the characters of the model's own corpus (its meta.pkl)"
            if name.startswith("characters-")
            else f"prepare it with prepare.py --tokenizer {name}"
        )
        raise ConfigError(
            f"the model was trained with the tokenizer {name}, {cfg.data_dir} was made with {vocab['tokenizer']}: {fix}"
        )
    if vocab["vocab_size"] > start.model.config.vocab_size:
        raise ConfigError(
            f"{cfg.data_dir} has a vocabulary of {vocab['vocab_size']}, larger than the model's "
            f"{start.model.config.vocab_size}"
        )


@dataclass
class Teacher:
    """Distillation's teacher: frozen, in eval mode, on the run's device."""

    model: GPT
    alpha: float
    temperature: float


def load_teacher(
    cfg: TrainConfig, device: torch.device, dtype: torch.dtype, vocab: dict, student: GPT
) -> Teacher | None:
    """The teacher of cfg.teacher, which must read the corpora's tokens and give logits over the student's
    vocabulary column for column; its weights in the run's compute dtype (it needs no float32 master copy)."""
    if not cfg.teacher:
        return None
    model, ckpt = load_model(cfg.teacher, device)
    name = (ckpt.vocabulary() or {}).get("tokenizer", "an unknown tokenizer")
    if not same_vocabulary(ckpt.vocabulary(), vocab):
        raise ConfigError(f"teacher {cfg.teacher} reads the tokenizer {name}, the run's corpora {vocab['tokenizer']}")
    if model.config.block_size < cfg.block_size:
        raise ConfigError(
            f"teacher {cfg.teacher} reads {model.config.block_size} positions, the run's block_size is {cfg.block_size}"
        )
    if model.config.vocab_size != student.config.vocab_size:
        raise ConfigError(
            f"teacher {cfg.teacher} has a vocabulary of {model.config.vocab_size}, the student "
            f"{student.config.vocab_size}: their logits must match column for column"
        )
    model.eval().requires_grad_(False)
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return Teacher(model, cfg.distill_alpha, cfg.distill_temperature)


# ----------------------------------------------------------------------------- one step, and the loss estimate


def get_lr(it: int, cfg: ScheduleConfig) -> float:
    """Linear warmup for warmup_iters, cosine decay to min_lr at lr_decay_iters, min_lr after."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    ctx: typing.ContextManager,
    grad_clip: float,
    teacher: Teacher | None = None,
    no_sync: Callable[[], typing.ContextManager] = nullcontext,
    seeds: list[int] | None = None,
    rounding: int | None = None,
) -> torch.Tensor:
    """One optimizer step over the micro-batches; returns the mean of their loss, its cross-entropy and its
    distillation term (a tensor of 3: no device sync). `no_sync` holds back the reduction of gradients over
    processes, which then happens once, on the last micro-batch; `seeds` seed each micro-batch's dropout,
    `rounding` the optimizer step's stochastic rounding."""
    total = torch.zeros(3, device=batches[0][0].device)
    for micro, (x, y) in enumerate(batches):
        if seeds is not None:
            torch.manual_seed(seeds[micro])
        last = micro == len(batches) - 1
        with no_sync() if not last else nullcontext():
            with ctx:
                logits, ce = model(x, y)
                kl = distillation_term(logits, teacher, x, y) if teacher else torch.zeros_like(ce)
            loss = (1 - teacher.alpha) * ce + teacher.alpha * kl if teacher else ce
            scaler.scale(loss / len(batches)).backward()
        total += torch.stack([loss, ce, kl]).detach().float()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if rounding is not None:
        torch.manual_seed(rounding)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total / len(batches)


def distillation_term(logits: torch.Tensor, teacher: Teacher, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """T^2 KL(teacher || student) of the softened distributions, the mean over the positions with a target;
    logits are over the real vocabulary, so padding never takes part. The teacher computes no loss."""
    with torch.no_grad():
        teacher_logits = teacher.model.all_logits(x)
    rows = (-1, logits.size(-1))
    return SoftenedKL.apply(
        logits.reshape(rows), teacher_logits.reshape(rows), y.reshape(-1) != -1, teacher.temperature
    )


# Positions of the distillation term computed at a time: its float32 temporaries are a few tensors of this many
# rows of the vocabulary (0.2 GB each for GPT-2's), not of every position of the micro-batch (1.2 GB at 6 x 1024).
DISTILL_CHUNK = 1024


class SoftenedKL(torch.autograd.Function):
    """T^2 sum_i w_i KL(softmax(t_i / T) || softmax(s_i / T)) over rows i of student logits s and teacher logits
    t, w_i = mask_i / (number of rows in the mask), and its gradient T w_i (softmax(s_i / T) - softmax(t_i / T)),
    both in float32 DISTILL_CHUNK rows at a time in the forward pass: autograd would keep every row's float32
    log-softmaxes for the backward pass instead. The gradient is kept in the logits' dtype, as autograd keeps
    it. The mask weighs the rows, never selects them: no shape depends on the data, so nothing waits for the
    device."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, t: float) -> torch.Tensor:
        weight = mask.float() / mask.sum().clamp_min(1)
        grad = torch.empty(student.shape, dtype=student.dtype, device=student.device)
        total = torch.zeros((), device=student.device)
        for start in range(0, student.size(0), DISTILL_CHUNK):
            rows = slice(start, start + DISTILL_CHUNK)
            log_s = F.log_softmax(student[rows].float() / t, dim=-1)
            log_t = F.log_softmax(teacher[rows].float() / t, dim=-1)
            p_t = log_t.exp()
            total += (weight[rows] * log_t.sub_(log_s).mul_(p_t).sum(dim=-1)).sum()  # in place: 3 temporaries
            grad[rows] = log_s.exp_().sub_(p_t).mul_(t * weight[rows, None])
        ctx.save_for_backward(grad)
        return t * t * total

    @staticmethod
    def backward(ctx, out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * out, None, None, None


def data_parallel(model: GPT, rt: Runtime) -> DDP:
    """DDP with the gradients kept in its communication buckets (views of them): without, DDP keeps a bucket copy
    of every gradient beside it, 4 more bytes per float32 parameter (20 in all with AdamW, not 16)."""
    return DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, gradient_as_bucket_view=True)


def deferred_reduction(
    train_model: torch.nn.Module, model: GPT, cfg: TrainConfig
) -> Callable[[], typing.ContextManager]:
    """What holds back the reduction of a micro-batch's gradients: DDP's no_sync; FSDP's unsharded gradients,
    kept until the last micro-batch unless fsdp_reduce_every_micro_batch; nothing in one process."""
    if isinstance(train_model, DDP):
        return train_model.no_sync
    if isinstance(model, FSDPModule) and not cfg.fsdp_reduce_every_micro_batch:
        return lambda: fsdp_no_sync(model)
    return nullcontext


@contextmanager
def fsdp_no_sync(model: FSDPModule) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


@dataclass
class Losses:
    train: float  # on the training mixture
    val: float  # the mixture's: its corpora's val losses, weighted as they are trained on
    corpora: dict[str, float]  # the val loss of each corpus, training and held-out ones


@torch.no_grad()
def estimate_loss(model: GPT, cfg: TrainConfig, rt: Runtime, vocab_size: int) -> Losses:
    """Mean losses over the same eval_iters batches at every eval, for any world size: of the training split
    of the mixture, and of the val split of every corpus on its own."""
    model.eval()
    train_loss = mean_loss(model, cfg, rt, vocab_size, cfg.mixture, "train")
    corpora = {d: mean_loss(model, cfg, rt, vocab_size, d, "val") for d in [*cfg.mixture, *cfg.eval_data_dirs]}
    model.train()
    val = sum(weight * corpora[data_dir] for data_dir, weight in cfg.mixture.items())
    return Losses(train_loss, val, corpora)


def mean_loss(model: GPT, cfg: TrainConfig, rt: Runtime, vocab_size: int, corpora, split: str) -> float:
    total = torch.zeros(2, device=rt.device)  # sum of losses, number of batches
    # Every process runs as many forward passes (FSDP gathers each unit's weights in every one of them); the
    # batches past eval_iters are computed and not counted.
    per_process = math.ceil(cfg.eval_iters / rt.world_size)
    for k in range(rt.rank, per_process * rt.world_size, rt.world_size):
        counted = float(k < cfg.eval_iters)
        rng = batch_rng(cfg.seed, EVAL_STREAMS[split], 0, min(k, cfg.eval_iters - 1))
        x, y = get_batch(corpora, split, cfg.batch_size, cfg.block_size, vocab_size, rng)
        with autocast_context(rt.device, rt.dtype):
            _, loss = model(to_device(x, rt.device), to_device(y, rt.device))
        total += counted * torch.stack([loss.float(), torch.ones((), device=rt.device)])
    if rt.distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (total[0] / total[1]).item()


# ----------------------------------------------------------------------------- stopping: divergence and signals


def stop_if_diverged(losses: list[float], iter_num: int) -> None:
    bad = [loss for loss in losses if not math.isfinite(loss)]
    if bad:
        raise NonFiniteLossError(f"loss is {bad[0]} at iter {iter_num}; training stopped, last good checkpoint kept")


def stop_if_weights_diverged(model: torch.nn.Module, rt: Runtime, iter_num: int) -> None:
    """Every process stops when any holds a NaN/inf weight: one that stopped alone would leave the others
    waiting forever at their next all-reduce."""
    local = [p.to_local() if isinstance(p, DTensor) else p for p in model.parameters()]  # FSDP: this one's shards
    finite = torch.stack([torch.isfinite(p).all() for p in local]).all()
    if all_reduce_mean((~finite).float(), rt).item() > 0:
        raise NonFiniteLossError(f"parameters became NaN/inf by iter {iter_num}; last good checkpoint kept")


class StopSignal:
    """Turns SIGTERM/SIGINT (preemption, Ctrl-C) into a request to checkpoint and exit cleanly.
    A second Ctrl-C kills at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def requested(self, rt: Runtime, iter_num: int, every: int) -> bool:
        """Whether any process was signalled: all ranks must stop at the same step. One process knows at once;
        several agree every `every` steps (the log steps, which wait for the device anyway), not at every
        step: the all-reduce and its read would make the host wait for the device's queue to drain each step."""
        if not rt.distributed:
            return self.signum is not None
        if iter_num % every:
            return False
        flag = torch.tensor(float(self.signum is not None), device=rt.device)
        return bool(all_reduce_mean(flag, rt).item() > 0)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------- the run


def train(cfg: TrainConfig) -> dict:
    """Run training as configured; returns the last eval record."""
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.backend, cfg.parallel == "fsdp", cfg.cpu_offload)
    stop = StopSignal()
    try:
        with tf32_matmuls():
            return run(cfg, rt, stop)
    finally:
        stop.restore()
        if dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class State:
    """A run in progress: what its checkpoint holds, and a resumed run restores."""

    model: GPT  # the model itself (sharded in place by FSDP), neither compiled nor wrapped by DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # float16's loss scaling; disabled otherwise
    iter_num: int  # optimizer steps taken
    tokens: int  # tokens trained on: the sum of every step's global batch
    best_val_loss: float


def run(cfg: TrainConfig, rt: Runtime, stop: StopSignal) -> dict:
    """Set-up, then the loop: each iteration sets the learning rate, evaluates and checkpoints when due, stops
    when done or signalled, else takes one optimizer step and logs it."""
    cfg.check_processes(rt.world_size)
    cfg.check_fsdp_dtype(str(rt.dtype).removeprefix("torch."))  # dtype 'auto' on a GPU without bfloat16
    if cfg.cpu_offload and rt.device.type != "cuda":
        raise ConfigError("cpu_offload keeps weights and AdamW state in CPU memory instead of a GPU's: it needs CUDA")
    vocab = shared_vocabulary(cfg)
    start = build_model(cfg, vocab["vocab_size"])
    check_vocabulary(start, vocab, cfg)
    teacher = load_teacher(cfg, rt.device, rt.dtype, vocab, start.model)
    if cfg.compile:  # before initial_state shards the blocks with FSDP
        start.model.compile_blocks()
        if teacher:
            teacher.model.compile_blocks()
    state = initial_state(cfg, rt, start)
    resumed_at = state.iter_num if start.resume else None
    start.resume = None  # frees the host copy of the checkpoint's optimizer state before training
    progress = Progress(cfg, rt, state.model, start, resumed_at)
    train_model = data_parallel(state.model, rt) if rt.distributed and cfg.parallel == "ddp" else state.model
    no_sync = deferred_reduction(train_model, state.model, cfg)
    prefetch = Prefetch(cfg, rt, state.model.config.vocab_size)

    last_eval: dict = {}
    progress.restart_clock(state.iter_num)  # after compile and DDP set-up: ms/iter times training steps
    try:
        while True:
            lr = get_lr(state.iter_num, cfg)
            set_lr(state.optimizer, lr)
            # A resumed run skips the eval of its first iteration: the checkpoint was written after it.
            due = state.iter_num % cfg.eval_interval == 0 or state.iter_num == cfg.max_iters
            if due and not (state.iter_num == resumed_at and not cfg.eval_only):
                last_eval = evaluate(state.model, state, cfg, rt, lr)
                progress.eval(last_eval)
                is_best = last_eval["val_loss"] < state.best_val_loss
                state.best_val_loss = min(state.best_val_loss, last_eval["val_loss"])
                if state.iter_num > 0 and not cfg.eval_only and (is_best or cfg.always_save_checkpoint):
                    save_checkpoint(state, cfg, rt, start, vocab, is_best)
            if cfg.eval_only or state.iter_num >= cfg.max_iters:
                break
            if stop.requested(rt, state.iter_num, cfg.log_interval):
                stop_if_weights_diverged(state.model, rt, state.iter_num)
                save_checkpoint(state, cfg, rt, start, vocab, is_best=False)
                if rt.master:
                    print(
                        f"stopped by signal at iter {state.iter_num}; checkpoint saved, resume with --init_from=resume"
                    )
                break

            batches = prefetch.take(state.iter_num)
            seeds = dropout_seeds(cfg, rt, state.iter_num)
            ctx = autocast_context(rt.device, rt.dtype)
            rounding = rounding_seed(cfg, state.iter_num) if cfg.bf16_weight_update == "stochastic" else None
            loss = train_step(
                train_model,
                state.optimizer,
                state.scaler,
                batches,
                ctx,
                cfg.grad_clip,
                teacher,
                no_sync,
                seeds,
                rounding,
            )
            state.iter_num += 1
            prefetch.build(state.iter_num)  # while the device still runs the step just queued
            state.tokens += cfg.tokens_per_iter

            if state.iter_num % cfg.log_interval == 0:
                lossf, ce, kl = all_reduce_mean(loss, rt).tolist()
                stop_if_diverged([lossf], state.iter_num)
                progress.step(
                    state.iter_num, state.tokens, lossf, lr, {"train_ce": ce, "train_kl": kl} if teacher else {}
                )
    except NonFiniteLossError as e:
        progress.diverged(state.iter_num, str(e))  # the run folder says so: launchers do not train it again
        raise
    progress.finish()
    return last_eval


def initial_state(cfg: TrainConfig, rt: Runtime, start: Start) -> State:
    """The model on its device (sharded by FSDP) with its optimizer: fresh, or, resuming, as the checkpoint
    left them."""
    model = start.model.to("cpu" if cfg.cpu_offload else rt.device)  # offloaded: FSDP moves each unit when used
    for p in model.parameters():  # bf16-true: the weights themselves, and so their gradients and AdamW state
        p.data = p.data.to(rt.param_dtype)
    model.gradient_checkpointing = cfg.gradient_checkpointing
    model.transformer.wte.weight.requires_grad_(not cfg.freeze_embedding)  # AdamW takes what requires grad
    ckpt = start.resume
    optimizer_state = ckpt.optimizer if ckpt is not None else None
    if cfg.parallel == "fsdp":
        if optimizer_state is not None:  # torch's format numbers the parameters of the whole model: name them
            optimizer_state = named_optimizer_state(model, make_optimizer(model, cfg, rt), optimizer_state)
        shard(model, cfg, rt)
    optimizer = make_optimizer(model, cfg, rt)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == torch.float16)
    if ckpt is None:
        return State(model, optimizer, scaler, 0, 0, float("inf"))
    configured = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    if start.resume_shards is not None:
        load_sharded(start.resume_shards, model, optimizer)
    elif cfg.parallel == "fsdp":
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_optimizer_state_dict(optimizer, optimizer_state)
    # Loading restored the settings the checkpoint was saved with: the config's win, as config.json records them
    for group, settings in zip(optimizer.param_groups, configured, strict=True):
        group.update(settings)
    report_changed_optimizer_settings(cfg, ckpt, rt)
    # A checkpoint from before the count was kept: its steps times the tokens per step of its own config (that
    # of the run that wrote it), or, where that config is not train.py's, of this run's.
    tokens = ckpt.tokens if ckpt.tokens is not None else ckpt.tokens_from_config(cfg.tokens_per_iter)
    if ckpt.scaler is not None:
        scaler.load_state_dict(ckpt.scaler)
    return State(model, optimizer, scaler, ckpt.iter_num, tokens, ckpt.best_val_loss)


OPTIMIZER_KEYS = ("weight_decay", "beta1", "beta2", "decay_1d_params", "bf16_weight_update")


def report_changed_optimizer_settings(cfg: TrainConfig, ckpt: Checkpoint, rt: Runtime) -> None:
    saved = ckpt.config or {}
    changed = [f"{key} {getattr(cfg, key)} (was {saved[key]})" for key in changed_keys(cfg, saved, OPTIMIZER_KEYS)]
    if changed and rt.master:
        print(f"resumed with the config's AdamW settings: {', '.join(changed)}")


def make_optimizer(model: GPT, cfg: TrainConfig, rt: Runtime) -> torch.optim.Optimizer:
    betas = (cfg.beta1, cfg.beta2)
    if cfg.bf16_weight_update == "stochastic":
        groups = model.optimizer_groups(cfg.weight_decay, cfg.decay_1d_params)
        optimizer = stochastic_rounding_adamw(groups, cfg.learning_rate, betas)
    else:
        optimizer = model.configure_optimizers(
            cfg.weight_decay, cfg.learning_rate, betas, rt.device.type, cfg.decay_1d_params
        )
    create_adamw_state(optimizer)
    return optimizer


def stochastic_rounding_adamw(groups: list[dict], lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """torchao's AdamW that computes the step in float32 and writes bfloat16 weights by stochastic rounding. It is
    the one torchao.optim exports (its __all__) as _AdamW; it compiles its step once per parameter shape."""
    try:
        from torchao.optim import _AdamW
    except ImportError as e:
        raise ConfigError("bf16_weight_update='stochastic' needs torchao: pip install torchao==0.18.0") from e
    return _AdamW(groups, lr=lr, betas=betas, bf16_stochastic_round=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The learning rate of every group; torchao's AdamW holds it as a tensor, which its compiled step reads
    (a new value then recompiles nothing), and refuses a float."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def create_adamw_state(optimizer: torch.optim.Optimizer) -> None:
    """AdamW's state as its first step creates it (zero moments, step 0), made now: a checkpoint written
    before the first step holds it, and DCP's get_state_dict finds it instead of creating it by a zero step
    of its own, which would leave step 1 and so every later bias correction off by one step."""
    lr = float(optimizer.param_groups[0]["lr"])  # one for all groups (configure_optimizers)
    set_lr(optimizer, 0.0)  # the step moves no weight (weight decay too scales by 1 - lr * wd)
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    set_lr(optimizer, lr)
    for state in optimizer.state.values():
        state["step"].zero_()


def named_optimizer_state(model: GPT, optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A checkpoint's AdamW state in torch's format (parameters by number) keyed by parameter name instead,
    through an optimizer of the unsharded model: the form FSDP's optimizer loads, in shards. A checkpoint
    without state (written before the first step by an older version) keeps the optimizer's fresh one."""
    if state["state"]:
        model.load_optimizer_state_dict(optimizer, state)
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))


def shard(model: GPT, cfg: TrainConfig, rt: Runtime) -> None:
    """FSDP2 in place: each block its own unit, then the root with the embeddings, final norm and head (GPT-2's
    tied wte and lm_head stay one parameter, in one unit). Computing in bfloat16 over float32 weights, FSDP
    gathers bfloat16 copies and reduces gradients in float32; bf16-true gathers and reduces its own bfloat16."""
    mixed = MixedPrecisionPolicy()
    if rt.dtype != rt.param_dtype:
        mixed = MixedPrecisionPolicy(param_dtype=rt.dtype, reduce_dtype=torch.float32)
    offload = CPUOffloadPolicy() if cfg.cpu_offload else OffloadPolicy()
    for block in model.transformer.h:
        fully_shard(block, mp_policy=mixed, offload_policy=offload)
    fully_shard(model, mp_policy=mixed, offload_policy=offload)


def evaluate(model: torch.nn.Module, state: State, cfg: TrainConfig, rt: Runtime, lr: float) -> dict:
    """The eval step, on every process: the loss estimates, checked finite, as the eval record."""
    losses = estimate_loss(model, cfg, rt, state.model.config.vocab_size)
    stop_if_diverged([losses.train, losses.val, *losses.corpora.values()], state.iter_num)
    stop_if_weights_diverged(state.model, rt, state.iter_num)
    return {
        "kind": "eval",
        "iter": state.iter_num,
        "tokens": state.tokens,
        "lr": lr,
        "train_loss": losses.train,
        "val_loss": losses.val,
        "val_losses": losses.corpora,
    }


def save_checkpoint(state: State, cfg: TrainConfig, rt: Runtime, start: Start, vocab: dict, is_best: bool) -> None:
    """The checkpoint step, called on every process: out_dir/ckpt.pt (written by the master process), and
    best.pt when its val loss is the best, written first: a kill between the two leaves ckpt.pt at the previous
    step, never best.pt behind the best step; FSDP: every process writes its shards (checkpoint.save_sharded)."""
    out_dir = Path(cfg.out_dir)
    ckpt = Checkpoint(
        model_args=state.model.config.model_args(),
        scaler=state.scaler.state_dict() if state.scaler.is_enabled() else None,
        config=cfg.record(),
        iter_num=state.iter_num,
        tokens=state.tokens,
        best_val_loss=state.best_val_loss,
        inherit=start.inherit,
        continued_from=start.continued_from,
        tokenizer=vocab,
        save_number=next_save_number(out_dir) if rt.master else None,  # the master process writes its fields
    )
    if cfg.parallel == "fsdp":
        save_sharded(out_dir, state.model, state.optimizer, ckpt, is_best)
        return
    if rt.master:
        ckpt.model, ckpt.optimizer = state.model.state_dict(), state.model.optimizer_state_dict(state.optimizer)
        if is_best:
            ckpt.save(out_dir / "best.pt")
            link_checkpoint(out_dir / "best.pt", out_dir / "ckpt.pt")
        else:
            ckpt.save(out_dir / "ckpt.pt")


class Progress:
    """The log step: what the master process prints and records (out_dir/config.json at the start, then every
    eval and log line in metrics.jsonl and wandb), and the clock that times the training steps."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, model: GPT, start: Start, resumed_at: int | None) -> None:
        self.rt, self.model = rt, model
        self.tokens_per_iter = cfg.tokens_per_iter
        self.sequences_per_process = cfg.batch_size * cfg.gradient_accumulation_steps // rt.world_size
        self.peak = cfg.peak_flops or peak_flops_of(rt.device)
        self.metrics, self.wandb = None, None
        if rt.master:
            out_dir = Path(cfg.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            print_config(cfg, rt, model, self.tokens_per_iter)
            facts = {
                "model_args": model.config.model_args(),
                "params": params_without_padding(model),
                "scaling_params": model.get_num_scaling_params(),
            }
            write_config(out_dir, cfg.record(), facts, start.inherit, start.continued_from)
            self.metrics = MetricsLog(out_dir, resumed_at)
            self.wandb = start_wandb(cfg) if cfg.wandb_log else None
            if self.peak is None and rt.device.type == "cuda":
                print(f"no peak FLOP/s known for {torch.cuda.get_device_name(rt.device)}: set peak_flops to see MFU")

    def restart_clock(self, iter_num: int) -> None:
        """ms/iter times training steps only, not set-up, evals or checkpoints."""
        self.t0, self.t0_iter = time.time(), iter_num

    def eval(self, record: dict) -> None:
        if self.rt.master:
            losses = record["val_losses"]
            each = ", ".join(f"{name} {loss:.4f}" for name, loss in losses.items())
            print(
                f"step {record['iter']}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}"
                + (f" ({each})" if len(losses) > 1 else "")
            )
            self.record(record)
        self.restart_clock(record["iter"])

    def diverged(self, iter_num: int, error: str) -> None:
        if self.rt.master:
            self.record({"kind": "diverged", "iter": iter_num, "error": error})

    def step(self, iter_num: int, tokens: int, loss: float, lr: float, parts: dict[str, float]) -> None:
        """A train record; parts are a distilled loss's cross-entropy and distillation term."""
        now = time.time()
        dt = (now - self.t0) / (iter_num - self.t0_iter)
        self.t0, self.t0_iter = now, iter_num
        if not self.rt.master:
            return
        mfu = self.model.estimate_mfu(self.sequences_per_process, dt, self.peak) if self.peak else None
        mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "-"
        parts_text = "".join(f" ({name.removeprefix('train_')} {value:.4f})" for name, value in parts.items())
        print(
            f"iter {iter_num}: loss {loss:.4f}{parts_text}, lr {lr:.2e}, {1000 * dt:.1f} ms/iter, "
            f"{self.tokens_per_iter / dt:,.0f} tok/s, mfu {mfu_text}"
        )
        throughput = {"ms_per_iter": 1000 * dt, "tokens_per_s": self.tokens_per_iter / dt, "mfu": mfu}
        record = {"kind": "train", "iter": iter_num, "tokens": tokens, "train_loss": loss, "lr": lr}
        self.record(record | parts | throughput)

    def record(self, record: dict) -> None:
        self.metrics.write(record)
        if self.wandb:
            self.wandb.log(wandb_record(record), step=record["iter"])

    def finish(self) -> None:
        if self.wandb:
            self.wandb.finish()


def params_without_padding(model: GPT) -> int:
    """get_num_params less the padding rows of wte (and an untied lm_head): they never train, and no checkpoint
    holds them."""
    config = model.config
    padding = (config.padded_vocab_size - config.vocab_size) * config.n_embd
    return model.get_num_params() - padding * (1 if config.tie_embeddings else 2)


def print_config(cfg: TrainConfig, rt: Runtime, model: GPT, tokens_per_iter: int) -> None:
    width = max(len(f.name) for f in fields(cfg))
    for key, value in asdict(cfg).items():
        print(f"{key:<{width}} = {value!r}")
    compute, weights = (str(t).removeprefix("torch.") for t in (rt.dtype, rt.param_dtype))
    print(f"processes: {rt.world_size} ({cfg.parallel}), device: {rt.device}, dtype: {compute}, weights {weights}")
    print(f"model: {model.config.n_layer} layers, {model.get_num_params() / 1e6:.2f}M parameters")
    print(f"tokens per iteration: {tokens_per_iter:,}")


def wandb_record(record: dict) -> dict:
    """A metrics record with each corpus's val loss as its own chart, val_loss/<corpus>."""
    flat = {k: v for k, v in record.items() if k != "val_losses"}
    return flat | {f"val_loss/{name}": loss for name, loss in record.get("val_losses", {}).items()}


def start_wandb(cfg: TrainConfig) -> object:
    import wandb  # imported only when asked for: it is slow to import

    return wandb.init(
        project=cfg.wandb_project, name=cfg.wandb_run_name, config=asdict(cfg), mode=cfg.wandb_mode, dir=cfg.out_dir
    )


@command_main
def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip())
        print("\nconfig keys and their defaults, by concern (configurator.py says what each means):")
        for concern in CONCERNS:
            print(f"{concern.__doc__.splitlines()[0]}")
            for key, default in asdict(concern()).items():
                print(f"  {key} = {default!r}")
        return 0
    train(parse_config(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
