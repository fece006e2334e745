"""Train a GPT (GPT-2, or the Llama family from a Hugging Face reference), on one process or many (DDP).

    python train.py config/train_shakespeare.py --max_iters=100
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_large.py
    python train.py config/cpt_gpt2_replay5.py          # continual pre-training on a mixture with replay

Config files are plain Python assignments to the keys of TrainConfig below; `--key=value` arguments
override them. The resolved config is printed, saved to out_dir/config.json and stored in every
checkpoint. Batches are a pure function of (seed, iteration, micro-batch index), so a resumed run,
or a run on another number of processes with the same global batch, sees exactly the same data.
"""

from __future__ import annotations

import ast
import math
import os
import runpy
import signal
import sys
import time
import types
import typing
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data.batches import batch_rng, get_batch
from data.format import corpus_vocabulary
from data.tokenizer import VOCAB_SIZE as GPT2_VOCAB_SIZE
from data.tokenizer import same_vocabulary
from inherit import InheritError, inherit
from model import (
    DTYPES,
    GPT,
    Checkpoint,
    CheckpointError,
    GPTConfig,
    autocast_context,
    load_model,
    peak_flops_of,
    resolve_device_name,
    resolve_dtype,
    source_sha256,
)
from runs import MetricsLog, mark_best, write_config

# Streams of the batch sampler: training steps, and the fixed batches that eval estimates use.
TRAIN_STREAM, EVAL_STREAMS = 0, {"train": 1, "val": 2}


