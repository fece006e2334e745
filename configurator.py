"""The training config: every key train.py reads, with its default and meaning, read from config files and
`--key=value` overrides as nanoGPT's configurator reads them, but checked: an unknown key, a wrong type or an
impossible value stops with an error that names it.

    cfg = parse_config(["config/train_shakespeare.py", "--max_iters=100"])

A config file is plain Python assignments to the keys; it runs in a namespace of its own, never in the
trainer's globals. train.py, grow.py, bench.py, recipe.py and runs.py read configs through this module, and
checkpoint.py knows its keys.

The keys are grouped by concern, one dataclass each with its own checks (DataConfig, ModelConfig, InitConfig,
OptimizerConfig, ScheduleConfig, SystemConfig, LogConfig); TrainConfig is all of them at once, by dataclass
inheritance, so config files, overrides, `cfg.learning_rate` and asdict(cfg) stay flat as nanoGPT's, while a
function that reads one concern can say so: get_lr(it, cfg: ScheduleConfig).
"""

from __future__ import annotations

import ast
import math
import os
import runpy
import traceback
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from runtime import DTYPES, PARALLEL, TRUE_BF16, UserError


class ConfigError(UserError):
    """A config that cannot be run: unknown key, wrong type, or an impossible value."""

    exit_code = 2  # as argparse exits on a bad flag


# The model keys that a model's source decides: unset (None) in a config, they follow the model (and are recorded
# as the model has them); set, they must agree with it.
SOURCE_KEYS = ("bias", "scale_attn_by_inverse_layer_idx")
# The shape keys: a model continued from a source (init_from a trained model) has its source's shape whatever the
# config says (a config cannot tell a value it was given from its default), and the run records that shape.
SHAPE_KEYS = ("n_layer", "n_head", "n_embd")
# nanoGPT's name of the corpus, data/<dataset>: a spelling of data_dir in a config, and in the config a checkpoint
# records (derived from data_dir), because nanoGPT's sample.py finds a character vocabulary through it.
DATASET = "dataset"


def check_at_least_one(config: object, keys: tuple[str, ...]) -> None:
    for key in keys:
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(config, key)}")


