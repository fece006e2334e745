"""The checkpoint format, and the one loader of every model source.

    from checkpoint import Checkpoint, load_model
    model, ckpt = load_model("out-shakespeare/ckpt.pt")   # or "gpt2-medium", a Hugging Face folder, out/sharded,
                                                          # a GGUF file
    Checkpoint.of(model, iter_num=100).save("student.pt")

    python checkpoint.py consolidate out-big/sharded out-big/ckpt.pt   # a sharded checkpoint as one file

A checkpoint is a plain dict of nanoGPT's keys (so a nanoGPT checkpoint is one) plus this project's own,
written atomically and read with `torch.load(weights_only=True)`, so a checkpoint can never run code.

An FSDP run writes sharded checkpoints instead (PyTorch Distributed Checkpoint): out_dir/sharded/step-*/
holds each process's shards of the weights and AdamW state, and meta.pt the rest of what ckpt.pt holds;
the files `latest` and `best` name a step folder. Any number of processes, sharded or not, reads one back
(DCP reshards), and every command that takes a checkpoint reads `out/sharded` (its latest) directly.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from data.format import corpus_vocabulary
from data.tokenizer import source_tokenizer
from hf import (
    GGUF_PLAIN_TYPES,
    HF_GPT2_NAMES,
    gguf_tensor_types,
    is_gguf,
    is_gpt2_name,
    is_hf_folder,
    is_hf_source,
    read_hf_config,
)
from inheritune import compat
from model import GPT, GPT2_VOCAB, GPTConfig, load_weights
from runtime import TRUE_BF16, UserError, atomic_file, output_file, run_command

SHARDED = "sharded"  # an FSDP run's checkpoints: out_dir/sharded
META = "meta.pt"  # a sharded checkpoint's Checkpoint fields but the tensors
POINTERS = ("latest", "best")  # files in out_dir/sharded naming a step folder
NOTED_DEQUANTIZED: set[str] = set()  # GGUF sources whose note_dequantized this process has printed


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded: missing, truncated, corrupt or unsafe."""


