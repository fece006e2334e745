"""The GPU acceptance check (`make gpu-check`): what must hold on the first GPU run, measured in one go (under 8
minutes on one H100), offline (the repository and its venv only; random tokens, or the embedded corpus that
the tests prepare), with a summary written to OUT/summary.md and each command's full output beside it:

  1. the GPU and its peak-FLOPs entry (runtime.PEAK_FLOPS; none means no MFU);
  2. which SDPA kernels accept the model's attention: training (causal, one scale for every layer: the
     inverse-layer scale is folded into the queries), with dropout, with grouped key/value heads, and the KV
     cache's one-token step (a mask of the filled positions);
  3. bench.py eager and compiled on GPT-2 small and medium (ms/iter, tokens/s, MFU, CUDA peak) beside
     `bench.py --memory`'s prediction;
  4. pytest tests/test_cuda.py;
  5. an FSDP + compile smoke run (train.py on one process) with its recompile count (TORCH_LOGS=recompiles).

    python scripts/gpu_check.py --out gpu-check
    python scripts/gpu_check.py --out /tmp/check --device cpu --quick   # its logic on a CPU: tiny, eager

Targets to read off the summary: GPT-2 medium, bf16 + compile, at least 50% MFU on an H100; the predicted
peak within 10% of the measured one; no recompile in the smoke run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bench.py's arguments for each model: the paper's configs at one GPU's micro-batch, or tiny shapes on a CPU.
BENCH = {
    "GPT-2 small": ["config/train_gpt2.py", "--gradient_accumulation_steps=1", "--steps=20"],
    "GPT-2 medium": ["config/train_gpt2_medium.py", "--gradient_accumulation_steps=1", "--steps=20"],
}
QUICK_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=64", "--batch_size=2"]
QUICK_BENCH = {"tiny": ["config/train_gpt2.py", "--gradient_accumulation_steps=1", "--steps=2", "--warmup=1"]}


def run(cmd: list[str], log: Path, timeout: int, env: dict | None = None) -> tuple[int, str]:
    """A command's exit code and output (stdout then stderr), also written to `log`."""
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, output = 124, f"timed out after {timeout} s\n{e.stdout or ''}{e.stderr or ''}"
    log.write_text(f"$ {' '.join(cmd)}\n{output}")
    return code, output


def device_section(device: str) -> list[str]:
    import torch

    from runtime import peak_flops_of

    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = peak_flops_of(torch.device("cuda"))
        entry = f"{peak / 1e12:.0f} TFLOP/s" if peak else "none (give peak_flops to see MFU)"
        return [
            f"- device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}",
            f"- peak-FLOPs entry: {entry}",
        ]
    return [f"- device: cpu, torch {torch.__version__}", "- peak-FLOPs entry: none (CPUs have none)"]


