"""Validate a prepared corpus folder and print its summary.

    python data/check.py data/openwebtext [--no_hash]

Checks each split named in meta.json: the bin exists and holds exactly the recorded number of tokens of
its dtype, every token id is below the vocab size, the number of end-of-document tokens equals the number
of documents, and the sha256 matches. A bare nanoGPT folder (bins, no meta.json) gets the checks that need
no record: whole tokens and ids below GPT-2's vocab size. Reads the bins in chunks, so memory stays flat.
Exits 1 and names every problem when the folder is not sound.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from data.format import read_meta, token_dtype
from data.tokenizer import EOT_TOKEN, VOCAB_SIZE

CHUNK_TOKENS = 1 << 26  # 128 MiB of uint16 per read


def scan_bin(path: Path, hashes: bool, dtype: np.dtype, eot_token: int) -> dict:
    """Token count, largest id, end-of-document count and (optionally) sha256 of a bin, read in chunks."""
    digest = hashlib.sha256()
    tokens, max_id, eot = 0, -1, 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_TOKENS * dtype.itemsize):
            if hashes:
                digest.update(chunk)
            ids = np.frombuffer(chunk[: len(chunk) // dtype.itemsize * dtype.itemsize], dtype=dtype)
            tokens += len(ids)
            if len(ids):
                max_id = max(max_id, int(ids.max()))
            eot += int(np.count_nonzero(ids == eot_token))
    return {
        "bytes": path.stat().st_size,
        "tokens": tokens,
        "max_id": max_id,
        "eot": eot,
        "sha256": digest.hexdigest() if hashes else None,
    }


def split_problems(name: str, found: dict, recorded: dict | None, vocab_size: int, dtype: np.dtype) -> list[str]:
    problems = []
    if found["bytes"] % dtype.itemsize:
        problems.append(f"{name}.bin is {found['bytes']} bytes, not a whole number of {dtype.name} tokens (truncated?)")
    if found["max_id"] >= vocab_size:
        problems.append(f"{name}.bin holds token id {found['max_id']}, outside the vocabulary of {vocab_size}")
    if recorded is None:
        return problems
    if found["tokens"] != recorded["tokens"]:
        problems.append(f"{name}.bin has {found['tokens']:,} tokens, meta.json records {recorded['tokens']:,}")
    if found["eot"] != recorded["documents"]:
        problems.append(f"{name}.bin ends {found['eot']:,} documents, meta.json records {recorded['documents']:,}")
    if found["sha256"] is not None and found["sha256"] != recorded["sha256"]:
        problems.append(f"{name}.bin sha256 {found['sha256'][:12]}... differs from meta.json's")
    return problems


def check_folder(data_dir: Path, hashes: bool = True) -> tuple[dict, list[str]]:
    """What each split holds, and every problem found (an empty list for a sound folder)."""
    meta = read_meta(data_dir)
    recorded = meta["splits"] if meta else {"train": None, "val": None}
    vocab_size = int(meta["vocab_size"]) if meta else VOCAB_SIZE
    dtype, eot_token = token_dtype(meta), (meta or {}).get("eot_token", EOT_TOKEN)
    found, problems = {}, []
    for name in recorded:
        path = data_dir / f"{name}.bin"
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        found[name] = scan_bin(path, hashes, dtype, eot_token)
        problems += split_problems(name, found[name], recorded[name], vocab_size, dtype)
    return found, problems


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--no_hash", action="store_true", help="skip the sha256 check (faster on large bins)")
    args = p.parse_args(argv)
    meta = read_meta(args.data_dir)
    if meta is None:
        print(f"{args.data_dir}: no meta.json (a bare nanoGPT folder, or an unfinished prepare run)")
    else:
        source = {k: v for k, v in meta.items() if k not in ("splits",)}
        print(f"{args.data_dir}: {', '.join(f'{k}={v}' for k, v in source.items())}")
    found, problems = check_folder(args.data_dir, hashes=not args.no_hash)
    for name, f in found.items():
        size = f"{f['bytes'] / 2**20:,.1f} MiB"
        print(f"  {name}: {f['tokens']:,} tokens, {f['eot']:,} documents, {size}, max id {f['max_id']}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print("ok" + ("" if args.no_hash else " (hashes match)") if meta else "ok (no meta.json: sizes and ids only)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