@dataclass
class Checkpoint:
    """What `ckpt.pt`, `best.pt` and student files hold."""

    model_args: dict  # GPTConfig.model_args(): nanoGPT's GPTConfig(**model_args) rebuilds the network
    model: dict[str, torch.Tensor] | None = None  # state dict, nanoGPT's names, vocab_size rows of wte and
    # lm_head (without the padding, as nanoGPT's from_pretrained builds GPT-2); None when read without weights
    iter_num: int = 0  # optimizer steps taken
    tokens: int | None = None  # tokens the run has trained on, counted step by step (its batch may change on resume)
    best_val_loss: float | None = None  # lowest val loss at an eval so far
    config: dict | None = None  # the training run's config (configurator.TrainConfig)
    optimizer: dict | None = None  # AdamW state, to resume
    scaler: dict | None = None  # GradScaler state of float16 runs, to resume
    inherit: dict | None = None  # how a student was built from its reference (inherit.provenance)
    continued_from: dict | None = None  # the trained model a run continued from: source, source_sha256, tokens_seen
    tokenizer: dict | None = None  # the vocabulary it was trained with: tokenizer, tokenizer_fingerprint, vocab_size
    dequantized: dict | None = None  # a GGUF source's tensor types ({"Q4_1": 210, "F32": 61}): dequantised weights
    save_number: int | None = None  # one more than that of every checkpoint in its out_dir when it was written:
    # which of ckpt.pt and sharded/ a resume continues (file times change with any copy or restore)

    def tokens_seen(self) -> int | None:
        """Tokens this model has been trained on: its run's own, and those of the model the run continued
        from; None where either is unknown."""
        own = self.tokens if self.tokens is not None else self.tokens_from_config()
        before = 0 if self.continued_from is None else self.continued_from.get("tokens_seen")
        return None if own is None or before is None else own + before

    def tokens_from_config(self, per_step_otherwise: int | None = None) -> int | None:
        """The run's tokens for a checkpoint that does not count them: compat.tokens_from_config."""
        return compat.tokens_from_config(self.config, self.iter_num, per_step_otherwise)

    def corpus_folder(self) -> Path | None:
        """The corpus the model was trained on: its config's data_dir (a mixture's first corpus), or nanoGPT's
        data/<dataset>."""
        config = self.config or {}
        data_dir = config.get("data_dir")
        if data_dir:
            return Path(next(iter(data_dir)) if isinstance(data_dir, dict) else data_dir)
        return Path("data", config["dataset"]) if config.get("dataset") else None

    def vocabulary(self) -> dict | None:
        """The vocabulary the model was trained with: its record, or, for a checkpoint without one (nanoGPT's),
        what the checkpoint carries itself: GPT-2's BPE for a model of GPT-2's 50,257 rows, else the vocabulary
        of the corpus its config names if it has the model's rows (nanoGPT's meta.pkl). Never a corpus folder's
        vocabulary of another size: the folder may have been prepared again since. None where nothing tells."""
        if self.tokenizer is not None:
            return self.tokenizer
        vocab_size = self.model_args.get("vocab_size")
        if vocab_size == GPT2_VOCAB:
            return {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB}
        folder = self.corpus_folder()
        record = corpus_vocabulary(folder) if folder is not None and folder.is_dir() else None
        return record if record is not None and record.get("vocab_size") == vocab_size else None

    @classmethod
    def of(cls, model: GPT, **state) -> Checkpoint:
        return cls(model_args=model.config.model_args(), model=model.state_dict(), **state)

    def save(self, path: str | Path) -> None:
        """Write to a temporary file, then rename: a kill at any moment leaves the previous file intact."""
        state = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        with atomic_file(path) as f:
            torch.save(state, f)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu", weights: bool = True) -> Checkpoint:
        """Read a checkpoint (a file, a sharded one whole, or a run folder's latest); with weights=False only
        what describes it, from a memory map: the tensors are never read, so this costs milliseconds even for
        GPT-2 xl with its optimizer state."""
        path = Path(path)
        if path.is_dir() and checkpoint_paths(path):  # a run folder (train.py's out_dir): what a resume continues
            path = latest_checkpoint(path)
        step = sharded_step(path)
        if step is not None:
            return read_sharded(step, weights)
        if path.is_dir():
            raise CheckpointError(folder_without_model(path))
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} not found")
        if path.stat().st_size == 0:
            raise CheckpointError(f"cannot load {path}: an empty file (0 bytes), no checkpoint was written to it")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=not weights)
        except Exception as e:  # torch raises many types here (UnpicklingError, RuntimeError, EOFError...)
            reason = "truncated, corrupt, or not a weights-only checkpoint"
            # a legacy (non-zip) file cut short ends in an EOFError without a message
            detail = str(e) or ("it ends early: truncated" if isinstance(e, EOFError) else type(e).__name__)
            raise CheckpointError(f"cannot load {path} ({reason}): {detail}") from e
        missing = {"model", "model_args"} - state.keys()
        if missing:
            raise CheckpointError(f"{path} is not a model checkpoint: it lacks {sorted(missing)}")
        state = compat.checkpoint_state(state)
        known = {f.name for f in fields(cls)}
        ckpt = cls(**{k: v for k, v in state.items() if k in known})
        ckpt.model_args = compat.model_args(ckpt.model_args)
        if not weights:
            ckpt.model = ckpt.optimizer = ckpt.scaler = None
        return ckpt


def folder_without_model(path: Path) -> str:
    """Why a folder given as a model holds none: what was looked for in it, and what it is instead."""
    looked_for = "ckpt.pt, a sharded checkpoint (sharded/latest, or a step folder) or a Hugging Face config.json"
    why = f"{path} is a folder with no checkpoint: looked for {looked_for}"
    if (path / "metrics.jsonl").exists():
        why += " (a training run's folder: it saves its first checkpoint at its first eval)"
    elif (path / "config.json").is_file() and not is_hf_folder(path):
        why += "; its config.json names no Hugging Face model_type"
    if str(path) in HF_GPT2_NAMES:  # transformers too would read this folder, not the hub model
        why += f"; the folder {path} here is read, not OpenAI's {path} from the hub: rename it or work elsewhere"
    return why


def load_model(source: str | Path, device: str | torch.device = "cpu", dropout: float = 0.0) -> tuple[GPT, Checkpoint]:
    """A GPT on `device` from a checkpoint file (this project's or nanoGPT's) or a Hugging Face model, and
    what is known of it, as a Checkpoint without weights (they live in the model only, so a large model is
    not held twice): a file's training state, or a Hugging Face model's config and tokenizer."""
    source = expand_home(source)
    if is_hf_source(source):
        dequantized = gguf_tensor_types(source) if is_gguf(source) else None
        model = GPT.from_pretrained(source, dict(dropout=dropout)).to(device)
        tokenizer = {"tokenizer": "gpt2"} if is_gpt2_name(source) else source_tokenizer(source)
        if dequantized is not None:
            note_dequantized(source, dequantized)
        return model, Checkpoint(model_args=model.config.model_args(), tokenizer=tokenizer, dequantized=dequantized)
    ckpt = Checkpoint.load(source)
    model = GPT(GPTConfig.from_model_args(ckpt.model_args, dropout=dropout))
    load_weights(model, ckpt.model)
    ckpt.model = None
    return model.to(device), ckpt


