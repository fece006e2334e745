"""Prepare the Python standard library's own sources as GPT-2 tokens: a new "language" for an English model,
with no download (every Python installation ships it). The corpus of `make demo-cpt`.

    python data/python/prepare.py [--out_dir data/python] [--max_tokens 2_000_000]

Each .py file of the running interpreter's standard library (site-packages left out) is one document,
read in sorted order and followed by <|endoftext|>. A file goes to val when a keyed hash of its text falls
below --test_size (the split of data/pipeline.py's streams), so whole modules are held out. meta.json
records the Python version, since another version's library is another corpus.
"""

from __future__ import annotations

import argparse
import platform
import sys
import sysconfig
from pathlib import Path

from data.pipeline import (
    already_prepared,
    parse_checked,
    prepared_settings,
    streamed_batches,
    write_corpus,
)
from data.tokenizer import encoder_for
from runtime import command_main


def stdlib_sources() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts and p.is_file())


def prepare(
    out_dir: Path, test_size: float, seed: int, max_tokens: int | None, num_threads: int, tokenizer: str = "gpt2"
) -> dict:
    files = stdlib_sources()
    texts = (text for text in (p.read_text(encoding="utf-8", errors="replace") for p in files) if text.strip())
    meta = {"source": f"Python {platform.python_version()} standard library", "files": len(files), "split": "hash"}
    meta |= {"test_size": test_size, "seed": seed, "subset": {"fraction": None, "max_tokens": max_tokens}}
    batches = streamed_batches(texts, test_size, seed, None)
    meta = write_corpus(out_dir, batches, num_threads, meta, max_tokens, encoder=encoder_for(tokenizer))
    for split, counts in meta["splits"].items():
        print(f"{split}: {counts['documents']:,} files, {counts['tokens']:,} tokens")
    return meta


@command_main
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--test_size", type=float, default=0.05, help="share of the files held out for val")
    p.add_argument("--seed", type=int, default=2357, help="key of the split's hash")
    p.add_argument("--max_tokens", type=int, default=None, help="keep training files until they hold this many tokens")
    p.add_argument("--num_proc", type=int, default=2, help="tokenizer threads")
    p.add_argument("--force", action="store_true", help="prepare again over a complete folder")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, a Hugging Face tokenizer (folder, hub name), or a GGUF's")
    args = parse_checked(p, argv)
    if not args.force and already_prepared(args.out_dir, prepared_settings(args)):
        return 0
    prepare(args.out_dir, args.test_size, args.seed, args.max_tokens, args.num_proc, args.tokenizer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