def attention_cases(device: str) -> dict[str, dict]:
    """SDPA's arguments for each way the model calls it, at GPT-2 medium's head size."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def qkv(heads: int, kv_heads: int, t: int, s: int) -> list:
        return [
            torch.randn(2, h, n, 64, device=device, dtype=dtype) for h, n in ((heads, t), (kv_heads, s), (kv_heads, s))
        ]

    filled = torch.arange(256, device=device) <= 100  # the cache's step at position 100 of 256
    return {
        "training (causal, one scale for all layers)": dict(args=qkv(16, 16, 1024, 1024), is_causal=True, scale=0.125),
        "training with dropout 0.1": dict(args=qkv(16, 16, 1024, 1024), is_causal=True, dropout_p=0.1, scale=0.125),
        "grouped key/value heads (16 / 4)": dict(args=qkv(16, 4, 1024, 1024), is_causal=True, enable_gqa=True),
        "KV cache, one-token step (mask)": dict(args=qkv(16, 16, 1, 256), attn_mask=filled[None, :], scale=0.125),
    }


def kernel_section(device: str) -> list[str]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    lines = ["| case | " + " | ".join(b.name.lower() for b in backends) + " |", "|---" * (len(backends) + 1) + "|"]
    for case, call in attention_cases(device).items():
        args = call.pop("args")
        accepted = []
        for backend in backends:
            try:
                with sdpa_kernel(backend), torch.no_grad():
                    F.scaled_dot_product_attention(*args, **call)
                accepted.append("yes")
            except RuntimeError:
                accepted.append("no")
        lines.append(f"| {case} | " + " | ".join(accepted) + " |")
    return lines


def bench_section(out: Path, device: str, quick: bool) -> list[str]:
    runs = QUICK_BENCH if quick else BENCH
    extra = [f"--device={device}", *(QUICK_MODEL if quick else [])]
    variants = "--variants=eager" if quick else "--variants=eager,compiled"  # inductor takes minutes on a CPU
    lines = []
    for name, args in runs.items():
        slug = re.sub(r"\W+", "-", name.lower())
        code, output = run([sys.executable, "bench.py", *args, *extra, variants], out / f"bench-{slug}.log", 900)
        lines += [f"### {name}", "```", *bench_table(output, code), "```"]
        config = [a for a in args if not a.startswith(("--steps", "--warmup"))]
        code, output = run([sys.executable, "bench.py", *config, *extra, "--memory"], out / f"memory-{slug}.log", 300)
        lines += ["predicted (`bench.py --memory`, 1 process):", "```", *bench_table(output, code), "```"]
    return lines


def bench_table(output: str, code: int) -> list[str]:
    """bench.py's printed table, or its failure's last lines."""
    if code != 0:
        return [f"FAILED (exit {code})", *output.strip().splitlines()[-5:]]
    return [line for line in output.splitlines() if line and not line.startswith(("W", "["))]


def pytest_section(out: Path) -> list[str]:
    code, output = run([sys.executable, "-m", "pytest", "-q", "tests/test_cuda.py"], out / "test_cuda.log", 600)
    last = output.strip().splitlines()[-1] if output.strip() else "no output"
    return [f"- `pytest tests/test_cuda.py`: exit {code}, {last}"]


def smoke_section(out: Path, device: str, quick: bool) -> list[str]:
    """train.py with FSDP and compile on one process, on the embedded corpus (prepared here if missing)."""
    data = out / "shakespeare"
    if not (data / "train.bin").exists():
        code, output = run(
            [sys.executable, "data/shakespeare/prepare.py", f"--out_dir={data}"], out / "prepare.log", 300
        )
        if code != 0:
            return [f"- FSDP + compile smoke run: the corpus could not be prepared (exit {code}), see prepare.log"]
    shape = (
        QUICK_MODEL if quick else ["--n_layer=12", "--n_head=12", "--n_embd=768", "--block_size=1024", "--batch_size=8"]
    )
    args = [
        f"--data_dir={data}",
        f"--out_dir={out / 'smoke'}",
        f"--device={device}",
        "--parallel=fsdp",
        f"--compile={not quick}",
    ]
    args += ["--scale_attn_by_inverse_layer_idx=True", "--max_iters=20", "--lr_decay_iters=20", "--eval_interval=10"]
    args += ["--eval_iters=2", "--log_interval=5", "--gradient_accumulation_steps=1", "--wandb_log=False", *shape]
    env = {**os.environ, "TORCH_LOGS": "recompiles"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    code, output = run([*torchrun, "train.py", *args], out / "smoke.log", 900, env)
    steps = [line for line in output.splitlines() if line.startswith("iter ")]
    return [
        f"- FSDP smoke run, compile {not quick} (20 steps, inverse-layer scaling): exit {code}, "
        f"{recompiles(output)} recompiles (2 expected with compile: the block's and the head's training graphs "
        "after eval's no_grad ones)",
        f"- last step: {steps[-1] if steps else 'none'}",
    ]


def recompiles(log: str) -> int:
    """Dynamo's recompiles in a log of TORCH_LOGS=recompiles."""
    return sum(1 for line in log.splitlines() if "[__recompiles] Recompiling function" in line)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu-check", help="folder of the summary and the commands' logs")
    p.add_argument("--device", default="cuda", help="cuda; cpu to try the check's own logic")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few steps (the check of the check)")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible here; --device cpu --quick checks the script itself", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sections = {
        "Device": device_section(args.device),
        "SDPA kernels that accept the model's attention": kernel_section(args.device),
        "bench.py, eager and compiled": bench_section(out, args.device, args.quick),
        "CUDA tests": pytest_section(out),
        "FSDP + compile": smoke_section(out, args.device, args.quick),
    }
    text = "# GPU check\n\n" + "\n\n".join(f"## {title}\n\n" + "\n".join(lines) for title, lines in sections.items())
    (out / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
