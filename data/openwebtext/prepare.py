"""Prepare OpenWebText as GPT-2 tokens, as nanoGPT does: train.bin (~9B tokens), val.bin (~4M), meta.json.

    python data/openwebtext/prepare.py [--num_proc 16] [--out_dir data/openwebtext]
    python data/openwebtext/prepare.py --input /data/owt/*.parquet        # a local copy, no hub access
    python data/openwebtext/prepare.py --fraction 0.001 --out_dir data/owt_0.1pct   # the low-data regime

The hub corpus (8,013,769 documents) is split by datasets' train_test_split(test_size=0.0005,
seed=2357, shuffle=True) and each document is encode_ordinary + <|endoftext|>: nanoGPT's procedure,
so the bins equal nanoGPT's for the same rows. The tokenizer is loaded offline (data/tokenizer.py).
"""

from __future__ import annotations

import argparse
import sys

from data.pipeline import map_style_batches, prepare_main
from runtime import UserError

HUB_DATASET = "Skylion007/openwebtext"  # what nanoGPT's load_dataset("openwebtext") resolves to


def hub_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hub_revision",
        default=None,
        help="a revision of the hub dataset, e.g. refs/convert/parquet (its parquet export), "
        "for `datasets` versions that no longer run its loading script",
    )


def open_hub(args: argparse.Namespace):
    import datasets

    try:
        ds = datasets.load_dataset(HUB_DATASET, split="train", num_proc=args.num_proc, revision=args.hub_revision)
    except RuntimeError as e:  # datasets >= 4 refuses script datasets with a RuntimeError
        raise UserError(f"{HUB_DATASET}: {e}. Try --hub_revision refs/convert/parquet, or --input local files") from e
    batches, total = map_style_batches(ds, args.test_size, args.seed, args.fraction)
    return batches, total, {"source": HUB_DATASET, "revision": args.hub_revision, "split": "train_test_split"}


if __name__ == "__main__":
    sys.exit(prepare_main(sys.argv[1:], __doc__, "data/openwebtext", hub_options, open_hub))
