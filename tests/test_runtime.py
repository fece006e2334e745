import subprocess
import sys

import pytest
import torch

from runtime import peak_flops_of, resolve_device_name
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_flops_match_the_exact_device_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops_of(torch.device("cuda")) == peak


def test_cpus_have_no_known_peak():
    assert peak_flops_of(torch.device("cpu")) is None


def test_commands_that_only_read_and_write_files_start_without_torch():
    """Preparing and checking corpora, comparing runs and fitting scaling laws never import torch: a start
    in 0.2 s instead of 2 s, and 190 MB less memory in every data worker."""
    code = "import sys, configurator, data.check, data.pipeline, runs, scaling; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_cuda_device_without_a_gpu_is_one_clear_error(capsys):
    import sample

    with pytest.raises(ValueError, match="device 'cuda': no CUDA GPU is visible here"):
        resolve_device_name("cuda")
    assert sample.main(["--model=gpt2", "--device=cuda:1"]) == 1
    assert (
        capsys.readouterr().err == "error: device 'cuda:1': no CUDA GPU is visible here; use device 'cpu' or 'auto'\n"
    )
