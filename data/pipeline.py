"""Corpus preparation shared by the prepare scripts: documents in, `train.bin` / `val.bin` / `meta.json` out.

The token stream is nanoGPT's: `encode_ordinary(text)` followed by `<|endoftext|>` for every document,
in dataset order, train and val split by `datasets.Dataset.train_test_split(test_size, seed, shuffle=True)`
(nanoGPT: test_size 0.0005, seed 2357), so the bins equal nanoGPT's for the same documents.

Streaming and bounded memory: batches of documents are tokenized on a pool of threads (tiktoken
releases the GIL while it encodes) and appended to the bins as they finish, in order; at most a few
batches are in flight, so memory does not grow with the corpus. Bins are written as `*.tmp` and renamed
at the end, and meta.json (counts, sha256 of each bin, source, subset) is written last: a folder with a
meta.json is complete, and an interrupted run leaves only `.tmp` files.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data.format import read_meta, write_meta
from data.tokenizer import Encoder, encoder_for, gpt2_encoder
from runtime import UserError, command_main, output_folder

BATCH_DOCS = 512  # documents per tokenization task: large enough to amortise the hand-off between threads
INPUT_SUFFIXES = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def encode_documents(texts: list[str], encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
    """The documents' tokens, each followed by the end-of-document token, as one array of the encoder's
    dtype; and the end offset of each document in it."""
    docs = encoder.encode(texts)
    ends = np.cumsum([len(doc) + 1 for doc in docs])
    eot = np.array([encoder.eot], dtype=encoder.dtype)
    return np.concatenate([part for doc in docs for part in (doc, eot)]).astype(encoder.dtype), ends


Batches = Iterator[tuple[str, list[str]]]


def tokenize_in_order(
    batches: Batches, num_threads: int, encoder: Encoder
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(split, tokens, document ends) of each batch, in input order, computed on `num_threads` threads
    with at most 2 * num_threads batches in flight."""
    with ThreadPoolExecutor(num_threads) as pool:
        pending: deque = deque()
        for split, texts in batches:
            pending.append((split, pool.submit(encode_documents, texts, encoder)))
            if len(pending) >= 2 * num_threads:
                split, future = pending.popleft()
                yield split, *future.result()
        for split, future in pending:
            yield split, *future.result()


class BinWriter:
    """Appends tokens to `<split>.bin.tmp`, counting and hashing on the way; `commit` renames it into place."""

    def __init__(self, out_dir: Path, split: str) -> None:
        self.path = out_dir / f"{split}.bin"
        self.tmp = out_dir / f"{split}.bin.tmp"
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish() or discard()
        self.sha256 = hashlib.sha256()
        self.tokens = 0
        self.documents = 0

    def write(self, tokens: np.ndarray, n_docs: int) -> None:
        data = tokens.tobytes()
        self.file.write(data)
        self.sha256.update(data)
        self.tokens += len(tokens)
        self.documents += n_docs

    def finish(self) -> dict:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {"tokens": self.tokens, "documents": self.documents, "sha256": self.sha256.hexdigest()}

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class TokenizingProgress:
    """One status line on stderr, rewritten at most twice a second: documents (of how many, when known),
    tokens, tokens/s and the time left."""

    def __init__(self, total_documents: int | None) -> None:
        self.total = total_documents
        self.start = self.last = time.perf_counter()
        self.documents = self.tokens = 0

    def update(self, n_docs: int, n_tokens: int) -> None:
        self.documents += n_docs
        self.tokens += n_tokens
        now = time.perf_counter()
        if now - self.last >= 0.5:
            self.last = now
            self._print(end="\r")

    def close(self) -> None:
        self._print(end="\n")

    def _print(self, end: str) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        documents = f"{self.documents:,}"
        left = ""
        if self.total:
            documents += f"/{self.total:,} ({100 * self.documents / self.total:.1f}%)"
            seconds = elapsed * max(self.total - self.documents, 0) / max(self.documents, 1)
            left = f", {int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d} left"
        rate = f"{self.tokens / elapsed / 1e6:.2f} M tokens/s"
        line = f"tokenized {documents} documents, {self.tokens:,} tokens, {rate}{left}"
        print(line.ljust(100), end=end, file=sys.stderr, flush=True)