class ConfigError(ValueError):
    """A config that cannot be run: unknown key, wrong type, or an impossible value."""


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss or the weights became NaN or infinite."""


@dataclass
class TrainConfig:
    """Every key of nanoGPT's train.py, with nanoGPT's meaning, and this project's own."""

    # I/O
    out_dir: str = "out"
    # The corpus: nanoGPT's `dataset` names the folder data/<dataset>; `data_dir` is the folder itself, anywhere.
    # Give either (both must name the same folder). It holds train.bin, val.bin and meta.json (this project's
    # prepare scripts) or nanoGPT's meta.pkl (a character vocabulary), or only the bins (GPT-2 tokens).
    dataset: str = ""
    # A mixture of corpora by weight: {"data/target": 0.8, "data/openwebtext": 0.2} in a config file,
    # data/target:0.8,data/openwebtext:0.2 on the command line. Each row of every batch comes from a corpus
    # drawn by weight; the val loss is the weighted mean of the corpora's. (dataset: the first corpus.)
    data_dir: str | dict[str, float] = ""
    eval_data_dirs: str = ""  # corpora evaluated at every eval but not trained on, comma-separated (forgetting)
    # 'scratch', 'resume' (out_dir/ckpt.pt), 'inherit' (a student of inherit_from, see below), a checkpoint
    # path, or a Hugging Face GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', or a local folder)
    init_from: str = "scratch"
    # Tokens the init_from model was trained on (D_p of continual pre-training's scaling law), recorded with
    # the run; 0: what its checkpoint records (this project's do), unknown for Hugging Face models.
    init_tokens_seen: int = 0
    eval_interval: int = 2000
    eval_iters: int = 200  # batches per split in each loss estimate, spread over all processes
    eval_only: bool = False  # evaluate once and exit
    log_interval: int = 1
    always_save_checkpoint: bool = True  # save ckpt.pt at every eval; False: only when the val loss improves
    # logging
    wandb_log: bool = False
    wandb_project: str = "inheritune"
    wandb_run_name: str = "run"
    wandb_mode: str = "offline"  # 'offline' needs no network (`wandb sync` later), 'online', 'disabled'
    # data
    batch_size: int = 12  # micro-batch size of one process
    block_size: int = 1024  # a model from a checkpoint with more positions is cropped to it, as in nanoGPT
    gradient_accumulation_steps: int = 40  # micro-batches per step over ALL processes
    # model (ignored when the model comes from a checkpoint, except dropout)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False
    scale_attn_by_inverse_layer_idx: bool = False  # attention logits of layer l also divided by l + 1
    # Inheritune (init_from='inherit'): an n_layer student of the reference inherit_from (any init_from source)
    inherit_from: str = ""
    inherit_layers: str = ""  # reference blocks in order, e.g. '0-11,14'; empty: blocks 0..n_layer-1
    # What the student copies: 'all' the reference's parts, or any of wte (token embedding, and the head when
    # tied), head (an untied head), wpe (a learned position embedding), ln_f (final norm), and of each
    # inherited block attn, mlp, ln. The authors' code: GPT-2 'wte,attn,mlp,ln', OpenLLaMA 'head,attn,mlp,ln'.
    inherit_parts: str = "all"
    # AdamW
    learning_rate: float = 6e-4
    max_iters: int = 600000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    # learning-rate schedule: linear warmup, then cosine decay to min_lr at lr_decay_iters
    decay_lr: bool = True
    warmup_iters: int = 2000
    lr_decay_iters: int = 600000
    min_lr: float = 6e-5
    # system
    backend: str = "auto"  # DDP backend: 'nccl', 'gloo'; 'auto': nccl on CUDA, gloo on CPU
    device: str = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
    dtype: str = "auto"  # 'auto' (bfloat16 on GPUs that have it, float16 on others, float32 on CPU) or a name
    compile: bool = True
    gradient_checkpointing: bool = False  # recompute each block in the backward pass: activations of one block
    seed: int = 1337
    peak_flops: float = 0.0  # device peak FLOP/s for MFU; 0: the known value of the GPU (model.PEAK_FLOPS)

    def __post_init__(self) -> None:
        if isinstance(self.data_dir, str) and ("," in self.data_dir or weight_of(self.data_dir) is not None):
            self.data_dir = parse_mixture(self.data_dir)
        self._check_corpora()
        self._resolve_corpus()
        positive = ("batch_size", "block_size", "gradient_accumulation_steps", "n_layer", "n_head", "n_embd")
        for key in positive + ("eval_interval", "eval_iters", "log_interval"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"wandb_mode must be 'offline', 'online' or 'disabled', got {self.wandb_mode!r}")
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ConfigError(f"backend must be 'auto', 'nccl' or 'gloo', got {self.backend!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_iters < 0 or self.warmup_iters < 0:
            raise ConfigError("max_iters and warmup_iters must be non-negative")

    def _check_corpora(self) -> None:
        if isinstance(self.data_dir, dict):
            if not self.data_dir:
                raise ConfigError("data_dir is an empty mixture: name at least one corpus")
            bad = {path: w for path, w in self.data_dir.items() if not (math.isfinite(w) and w > 0)}
            if bad:
                raise ConfigError(f"mixture weights must be positive numbers, got {bad}")
        both = set(self.mixture) & set(self.held_out)
        if both:
            raise ConfigError(f"{sorted(both)} in both data_dir and eval_data_dirs: a corpus trained on is evaluated")

    def _resolve_corpus(self) -> None:
        """Fill in whichever of dataset / data_dir was not given, so that checkpoints carry both (nanoGPT's
        sample.py finds a character vocabulary through config['dataset']; a mixture's is its first corpus)."""
        if not self.dataset and not self.data_dir:
            self.dataset = "openwebtext"  # nanoGPT's default
        first = next(iter(self.data_dir)) if isinstance(self.data_dir, dict) else self.data_dir
        named = os.path.abspath(os.path.join("data", self.dataset)) if self.dataset else None
        if first and named and named != os.path.abspath(first):
            raise ConfigError(
                f"dataset {self.dataset!r} (folder {named}) and data_dir {first!r} name different "
                "folders: give one of them"
            )
        if not self.data_dir:
            self.data_dir = os.path.join("data", self.dataset)
        elif not self.dataset:
            inside = os.path.relpath(os.path.abspath(first), os.path.abspath("data"))
            self.dataset = inside if not inside.startswith("..") else os.path.abspath(first)

    @property
    def mixture(self) -> dict[str, float]:
        """The training corpora and their weights, summing to 1 (one corpus: weight 1)."""
        if isinstance(self.data_dir, str):
            return {self.data_dir: 1.0} if self.data_dir else {}
        total = sum(self.data_dir.values())
        return {path: weight / total for path, weight in self.data_dir.items()}

    @property
    def held_out(self) -> list[str]:
        """The corpora of eval_data_dirs: evaluated, never trained on."""
        return [path.strip() for path in self.eval_data_dirs.split(",") if path.strip()]


def weight_of(item: str) -> float | None:
    """The weight of 'path:weight', or None where the part after the last ':' is no number."""
    _, sep, weight = item.rpartition(":")
    try:
        return float(weight) if sep else None
    except ValueError:
        return None


def parse_mixture(text: str) -> dict[str, float]:
    """'data/target:0.8,data/openwebtext:0.2' -> {'data/target': 0.8, 'data/openwebtext': 0.2}."""
    mixture = {}
    for item in (part.strip() for part in text.split(",")):
        weight = weight_of(item)
        if weight is None:
            raise ConfigError(f"data_dir mixture item {item!r} has no weight: write it as path:weight, e.g. {item}:0.5")
        mixture[item.rpartition(":")[0]] = weight
    return mixture


# ----------------------------------------------------------------------------- config


def config_keys() -> str:
    return ", ".join(f.name for f in fields(TrainConfig))


def check_type(key: str, value: object) -> object:
    """The value converted to the declared type of key, or a ConfigError that names both."""
    hints = typing.get_type_hints(TrainConfig)
    if key not in hints:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {config_keys()}")
    expected = hints[key]
    for option in typing.get_args(expected) or (expected,):  # a union's members, or the one type
        if option is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if typing.get_origin(option) is dict and isinstance(value, dict):
            numbers = all(isinstance(w, int | float) and not isinstance(w, bool) for w in value.values())
            if all(isinstance(k, str) for k in value) and numbers:
                return {k: float(w) for k, w in value.items()}
        if type(value) is option:
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in typing.get_args(expected) or (expected,))
    raise ConfigError(f"{key} must be {names}, got {type(value).__name__} {value!r}")


