"""Prepare FineWeb-Edu as GPT-2 tokens, streamed from the hub: train.bin, val.bin, meta.json.

    python data/fineweb_edu/prepare.py [--subset sample-10BT] [--out_dir data/fineweb_edu]
    python data/fineweb_edu/prepare.py --max_tokens 100_000_000 --out_dir data/fineweb_edu_100M
    python data/fineweb_edu/prepare.py --input /data/fineweb-edu/sample/10BT   # local parquet files

The hub corpus is streamed: nothing is downloaded ahead. A streamed document goes to val when a hash of
its text (keyed by --seed) falls below --test_size, so the split does not depend on the order of the
stream. With --max_tokens the training split stops at the cut, but the stream is still read to its end
for val's documents (only they are tokenized past the cut): val is the same whatever the cut.
Local --input files are split as nanoGPT splits OpenWebText (train_test_split). Same format and options
as data/openwebtext/prepare.py.
"""

from __future__ import annotations

import argparse
import sys

from data.pipeline import prepare_main, streamed_batches

HUB_DATASET = "HuggingFaceFW/fineweb-edu"


def hub_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subset", default="sample-10BT", help="FineWeb-Edu config: sample-10BT, sample-100BT, default...")


def open_hub(args: argparse.Namespace):
    import datasets

    stream = datasets.load_dataset(HUB_DATASET, name=args.subset, split="train", streaming=True)
    texts = (row["text"] for row in stream)
    batches = streamed_batches(texts, args.test_size, args.seed, args.fraction)
    return batches, None, {"source": HUB_DATASET, "split": "hash"}  # --subset: in "options"


if __name__ == "__main__":
    sys.exit(prepare_main(sys.argv[1:], __doc__, "data/fineweb_edu", hub_options, open_hub))