@dataclass
class DataConfig:
    """data: the corpora, and the batch of a step."""

    # The corpus folder: train.bin, val.bin and meta.json (this project's prepare scripts) or nanoGPT's meta.pkl
    # (a character vocabulary), or only the bins (GPT-2 tokens). nanoGPT's `dataset = 'name'` is a spelling of
    # data_dir = 'data/name'. Or a mixture of corpora by weight: {"data/target": 0.8, "data/openwebtext": 0.2}
    # in a config file, data/target:0.8,data/openwebtext:0.2 on the command line. Each row of every batch comes
    # from a corpus drawn by weight; the val loss is the weighted mean of the corpora's.
    data_dir: str | dict[str, float] = os.path.join("data", "openwebtext")  # nanoGPT's default dataset
    # corpora evaluated at every eval but not trained on (forgetting): ["data/a", "data/b"] in a config file,
    # data/a,data/b on the command line
    eval_data_dirs: str | list[str] = field(default_factory=list)
    batch_size: int = 12  # micro-batch size of one process
    block_size: int = 1024  # a model from a checkpoint with more positions is cropped to it, as in nanoGPT
    gradient_accumulation_steps: int = 40  # micro-batches per step over ALL processes

    def __post_init__(self) -> None:
        if isinstance(self.data_dir, str) and ("," in self.data_dir or weight_of(self.data_dir) is not None):
            self.data_dir = weighted_corpora(self.data_dir)
        if isinstance(self.eval_data_dirs, str):
            self.eval_data_dirs = corpus_folders(self.eval_data_dirs)
        if not self.data_dir:
            raise ConfigError("data_dir is empty: name the corpus folder (or nanoGPT's dataset, data/<dataset>)")
        self._check_corpora()
        check_at_least_one(self, ("batch_size", "block_size", "gradient_accumulation_steps"))

    def check_processes(self, world_size: int) -> None:
        """The global batch (gradient_accumulation_steps micro-batches) splits evenly over the processes."""
        if self.gradient_accumulation_steps % world_size:
            raise ConfigError(
                f"gradient_accumulation_steps {self.gradient_accumulation_steps} is not divisible by the "
                f"{world_size} processes; the global batch must split evenly"
            )

    def _check_corpora(self) -> None:
        if isinstance(self.data_dir, dict):
            if not self.data_dir:
                raise ConfigError("data_dir is an empty mixture: name at least one corpus")
            bad = {path: w for path, w in self.data_dir.items() if not (math.isfinite(w) and w > 0)}
            if bad:
                raise ConfigError(f"mixture weights must be positive numbers, got {bad}")
        # Folders compare as the folders they are, not as strings: data/python and ./data/python are one.
        trained = {os.path.realpath(path): path for path in self.mixture}
        held_out: dict[str, str] = {}
        for path in self.eval_data_dirs:
            if os.path.realpath(path) in held_out:
                raise ConfigError(f"eval_data_dirs names one folder twice: {held_out[os.path.realpath(path)]}, {path}")
            held_out[os.path.realpath(path)] = path
        both = [f"{trained[folder]} = {held_out[folder]}" for folder in trained.keys() & held_out.keys()]
        if both:
            raise ConfigError(f"{both} in both data_dir and eval_data_dirs: a corpus trained on is evaluated")
        if len(trained) < len(self.mixture):
            raise ConfigError(f"data_dir names one folder twice: {list(self.mixture)}; give each corpus one weight")

    @property
    def mixture(self) -> dict[str, float]:
        """The training corpora and their weights, summing to 1 (one corpus: weight 1)."""
        if isinstance(self.data_dir, str):
            return {self.data_dir: 1.0} if self.data_dir else {}
        total = sum(self.data_dir.values())
        return {path: weight / total for path, weight in self.data_dir.items()}

    @property
    def dataset(self) -> str:
        """nanoGPT's name of the (first) corpus: its folder inside data/, else its absolute path."""
        first = next(iter(self.mixture))
        inside = os.path.relpath(os.path.abspath(first), os.path.abspath("data"))
        return inside if not inside.startswith("..") else os.path.abspath(first)

    @property
    def tokens_per_iter(self) -> int:
        """Tokens of one optimizer step over all processes: the global batch."""
        return self.gradient_accumulation_steps * self.batch_size * self.block_size