def parse_override(arg: str) -> tuple[str, object]:
    """`--key=value` -> (key, value); strings are taken as they are, other types as Python literals."""
    key, sep, raw = arg.removeprefix("--").partition("=")
    if not sep:
        raise ConfigError(f"expected --key=value, got {arg!r}")
    expected = typing.get_type_hints(TrainConfig).get(key)
    if expected is None:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {config_keys()}")
    if str in (typing.get_args(expected) or (expected,)):
        return key, raw  # data_dir's mixture form is parsed by TrainConfig
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ConfigError(f"{key} must be {expected.__name__}, got {raw!r}") from None


def read_config_file(path: str) -> dict[str, object]:
    """The assignments of a config file, run in a namespace of its own (never in this module's)."""
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} not found")
    namespace = runpy.run_path(path)
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and not isinstance(v, (types.ModuleType, types.FunctionType, type))
    }


def parse_config(argv: list[str]) -> TrainConfig:
    """Defaults, then each config file in order, then --key=value overrides."""
    values: dict[str, object] = {}
    for arg in argv:
        if arg.startswith("--"):
            key, value = parse_override(arg)
            values[key] = value
        else:
            values.update(read_config_file(arg))
    return TrainConfig(**{key: check_type(key, value) for key, value in values.items()})


# ----------------------------------------------------------------------------- distributed setup


@dataclass
class Runtime:
    """Where this process runs: its rank among all processes, its device and its precision."""

    rank: int
    world_size: int
    device: torch.device
    dtype: torch.dtype

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.world_size > 1


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Join the process group when launched by torchrun (backend 'auto': nccl on CUDA, gloo on CPU)."""
    device_name = resolve_device_name(cfg.device)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1:
        local_rank = int(os.environ["LOCAL_RANK"])
        if device_name.startswith("cuda"):
            device_name = f"cuda:{local_rank}"
            torch.cuda.set_device(device_name)
        auto = "nccl" if device_name.startswith("cuda") else "gloo"
        dist.init_process_group(backend=auto if cfg.backend == "auto" else cfg.backend)
    device = torch.device(device_name)
    return Runtime(rank, world_size, device, resolve_dtype(cfg.dtype, device))


def all_reduce_mean(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.ddp:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / rt.world_size
    return t


# ----------------------------------------------------------------------------- model


@dataclass
class Start:
    """Where a run's model comes from."""

    model: GPT
    resume: Checkpoint | None  # the checkpoint a resumed run continues (optimizer state and all)
    inherit: dict | None  # how a student was built from its reference (inherit.provenance)
    init: dict | None  # the trained model a run continues from (continual pre-training), with its D_p
    tokenizer: dict | None  # the vocabulary the model was trained with, where known


