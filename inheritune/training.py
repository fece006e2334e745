"""The training step and the model it trains, shared by train.py (which runs them in its loop) and bench.py
(which times them and traces their memory): where a run's model comes from (scratch, a student of a reference,
a resume, a trained model to continue) and the network a config trains without its weights; AdamW as the
config builds it; DDP's and FSDP's wrapping; distillation's teacher; one optimizer step.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from analyze import AnalysisSettings
from checkpoint import Checkpoint, CheckpointError, describe, latest_checkpoint, load_model, sharded_step, source_sha256
from configurator import SHAPE_KEYS, SOURCE_KEYS, ConfigError, TrainConfig
from data.format import corpus_vocabulary
from data.tokenizer import same_vocabulary
from inherit import InheritError, StudentRequest, check_width, inherit, make_spec, parse_request
from model import GPT, GPT2_VOCAB, GPTConfig
from runtime import Runtime

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


def model_source(cfg: TrainConfig) -> str | None:
    """Where init_from takes the model from: nothing from scratch, the reference of a student, out_dir's latest
    checkpoint to resume, else the model source init_from names."""
    if cfg.init_from == "scratch":
        return None
    if cfg.init_from == "inherit":
        if not cfg.inherit_from:
            raise ConfigError("init_from='inherit' needs inherit_from: the reference to inherit from")
        return cfg.inherit_from
    return str(latest_checkpoint(cfg.out_dir)) if cfg.init_from == "resume" else cfg.init_from


def student_request(cfg: TrainConfig) -> StudentRequest:
    """The student init_from='inherit' asks for: its n_layer, inherit_layers and inherit_parts."""
    return parse_request(cfg.n_layer, cfg.inherit_layers, cfg.inherit_parts)


def check_block_size(cfg: TrainConfig, source_block_size: int) -> None:
    """A model from a source is cropped to block_size (as nanoGPT crops), never grown past its positions."""
    if source_block_size < cfg.block_size:
        raise ConfigError(f"block_size {cfg.block_size} exceeds the source model's {source_block_size}")


def build_model(cfg: TrainConfig, vocab_size: int) -> Start:
    """The model of init_from: from scratch (seeded), a student of inherit_from, out_dir's checkpoint to
    resume, or any model source to continue from; cropped to block_size."""
    source = model_source(cfg)
    if source is None:
        torch.manual_seed(cfg.seed)
        return Start(GPT(GPTConfig(**cfg.scratch_model_args(vocab_size))), None, None, None, None, None)
    if cfg.init_from == "inherit":
        request = student_request(cfg)
        width = (cfg.n_embd, cfg.n_head)
        # a measured layer choice (inherit_layers 'bi', 'angular') reads the first corpus
        measure = AnalysisSettings(
            next(iter(cfg.mixture)), cfg.inherit_measure_seqs, min(cfg.inherit_measure_len, cfg.block_size)
        )
        model, origin = inherit(source, request, cfg.seed, cfg.dropout, width, cfg.fresh_embedding_std, measure)
        start = Start(model, None, None, origin, None, origin["reference_tokenizer"])
    elif cfg.init_from == "resume":
        shards = sharded_step(Path(source))
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
        model, ckpt = load_model(source, dropout=cfg.dropout)
        tokens_seen = cfg.init_tokens_seen or ckpt.tokens_seen()
        continued = {"source": source, "source_sha256": source_sha256(source), "tokens_seen": tokens_seen}
        if ckpt.dequantized is not None:  # a GGUF: weights dequantised from these tensor types
            continued["dequantized"] = ckpt.dequantized
        start = Start(model, None, None, ckpt.inherit, continued, ckpt.vocabulary())
    take_source_architecture(cfg, model)
    if start.continued_from is not None:
        take_source_shape(cfg, model)
    check_block_size(cfg, model.config.block_size)
    if model.config.block_size > cfg.block_size:
        model.crop_block_size(cfg.block_size)
    return start


def planned_model(cfg: TrainConfig) -> GPT:
    """The network a config trains, on the meta device (shapes, no weights, nothing read but its source's
    description): from scratch, or its source's (a checkpoint's model_args, a Hugging Face or GGUF config), at
    the student's depth where it inherits. build_model's decisions, for bench.py's memory estimate."""
    source = model_source(cfg)
    if source is None:
        corpus = Path(next(iter(cfg.mixture)))
        vocab = (corpus_vocabulary(corpus) if corpus.is_dir() else None) or {"vocab_size": GPT2_VOCAB}
        args = cfg.scratch_model_args(vocab["vocab_size"])
    else:
        args = describe(source).model_args
        args = {k: v for k, v in args.items() if k != "scale_layer_idx"}  # of the source's depth; no memory
        check_block_size(cfg, args["block_size"])
        args["block_size"] = cfg.block_size
        if cfg.init_from == "inherit":  # the student's depth, as inherit.py decides it
            reference = GPTConfig.from_model_args(args)
            try:
                check_width(reference, cfg.n_embd, cfg.n_head)
                args["n_layer"] = len(make_spec(reference, student_request(cfg)).layers)
            except InheritError as e:
                raise ConfigError(str(e)) from None
    with torch.device("meta"):
        return GPT(GPTConfig.from_model_args(args))


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


def take_source_shape(cfg: TrainConfig, model: GPT) -> None:
    """A continued model's shape (SHAPE_KEYS) set in the config, so that config.json and the checkpoints record
    the model trained; a note says where the config's own values were not used."""
    unused = [f"{key} {getattr(cfg, key)}" for key in SHAPE_KEYS if getattr(cfg, key) != getattr(model.config, key)]
    if unused:
        has = ", ".join(f"{key} {getattr(model.config, key)}" for key in SHAPE_KEYS)
        print(f"note: the model of init_from={cfg.init_from} has {has}; the config's {', '.join(unused)} not used")
    for key in SHAPE_KEYS:
        setattr(cfg, key, getattr(model.config, key))


# the config's shape keys, and what decides which parameters AdamW holds state for
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "bias", "scale_attn_by_inverse_layer_idx", "freeze_embedding")


def changed_keys(cfg: TrainConfig, saved: dict, keys: tuple[str, ...]) -> list[str]:
    """The keys that a checkpoint's config records with another value than cfg's; a key cfg leaves unset (None:
    one of SOURCE_KEYS) follows the checkpoint."""
    return [key for key in keys if key in saved and getattr(cfg, key) not in (None, saved[key])]


def refuse_another_model(cfg: TrainConfig, ckpt: Checkpoint, source: str | Path) -> None:
    """A resume trains the checkpoint's model whatever the config says: a config that asks for another shape
    than the run's own config did is refused, not ignored (config.json would record the shape not trained)."""
    written = {"freeze_embedding": False} | (ckpt.config or {})  # runs from before the key trained it
    keys = tuple(key for key in MODEL_KEYS if ckpt.continued_from is None or key not in SHAPE_KEYS)  # the source's
    changed = [f"{key} {written[key]} (asked {getattr(cfg, key)})" for key in changed_keys(cfg, written, keys)]
    if changed:
        raise ConfigError(
            f"a resumed run keeps its model and the config it was started with: {', '.join(changed)}; resume "
            f"with the run's values, or start a new run from the checkpoint (init_from={source})"
        )


# Positions of the distillation term computed at a time: its float32 temporaries are a few tensors of this many
# rows of the vocabulary (0.2 GB each for GPT-2's), not of every position of the micro-batch (1.2 GB at 6 x 1024).
DISTILL_CHUNK = 1024


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