@dataclass
class ModelConfig:
    """model: the shape of a model from scratch (a model from a checkpoint has its own, except dropout)."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    # Unset (None): False from scratch; a model from a source (inherit_from, init_from, a resume) has its source's,
    # which the run then records. Set, it must be the source's (train.take_source_architecture).
    bias: bool | None = None
    scale_attn_by_inverse_layer_idx: bool | None = None  # attention logits of layer l also divided by l + 1

    def __post_init__(self) -> None:
        check_at_least_one(self, ("n_layer", "n_head", "n_embd"))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class InitConfig:
    """init / inherit / teacher: where the model starts, how a student is built, and distillation."""

    # 'scratch', 'resume' (out_dir/ckpt.pt), 'inherit' (a student of inherit_from, see below), a checkpoint
    # path, or a Hugging Face GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', or a local folder)
    init_from: str = "scratch"
    # Tokens the init_from model was trained on (D_p of continual pre-training's scaling law), recorded with
    # the run; 0: what its checkpoint records (this project's do), unknown for Hugging Face models.
    init_tokens_seen: int = 0
    # Inheritune (init_from='inherit'): an n_layer student of the reference inherit_from (any init_from source)
    inherit_from: str = ""
    # reference blocks in order, e.g. '0-11,14'; empty or 'first': blocks 0..n_layer-1; 'bi' or 'angular': chosen
    # by that measure of the reference on data_dir's validation sequences (analyze.py, inherit.py); 'stack': its
    # first ceil(n_layer/2) blocks twice (the paper's hybrid stacking; stacking when inherit_from is a half model)
    inherit_layers: str = ""
    inherit_measure_seqs: int = 100  # validation sequences a measured choice reads (analyze.py's --num_seqs)
    inherit_measure_len: int = 100  # their length in tokens, at most block_size (analyze.py's --seq_len)
    # What the student copies: 'all' the reference's parts, 'none' (its architecture from scratch: how a Llama
    # is trained from scratch), or any of wte (token embedding, and the head when tied), head (an untied head),
    # wpe (a learned position embedding), ln_f (final norm), and of each inherited block attn, mlp, ln. The
    # authors' code: GPT-2 'wte,attn,mlp,ln', OpenLLaMA 'head,attn,mlp,ln'.
    inherit_parts: str = "all"
    # std of a student's token embedding where it is not inherited: 0.02 as a model from scratch (GPT-2's);
    # 1.0 is nn.Embedding's default N(0, 1), which the authors' code leaves.
    fresh_embedding_std: float = 0.02
    # Distillation: the loss is (1 - distill_alpha) * cross-entropy + distill_alpha * T^2 * KL(teacher || student)
    # of the distributions softened by T = distill_temperature, over the real vocabulary; the teacher (any model
    # source with the run's tokenizer) is frozen. The paper's KD baseline weighs cross-entropy 0.6: alpha 0.4.
    teacher: str = ""
    distill_alpha: float = 0.5
    distill_temperature: float = 1.0

    def __post_init__(self) -> None:
        check_at_least_one(self, ("inherit_measure_seqs", "inherit_measure_len"))
        if not (0.0 <= self.distill_alpha <= 1.0 and self.distill_temperature > 0):
            raise ConfigError(
                f"distill_alpha must be in [0, 1] and distill_temperature positive, got {self.distill_alpha} "
                f"and {self.distill_temperature}"
            )


@dataclass
class OptimizerConfig:
    """optimizer: AdamW, what it trains, and gradient clipping."""

    weight_decay: float = 0.1  # on matrices and embeddings (nanoGPT's AdamW groups)
    # weight decay on biases and norm gains too: LLM-Inheritune's lit-gpt script (OpenLLaMA), whose AdamW call
    # decays every parameter. Their GPT-2 script decays its Linear weights only: no bias, norm nor embedding.
    decay_1d_params: bool = False
    # The token embedding (and the head, when tied to it) kept as it starts: no gradient, no AdamW state. A
    # small model of a large vocabulary spends much of its step there (SmolLM2's 49,152 x 576 is 28M of 81M).
    freeze_embedding: bool = False
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    # bf16-true: how AdamW writes its float32 update into the bfloat16 weights. 'nearest' (torch's AdamW) rounds
    # away an update under about 1/256 of a weight, weight decay included; 'stochastic' (torchao's AdamW with
    # bf16_stochastic_round) rounds up with the probability of the lost fraction, keeping it in expectation,
    # at no memory (docs/scale.md, "Weight decay is off under bf16-true")
    bf16_weight_update: str = "nearest"

    def __post_init__(self) -> None:
        if self.bf16_weight_update not in ("nearest", "stochastic"):
            raise ConfigError(f"bf16_weight_update must be 'nearest' or 'stochastic', got {self.bf16_weight_update!r}")


@dataclass
class ScheduleConfig:
    """schedule: steps, and the learning rate of each (linear warmup, then cosine decay to min_lr at
    lr_decay_iters)."""

    learning_rate: float = 6e-4
    max_iters: int = 600000
    decay_lr: bool = True
    warmup_iters: int = 2000
    lr_decay_iters: int = 600000
    min_lr: float = 6e-5

    def __post_init__(self) -> None:
        if self.max_iters < 0 or self.warmup_iters < 0:
            raise ConfigError("max_iters and warmup_iters must be non-negative")


@dataclass
class SystemConfig:
    """parallelism and system: processes, device, precision, compilation, seed."""

    backend: str = "auto"  # process group backend: 'nccl', 'gloo'; 'auto': nccl on CUDA, gloo on CPU
    # 'ddp': every process holds the whole model, its gradients and AdamW state (DDP when there are several);
    # 'fsdp': FSDP2 shards them over the processes (each block one unit; embeddings, final norm and head one),
    # and checkpoints are sharded, in out_dir/sharded (checkpoint.py consolidate makes a ckpt.pt of one).
    parallel: str = "ddp"
    # FSDP: reduce-scatter the gradients of every micro-batch at once (least memory), rather than once per step
    # after holding the unsharded gradients between micro-batches (less communication; DDP's way)
    fsdp_reduce_every_micro_batch: bool = False
    cpu_offload: bool = False  # FSDP: weights, gradients and AdamW state in CPU memory, the AdamW step on the CPU
    device: str = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
    # 'auto' (bfloat16 on GPUs that have it, float16 on others, float32 on CPU), a name ('float32', 'bfloat16',
    # 'float16': float32 weights, computing in that dtype), or 'bf16-true': the weights, gradients and AdamW
    # state themselves in bfloat16 (litgpt's --precision bf16-true; 8 bytes per parameter, not 16)
    dtype: str = "auto"
    compile: bool = True
    gradient_checkpointing: bool = False  # recompute each block in the backward pass: activations of one block
    seed: int = 1337
    peak_flops: float = 0.0  # device peak FLOP/s for MFU; 0: the known value of the GPU (runtime.PEAK_FLOPS)

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", TRUE_BF16, *DTYPES):
            raise ConfigError(f"dtype must be 'auto', {TRUE_BF16!r} or one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ConfigError(f"backend must be 'auto', 'nccl' or 'gloo', got {self.backend!r}")
        if self.parallel not in PARALLEL:
            raise ConfigError(f"parallel must be one of {list(PARALLEL)}, got {self.parallel!r}")
        if self.parallel != "fsdp" and (self.cpu_offload or self.fsdp_reduce_every_micro_batch):
            raise ConfigError("cpu_offload and fsdp_reduce_every_micro_batch need parallel='fsdp'")
        self.check_fsdp_dtype(self.dtype)

    def check_fsdp_dtype(self, dtype: str) -> None:
        """FSDP computes in bfloat16 or float32: float16's loss scaling is DDP's only. Checked on the config's dtype,
        and again on what 'auto' resolves to on the GPU (float16 where it has no bfloat16)."""
        if self.parallel == "fsdp" and dtype == "float16":
            raise ConfigError("parallel='fsdp' computes in bfloat16 or float32: float16's loss scaling is DDP's only")


@dataclass
class LogConfig:
    """logging and checkpointing: where the run is written, evals, log lines, Weights & Biases."""

    out_dir: str = "out"
    eval_interval: int = 2000
    eval_iters: int = 200  # batches per split in each loss estimate, spread over all processes
    eval_only: bool = False  # evaluate once and exit
    log_interval: int = 1
    always_save_checkpoint: bool = True  # save ckpt.pt at every eval; False: only when the val loss improves
    wandb_log: bool = False
    wandb_project: str = "inheritune"
    wandb_run_name: str = "run"
    wandb_mode: str = "offline"  # 'offline' needs no network (`wandb sync` later), 'online', 'disabled'

    def __post_init__(self) -> None:
        check_at_least_one(self, ("eval_interval", "eval_iters", "log_interval"))
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"wandb_mode must be 'offline', 'online' or 'disabled', got {self.wandb_mode!r}")


CONCERNS = (DataConfig, ModelConfig, InitConfig, OptimizerConfig, ScheduleConfig, SystemConfig, LogConfig)


# A dataclass takes its bases' fields from the last base to the first: listed backwards, its keys read in
# the order of CONCERNS (config.json, print_config).
@dataclass
class TrainConfig(LogConfig, SystemConfig, ScheduleConfig, OptimizerConfig, InitConfig, ModelConfig, DataConfig):
    """Every key of nanoGPT's train.py, with nanoGPT's meaning, and this project's own, in one flat config."""

    def __post_init__(self) -> None:
        for concern in CONCERNS:
            concern.__post_init__(self)
        self._check_bf16_weight_update()

    def _check_bf16_weight_update(self) -> None:
        if self.bf16_weight_update == "stochastic" and self.dtype != TRUE_BF16:
            raise ConfigError(
                f"bf16_weight_update='stochastic' rounds bfloat16 weights: it needs dtype='{TRUE_BF16}', not "
                f"{self.dtype!r} (float32 weights keep every update)"
            )
        if self.bf16_weight_update == "stochastic" and self.parallel == "fsdp":
            raise ConfigError("bf16_weight_update='stochastic' is not tested under parallel='fsdp': use 'ddp'")

    def record(self) -> dict:
        """The config as config.json and checkpoints record it: every key, and nanoGPT's dataset, which
        nanoGPT's sample.py reads (a mixture's: its first corpus)."""
        return asdict(self) | {DATASET: self.dataset}

    def scratch_model_args(self, vocab_size: int) -> dict:
        """GPTConfig's arguments for a model trained from scratch, as nanoGPT's train.py builds model_args;
        a shape that GPTConfig refuses (n_embd not divisible by n_head...) is a ConfigError."""
        from model import GPTConfig  # here: runs.py and scaling.py read configs without importing torch

        args = dict(
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            block_size=self.block_size,
            bias=bool(self.bias),
            dropout=self.dropout,
            vocab_size=vocab_size,
            scale_attn_by_inverse_layer_idx=bool(self.scale_attn_by_inverse_layer_idx),
        )
        try:
            GPTConfig(**args)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return args


