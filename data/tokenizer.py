"""The GPT-2 BPE tokenizer, loaded without touching the network; every prepare script and sample.py use it.

tiktoken.get_encoding("gpt2") downloads its vocabulary at first use, which hangs or fails without
network. So: tiktoken's own `gpt2` encoding when its cache already holds the files (checked here,
hash and all, so that tiktoken never needs to fetch), else the same ranks from `gpt2.tiktoken` in this
folder: OpenAI's r50k_base rank file (MIT, see gpt2.tiktoken.LICENSE) as shipped by `openai-whisper`,
checked against the sha256 tiktoken itself expects for r50k_base. Both give identical token ids.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

from data.format import read_char_meta

RANKS_PATH = Path(__file__).with_name("gpt2.tiktoken")
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT_TOKEN = 50256
VOCAB_SIZE = 50257

# The files tiktoken_ext.openai_public.gpt2 reads, and the sha256 it checks them against.
TIKTOKEN_GPT2_FILES = {
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe":
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json":
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}  # fmt: skip


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
        tokenizer_object=converter.converted(), model_max_length=model_max_length,
        unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
    )  # fmt: skip
    tokenizer.save_pretrained(out)


@dataclass
class Codec:
    """Text to token ids and back, for one vocabulary."""

    name: str
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]


def corpus_codec(data_dir: Path | None, vocab_size: int) -> Codec:
    """The vocabulary a model was trained with: the character vocabulary of nanoGPT's meta.pkl in its corpus
    folder, else GPT-2 BPE, which a model of GPT-2's 50,257 tokens must have."""
    meta = read_char_meta(data_dir) if data_dir is not None else None
    if meta is not None:
        print(f"character vocabulary of {data_dir / 'meta.pkl'}", file=sys.stderr)
        stoi, itos = meta["stoi"], meta["itos"]

        def encode(text: str) -> list[int]:
            unknown = sorted(set(text) - stoi.keys())
            if unknown:
                raise ValueError(f"characters {unknown} are not in the vocabulary of {data_dir / 'meta.pkl'}")
            return [stoi[c] for c in text]

        return Codec("char", encode, lambda ids: "".join(itos[i] for i in ids))
    if vocab_size != VOCAB_SIZE:
        where = f"{data_dir}/meta.pkl is not there" if data_dir is not None else "its corpus is not recorded"
        raise ValueError(f"the model has {vocab_size} tokens, not GPT-2's {VOCAB_SIZE}, and {where}")
    enc = gpt2_encoding()
    return Codec("gpt2", lambda text: enc.encode(text, allowed_special={"<|endoftext|>"}), enc.decode)