def documents_within(ends: np.ndarray, budget: int) -> int:
    """How many leading documents it takes to reach `budget` tokens (all of them if they hold fewer)."""
    return min(int(np.searchsorted(ends, budget)) + 1, len(ends))


def write_corpus(
    out_dir: Path,
    batches: Callable[[set[str]], Batches],
    num_threads: int,
    meta: dict,
    max_train_tokens: int | None,
    total_documents: int | None = None,
    encoder: Encoder | None = None,
) -> dict:
    """Tokenize the batches into train.bin and val.bin, then write meta.json; returns the meta.

    `batches(full)` yields (split, texts) and skips a split once it is in `full`: that is how the
    training split stops at `max_train_tokens`, cut after the first document that reaches it.
    `total_documents`, where the source knows it, gives the progress line a percentage and time left.
    The encoder is GPT-2 BPE unless given."""
    encoder = encoder or gpt2_encoder()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in ("meta.json", "train.bin", "val.bin"):  # from here until the end the folder is incomplete
        (out_dir / old).unlink(missing_ok=True)
    writers = {split: BinWriter(out_dir, split) for split in ("train", "val")}
    full: set[str] = set()
    progress = TokenizingProgress(total_documents)
    try:
        for split, tokens, ends in tokenize_in_order(batches(full), num_threads, encoder):
            if split in full:
                continue  # tokenized ahead before the split filled up
            n_docs = len(ends)
            if split == "train" and max_train_tokens is not None:
                n_docs = documents_within(ends, max_train_tokens - writers["train"].tokens)
            end = int(ends[n_docs - 1])
            writers[split].write(tokens[:end], n_docs)
            progress.update(n_docs, end)
            if split == "train" and max_train_tokens is not None and writers["train"].tokens >= max_train_tokens:
                full.add("train")
        progress.close()
        counts = {split: writer.finish() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    empty = [split for split, c in counts.items() if c["tokens"] == 0]
    if empty:
        for writer in writers.values():
            writer.discard()
        raise UserError(f"the {empty[0]} split is empty: too few documents for --test_size / --fraction")
    for writer in writers.values():
        writer.commit()
    meta = {**encoder.meta, "eot_token": encoder.eot, **meta, "splits": counts}
    write_meta(out_dir, meta)
    return meta


# ----------------------------------------------------------------------------- documents


def input_files(paths: list[str]) -> list[Path]:
    """Every supported file named or found (recursively, sorted) under the given paths, each once: a path
    given twice, a file under two given paths, or one file under two names (links), would put its documents
    in the corpus twice (and the copies on both sides of the split). A file is its device and inode."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in INPUT_SUFFIXES and p.is_file())
        elif path.is_file() and path.suffix in INPUT_SUFFIXES:
            files.append(path)
        elif path.is_file():
            raise UserError(f"{path}: unsupported input, expected one of {sorted(INPUT_SUFFIXES)}")
        else:
            raise UserError(f"{path} not found")
    if not files:
        raise UserError(f"no {'/'.join(sorted(INPUT_SUFFIXES))} files under {' '.join(paths)}")
    once: dict[tuple[int, int], Path] = {}
    for f in files:
        stat = f.stat()
        once.setdefault((stat.st_dev, stat.st_ino), f)  # in the order first found
    return list(once.values())


def text_file_documents(files: list[str], stamps: list[tuple[int, int]]) -> Iterator[dict]:
    """One document per .txt file (the layout of the original OpenWebText release).

    `stamps` (size, mtime of each file) is unused here but part of the arguments that datasets hashes to
    name its cache: without it, edited files with unchanged names would be read from a stale cache."""
    for f in files:
        try:
            yield {"text": Path(f).read_text(encoding="utf-8")}
        except UnicodeDecodeError as e:
            raise UserError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def load_text_files(files: list[str]):
    """Whole .txt files as a datasets.Dataset of one document each; a file that is not UTF-8 is named."""
    import datasets

    stamps = [(os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    gen_kwargs = {"files": files, "stamps": stamps}
    try:
        return datasets.Dataset.from_generator(text_file_documents, gen_kwargs=gen_kwargs)
    except datasets.exceptions.DatasetGenerationError as e:
        if isinstance(e.__cause__, UserError):  # text_file_documents' own, naming the file
            raise e.__cause__ from None
        raise


def load_rows(kind: str, files: list[str], text_field: str, num_proc: int):
    """jsonl / parquet rows as a datasets.Dataset; a file that cannot be read with the others (other
    columns), a text field that is not text, and a row without text are each named in one line."""
    import datasets

    refuse_text_fields_of_other_types(kind, files, text_field)
    try:
        ds = datasets.load_dataset(kind, data_files=files, split="train", num_proc=min(num_proc, len(files)))
    except datasets.exceptions.DatasetGenerationError as e:
        raise UserError(file_that_differs(kind, files) or f"{' '.join(files)}: {e.__cause__ or e}") from e
    if text_field not in ds.column_names:
        raise UserError(f"{files[0]} has no '{text_field}' field (columns: {ds.column_names}); see --text_field")
    feature = ds.features[text_field]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise UserError(f"{files[0]}: its '{text_field}' field holds {feature}, not text; see --text_field")
    column = ds.data.column(text_field)
    if column.null_count:
        import pyarrow.compute as pc

        file, row = file_and_row(kind, files, pc.index(pc.is_null(column), True).as_py())
        raise UserError(f"{file}: row {row + 1} has no text in its '{text_field}' field (null or missing)")
    bad = first_row_not_utf8(column)
    if bad is not None:
        file, row = file_and_row(kind, files, bad)
        raise UserError(f"{file}: row {row + 1} is not UTF-8 text in its '{text_field}' field")
    return ds


def first_row_not_utf8(column) -> int | None:
    """The index of the first string that is not UTF-8 in an Arrow string column (pyarrow's JSON reader
    lets such bytes through, to fail later while tokenizing without naming the file); None if all are."""
    import pyarrow as pa

    start = 0
    for chunk in column.chunks:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            for i in range(len(chunk)):  # only to name the row
                try:
                    chunk[i].as_py()
                except UnicodeDecodeError:
                    return start + i
        start += len(chunk)
    return None


def refuse_text_fields_of_other_types(kind: str, files: list[str], text_field: str) -> None:
    """Name the first file whose text field holds no text, by its own schema (a parquet file's, or what
    pyarrow infers from a jsonl's first block): datasets reads every file with the first one's schema, and
    would turn a later file's numbers into text, or fail naming all the files."""
    import pyarrow as pa
    import pyarrow.json
    import pyarrow.parquet

    for f in files:
        try:
            schema = pyarrow.parquet.read_schema(f) if kind == "parquet" else pyarrow.json.open_json(f).schema
        except (pa.ArrowInvalid, OSError):
            continue  # not JSON lines (a JSON array), or not readable: datasets' own reading says why
        if text_field not in schema.names:
            continue  # other columns: load_rows names the file
        field_type = schema.field(text_field).type
        if not (pa.types.is_string(field_type) or pa.types.is_large_string(field_type)):
            raise UserError(f"{f}: its '{text_field}' field holds {field_type}, not text; see --text_field")


def file_and_row(kind: str, files: list[str], index: int) -> tuple[str, int]:
    """Which file, and which of its rows, row `index` of their concatenation is (read file by file: only
    to name a bad row)."""
    import datasets

    for f in files:
        rows = len(datasets.load_dataset(kind, data_files=[f], split="train"))
        if index < rows:
            return f, index
        index -= rows
    raise IndexError(f"row {index} is beyond the files {files}")


def file_that_differs(kind: str, files: list[str]) -> str | None:
    """Why datasets could not read these files together: the first that cannot be read alone, or whose
    columns are not the first file's (read file by file: only to name it)."""
    import datasets

    first = None
    for f in files:
        try:
            columns = datasets.load_dataset(kind, data_files=[f], split="train").column_names
        except datasets.exceptions.DatasetGenerationError as e:
            return f"{f}: {str(e.__cause__ or e).splitlines()[0]}"
        if first is not None and columns != first[1]:
            return f"{f}: its columns {columns} are not those of {first[0]} ({first[1]})"
        first = first or (f, columns)
    return None


def load_local_dataset(paths: list[str], text_field: str, num_proc: int):
    """Local files as one datasets.Dataset with a `text` column: jsonl/parquet rows, or whole .txt files.

    datasets converts them to memory-mapped Arrow files in its cache, so they never sit in RAM."""
    import datasets

    by_kind: dict[str, list[str]] = {}
    for f in input_files(paths):
        by_kind.setdefault(INPUT_SUFFIXES[f.suffix], []).append(str(f))
    parts = []
    for kind, files in by_kind.items():
        if kind == "text":
            parts.append(load_text_files(files))
            continue
        ds = load_rows(kind, files, text_field, num_proc).select_columns([text_field])
        parts.append(ds if text_field == "text" else ds.rename_column(text_field, "text"))
    return datasets.concatenate_datasets(parts)


def map_style_batches(
    ds, test_size: float, seed: int, fraction: float | None
) -> tuple[Callable[[set[str]], Batches], int]:
    """nanoGPT's split of a map-style dataset (train, then val), and how many documents that is; with
    --fraction, the first documents of the training split, which train_test_split has already shuffled
    with `seed`: a reproducible random subset."""
    parts = ds.train_test_split(test_size=test_size, seed=seed, shuffle=True)
    splits = {"train": parts["train"], "val": parts["test"]}
    if fraction is not None:
        splits["train"] = splits["train"].select(range(math.ceil(fraction * len(splits["train"]))))

    def batches(full: set[str]) -> Batches:
        for name, part in splits.items():
            for batch in part.iter(batch_size=BATCH_DOCS):
                if name in full:
                    break
                yield name, batch["text"]

    return batches, sum(map(len, splits.values()))


def unit_hash(text: str, seed: int, purpose: str) -> float:
    """A number in [0, 1) fixed by the document's text, the seed and the purpose: a split that does not
    depend on the order in which a stream delivers documents."""
    digest = hashlib.blake2b(text.encode(), digest_size=8, key=f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest, "little") / 2**64


def streamed_batches(
    texts: Iterable[str], test_size: float, seed: int, fraction: float | None
) -> Callable[[set[str]], Batches]:
    """A one-pass stream split by document hash: val with probability test_size, and with --fraction each
    training document kept with that probability. Once the training split is full, the rest of the stream is
    still read for its val documents: val is every val document of the stream, whatever the cut and however
    far the tokenizer threads had read ahead when train filled up."""

    def batches(full: set[str]) -> Batches:
        pending: dict[str, list[str]] = {"train": [], "val": []}
        for text in texts:
            split = "val" if unit_hash(text, seed, "split") < test_size else "train"
            if split == "train" and "train" in full:
                continue
            if split == "train" and fraction is not None and unit_hash(text, seed, "subset") >= fraction:
                continue
            pending[split].append(text)
            if len(pending[split]) == BATCH_DOCS:
                yield split, pending[split]
                pending[split] = []
        yield from ((split, rest) for split, rest in pending.items() if rest)

    return batches


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str], description: str, default_out: str, hub_options) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--input", nargs="+", help="local .txt (one document each) / .jsonl / .parquet files or folders, not the hub"
    )
    p.add_argument("--text_field", default="text", help="the text column of jsonl / parquet input")
    p.add_argument("--out_dir", default=default_out)
    p.add_argument("--num_proc", type=int, default=os.cpu_count() or 1, help="tokenizer threads and loader processes")
    p.add_argument("--test_size", type=float, default=0.0005, help="share of documents in val (nanoGPT: 0.0005)")
    p.add_argument("--seed", type=int, default=2357, help="shuffle of the split and the subset (nanoGPT: 2357)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fraction", type=float, help="keep this share of the training documents (e.g. 0.001)")
    group.add_argument("--max_tokens", type=int, help="keep training documents until they hold this many tokens")
    p.add_argument("--force", action="store_true", help="prepare again over a complete folder")
    p.add_argument(
        "--tokenizer",
        default="gpt2",
        help="gpt2 (BPE, offline), or a Hugging Face tokenizer: a "
        "local folder (read offline), a GGUF file's, or a hub name, e.g. a Llama-family reference's",
    )
    hub_options(p)
    return parse_checked(p, argv)