# ----------------------------------------------------------------------------- corpus lists


def weight_of(item: str) -> float | None:
    """The weight of 'path:weight', or None where the part after the last ':' is no number."""
    _, sep, weight = item.rpartition(":")
    try:
        return float(weight) if sep else None
    except ValueError:
        return None


def parse_corpora(text: str, key: str) -> dict[str, float | None]:
    """A corpus list as the command line writes it, 'path,path' or 'path:weight,path:weight' ->
    {path: weight or None}: the one syntax of data_dir's mixture and eval_data_dirs."""
    corpora: dict[str, float | None] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        weight = weight_of(item)
        path = item if weight is None else item.rpartition(":")[0]
        if path in corpora:
            raise ConfigError(f"{key} names {path} twice: give each corpus once")
        corpora[path] = weight
    return corpora


def weighted_corpora(text: str) -> dict[str, float]:
    """'data/target:0.8,data/openwebtext:0.2' -> {'data/target': 0.8, 'data/openwebtext': 0.2}."""
    mixture = parse_corpora(text, "data_dir")
    for path, weight in mixture.items():
        if weight is None:
            raise ConfigError(f"data_dir mixture item {path!r} has no weight: write it as path:weight, e.g. {path}:0.5")
    return typing.cast(dict[str, float], mixture)


