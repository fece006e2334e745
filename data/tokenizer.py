"""Tokenizers: GPT-2 BPE, loaded without touching the network, and any Hugging Face tokenizer (a local
folder, the one a GGUF file carries, or a hub name when online) for the Llama family. Prepare scripts
encode with them, sample.py decodes, and meta.json records which one made a corpus.

tiktoken.get_encoding("gpt2") downloads its vocabulary at first use, which hangs or fails without
network. So: tiktoken's own `gpt2` encoding when its cache already holds the files (checked here,
hash and all, so that tiktoken never needs to fetch), else the same ranks from `gpt2.tiktoken` in this
folder: OpenAI's r50k_base rank file (MIT, see gpt2.tiktoken.LICENSE) as shipped by `openai-whisper`,
checked against the sha256 tiktoken itself expects for r50k_base. Both give identical token ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

from data.format import corpus_vocabulary, dtype_for, read_char_meta
from runtime import UserError

RANKS_PATH = Path(__file__).with_name("gpt2.tiktoken")
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT_TOKEN = 50256
VOCAB_SIZE = 50257
# fingerprint() of GPT-2's vocabulary as Hugging Face lays it out (byte-level strings): the identity of a
# "gpt2" corpus, so that it matches a Hugging Face GPT-2 folder's own tokenizer (tests compute it again).
GPT2_FINGERPRINT = "918393005af2d885"

# The files tiktoken_ext.openai_public.gpt2 reads, and the sha256 it checks them against.
TIKTOKEN_GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
TIKTOKEN_GPT2_FILES = {
    TIKTOKEN_GPT2_URL + "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    TIKTOKEN_GPT2_URL + "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


def tiktoken_cache_dir() -> Path | None:
    """Where tiktoken caches downloads (its own rule in tiktoken.load.read_file_cached); None if disabled."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def tiktoken_has_gpt2() -> bool:
    """True when tiktoken can build `gpt2` from its cache alone: every file present with the right hash."""
    cache_dir = tiktoken_cache_dir()
    if cache_dir is None:
        return False
    for url, sha256 in TIKTOKEN_GPT2_FILES.items():
        path = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            return False
    return True


@cache
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding: n_vocab 50257, "<|endoftext|>" = 50256, "Hello world" -> [15496, 995]."""
    if tiktoken_has_gpt2():
        return tiktoken.get_encoding("gpt2")
    ranks = load_tiktoken_bpe(str(RANKS_PATH), expected_hash=RANKS_SHA256)
    return tiktoken.Encoding(
        name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": EOT_TOKEN}
    )


def save_hf_tokenizer(out: Path, model_max_length: int) -> None:
    """GPT-2's tokenizer as Hugging Face tokenizer files (tokenizer.json...) in `out`, made offline from the
    shipped rank file by transformers' own tiktoken converter, with GPT-2's pre-tokenizer pattern."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(
        vocab_file=str(RANKS_PATH), pattern=r50k_pat_str, extra_special_tokens={"<|endoftext|>": EOT_TOKEN}
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=converter.converted(),
        model_max_length=model_max_length,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )
    tokenizer.save_pretrained(out)


# ----------------------------------------------------------------------------- Hugging Face tokenizers


def load_hf_tokenizer(name: str):
    """A fast Hugging Face tokenizer from a local folder (read offline), a GGUF file (the tokenizer it
    carries, converted by transformers) or a hub name."""
    from transformers import AutoTokenizer  # imported only here: it is slow to import

    from hf import from_gguf, is_gguf  # hf imports torch, which the data scripts start without

    try:
        if is_gguf(name):
            return from_gguf(AutoTokenizer, name)
        return AutoTokenizer.from_pretrained(name, local_files_only=Path(name).is_dir())
    except (OSError, ValueError, KeyError) as e:  # KeyError: a GGUF tokenizer without a part (its merges...)
        raise UserError(f"cannot load the tokenizer {name!r}: {(str(e).splitlines() or [repr(e)])[0]}") from e


def fingerprint(tokenizer) -> str:
    """A tokenizer's identity wherever its files live: a hash of its vocabulary, token -> id."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(vocab.encode()).hexdigest()[:16]


def source_tokenizer(source: str) -> dict | None:
    """The vocabulary record of a Hugging Face model: of the tokenizer its folder or GGUF file carries
    (fingerprinted), or of a hub model's own tokenizer (by its name, read only when used); None for a folder
    without one."""
    from hf import gguf_header, is_gguf  # hf imports torch, which the data scripts start without

    folder = Path(source)
    if is_gguf(source):
        has_tokenizer = gguf_header(source).has_tokenizer
    elif folder.is_dir():
        has_tokenizer = any((folder / f).exists() for f in ("tokenizer.json", "tokenizer.model"))
    else:
        return {"tokenizer": source}
    if not has_tokenizer:
        return None
    tokenizer = load_hf_tokenizer(source)
    return {"tokenizer": source, "tokenizer_fingerprint": fingerprint(tokenizer), "vocab_size": len(tokenizer)}


def same_vocabulary(a: dict | None, b: dict | None) -> bool:
    """Whether two vocabulary records ({"tokenizer", "tokenizer_fingerprint"?, "vocab_size"?}) name one
    tokenizer: by fingerprint where both have one ("gpt2" has GPT-2's), else by name; unknown (None)
    agrees with anything."""
    if a is None or b is None:
        return True

    def print_of(record: dict) -> str | None:
        return record.get("tokenizer_fingerprint", GPT2_FINGERPRINT if record["tokenizer"] == "gpt2" else None)

    if print_of(a) and print_of(b):
        return print_of(a) == print_of(b)
    return a["tokenizer"] == b["tokenizer"]


def check_corpus_tokenizer(data: Path, vocabulary: dict | None) -> None:
    """Refuse a corpus made with another tokenizer than the model's (a vocabulary record): its ids would be
    read as other tokens. Bare bins are GPT-2 tokens, as nanoGPT's."""
    corpus = corpus_vocabulary(data) or {"tokenizer": "gpt2", "vocab_size": VOCAB_SIZE}
    if not same_vocabulary(vocabulary, corpus):
        raise UserError(
            f"{data} was made with the tokenizer {corpus['tokenizer']}, the model reads {vocabulary['tokenizer']}: "
            "its ids would be read as tokens the model never saw"
        )


def hf_tokenizer_name(record: dict | None) -> str:
    """The Hugging Face tokenizer a vocabulary record names; '' for GPT-2's BPE, characters, or unknown."""
    name = (record or {}).get("tokenizer", "gpt2")
    return "" if name == "gpt2" or name.startswith("characters-") else name


# ----------------------------------------------------------------------------- encoding corpora


@dataclass(frozen=True)
class Encoder:
    """How a prepare script turns documents into ids: each document's tokens, then `eot`."""

    encode: Callable[[list[str]], list[np.ndarray]]
    eot: int
    meta: dict  # what meta.json records: tokenizer, tokenizer_fingerprint (Hugging Face), vocab_size, dtype

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])