def expand_home(source: str | Path) -> str:
    """A model source with its leading ~ expanded: no shell expands it after --model= or --init_from=, nor in a
    config file. (os.path, not Path: Path would also drop a leading ./, which marks a path, not a hub id.)"""
    return os.path.expanduser(str(source))


def describe(source: str | Path) -> Checkpoint:
    """What any model source is, without reading its weights: a checkpoint's record (Checkpoint.load with
    weights=False), or the config of a Hugging Face model or GGUF file (which records no training)."""
    source = expand_home(source)
    if is_hf_source(source):
        return Checkpoint(model_args=GPTConfig(**read_hf_config(source)).model_args())
    return Checkpoint.load(source, weights=False)


def note_dequantized(source: str, tensor_types: dict[str, int]) -> None:
    """Say, once per source and command however often it loads it, that a GGUF's weights are not the model's."""
    quantized = {t: n for t, n in tensor_types.items() if t not in GGUF_PLAIN_TYPES}
    if quantized and source not in NOTED_DEQUANTIZED:
        NOTED_DEQUANTIZED.add(source)
        kinds = ", ".join(f"{n} {t}" for t, n in quantized.items())
        print(
            f"note: {source} holds quantised tensors ({kinds}): they are dequantised to float32, an approximation "
            "of the original model's weights, not the weights themselves",
            file=sys.stderr,
        )


def source_sha256(source: str | Path) -> str:
    """sha256 of a checkpoint file, of a sharded checkpoint's files, or of a Hugging Face folder's weights;
    '' for a hub name."""
    path = Path(expand_home(source))
    step = sharded_step(path)
    if step is not None:
        files = sorted(f for f in step.iterdir() if f.is_file())
    elif path.is_dir():
        files = [next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).exists()), path)]
    else:
        files = [path]
    if not all(f.is_file() for f in files):
        return ""
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):  # noqa: B023 (used at once, in this iteration)
                digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- sharded checkpoints (FSDP)


def sharded_step(path: str | Path) -> Path | None:
    """The step folder of a sharded checkpoint that `path` names: out_dir/sharded (its latest), a pointer file
    in it (latest, best), or a step folder; None where `path` is none of these. A pointer that names no
    complete step folder is an error: it must never let a reader pass over to another checkpoint."""
    path = Path(path)
    if path.is_dir() and (path / "latest").is_file():
        path = path / "latest"
    if path.is_file() and path.name in POINTERS:
        pointer = f"{path.parent.name}/{path.name}"
        try:
            name = path.read_text().strip()
        except (UnicodeDecodeError, OSError) as e:
            raise CheckpointError(f"{pointer} is not the name of a step folder ({path}: {e})") from e
        if not is_step_folder(path.parent / name):
            raise CheckpointError(f"{pointer} names {name}, which is missing or incomplete in {path.parent}")
        return path.parent / name
    return path if is_step_folder(path) else None


def is_step_folder(path: Path) -> bool:
    return path.is_dir() and (path / META).is_file() and (path / ".metadata").is_file()


def latest_checkpoint(out_dir: str | Path) -> Path:
    """What a resumed run continues: out_dir/ckpt.pt or out_dir/sharded (its `latest`), whichever was saved
    last by what they record (save_number, then step): a run may switch between DDP and FSDP, and a new run
    in an old folder writes one of the two. A checkpoint there that cannot be read is an error, not passed over."""
    out_dir = Path(out_dir)
    found = {path: Checkpoint.load(path, weights=False) for path in checkpoint_paths(out_dir)}
    if not found:
        raise CheckpointError(f"no checkpoint found in {out_dir}: neither ckpt.pt nor sharded/latest")
    return max(found, key=lambda path: (found[path].save_number or 0, found[path].iter_num))


def checkpoint_paths(out_dir: Path) -> list[Path]:
    """The checkpoints a run folder holds (ckpt.pt, sharded/): a resume continues the latest of them."""
    return [path for path in (out_dir / "ckpt.pt", out_dir / SHARDED) if path.is_file() or sharded_step(path)]


def next_save_number(out_dir: str | Path) -> int:
    """The save_number of a checkpoint written now in out_dir: one more than any there (an unreadable one,
    which no resume continues, counts as none)."""
    numbers = [0]
    for path in (Path(out_dir) / "ckpt.pt", Path(out_dir) / SHARDED):
        try:
            if path.is_file() or sharded_step(path):
                numbers.append(Checkpoint.load(path, weights=False).save_number or 0)
        except CheckpointError:
            pass
    return 1 + max(numbers)