def corpus_folders(text: str) -> list[str]:
    """'data/a,data/b' -> ['data/a', 'data/b']: corpora without weights (eval_data_dirs)."""
    corpora = parse_corpora(text, "eval_data_dirs")
    weighted = [path for path, weight in corpora.items() if weight is not None]
    if weighted:
        raise ConfigError(f"eval_data_dirs takes folders without weights, got a weight on {weighted}")
    return list(corpora)


# ----------------------------------------------------------------------------- reading a config


def config_keys() -> str:
    return ", ".join([f.name for f in fields(TrainConfig)] + [f"{DATASET} (nanoGPT's data/<dataset>)"])


def expected_type(key: str) -> object:
    """The declared type of a config key; nanoGPT's dataset is a folder name."""
    hints = typing.get_type_hints(TrainConfig) | {DATASET: str}
    if key not in hints:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {config_keys()}")
    return hints[key]


def check_type(key: str, value: object) -> object:
    """The value converted to the declared type of key, or a ConfigError that names both."""
    expected = expected_type(key)
    for option in typing.get_args(expected) or (expected,):  # a union's members, or the one type
        if option is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if typing.get_origin(option) is dict and isinstance(value, dict):
            numbers = all(isinstance(w, int | float) and not isinstance(w, bool) for w in value.values())
            if all(isinstance(k, str) for k in value) and numbers:
                return {k: float(w) for k, w in value.items()}
        if (
            typing.get_origin(option) is list
            and isinstance(value, list | tuple)
            and all(isinstance(v, str) for v in value)
        ):
            return list(value)
        if type(value) is option:
            return value
    raise ConfigError(f"{key} must be {type_name(expected)}, got {type(value).__name__} {value!r}")


