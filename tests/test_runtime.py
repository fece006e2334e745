import subprocess
import sys

import pytest
import torch

from runtime import UserError, peak_flops_of, resolve_device_name
from tests.conftest import ROOT, tiny_values
from tests.test_structure import project_modules


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

    with pytest.raises(UserError, match="device 'cuda': no CUDA GPU is visible here"):
        resolve_device_name("cuda")
    assert sample.main(["--model=gpt2", "--device=cuda:1"]) == 1
    assert (
        capsys.readouterr().err == "error: device 'cuda:1': no CUDA GPU is visible here; use device 'cpu' or 'auto'\n"
    )


# ----------------------------------------------------------------------------- user errors and bugs


def test_every_error_class_of_the_project_is_a_user_error():
    """One base for what a user causes: each command prints any of them in one line, and nothing else."""
    import importlib

    classes = {
        obj
        for name in project_modules()
        for obj in vars(importlib.import_module(name)).values()
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == name
    }
    assert len(classes) >= 8  # UserError and the errors of configs, checkpoints, conversion, inherit, runs...
    assert all(issubclass(c, UserError) for c in classes), [c for c in classes if not issubclass(c, UserError)]


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys, tmp_path):
    import train
    from configurator import ConfigError

    argv = [f"--out_dir={tmp_path}", "--device=cpu"]

    def bug(cfg):
        raise ValueError("a bug in the code")

    monkeypatch.setattr(train, "train", bug)
    with pytest.raises(ValueError, match="a bug in the code"):  # not swallowed into "error: ..."
        train.main(argv)

    def mistake(cfg):
        raise ConfigError("a mistake of the user")

    monkeypatch.setattr(train, "train", mistake)
    assert train.main(argv) == ConfigError.exit_code == 2
    assert capsys.readouterr().err == "error: a mistake of the user\n"


def test_a_shape_the_model_refuses_is_a_config_error_of_the_command(shakespeare_dir, tmp_path, capsys):
    """GPTConfig's own check (n_embd divisible by n_head) decides; train.py reports it as a config error."""
    import train

    values = tiny_values(shakespeare_dir) | {"out_dir": str(tmp_path), "n_head": 5}
    assert train.main([f"--{key}={value}" for key, value in values.items()]) == 2
    assert capsys.readouterr().err == f"error: n_embd {values['n_embd']} is not divisible by n_head 5\n"


def test_an_out_dir_that_is_a_file_is_one_line_before_anything_runs(shakespeare_dir, tmp_path, capsys):
    import train

    taken = tmp_path / "taken"
    taken.write_text("a file")
    values = tiny_values(shakespeare_dir) | {"out_dir": str(taken)}
    assert train.main([f"--{key}={value}" for key, value in values.items()]) == 1
    assert capsys.readouterr().err == f"error: {taken} is a file, not a folder to write into ({taken})\n"


def test_the_runner_refuses_a_bad_config_before_it_launches_anything(tmp_path, capsys):
    """Not "the run failed; run the same command to resume": the config's own one-line error, and its exit code."""
    import runs

    out = tmp_path / "{seed}"
    argv = ["train", "--config", str(ROOT / "config/train_shakespeare.py"), "--seeds", "1", "--out_dir", str(out)]
    assert runs.main([*argv, "--", "--n_layer=abc"]) == 2
    assert capsys.readouterr().err == "error: n_layer must be int, got 'abc'\n"
    assert not (tmp_path / "1").exists()


def test_a_device_torch_does_not_know_is_one_clear_error():
    with pytest.raises(UserError, match="device 'bogus' is no device: use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device_name("bogus")
    assert resolve_device_name("cpu") == "cpu"


@pytest.mark.parametrize(
    "module, argv, message",
    [
        ("analyze", ["--model", "M", "--data", "D", "--out", "FILE"], "FILE is a file, not a folder to write into"),
        ("evaluation", ["export", "--model", "M", "--out", "FILE"], "FILE is a file, not a folder to write into"),
        ("evaluation", ["loss", "--model", "M", "--data", "D", "--out", "DIR"], "DIR is a folder: name the file"),
        ("inherit", ["--inherit_from", "M", "--n_layer", "2", "--out", "DIR"], "DIR is a folder: name the file"),
        ("runs", ["compare", "a=D", "--out", "FILE/curves.png"], "FILE is a file, not a folder to write into"),
        ("grow", ["--inherit_from", "M", "--config", "C", "--out_dir", "FILE"], "FILE is a file, not a folder"),
    ],
)
def test_an_output_path_in_the_way_is_one_line_before_the_work(tmp_path, capsys, module, argv, message):
    """Where the output cannot go (a file where a folder is written, a folder where a file is), the command says
    so before it reads a model or trains, not after."""
    import importlib

    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "DIR").mkdir()
    paths = {"FILE": tmp_path / "FILE", "DIR": tmp_path / "DIR", "FILE/curves.png": tmp_path / "FILE" / "curves.png"}
    args = [str(paths.get(a, tmp_path / "missing" / a if a in ("M", "D", "C") else a)) for a in argv]
    assert importlib.import_module(module).main(args) == 1
    assert capsys.readouterr().err.startswith(
        "error: " + message.replace("FILE", str(tmp_path / "FILE")).replace("DIR", str(tmp_path / "DIR"))
    )
