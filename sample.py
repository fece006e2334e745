"""Sample text from a trained model, with nanoGPT's sample.py options.

    python sample.py --out_dir=out-shakespeare --start="ROMEO:" --num_samples=2 --max_new_tokens=100
    python sample.py --model=out-shakespeare/best.pt --start=FILE:prompt.txt --temperature=0
    python sample.py --model=gpt2-xl --start="The lazy layers of a deep network"

--model (nanoGPT's --init_from, which works too) is 'resume' (out_dir/ckpt.pt, as nanoGPT), a checkpoint
path, or a Hugging Face model (GPT-2: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'; or the Llama family
by hub id, local folder or GGUF file). Text is encoded with the vocabulary the checkpoint records
(data/tokenizer.py's model_codec): GPT-2 BPE, loaded offline, a Hugging Face tokenizer (or a GGUF file's),
or the characters of nanoGPT's meta.pkl in its corpus folder (config['dataset'], as nanoGPT looks it up).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from checkpoint import Checkpoint, latest_checkpoint, load_model
from data.tokenizer import check_corpus_tokenizer, model_codec
from runtime import UserError, autocast_context, command_main, resolve_device_name, resolve_dtype


def parse_bool(text: str) -> bool:
    """nanoGPT's spelling of booleans on the command line: --compile=True / --compile=False."""
    if text not in ("True", "False"):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return text == "True"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_help = "'resume' (out_dir's last checkpoint), a checkpoint, a Hugging Face model or a GGUF file; "
    model_help += "--init_from is nanoGPT's name"
    p.add_argument("--model", "--init_from", dest="model", default="resume", help=model_help)
    p.add_argument("--out_dir", default="out", help="training folder, read with --model=resume")
    p.add_argument("--start", default="\n", help='prompt text, or "FILE:path" to read it from a file')
    p.add_argument("--num_samples", type=int, default=2)
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    p.add_argument("--top_k", type=int, default=200, help="sample among the k likeliest tokens; 0 for all")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', ...")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    compile_help = "torch.compile the one-token decoding step (True/False)"
    p.add_argument("--compile", type=parse_bool, default=False, help=compile_help)
    args = p.parse_args(argv)
    if args.num_samples < 1:
        p.error("--num_samples must be at least 1")
    if args.max_new_tokens < 0:
        p.error("--max_new_tokens must be 0 or more")
    if not 0 <= args.temperature < math.inf:  # a negative one would sample the inverted distribution; nan fails
        p.error("--temperature must be 0 (greedy) or more, and finite")
    if args.top_k < 0:
        p.error("--top_k must be 0 (all tokens) or more")
    return args


def read_prompt(start: str) -> str:
    if start.startswith("FILE:"):
        path = Path(start.removeprefix("FILE:"))
        if not path.is_file():
            raise UserError(f"--start={start}: {path} is no file to read the prompt from")
        return path.read_text(encoding="utf-8")
    return start


def decoding_vocabulary(ckpt: Checkpoint) -> dict | None:
    """The vocabulary to decode with: the checkpoint's record; for one without (nanoGPT's), what its size
    tells, which the corpus its config names must not contradict (a folder prepared again since with another
    tokenizer leaves nothing to tell which of the two the model was trained with)."""
    vocabulary = ckpt.vocabulary()
    folder = ckpt.corpus_folder()
    if ckpt.tokenizer is None and folder is not None and folder.is_dir():
        check_corpus_tokenizer(folder, vocabulary)
    return vocabulary


def sample(args: argparse.Namespace) -> list[str]:
    device = torch.device(resolve_device_name(args.device))
    dtype = resolve_dtype(args.dtype, device)
    source = latest_checkpoint(args.out_dir) if args.model == "resume" else args.model
    model, ckpt = load_model(source, device)
    model.eval()
    if args.compile:
        model.compile_decode_step()
    codec = model_codec(decoding_vocabulary(ckpt), ckpt.corpus_folder())
    ids = codec.encode(read_prompt(args.start))
    if not ids:
        raise UserError("the prompt is empty: give --start some text")
    x = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    with autocast_context(device, dtype):
        y = model.generate(x, args.max_new_tokens, args.temperature, args.top_k or None, generator=generator)
    return [codec.decode(row.tolist()) for row in y]


@command_main
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    for text in sample(args):
        print(text)
        print("---------------")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