def save_sharded(
    out_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ckpt: Checkpoint, best: bool
) -> Path:
    """Every process writes its shards of the model and its optimizer into a new step folder of
    out_dir/sharded; only then does process 0 point `best` (when it is) and `latest` at it, atomically, and
    remove the folders of this step or earlier that no pointer names. A kill at any moment leaves the previous
    checkpoint whole and named. A failed write is one CheckpointError, `latest` still naming the previous one."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(out_dir) / SHARDED
    name = [f"step-{ckpt.iter_num:08d}-{time.time_ns()}"]  # unique: a re-save of a step never overwrites it
    dist.broadcast_object_list(name, src=0)
    folder = root / name[0]
    model_state, optimizer_state = get_state_dict(model, optimizer)
    try:
        dcp.save({"model": model_state, "optim": optimizer_state}, checkpoint_id=folder)  # returns once all wrote
    except CheckpointException as e:  # each process's error with its traceback: say the errors only
        errors = {f"{type(err).__name__}: {err}" for err, _ in e.failures.values()}
        raise CheckpointError(f"cannot write the sharded checkpoint {folder}: {'; '.join(sorted(errors))}") from e
    if dist.get_rank() == 0:
        ckpt.save(folder / META)
        # `best` first: a kill between the two leaves `latest` at the previous step, which the resume trains
        # again to this one, never a `best` behind the best step that a resume would keep naming
        for pointer in ("best", "latest") if best else ("latest",):
            with atomic_file(root / pointer) as f:
                f.write(folder.name.encode())
        named = {(root / p).read_text().strip() for p in POINTERS if (root / p).is_file()}
        for old in root.glob("step-*"):
            step = re.fullmatch(r"step-(\d+)-\d+", old.name)
            if old.name not in named and step and int(step[1]) <= ckpt.iter_num:  # a later step is never removed
                shutil.rmtree(old, ignore_errors=True)
    return folder


def load_sharded(step: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """A sharded checkpoint's weights (and AdamW state) into a model, sharded by FSDP or whole, on any number
    of processes: DCP reads each process's part of every tensor. Collective where a process group exists."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict, set_state_dict

    if optimizer is None:
        state = {"model": get_model_state_dict(model)}
    else:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optimizer_state}
    check_metadata(step)  # its error as it is: inside dcp.load it comes wrapped with DCP's failed fallback
    with warnings.catch_warnings():
        if not dist.is_initialized():  # DCP warns that it reads in this one process: what is meant here
            warnings.simplefilter("ignore", UserWarning)
        try:
            dcp.load(state, storage_reader=safe_reader(step), planner=safe_planner())
        except CheckpointException as e:  # each process's error, with its traceback: say the errors only
            errors = {f"{type(err).__name__}: {err}" for err, _ in e.failures.values()}
            raise CheckpointError(f"cannot read the sharded checkpoint {step}: {'; '.join(sorted(errors))}") from e
        except Exception as e:
            raise CheckpointError(f"cannot read the sharded checkpoint {step}: {e}") from e
    try:
        optim = state.get("optim", {})
        set_state_dict(model, optimizer or [], model_state_dict=state["model"], optim_state_dict=optim)
    except (RuntimeError, AttributeError, TypeError, ValueError, KeyError) as e:  # what it read is no such state
        raise CheckpointError(f"the sharded checkpoint {step} does not fit the model: {e}") from e


# What a DCP .metadata file is made of: the classes its pickle may name, and nothing that runs code.
DCP_METADATA_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    *(
        ("torch.distributed.checkpoint.metadata", name)
        for name in (
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorProperties",
            "TensorStorageMetadata",
            "ChunkStorageMetadata",
            "BytesStorageMetadata",
            "_MEM_FORMAT_ENCODING",
        )
    ),
}


class MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if (module, name) not in DCP_METADATA_GLOBALS and not dtype:
            raise pickle.UnpicklingError(f"{module}.{name} is refused: a checkpoint's metadata names no code")
        return super().find_class(module, name)


