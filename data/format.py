"""The prepared-corpus format: `train.bin` / `val.bin` (flat uint16 GPT-2 token ids) and `meta.json`.

The bins are nanoGPT's format; meta.json records the tokenizer, vocab size and token counts. Every
file is written under a temporary name and renamed into place, and meta.json is written last, so a
folder with a meta.json is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

DTYPE = np.uint16


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A file to write `path` through: it is written as `path.tmp` and renamed into place only once
    complete, so a crash at any moment leaves either the old file or the new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_meta(out_dir: Path, meta: dict) -> None:
    write_atomic(out_dir / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())


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
        raise FileNotFoundError(f"{path} not found: prepare the corpus first (python data/<corpus>/prepare.py)")
    return np.memmap(path, dtype=DTYPE, mode="r")
