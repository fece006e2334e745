"""scripts/gpu_check.py, the GPU acceptance check, run on a CPU with tiny shapes and compile off: every section
of its summary filled from the commands it runs."""

import subprocess
import sys

import pytest

from scripts.gpu_check import recompiles
from tests.conftest import ROOT
from tests.test_fsdp import ENV


@pytest.mark.slow
def test_the_gpu_check_writes_every_section_of_its_summary_on_a_cpu(shakespeare_dir, tmp_path):
    (tmp_path / "shakespeare").symlink_to(shakespeare_dir)  # prepared once per session: not again
    cmd = [sys.executable, "scripts/gpu_check.py", f"--out={tmp_path}", "--device=cpu", "--quick"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    assert "- device: cpu" in summary and "peak-FLOPs entry: none" in summary
    assert "| KV cache, one-token step (mask) |" in summary and "| math |" in summary
    assert "\neager " in summary and "ddp bf16-true" in summary  # bench.py's timing and --memory's tables
    assert "`pytest tests/test_cuda.py`: exit 0, 9 skipped" in summary
    assert "FSDP smoke run, compile False (20 steps, inverse-layer scaling): exit 0, 0 recompiles" in summary
    assert "- last step: iter 20: loss" in summary


def test_the_recompile_count_reads_dynamos_log_lines():
    line = "[rank0]:V1207 09:32:22.834000 21471 guards.py:5396] [0/1] [__recompiles] Recompiling function forward"
    log = f"{line}\n[rank0]: [0/1] [__recompiles]     triggered by the following guard failure(s):\n{line}"
    assert recompiles(log) == 2
