"""Prepare a RedPajama-style multi-source corpus for the low-data regime: one corpus folder per source, each
holding its share of a token budget, to be mixed by weight in training (train.py's data_dir mixture).

    python data/redpajama/prepare.py --input /data/redpajama-sample --max_tokens 1_000_000_000 \
        --tokenizer openlm-research/open_llama_3b --out_dir data/redpajama

--input holds one folder per source (arxiv, book, c4, cc, github, stackexchange, wikipedia) of .jsonl,
.parquet or .txt files: RedPajama's 1B-token sample is its jsonl files, one or more per source. Each
source's training split stops at its share of --max_tokens by weight (--weights; default LLaMA's data mix,
which the Inheritune authors trained OpenLLaMA's student on: arxiv 2.5, book 4.5, c4 15, cc 67, github 4.5,
stackexchange 2, wikipedia 4.5), split from val as nanoGPT splits OpenWebText. Writes out_dir/<source>/
(bins and meta.json) and prints the data_dir mixture for a config (config/inheritune_openllama_3b_13.py
holds it). A rerun skips sources already prepared with the same settings and refuses those prepared with
others (another --max_tokens gives other budgets) until --force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data.pipeline import (
    already_prepared,
    load_local_dataset,
    map_style_batches,
    parse_checked,
    prepared_settings,
    write_corpus,
)
from data.tokenizer import encoder_for
from runtime import UserError, command_main

LLAMA_MIX = {"arxiv": 2.5, "book": 4.5, "c4": 15.0, "cc": 67.0, "github": 4.5, "stackexchange": 2.0, "wikipedia": 4.5}


def parse_weights(text: str) -> dict[str, float]:
    try:
        weights = {name: float(w) for name, w in (item.split(":") for item in text.split(",") if item)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected source:weight,source:weight, got {text!r}") from None
    if not weights or min(weights.values()) <= 0:
        raise argparse.ArgumentTypeError(f"weights must be positive, got {text!r}")
    return weights


def budgets(sources: list[str], weights: dict[str, float], max_tokens: int) -> dict[str, int]:
    """Each source's share of the training tokens, by weight among the sources present."""
    unknown = [s for s in sources if s not in weights]
    if unknown:
        raise UserError(f"sources {unknown} have no weight: give --weights (known: {', '.join(weights)})")
    total = sum(weights[s] for s in sources)
    return {s: round(max_tokens * weights[s] / total) for s in sources}


@command_main
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True, help="a folder of source folders")
    p.add_argument("--out_dir", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--max_tokens", type=int, required=True, help="training tokens of all sources together")
    p.add_argument("--weights", type=parse_weights, default=LLAMA_MIX, help="source:weight,... (default: LLaMA's)")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, a Hugging Face tokenizer (folder, hub name), or a GGUF's")
    p.add_argument("--text_field", default="text", help="the text column of jsonl / parquet input")
    p.add_argument("--test_size", type=float, default=0.0005, help="share of each source's documents in val")
    p.add_argument("--seed", type=int, default=2357)
    p.add_argument("--num_proc", type=int, default=2, help="tokenizer threads and loader processes")
    p.add_argument("--force", action="store_true", help="prepare every source again")
    args = parse_checked(p, argv)
    sources = sorted(d.name for d in args.input.iterdir() if d.is_dir()) if args.input.is_dir() else []
    if not sources:
        raise UserError(f"{args.input} holds no source folders (arxiv/, book/, ...)")
    shares = budgets(sources, args.weights, args.max_tokens)
    missing = [s for s in args.weights if s not in sources]
    if missing:
        print(f"note: no folder for {', '.join(missing)}; the budget is shared among {', '.join(sources)}")
    encoder = encoder_for(args.tokenizer)
    for source in sources:
        out = args.out_dir / source
        settings = prepared_settings(args) | {"max_tokens": shares[source]}
        if not args.force and already_prepared(out, settings):
            continue
        print(f"{source}: up to {shares[source]:,} training tokens", flush=True)
        ds = load_local_dataset([str(args.input / source)], args.text_field, args.num_proc)
        batches, total = map_style_batches(ds, args.test_size, args.seed, None)
        meta = {
            "source": str(args.input / source),
            "weight": args.weights[source],
            "split": "train_test_split",
            "test_size": args.test_size,
            "seed": args.seed,
            "subset": {"max_tokens": shares[source]},
        }
        write_corpus(out, batches, args.num_proc, meta, shares[source], total, encoder)
    mixture = {str(args.out_dir / s): args.weights[s] for s in sources}
    print(f"mix them in training: data_dir = {mixture}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
