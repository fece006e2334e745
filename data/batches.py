"""Training and evaluation batches: random windows of a prepared corpus, or of a weighted mixture of corpora,
each batch a pure function of its coordinates (seed, stream, iteration, index), so a resumed run, or a run
on another number of processes, sees exactly the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.format import open_tokens
from runtime import UserError


def batch_rng(seed: int, stream: int, iter_num: int, index: int) -> np.random.Generator:
    """The sampler of one micro-batch: a pure function of its coordinates, never of process history."""
    return np.random.default_rng([seed, stream, iter_num, index])


def get_batch(
    corpora: str | dict[str, float],
    split: str,
    batch_size: int,
    block_size: int,
    vocab_size: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size windows of block_size + 1 tokens at random offsets: inputs and next-token targets.

    `corpora` is one corpus folder, or folders with weights: then each row's corpus is drawn by weight
    first, and its offset after, all from `rng`. One corpus draws no row choice, so its batches are the
    same whether or not it is written as a mixture."""
    weights = {corpora: 1.0} if isinstance(corpora, str) else corpora
    paths = list(weights)
    if len(paths) == 1:
        which = np.zeros(batch_size, dtype=np.int64)
    else:
        p = np.array([weights[path] for path in paths], dtype=np.float64)
        which = rng.choice(len(paths), size=batch_size, p=p / p.sum())
    buf = np.empty((batch_size, block_size + 1), dtype=np.int64)
    for c, path in enumerate(paths):
        rows = np.flatnonzero(which == c)
        if len(rows):
            buf[rows] = read_windows(path, split, block_size, vocab_size, rng, len(rows))
    t = torch.from_numpy(buf)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


def read_windows(
    data_dir: str, split: str, block_size: int, vocab_size: int, rng: np.random.Generator, count: int
) -> np.ndarray:
    # Re-opened for every batch: a long-lived np.memmap keeps the pages it touched referenced
    # and the process's memory grows with the bin (nanoGPT's fix of the same leak).
    data = open_tokens(Path(data_dir), split)
    if len(data) <= block_size:
        raise UserError(f"{data_dir}/{split}.bin has {len(data)} tokens, fewer than block_size + 1")
    ix = rng.integers(0, len(data) - block_size, size=count)
    windows = np.stack([data[i : i + block_size + 1] for i in ix]).astype(np.int64)
    if windows.max() >= vocab_size:
        raise UserError(
            f"{data_dir}/{split}.bin holds token id {windows.max()}, outside the model's vocabulary of "
            f"{vocab_size}: the bin was made with another tokenizer or is corrupt"
        )
    return windows