def build_model(cfg: TrainConfig, vocab_size: int) -> Start:
    if cfg.init_from == "scratch":
        model_args = dict(
            n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
            bias=cfg.bias, dropout=cfg.dropout, vocab_size=vocab_size,
            scale_attn_by_inverse_layer_idx=cfg.scale_attn_by_inverse_layer_idx,
        )  # fmt: skip
        torch.manual_seed(cfg.seed)
        return Start(GPT(GPTConfig(**model_args)), None, None, None, None)
    if cfg.init_from == "inherit":
        if not cfg.inherit_from:
            raise ConfigError("init_from='inherit' needs inherit_from: the reference to inherit from")
        request = dict(n_layer=cfg.n_layer, layers=cfg.inherit_layers, parts=cfg.inherit_parts)
        model, origin = inherit(cfg.inherit_from, request, cfg.seed, cfg.dropout, width=(cfg.n_embd, cfg.n_head))
        start = Start(model, None, origin, None, origin["reference_tokenizer"])
    elif cfg.init_from == "resume":
        model, ckpt = load_model(Path(cfg.out_dir) / "ckpt.pt", dropout=cfg.dropout)
        start = Start(model, ckpt, ckpt.inherit, ckpt.init, ckpt.tokenizer)
    else:
        model, ckpt = load_model(cfg.init_from, dropout=cfg.dropout)
        tokens_seen = cfg.init_tokens_seen or ckpt.tokens_seen()
        init = {"source": cfg.init_from, "source_sha256": source_sha256(cfg.init_from), "tokens_seen": tokens_seen}
        start = Start(model, None, ckpt.inherit, init, ckpt.tokenizer)
    if model.config.block_size < cfg.block_size:
        raise ConfigError(f"block_size {cfg.block_size} exceeds the source model's {model.config.block_size}")
    if model.config.block_size > cfg.block_size:
        model.crop_block_size(cfg.block_size)
    return start


# ----------------------------------------------------------------------------- data


def step_batches(cfg: TrainConfig, rt: Runtime, vocab_size: int, iter_num: int) -> list[tuple[torch.Tensor, ...]]:
    """This process's micro-batches of one step. Micro-batch indices are global over all processes,
    so the set of batches in a step does not depend on the number of processes."""
    local_steps = cfg.gradient_accumulation_steps // rt.world_size
    batches = []
    for micro in range(local_steps):
        rng = batch_rng(cfg.seed, TRAIN_STREAM, iter_num, rt.rank * local_steps + micro)
        x, y = get_batch(cfg.mixture, "train", cfg.batch_size, cfg.block_size, vocab_size, rng)
        batches.append((to_device(x, rt.device), to_device(y, rt.device)))
    return batches


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def corpora_vocabulary(cfg: TrainConfig) -> dict:
    """The vocabulary that every corpus of the run shares (training and held-out ones), checked before any
    training: each folder there, and all tokenized alike."""
    vocabularies = {}
    for data_dir in [*cfg.mixture, *cfg.held_out]:
        if not Path(data_dir).is_dir():
            raise ConfigError(f"corpus folder {data_dir} not found")
        vocabularies[data_dir] = corpus_vocabulary(Path(data_dir))
        if vocabularies[data_dir] is None:
            print(f"warning: {data_dir} has no meta.json or meta.pkl; reading its bins as GPT-2 tokens (nanoGPT's way)")
            vocabularies[data_dir] = {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB_SIZE}
    first, *others = vocabularies
    for data_dir in others:
        if vocabularies[data_dir] != vocabularies[first]:
            raise ConfigError(
                f"corpora with different tokenizers cannot mix: {first} has {vocabularies[first]}, "
                f"{data_dir} has {vocabularies[data_dir]}"
            )
    return vocabularies[first]


# ----------------------------------------------------------------------------- one step, and the loss estimate


def get_lr(it: int, cfg: TrainConfig) -> float:
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
) -> torch.Tensor:
    """One optimizer step over the micro-batches; returns their mean loss (a tensor: no device sync)."""
    total = torch.zeros((), device=batches[0][0].device)
    for micro, (x, y) in enumerate(batches):
        # DDP: all-reduce gradients once per step, on the last micro-batch only.
        last = micro == len(batches) - 1
        sync = model.no_sync() if isinstance(model, DDP) and not last else nullcontext()
        with sync:
            with ctx:
                _, loss = model(x, y)
            scaler.scale(loss / len(batches)).backward()
        total += loss.detach()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total / len(batches)


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
    corpora = {d: mean_loss(model, cfg, rt, vocab_size, d, "val") for d in [*cfg.mixture, *cfg.held_out]}
    model.train()
    val = sum(weight * corpora[data_dir] for data_dir, weight in cfg.mixture.items())
    return Losses(train_loss, val, corpora)