def parse_checked(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Every prepare script's arguments, with the checks of the options it has (argparse's exit 2 and one
    line, before anything is read or written)."""
    args = p.parse_args(argv)
    if getattr(args, "num_proc", 1) < 1:
        p.error("--num_proc must be at least 1")
    if not 0 < getattr(args, "test_size", 0.5) < 1:
        p.error("--test_size must be in (0, 1)")
    if getattr(args, "fraction", None) is not None and not 0 < args.fraction <= 1:
        p.error("--fraction must be in (0, 1]")
    if getattr(args, "max_tokens", None) is not None and args.max_tokens < 1:
        p.error("--max_tokens must be at least 1")
    return args


def already_prepared(out_dir: Path, settings: dict) -> bool:
    """Whether out_dir holds a complete corpus prepared with these settings (prepared_settings: tokenizer,
    split, cut, input files, hub subset...); one prepared with others is a ValueError, not taken for this one.
    A setting its meta.json does not record (written by an older version) is not compared."""
    meta = read_meta(out_dir)
    if meta is None:
        return False
    recorded = meta.get("options") or {**meta, **(meta.get("subset") or {})}
    for key, value in settings.items():
        if key in recorded and recorded[key] != value:
            raise UserError(
                f"{out_dir} was prepared with {key} {recorded[key]}, not {value}: pass --force to prepare it "
                "again, or give another --out_dir"
            )
    tokens = ", ".join(f"{name} {s['tokens']:,} tokens" for name, s in meta["splits"].items())
    print(f"{out_dir} is already prepared ({tokens}); nothing to do. Pass --force to prepare it again.")
    return True


NOT_SETTINGS = ("out_dir", "num_proc", "force")  # where the corpus goes and how fast, not what it holds


def prepared_settings(args: argparse.Namespace) -> dict:
    """What makes one prepared corpus differ from another of the same script, as meta.json records it under
    "options": every option but out_dir, num_proc and force, with paths resolved (the same files named
    otherwise are the same corpus); the text field only of local input, the only input that has one."""
    settings = {key: value for key, value in vars(args).items() if key not in NOT_SETTINGS}
    if settings.get("input") is not None:
        given = settings["input"] if isinstance(settings["input"], list) else [settings["input"]]
        settings["input"] = [str(Path(path).resolve()) for path in given]
    else:
        settings.pop("text_field", None)
    tokenizer = settings.get("tokenizer")
    if tokenizer == "":  # encoder_for's GPT-2, as "gpt2"
        settings["tokenizer"] = "gpt2"
    elif tokenizer and Path(tokenizer).is_dir():  # a local folder however spelt; else "gpt2" or a hub name
        settings["tokenizer"] = str(Path(tokenizer).resolve())
    return settings


def open_hub_or_explain(open_hub, args: argparse.Namespace):
    try:
        return open_hub(args)
    except OSError as e:  # datasets' ConnectionError, OfflineModeIsEnabled and HTTP errors are OSErrors
        raise UserError(f"{e}. Without hub access, prepare local files with --input") from e


@command_main
def prepare_main(argv: list[str], description: str, default_out: str, hub_options, open_hub) -> int:
    """The prepare command: `open_hub(args)` gives (batches, number of documents or None, source
    description) for the hub corpus; --input replaces it with local files, split as nanoGPT splits."""
    args = parse_args(argv, description, default_out, hub_options)
    out_dir = output_folder(args.out_dir)
    start = time.perf_counter()
    settings = prepared_settings(args)
    if not args.force and already_prepared(out_dir, settings):
        return 0
    encoder = encoder_for(args.tokenizer)  # a tokenizer that cannot load fails before any reading
    if args.input:
        ds = load_local_dataset(args.input, args.text_field, args.num_proc)
        batches, total = map_style_batches(ds, args.test_size, args.seed, args.fraction)
        source = {"source": "local files", "split": "train_test_split"}
    else:
        batches, total, source = open_hub_or_explain(open_hub, args)
    meta = source | {"test_size": args.test_size, "seed": args.seed}
    meta["subset"] = {"fraction": args.fraction, "max_tokens": args.max_tokens}
    meta["options"] = settings
    meta = write_corpus(out_dir, batches, args.num_proc, meta, args.max_tokens, total, encoder)
    seconds = time.perf_counter() - start
    total = sum(s["tokens"] for s in meta["splits"].values())
    for name, s in meta["splits"].items():
        print(f"{out_dir / (name + '.bin')}: {s['tokens']:,} tokens from {s['documents']:,} documents")
    rate = f"{total / seconds / 1e6:.2f} M tokens/s"
    print(f"{total:,} tokens in {seconds:.1f} s ({rate}); wrote {out_dir / 'meta.json'}")
    return 0