def type_name(expected: object) -> str:
    """A declared type as a config error names it: bool, or bool or None for a union."""
    return " or ".join(getattr(o, "__name__", str(o)) for o in typing.get_args(expected) or (expected,))


def parse_override(arg: str) -> tuple[str, object]:
    """`--key=value` -> (key, value); strings are taken as they are, other types as Python literals."""
    key, sep, raw = arg.removeprefix("--").partition("=")
    if not sep:
        raise ConfigError(f"expected --key=value, got {arg!r}")
    expected = expected_type(key)
    if str in (typing.get_args(expected) or (expected,)):
        return key, raw  # corpus lists in their comma syntax are parsed by DataConfig
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ConfigError(f"{key} must be {type_name(expected)}, got {raw!r}") from None


def read_config_file(path: str) -> dict[str, object]:
    """The assignments of a config file, run in a namespace of its own (never in this module's)."""
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} not found")
    if Path(path).suffix == ".json":
        raise ConfigError(
            f"{path} is JSON: a config file is Python, `key = value` lines as in config/*.py (a run's config.json "
            "records what it ran with; its keys are --key=value flags)"
        )
    try:
        namespace = runpy.run_path(path)
    except SyntaxError as e:  # the user's file, not this program: where it is wrong, without a traceback
        raise ConfigError(f"config file {path}, line {e.lineno}: {e.msg}") from None
    except Exception as e:  # raised by the file's own code (a NameError, say): the same
        raise ConfigError(f"config file {path}, line {line_in(path, e)}: {type(e).__name__}: {e}") from None
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and not isinstance(v, (types.ModuleType, types.FunctionType, type))
    }


def line_in(path: str, error: Exception) -> int | str:
    """The line of the file at path where error was raised (the deepest frame in it), '?' if none."""
    here = Path(path).resolve()
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == here]
    return frames[-1].lineno if frames else "?"


def parse_config(argv: list[str]) -> TrainConfig:
    """Defaults, then each config file in order, then --key=value overrides; a later level's corpus, in either
    spelling (data_dir or nanoGPT's dataset), replaces an earlier one's, as in nanoGPT."""
    values: dict[str, object] = {}
    for where, level in config_levels(argv):
        values.update(dataset_as_data_dir(level, where))
    return TrainConfig(**values)


def config_levels(argv: list[str]) -> list[tuple[str, dict[str, object]]]:
    """(where, its type-checked values) of each config file and each run of --key=value overrides, in order."""
    levels: list[tuple[str, dict[str, object]]] = []
    for arg in argv:
        if not arg.startswith("--"):
            levels.append((arg, read_config_file(arg)))
            continue
        if not levels or levels[-1][0] != COMMAND_LINE:
            levels.append((COMMAND_LINE, {}))
        key, value = parse_override(arg)
        levels[-1][1][key] = value
    return [(where, {key: check_type(key, value) for key, value in level.items()}) for where, level in levels]


COMMAND_LINE = "the command line"


def dataset_as_data_dir(level: dict[str, object], where: str) -> dict[str, object]:
    """One level's values with nanoGPT's dataset written as data_dir = data/<dataset>; a level that gives both
    must name one folder with them (a mixture: its first corpus). An empty dataset (nanoGPT's --dataset=) sets
    nothing."""
    dataset = typing.cast(str, level.pop(DATASET, ""))
    if not dataset:
        return level
    named = os.path.join("data", dataset)  # os.path.join's rule: an absolute name is the folder
    if "data_dir" not in level:
        return level | {"data_dir": named}
    first = next(iter(DataConfig(data_dir=level["data_dir"]).mixture))  # its mixture syntax read as data_dir reads it
    if os.path.realpath(named) != os.path.realpath(first):
        raise ConfigError(
            f"dataset {dataset!r} (folder {os.path.realpath(named)}) and data_dir {first!r} name different folders "
            f"{'on' if where == COMMAND_LINE else 'in'} {where}: give one of them"
        )
    return level