def gpt2_encoder() -> Encoder:
    enc = gpt2_encoding()
    # encode_to_numpy with no special tokens is encode_ordinary, but hands back a numpy buffer instead of
    # building a Python int per token while holding the GIL.
    encode = lambda texts: [enc.encode_to_numpy(text, disallowed_special=()) for text in texts]  # noqa: E731
    return Encoder(encode, EOT_TOKEN, {"tokenizer": "gpt2", "vocab_size": VOCAB_SIZE, "dtype": "uint16"})


def hf_encoder(name: str) -> Encoder:
    """A Hugging Face tokenizer, batched (its Rust core encodes without the GIL), without special tokens;
    documents end with its end-of-sequence token, as Llama's pretraining data."""
    tokenizer = load_hf_tokenizer(name)
    if tokenizer.eos_token_id is None:
        raise UserError(f"the tokenizer {name!r} has no end-of-sequence token to end documents with")
    vocab_size = len(tokenizer)
    dtype = dtype_for(vocab_size)

    def encode(texts: list[str]) -> list[np.ndarray]:
        # Text that spells a special token ("</s>" in code or web pages) is text: encoded as such, it can never
        # end a document early, as GPT-2's encode_ordinary never does.
        ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [np.asarray(doc, dtype=dtype) for doc in ids]

    meta = {
        "tokenizer": name,
        "tokenizer_fingerprint": fingerprint(tokenizer),
        "vocab_size": vocab_size,
        "dtype": dtype.name,
    }
    return Encoder(encode, tokenizer.eos_token_id, meta)


def encoder_for(tokenizer: str) -> Encoder:
    """GPT-2 BPE ('' or 'gpt2'), or the Hugging Face tokenizer of that folder or name."""
    return gpt2_encoder() if tokenizer in ("", "gpt2") else hf_encoder(tokenizer)


# ----------------------------------------------------------------------------- decoding, for sampling


@dataclass
class Codec:
    """Text to token ids and back, for one vocabulary."""

    name: str
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]


def model_codec(vocabulary: dict | None, data_dir: Path | None) -> Codec:
    """The vocabulary a model was trained with, as its checkpoint records it (Checkpoint.vocabulary()), never
    what its corpus folder holds today, which may have been prepared again since: GPT-2 BPE, a Hugging Face
    tokenizer (checked against the recorded fingerprint), or the characters of nanoGPT's meta.pkl in its
    corpus folder (checked against the recorded hash of them)."""
    if vocabulary is None:
        raise UserError("the model's vocabulary is not recorded and is not GPT-2's: nothing tells how to decode it")
    name = vocabulary["tokenizer"]
    if name == "gpt2":
        enc = gpt2_encoding()
        return Codec("gpt2", lambda text: enc.encode(text, allowed_special={"<|endoftext|>"}), enc.decode)
    if name.startswith("characters-"):
        return character_codec(vocabulary, data_dir)
    tokenizer = load_hf_tokenizer(name)
    recorded = vocabulary.get("tokenizer_fingerprint")
    if recorded and fingerprint(tokenizer) != recorded:
        raise UserError(f"the tokenizer {name} is not the one the model was trained with: its vocabulary has changed")
    return Codec(name, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.decode)


def character_codec(vocabulary: dict, data_dir: Path | None) -> Codec:
    """The characters of nanoGPT's meta.pkl in the model's corpus folder, if they are still the recorded ones."""
    path = Path(data_dir or ".") / "meta.pkl"
    meta = read_char_meta(data_dir) if data_dir is not None else None
    if meta is None or not same_vocabulary(corpus_vocabulary(data_dir), vocabulary):
        state = "is not there" if meta is None else "holds other characters"
        raise UserError(f"the model reads the characters of {path}, which {state} now")
    print(f"character vocabulary of {path}", file=sys.stderr)
    stoi, itos = meta["stoi"], meta["itos"]

    def encode(text: str) -> list[int]:
        unknown = sorted(set(text) - stoi.keys())
        if unknown:
            raise UserError(f"characters {unknown} are not in the vocabulary of {path}")
        return [stoi[c] for c in text]

    return Codec("char", encode, lambda ids: "".join(itos[i] for i in ids))
