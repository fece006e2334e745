"""The prepared-corpus format: `train.bin` / `val.bin` (flat token ids) and `meta.json`.

The bins are nanoGPT's format: uint16 ids, or uint32 for a vocabulary beyond 65,536 tokens (Llama 3's);
meta.json records the tokenizer, vocab size, dtype and token counts. Every
file is written under a temporary name and renamed into place, and meta.json is written last, so a
folder with a meta.json is complete. nanoGPT's character-level corpora carry a `meta.pkl` instead
(`vocab_size`, `stoi`, `itos`); a folder with neither holds GPT-2 tokens, as nanoGPT's openwebtext.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np

from runtime import UserError, write_json

DTYPE = np.uint16  # nanoGPT's, and that of any vocabulary up to 65,536 tokens


def dtype_for(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def token_dtype(meta: dict | None) -> np.dtype:
    """The dtype of a corpus's bins: meta.json's, or nanoGPT's uint16 for a folder without one."""
    return np.dtype(meta.get("dtype", "uint16")) if meta else np.dtype(DTYPE)


def write_meta(out_dir: Path, meta: dict) -> None:
    write_json(out_dir / "meta.json", meta)


def read_meta(data_dir: Path) -> dict | None:
    """meta.json of a prepared folder, or None for a bare nanoGPT folder that has only the bins."""
    path = Path(data_dir) / "meta.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def open_tokens(data_dir: Path, split: str) -> np.memmap:
    """Memory-map a split; the OS pages it in on demand, so memory use does not grow with its size."""
    path = Path(data_dir) / f"{split}.bin"
    if not path.exists():
        raise UserError(f"{path} not found: prepare the corpus first (python data/<corpus>/prepare.py)")
    return np.memmap(path, dtype=token_dtype(read_meta(data_dir)), mode="r")


class _PlainDataUnpickler(pickle.Unpickler):
    """Admits dicts, lists, strings and numbers only: a pickle naming any class or function is refused
    before anything in it runs."""

    def find_class(self, module: str, name: str) -> None:
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, and only plain dicts, strings and numbers load")


def read_char_meta(data_dir: Path) -> dict | None:
    """nanoGPT's meta.pkl of a character-level corpus, {'vocab_size', 'stoi', 'itos'}, or None where absent."""
    path = Path(data_dir) / "meta.pkl"
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            meta = _PlainDataUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise UserError(f"{path} is not a character vocabulary that can be read safely: {e}") from e
    if not (
        isinstance(meta, dict)
        and isinstance(meta.get("vocab_size"), int)
        and isinstance(meta.get("stoi"), dict)
        and isinstance(meta.get("itos"), dict)
        and all(isinstance(c, str) and isinstance(i, int) for c, i in meta["stoi"].items())
        and all(isinstance(i, int) and isinstance(c, str) for i, c in meta["itos"].items())
    ):
        raise UserError(f"{path} is not nanoGPT's character vocabulary {{'vocab_size': int, 'stoi', 'itos'}}")
    return meta


def corpus_vocabulary(data_dir: Path) -> dict | None:
    """What a corpus's token ids mean, {"tokenizer", "vocab_size"} (and, for a Hugging Face tokenizer, a
    "tokenizer_fingerprint" of its vocabulary): from meta.json, or nanoGPT's meta.pkl (its characters,
    named by a hash of them); None for bare bins (nanoGPT's GPT-2 corpora)."""
    meta = read_meta(data_dir)
    if meta is not None:
        keys = ("tokenizer", "tokenizer_fingerprint", "vocab_size")
        return {k: meta[k] for k in keys if k in meta}
    chars = read_char_meta(data_dir)
    if chars is None:
        return None
    digest = hashlib.sha256(json.dumps(sorted(chars["stoi"].items())).encode()).hexdigest()[:12]
    return {"tokenizer": f"characters-{digest}", "vocab_size": chars["vocab_size"]}
