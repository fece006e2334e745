"""Training and evaluation batches: random windows of a prepared corpus, each batch a pure function of its
coordinates (seed, stream, iteration, index), so a resumed run, or a run on another number of processes,
sees exactly the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.format import open_tokens


def batch_rng(seed: int, stream: int, iter_num: int, index: int) -> np.random.Generator:
    """The sampler of one micro-batch: a pure function of its coordinates, never of process history."""
    return np.random.default_rng([seed, stream, iter_num, index])


def get_batch(
    data_dir: str, split: str, batch_size: int, block_size: int, vocab_size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size windows of block_size + 1 tokens at random offsets: inputs and next-token targets."""
    # Re-opened for every batch: a long-lived np.memmap keeps the pages it touched referenced
    # and the process's memory grows with the bin (nanoGPT's fix of the same leak).
    data = open_tokens(Path(data_dir), split)
    if len(data) <= block_size:
        raise ValueError(f"{data_dir}/{split}.bin has {len(data)} tokens, fewer than block_size + 1")
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    buf = np.stack([data[i : i + block_size + 1] for i in ix]).astype(np.int64)
    if buf.max() >= vocab_size:
        raise ValueError(
            f"{data_dir}/{split}.bin holds token id {buf.max()}, outside the model's vocabulary of "
            f"{vocab_size}: the bin was made with another tokenizer or is corrupt"
        )
    t = torch.from_numpy(buf)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()
