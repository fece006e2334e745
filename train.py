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

Read top to bottom: the data of a step, the loss estimate, when to stop, then the run itself (`run`: set-up,
and the loop with its eval, checkpoint and log steps). Where the model comes from and the optimizer step itself
are inheritune/training.py's (`build_model`, `make_optimizer`, `train_step`), shared with bench.py, which times
and traces that same step.
"""

from __future__ import annotations

import math
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
from torch.distributed.tensor import DTensor

from checkpoint import (
    Checkpoint,
    checkpoint_paths,
    load_sharded,
    next_save_number,
    save_sharded,
)
from configurator import CONCERNS, ConfigError, ScheduleConfig, TrainConfig, parse_config
from data.batches import batch_rng, get_batch
from data.format import corpus_vocabulary
from data.tokenizer import VOCAB_SIZE as GPT2_VOCAB_SIZE
from data.tokenizer import same_vocabulary
from inheritune.training import (
    Start,
    build_model,
    changed_keys,
    data_parallel,
    deferred_reduction,
    load_teacher,
    make_optimizer,
    named_optimizer_state,
    set_lr,
    shard,
    train_step,
)
from model import GPT
from runs import DIVERGED_EXIT, MetricsLog, link_checkpoint, write_config
from runtime import (
    Runtime,
    UserError,
    all_reduce_mean,
    autocast_context,
    command_main,
    output_folder,
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
        raise NonFiniteLossError(f"loss is {bad[0]} at iter {iter_num}; training stopped")


def stop_if_weights_diverged(model: torch.nn.Module, rt: Runtime, iter_num: int) -> None:
    """Every process stops when any holds a NaN/inf weight: one that stopped alone would leave the others
    waiting forever at their next all-reduce."""
    local = [p.to_local() if isinstance(p, DTensor) else p for p in model.parameters()]  # FSDP: this one's shards
    finite = torch.stack([torch.isfinite(p).all() for p in local]).all()
    if all_reduce_mean((~finite).float(), rt).item() > 0:
        raise NonFiniteLossError(f"parameters became NaN/inf by iter {iter_num}; training stopped")


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
    output_folder(cfg.out_dir)
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
        kept = "its last good checkpoint is kept" if checkpoint_paths(Path(cfg.out_dir)) else "no checkpoint was saved"
        raise NonFiniteLossError(f"{e}; {kept}") from None
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
