import os
import pickle
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Commands the tests start import this checkout's modules too, whichever copy of the project is installed
# (pytest's pythonpath puts it first for the tests themselves).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, their subprocesses too
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# datasets converts local inputs to Arrow files in its cache: keep the tests' out of the user's cache.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="inheritune-hf-datasets-"))

import train  # noqa: E402
from configurator import TrainConfig  # noqa: E402
from data.python.prepare import prepare as prepare_python  # noqa: E402
from data.shakespeare.prepare import prepare, shakespeare_texts  # noqa: E402


class CodeOnUnpickle:
    """An object whose unpickling runs a shell command that creates `marker`: a loader that refuses it
    without running code leaves no marker behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory) -> Path:
    """The real embedded corpus, prepared once per test session."""
    out = tmp_path_factory.mktemp("shakespeare")
    prepare(out)
    return out


@pytest.fixture(scope="session")
def python_dir(tmp_path_factory) -> Path:
    """A second real corpus in GPT-2 tokens: the Python standard library's sources (15M tokens in ~4 s)."""
    out = tmp_path_factory.mktemp("python")
    prepare_python(out, test_size=0.05, seed=2357, max_tokens=None, num_threads=2)
    return out


def tiny_values(data_dir: Path) -> dict:
    """A 2-layer model that trains at tens of steps per second on a CPU core: TrainConfig's values."""
    return dict(
        data_dir=str(data_dir),
        device="cpu",
        compile=False,
        n_layer=2,
        n_head=2,
        n_embd=32,
        block_size=32,
        batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        warmup_iters=2,
        max_iters=20,
        lr_decay_iters=20,
        min_lr=3e-4,
        eval_interval=10,
        eval_iters=4,
        log_interval=1,
    )


@pytest.fixture
def tiny_config(shakespeare_dir, tmp_path):
    """tiny_values as a TrainConfig, written to tmp_path/out unless overridden."""

    def make(**overrides) -> TrainConfig:
        return TrainConfig(**tiny_values(shakespeare_dir) | {"out_dir": str(tmp_path / "out")} | overrides)

    return make


@pytest.fixture(scope="session")
def reference_run(shakespeare_dir, tmp_path_factory) -> Path:
    """The run folder of a 4-layer reference trained for 20 steps, once per test process: trained_reference's."""
    out = tmp_path_factory.mktemp("reference") / "ref"
    train.train(TrainConfig(**tiny_values(shakespeare_dir) | {"n_layer": 4, "max_iters": 20, "out_dir": str(out)}))
    return out


@pytest.fixture
def trained_reference(reference_run, tiny_config, tmp_path) -> TrainConfig:
    """A 4-layer reference trained for 20 steps: its run folder is cfg.out_dir, a test's own copy of the run
    (a copied run folder, as a user's `cp -r` makes: every command takes it as the run it is)."""
    subprocess.run(["cp", "-a", reference_run, tmp_path / "ref"], check=True)  # -a: best.pt stays ckpt.pt's link
    return tiny_config(n_layer=4, out_dir=str(tmp_path / "ref"), max_iters=20)


@pytest.fixture(scope="session")
def char_data_root(tmp_path_factory) -> Path:
    """A folder laid out as nanoGPT's repository: data/shakespeare_char made by nanoGPT's procedure (every
    character of the text is a token; meta.pkl holds vocab_size, stoi and itos; 90/10 split; uint16 bins)."""
    root = tmp_path_factory.mktemp("nanogpt")
    out = root / "data" / "shakespeare_char"
    out.mkdir(parents=True)
    texts = shakespeare_texts()
    text = texts["hamlet_gut"] + texts["twelfth_night_gut"]
    chars = sorted(set(text))
    stoi, itos = {c: i for i, c in enumerate(chars)}, dict(enumerate(chars))
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    split = int(0.9 * len(ids))
    ids[:split].tofile(out / "train.bin")
    ids[split:].tofile(out / "val.bin")
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    return root


# What a config file for the runs of grow.py or scaling.py sweep carries of a tiny config: everything but
# the depth, which each run sets itself.
SWEEP_KEYS = (
    "data_dir",
    "device",
    "compile",
    "n_head",
    "n_embd",
    "block_size",
    "batch_size",
    "learning_rate",
    "gradient_accumulation_steps",
    "warmup_iters",
    "eval_interval",
    "eval_iters",
    "log_interval",
)


def write_config_file(path: Path, cfg: TrainConfig, **values) -> Path:
    """A config file of cfg's SWEEP_KEYS, then `values`."""
    settings = {k: getattr(cfg, k) for k in SWEEP_KEYS} | values
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    return path


# lm-eval on the local tiny_qa task (tests/lm_eval_tasks), quick: `evaluation.py tasks --model M` + these.
TINY_QA_ARGS = ["--tasks", "tiny_qa", "--include_path", "tests/lm_eval_tasks", "--limit", "4", "--batch_size", "4"]


def zero_output_blocks(model, layers: list[int]):
    """Blocks whose output projections are zero: they leave the residual stream as it was (Block Influence 0)."""
    with torch.no_grad():
        for layer in layers:
            for proj in (model.transformer.h[layer].attn.c_proj, model.transformer.h[layer].mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    return model
