"""The checkpoint format, and the one loader of every model source.

    from checkpoint import Checkpoint, load_model
    model, ckpt = load_model("out-shakespeare/ckpt.pt")   # or "gpt2-medium", or a Hugging Face folder
    Checkpoint.of(model, iter_num=100).save("student.pt")

A checkpoint is a plain dict of nanoGPT's keys (so a nanoGPT checkpoint is one) plus this project's own,
written atomically and read with `torch.load(weights_only=True)`, so a checkpoint can never run code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from configurator import TrainConfig
from data.format import corpus_vocabulary
from data.tokenizer import source_tokenizer
from hf import HF_GPT2_NAMES, is_hf_source
from model import GPT, GPT2_VOCAB, NANOGPT_PADDED_GPT2_VOCAB, GPTConfig, load_weights
from runtime import atomic_file

# Keys this project's configs had once (before inherit_parts), still in their checkpoints.
RETIRED_CONFIG_KEYS = {"inherit_embeddings", "inherit_ln_f"}


class CheckpointError(RuntimeError):
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

    def tokens_seen(self) -> int | None:
        """Tokens this model has been trained on: its run's own, and those of the model the run continued
        from; None where either is unknown."""
        own = self.tokens if self.tokens is not None else self.tokens_from_config()
        before = 0 if self.continued_from is None else self.continued_from.get("tokens_seen")
        return None if own is None or before is None else own + before

    def tokens_from_config(self) -> int | None:
        """The run's tokens for a checkpoint that does not count them (nanoGPT's, and this project's before
        2026-12): steps x tokens per step, where the config is one train.py reads, whose
        gradient_accumulation_steps counts the micro-batches of all processes. Others are unknown: that of
        LLM-Inheritune's script holds a per-GPU count and not the number of GPUs."""
        per_step_keys = {"batch_size", "gradient_accumulation_steps", "block_size"}
        known_keys = {f.name for f in fields(TrainConfig)} | RETIRED_CONFIG_KEYS
        if not self.config or not per_step_keys <= self.config.keys() <= known_keys:
            return None
        per_step = self.config["batch_size"] * self.config["gradient_accumulation_steps"] * self.config["block_size"]
        return self.iter_num * per_step

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
        what the checkpoint carries: the meta of the corpus its config names, else GPT-2's BPE for a model of
        GPT-2's 50,257 rows (50,304 padded, as nanoGPT trains it). None where nothing tells."""
        if self.tokenizer is not None:
            return self.tokenizer
        folder = self.corpus_folder()
        record = corpus_vocabulary(folder) if folder is not None and folder.is_dir() else None
        if record is not None:
            return record
        if self.model_args.get("vocab_size") in (GPT2_VOCAB, NANOGPT_PADDED_GPT2_VOCAB):
            return {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB}
        return None

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
        """Read a checkpoint; with weights=False only what describes it, from a memory map: the tensors
        are never read, so this costs milliseconds even for GPT-2 xl with its optimizer state."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} not found")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=not weights)
        except Exception as e:  # torch raises many types here (UnpicklingError, RuntimeError, EOFError...)
            reason = "truncated, corrupt, or not a weights-only checkpoint"
            raise CheckpointError(f"cannot load {path} ({reason}): {e}") from e
        missing = {"model", "model_args"} - state.keys()
        if missing:
            raise CheckpointError(f"{path} is not a model checkpoint: it lacks {sorted(missing)}")
        if "init" in state:  # this project's checkpoints before 2026-12 named continued_from `init`
            state["continued_from"] = state.pop("init")
        known = {f.name for f in fields(cls)}
        ckpt = cls(**{k: v for k, v in state.items() if k in known})
        if isinstance(ckpt.best_val_loss, torch.Tensor):  # nanoGPT stores the loss estimate's tensor
            ckpt.best_val_loss = ckpt.best_val_loss.item()
        if not weights:
            ckpt.model = ckpt.optimizer = ckpt.scaler = None
        return ckpt


def load_model(source: str | Path, device: str | torch.device = "cpu", dropout: float = 0.0) -> tuple[GPT, Checkpoint]:
    """A GPT on `device` from a checkpoint file (this project's or nanoGPT's) or a Hugging Face model, and
    what is known of it, as a Checkpoint without weights (they live in the model only, so a large model is
    not held twice): a file's training state, or a Hugging Face model's config and tokenizer."""
    source = str(source)
    if is_hf_source(source):
        model = GPT.from_pretrained(source, dict(dropout=dropout)).to(device)
        tokenizer = {"tokenizer": "gpt2"} if source in HF_GPT2_NAMES else source_tokenizer(source)
        return model, Checkpoint(model_args=model.config.model_args(), tokenizer=tokenizer)
    ckpt = Checkpoint.load(source)
    model = GPT(GPTConfig.from_model_args(ckpt.model_args, dropout=dropout))
    load_weights(model, ckpt.model)
    ckpt.model = None
    return model.to(device), ckpt


def source_sha256(source: str | Path) -> str:
    """sha256 of a checkpoint file, or of a Hugging Face folder's weights; '' for a hub name."""
    path = Path(source)
    if path.is_dir():
        path = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).exists()), None)
    if path is None or not path.is_file():
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
