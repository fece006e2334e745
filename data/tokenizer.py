"""The GPT-2 BPE tokenizer, loaded offline from the ranks shipped in this folder.

`gpt2.tiktoken` is OpenAI's r50k_base rank file (MIT, see gpt2.tiktoken.LICENSE), as shipped by the
`openai-whisper` package. tiktoken.get_encoding("gpt2") would download the same ranks at first use,
which fails without network; loading them from here never touches the network, and the sha256 check
below is the one tiktoken itself applies to r50k_base.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

RANKS_PATH = Path(__file__).with_name("gpt2.tiktoken")
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT_TOKEN = 50256
VOCAB_SIZE = 50257


@cache
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding: n_vocab 50257, "<|endoftext|>" = 50256, "Hello world" -> [15496, 995]."""
    ranks = load_tiktoken_bpe(str(RANKS_PATH), expected_hash=RANKS_SHA256)
    return tiktoken.Encoding(
        name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": EOT_TOKEN}
    )
