"""Where a run happens, shared by every command: the device and precision, the processes of a distributed
run, the accelerators' peak FLOP/s, files written atomically, what a user's mistake is (UserError) and how
every command reports one (`command_main`, `run_command`). It imports nothing of the project.

torch is imported inside the functions that use it: the commands that only write files or read run
folders (data preparation, data/check.py, runs.py, scaling.py) start in 0.2 s instead of 2 s without it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # for the annotations; the functions import torch when they run
    import torch

# Dense bf16 tensor-core peak FLOP/s (without sparsity, from the vendors' data sheets) of the devices whose
# exact names torch.cuda.get_device_name gives; PCIe and NVL parts have lower peaks than SXM ones. Other
# devices (MIG slices included) have no entry: give train.py's peak_flops to see their MFU.
PEAK_FLOPS = {
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA H100 80GB HBM3": 989e12,  # SXM5
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H200": 989e12,
    "NVIDIA H200 NVL": 835e12,
    "NVIDIA GH200 480GB": 989e12,
}

DTYPES = ("float32", "bfloat16", "float16")  # the names of torch's dtypes a run can compute in
# litgpt's `--precision bf16-true`: the weights themselves (and so their gradients and AdamW's state) in bfloat16,
# 8 bytes per parameter in training instead of 16 with float32 master weights.
TRUE_BF16 = "bf16-true"
PARALLEL = ("ddp", "fsdp")  # how several processes share the work: replicas (DDP) or shards (FSDP2)


# ----------------------------------------------------------------------------- device and precision


def resolve_device_name(name: str) -> str:
    """'auto' -> 'cuda' where a GPU is visible, else 'cpu'; any other name as given, a CUDA one only where
    there is a GPU (torch's own failure is an AssertionError deep in the first tensor's move)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except RuntimeError:  # torch's "Expected one of cpu, cuda, ... device type at start of device string"
        raise UserError(f"device {name!r} is no device: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: no CUDA GPU is visible here; use device 'cpu' or 'auto'")
    return name


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype a run computes in. 'auto' -> bfloat16 on GPUs that have it, float16 on other GPUs, float32
    elsewhere; 'bf16-true' -> bfloat16; or the named dtype."""
    import torch

    if name == TRUE_BF16:
        return torch.bfloat16
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def autocast_context(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Mixed precision for bf16/fp16; float32 runs as it is. Shared by training, sampling and evaluation."""
    import torch

    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextmanager
def tf32_matmuls() -> Iterator[None]:
    """CUDA's float32 matrix products on TF32 tensor cores (a 10-bit mantissa, as nanoGPT sets it), restored
    on exit: float32 runs, and what runs outside autocast, get the tensor cores' throughput instead of full
    FP32's (a fraction of it on an A100 or H100). CPU matrix products stay full float32."""
    import torch

    previous = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous


def peak_flops_of(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of a known accelerator, or None where it is unknown (CPUs, other GPUs)."""
    import torch

    return PEAK_FLOPS.get(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


# ----------------------------------------------------------------------------- processes


@dataclass
class Runtime:
    """Where this process runs: its rank among all processes, its device and its precision."""

    rank: int
    world_size: int
    device: torch.device
    dtype: torch.dtype  # what it computes in
    param_dtype: torch.dtype  # what its weights are kept in: float32, or bfloat16 for bf16-true

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process (DDP's replicas or FSDP's shards: `parallel` says which)."""
        return self.world_size > 1


def setup_runtime(device: str, dtype: str, backend: str, group: bool = False, cpu_offload: bool = False) -> Runtime:
    """Join the process group when launched by torchrun (backend 'auto': nccl on CUDA, gloo on CPU); with
    `group`, a single process not launched by torchrun makes a group of its own (FSDP shards over a group,
    even of one). With `cpu_offload`, NCCL gets gloo beside it for the collectives over tensors in CPU
    memory (the norm of offloaded gradients that clipping all-reduces: NCCL has no CPU tensors)."""
    import torch
    import torch.distributed as dist

    device_name = resolve_device_name(device)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1 and device_name.startswith("cuda"):
        device_name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device_name)
    chosen = backend if backend != "auto" else ("nccl" if device_name.startswith("cuda") else "gloo")
    if chosen == "nccl" and cpu_offload:
        chosen = "cuda:nccl,cpu:gloo"
    if "RANK" in os.environ and (world_size > 1 or group):
        dist.init_process_group(backend=chosen)
    elif group:
        dist.init_process_group(backend=chosen, store=dist.HashStore(), rank=0, world_size=1)
    resolved = torch.device(device_name)
    param_dtype = torch.bfloat16 if dtype == TRUE_BF16 else torch.float32
    return Runtime(rank, world_size, resolved, resolve_dtype(dtype, resolved), param_dtype)


def all_reduce_mean(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    import torch.distributed as dist

    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / rt.world_size
    return t


# ----------------------------------------------------------------------------- files


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: it is written as `path.tmp` and renamed into place only once
    complete, so a crash at any moment leaves either the old file or the new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a write that failed leaves nothing behind
        tmp.unlink(missing_ok=True)
        raise


def output_folder(path: str | Path) -> Path:
    """A folder a command writes into, refused before the work where a file stands in its place or its way."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise UserError(f"{part} is a file, not a folder to write into ({path})")
    return path


def output_file(path: str | Path) -> Path:
    """A file a command writes, refused before the work where a folder stands in its place or a file in the way
    of its folder (else the error comes after hours of evaluation)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder: name the file to write")
    output_folder(path.parent)
    return path


def write_json(path: str | Path, record: object) -> None:
    """`record` as indented JSON, written atomically."""
    with atomic_file(path) as f:
        f.write((json.dumps(record, indent=2) + "\n").encode())


# ----------------------------------------------------------------------------- commands


class UserError(Exception):
    """What the person running a command caused and can correct: a bad flag or config, a missing or corrupt
    file, a run that diverged. Every command prints it as one line, `error: ...`, and exits with `exit_code`;
    any other exception is a bug and keeps its traceback."""

    exit_code = 1


def command_main(main: Callable[..., int | None]) -> Callable[..., int]:
    """A command's main function (decorated): its exit code, or a UserError printed in one line and its
    exit code; any other exception propagates with its traceback."""

    @functools.wraps(main)
    def guarded(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code

    return guarded


# A sub-command: a function that adds its arguments to a parser, the function that runs it, and its help.
Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]


def run_command(prog: str, doc: str, commands: dict[str, Command], argv: list[str]) -> int:
    """Parse `prog COMMAND [options]` for one of `commands`, run it and return its exit code."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _, help_text) in commands.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = p.parse_args(argv)
    return command_main(commands[args.command][1])(args)
