"""Sample text from a trained model.

    python sample.py --out_dir=out-shakespeare --start="ROMEO:" --num_samples=2 --max_new_tokens=100
    python sample.py --ckpt=out-shakespeare/best.pt --start=FILE:prompt.txt --temperature=0.8

Works offline: the GPT-2 tokenizer is loaded from data/gpt2.tiktoken.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from data.tokenizer import gpt2_encoding
from model import CheckpointError, autocast_context, load_model, resolve_device_name, resolve_dtype


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="out", help="training folder; its ckpt.pt is used unless --ckpt is given")
    p.add_argument(
        "--ckpt", default=None, help="checkpoint path or Hugging Face GPT-2 (name or local folder); overrides --out_dir"
    )
    p.add_argument("--start", default="\n", help='prompt text, or "FILE:path" to read it from a file')
    p.add_argument("--num_samples", type=int, default=2)
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    p.add_argument("--top_k", type=int, default=200, help="sample among the k likeliest tokens; 0 for all")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', ...")
    p.add_argument("--dtype", default="auto", help="'auto', 'float32', 'bfloat16' or 'float16'")
    return p.parse_args(argv)


def read_prompt(start: str) -> str:
    if start.startswith("FILE:"):
        return Path(start.removeprefix("FILE:")).read_text(encoding="utf-8")
    return start


def sample(args: argparse.Namespace) -> list[str]:
    device = torch.device(resolve_device_name(args.device))
    dtype = resolve_dtype(args.dtype, device)
    model, _ = load_model(args.ckpt or Path(args.out_dir) / "ckpt.pt", device)
    model.eval()
    enc = gpt2_encoding()
    ids = enc.encode(read_prompt(args.start), allowed_special={"<|endoftext|>"})
    if not ids:
        raise ValueError("the prompt is empty: give --start some text")
    x = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    ctx = autocast_context(device, dtype)
    with ctx:
        y = model.generate(x, args.max_new_tokens, args.temperature, args.top_k or None, generator=generator)
    return [enc.decode(row.tolist()) for row in y]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        texts = sample(args)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for text in texts:
        print(text)
        print("---------------")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