def mean_loss(model: GPT, cfg: TrainConfig, rt: Runtime, vocab_size: int, corpora, split: str) -> float:
    total = torch.zeros(2, device=rt.device)  # sum of losses, number of batches
    for k in range(rt.rank, cfg.eval_iters, rt.world_size):
        rng = batch_rng(cfg.seed, EVAL_STREAMS[split], 0, k)
        x, y = get_batch(corpora, split, cfg.batch_size, cfg.block_size, vocab_size, rng)
        with autocast_context(rt.device, rt.dtype):
            _, loss = model(to_device(x, rt.device), to_device(y, rt.device))
        total += torch.stack([loss.float(), torch.ones((), device=rt.device)])
    if rt.ddp:
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
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
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

    def requested(self, rt: Runtime) -> bool:
        """Whether any process was signalled: all ranks must stop at the same step."""
        if not rt.ddp:
            return self.signum is not None
        flag = torch.tensor(float(self.signum is not None), device=rt.device)
        return bool(all_reduce_mean(flag, rt).item() > 0)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------- the run


def train(cfg: TrainConfig) -> dict:
    """Run training as configured; returns the last eval record."""
    rt = setup_runtime(cfg)
    stop = StopSignal()
    try:
        return _train(cfg, rt, stop)
    finally:
        stop.restore()
        if rt.ddp:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, rt: Runtime, stop: StopSignal) -> dict:
    if cfg.gradient_accumulation_steps % rt.world_size:
        raise ConfigError(
            f"gradient_accumulation_steps {cfg.gradient_accumulation_steps} is not divisible by the "
            f"{rt.world_size} processes; the global batch must split evenly"
        )
    out_dir = Path(cfg.out_dir)
    corpus_vocab = corpora_vocabulary(cfg)
    start = build_model(cfg, corpus_vocab["vocab_size"])
    model, ckpt = start.model, start.resume
    vocab_size = model.config.vocab_size
    if not same_vocabulary(start.tokenizer, corpus_vocab):
        raise ConfigError(
            f"the model was trained with the tokenizer {start.tokenizer['tokenizer']}, {cfg.data_dir} was made with "
            f"{corpus_vocab['tokenizer']}: prepare it with prepare.py --tokenizer {start.tokenizer['tokenizer']}"
        )
    if corpus_vocab["vocab_size"] > vocab_size:
        raise ConfigError(
            f"{cfg.data_dir} has a vocabulary of {corpus_vocab['vocab_size']}, larger than the model's {vocab_size}"
        )
    model.gradient_checkpointing = cfg.gradient_checkpointing
    resuming = ckpt is not None
    iter_num = ckpt.iter_num if resuming else 0
    best_val_loss = ckpt.best_val_loss if resuming else float("inf")
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size

    model.to(rt.device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), rt.device.type)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == torch.float16)
    if resuming:
        optimizer.load_state_dict(ckpt.optimizer)
        if ckpt.scaler is not None:
            scaler.load_state_dict(ckpt.scaler)
    del ckpt  # free the host copy of the optimizer state before training

    if rt.master:
        out_dir.mkdir(parents=True, exist_ok=True)
        print_config(cfg, rt, model, tokens_per_iter)
        facts = {"model_args": model.config.model_args(), "params": model.get_num_params(),
                 "non_embedding_params": model.get_num_non_embedding_params()}  # fmt: skip
        write_config(out_dir, asdict(cfg), facts, start.inherit, start.init)
    metrics = MetricsLog(out_dir, iter_num if resuming else None) if rt.master else None
    wandb_run = start_wandb(cfg) if rt.master and cfg.wandb_log else None

    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    train_model = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None) if rt.ddp else model
    peak = cfg.peak_flops or peak_flops_of(rt.device)
    if rt.master and peak is None and rt.device.type == "cuda":
        print(f"no peak FLOP/s known for {torch.cuda.get_device_name(rt.device)}: set peak_flops to see MFU")
    sequences_per_process = cfg.batch_size * cfg.gradient_accumulation_steps // rt.world_size

    def checkpoint(is_best: bool) -> None:
        Checkpoint.of(
            raw_model, optimizer=optimizer.state_dict(), scaler=scaler.state_dict() if scaler.is_enabled() else None,
            config=asdict(cfg), iter_num=iter_num, best_val_loss=best_val_loss,
            inherit=start.inherit, init=start.init, tokenizer=corpus_vocab,
        ).save(out_dir / "ckpt.pt")  # fmt: skip
        if is_best:
            mark_best(out_dir)

    last_eval: dict = {}
    start_iter = t0_iter = iter_num
    t0 = time.time()
    while True:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # A resumed run skips the eval of its first iteration: the checkpoint was written after it.
        due = iter_num % cfg.eval_interval == 0 or iter_num == cfg.max_iters
        if due and not (resuming and iter_num == start_iter and not cfg.eval_only):
            losses = estimate_loss(model, cfg, rt, vocab_size)
            stop_if_diverged([losses.train, losses.val, *losses.corpora.values()], iter_num)
            stop_if_weights_diverged(raw_model, rt, iter_num)
            last_eval = {"kind": "eval", "iter": iter_num, "tokens": iter_num * tokens_per_iter, "lr": lr,
                         "train_loss": losses.train, "val_loss": losses.val, "val_losses": losses.corpora}  # fmt: skip
            if rt.master:
                each = ", ".join(f"{name} {loss:.4f}" for name, loss in losses.corpora.items())
                print(f"step {iter_num}: train loss {losses.train:.4f}, val loss {losses.val:.4f}"
                      + (f" ({each})" if len(losses.corpora) > 1 else ""))  # fmt: skip
                metrics.write(last_eval)
                if wandb_run:
                    wandb_run.log(wandb_record(last_eval), step=iter_num)
                is_best = losses.val < best_val_loss
                best_val_loss = min(best_val_loss, losses.val)
                if iter_num > 0 and not cfg.eval_only and (is_best or cfg.always_save_checkpoint):
                    checkpoint(is_best)
            t0, t0_iter = time.time(), iter_num  # ms/iter times training steps, not evals or saves
        if cfg.eval_only or iter_num >= cfg.max_iters:
            break
        if stop.requested(rt):
            stop_if_weights_diverged(raw_model, rt, iter_num)
            if rt.master:
                checkpoint(is_best=False)
                print(f"stopped by signal at iter {iter_num}; checkpoint saved, continue with --init_from=resume")
            break

        # Dropout masks, like batches, depend only on (seed, iteration, rank): resume stays exact.
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, iter_num, rt.rank]).generate_state(1)[0]))
        batches = step_batches(cfg, rt, vocab_size, iter_num)
        loss = train_step(train_model, optimizer, scaler, batches, autocast_context(rt.device, rt.dtype), cfg.grad_clip)
        iter_num += 1

        if iter_num % cfg.log_interval == 0:
            lossf = all_reduce_mean(loss, rt).item()
            t1 = time.time()
            dt = (t1 - t0) / (iter_num - t0_iter)
            t0, t0_iter = t1, iter_num
            stop_if_diverged([lossf], iter_num)
            if rt.master:
                mfu = raw_model.estimate_mfu(sequences_per_process, dt, peak) if peak else None
                mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "-"
                print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {1000 * dt:.1f} ms/iter, "
                      f"{tokens_per_iter / dt:,.0f} tok/s, mfu {mfu_text}")  # fmt: skip
                record = {"kind": "train", "iter": iter_num, "tokens": iter_num * tokens_per_iter,
                          "train_loss": lossf, "lr": lr, "ms_per_iter": 1000 * dt,
                          "tokens_per_s": tokens_per_iter / dt, "mfu": mfu}  # fmt: skip
                metrics.write(record)
                if wandb_run:
                    wandb_run.log(record, step=iter_num)
    if wandb_run:
        wandb_run.finish()
    return last_eval


def print_config(cfg: TrainConfig, rt: Runtime, model: GPT, tokens_per_iter: int) -> None:
    width = max(len(f.name) for f in fields(cfg))
    for key, value in asdict(cfg).items():
        print(f"{key:<{width}} = {value!r}")
    print(f"processes: {rt.world_size}, device: {rt.device}, dtype: {str(rt.dtype).removeprefix('torch.')}")
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


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip() + "\n\nconfig keys and their defaults (TrainConfig in train.py says what each means):")
        for f in fields(TrainConfig):
            print(f"  {f.name} = {f.default!r}")
        return 0
    try:
        cfg = parse_config(argv)
        train(cfg)
    except (ConfigError, CheckpointError, InheritError, NonFiniteLossError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