def check_metadata(step: Path) -> object:
    """A step's .metadata read by an unpickler of DCP's own classes only (DCP's own pickle.load runs any
    code), checked to be DCP's Metadata in fields DCP can use, naming files in its own folder (else DCP
    falls back to a process's unchecked __N.metadata, or fails with a traceback)."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"cannot read the sharded checkpoint {step}: .metadata: {why}")

    try:
        with open(step / ".metadata", "rb") as f:
            metadata = MetadataUnpickler(f).load()
    except Exception as e:  # a truncated pickle fails in many ways
        raise refuse(str(e)) from e
    if not isinstance(metadata, Metadata):
        raise refuse(f"it holds {type(metadata).__name__}, not DCP's Metadata")
    fields = {"state_dict_metadata": dict, "storage_data": dict, "storage_meta": (StorageMeta, type(None))}
    for name, kind in fields.items():
        if not isinstance(getattr(metadata, name, None), kind):
            raise refuse(f"its {name} is a {type(getattr(metadata, name, None)).__name__}")
    for info in metadata.storage_data.values():
        if not (isinstance(info, _StorageInfo) and isinstance(info.relative_path, str)):
            raise refuse(f"a storage entry is {info!r}")
        if Path(info.relative_path).name != info.relative_path:
            raise CheckpointError(
                f"the sharded checkpoint {step} names a file outside its folder: {info.relative_path}"
            )
    return metadata


def safe_reader(step: Path) -> object:
    """DCP's file reader, but reading .metadata through check_metadata and never a process's own
    __N.metadata (DCP's fallback where .metadata fails), both of which DCP's own unpickles unchecked."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            if kwargs.get("rank") is not None:
                raise CheckpointError("only .metadata is read, not a process's own metadata file")
            metadata = check_metadata(step)
            if metadata.storage_meta is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(step)


def safe_planner() -> object:
    """DCP's load planner, but reading byte items (optimizer settings) as torch.load(weights_only=True) does:
    DCP's own reads them with weights_only=False."""
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value):
            torch.load(value, weights_only=True)  # raises on anything but plain data, before DCP's own load
            value.seek(0)
            super().load_bytes(read_item, value)

    return SafePlanner()


def read_sharded(step: Path, weights: bool = True, optimizer: bool = False) -> Checkpoint:
    """A sharded checkpoint in this one process, as the Checkpoint its single file would hold: the weights
    (unless weights=False) and, with `optimizer`, the AdamW state in torch's own format."""
    try:
        ckpt = Checkpoint(**torch.load(step / META, map_location="cpu", weights_only=True))
    except Exception as e:
        raise CheckpointError(f"cannot load {step / META} (truncated or corrupt): {e}") from e
    if not weights:
        return ckpt
    model = GPT(GPTConfig.from_model_args(ckpt.model_args))
    if (ckpt.config or {}).get("dtype") == TRUE_BF16:  # DCP reads into tensors of the dtype it wrote
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16)
    opt = None
    if optimizer:
        config = ckpt.config
        # a frozen embedding has no AdamW state: the optimizer must hold the parameters the run's did
        model.transformer.wte.weight.requires_grad_(not config.get("freeze_embedding", False))
        betas = (config["beta1"], config["beta2"])
        decay_1d = config.get("decay_1d_params", False)
        opt = model.configure_optimizers(config["weight_decay"], config["learning_rate"], betas, "cpu", decay_1d)
    load_sharded(step, model, opt)
    ckpt.model = model.state_dict()
    ckpt.optimizer = model.optimizer_state_dict(opt) if opt else None
    return ckpt


def consolidate(source: str | Path, out: str | Path) -> Checkpoint:
    """A sharded checkpoint written as one ckpt.pt file (weights, AdamW state, and the rest): what nanoGPT,
    a DDP run's resume and every command here read."""
    step = sharded_step(source)
    if step is None:
        raise CheckpointError(f"{source} is no sharded checkpoint (a step folder, or a folder with `latest`)")
    if Path(out).resolve().is_relative_to(step.parent.resolve()):
        raise CheckpointError(f"{out} is inside the sharded checkpoint {step.parent}: write the file elsewhere")
    ckpt = read_sharded(step, optimizer=True)
    ckpt.save(out)
    return ckpt


def _add_consolidate_arguments(p) -> None:
    p.add_argument("source", help="out_dir/sharded (its latest), out_dir/sharded/best, or a step folder")
    p.add_argument("out", help="the ckpt.pt to write")


def _consolidate_command(args) -> int:
    output_file(args.out)
    if not Path(args.out).parent.is_dir():  # atomic_file writes beside it: its folder must be there
        raise CheckpointError(f"cannot write {args.out}: No such file or directory {Path(args.out).parent}")
    ckpt = consolidate(args.source, args.out)
    print(f"wrote {args.out}: step {ckpt.iter_num}, {ckpt.tokens or 0:,} tokens, {len(ckpt.model)} tensors")
    return 0


if __name__ == "__main__":
    commands = {"consolidate": (_add_consolidate_arguments, _consolidate_command, consolidate.__doc__.split(":")[0])}
    sys.exit(run_command("checkpoint.py", __doc__, commands, sys.argv[1:]))
