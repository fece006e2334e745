import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from data.format import write_meta
from model import GPT, Checkpoint, CheckpointError, GPTConfig
from train import ConfigError, NonFiniteLossError, TrainConfig, get_lr, parse_config

ROOT = Path(__file__).resolve().parents[1]


def metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(out_dir) -> dict[int, float]:
    return {r["iter"]: r["train_loss"] for r in metrics(out_dir) if r["kind"] == "train"}


def as_args(cfg: TrainConfig) -> list[str]:
    return [f"--{k}={v}" for k, v in asdict(cfg).items()]


# ----------------------------------------------------------------------------- config


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("import math\nn_layer = 4\nlearning_rate = 1e-3\nmax_iters = 2 * 50\n_helper = 1\n")
    cfg = parse_config([str(path), "--n_layer=6", "--compile=False", "--out_dir=123", "--min_lr=0"])
    assert (cfg.n_layer, cfg.learning_rate, cfg.max_iters) == (6, 1e-3, 100)
    assert cfg.compile is False and cfg.out_dir == "123" and cfg.min_lr == 0.0


def test_unknown_key_is_named_with_the_valid_ones(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("n_layers = 4\n")
    with pytest.raises(ConfigError, match="unknown config key 'n_layers'.*valid keys: out_dir, data_dir"):
        parse_config([str(path)])
    with pytest.raises(ConfigError, match="unknown config key 'lr'"):
        parse_config(["--lr=1e-3"])


@pytest.mark.parametrize(
    "arg,message",
    [
        ("--n_layer=4.5", "n_layer must be int, got float 4.5"),
        ("--compile=1", "compile must be bool, got int 1"),
        ("--learning_rate=fast", "learning_rate must be float, got 'fast'"),
        ("--dtype=fp8", "dtype must be 'auto' or one of"),
        ("--batch_size=0", "batch_size must be at least 1"),
        ("n_layer=4", "config file n_layer=4 not found"),
    ],
)
def test_bad_values_stop_with_a_clear_error(arg, message):
    with pytest.raises(ConfigError, match=message):
        parse_config([arg])


def test_command_line_reports_config_errors_without_traceback():
    result = subprocess.run(
        [sys.executable, "train.py", "--n_layers=3"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown config key 'n_layers'")
    assert "Traceback" not in result.stderr


def test_shipped_configs_parse():
    for path in sorted((ROOT / "config").glob("*.py")):
        parse_config([str(path)])


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    assert get_lr(0, cfg) == pytest.approx(1 / 11)
    assert get_lr(10, cfg) == pytest.approx(1.0)
    assert get_lr(60, cfg) == pytest.approx(0.55)
    assert get_lr(110, cfg) == pytest.approx(0.1)
    assert get_lr(500, cfg) == 0.1


# ----------------------------------------------------------------------------- training


def test_loss_falls_on_shakespeare(tiny_config):
    cfg = tiny_config(max_iters=40, lr_decay_iters=40, eval_interval=40, eval_iters=8)
    last = train.train(cfg)
    evals = [r for r in metrics(cfg.out_dir) if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 40]
    assert evals[0]["val_loss"] == pytest.approx(math.log(50304), abs=0.2)
    assert last["val_loss"] < evals[0]["val_loss"] - 2.0
    saved = json.loads((Path(cfg.out_dir) / "config.json").read_text())
    assert saved["config"] == asdict(cfg)


def test_checkpoint_round_trip(tiny_config):
    cfg = tiny_config(max_iters=10, eval_interval=5)
    train.train(cfg)
    raw = torch.load(Path(cfg.out_dir) / "ckpt.pt", weights_only=True)  # nanoGPT's keys, as a plain dict
    assert {"model", "optimizer", "model_args", "config", "iter_num", "best_val_loss"} <= raw.keys()
    ckpt = Checkpoint.load(Path(cfg.out_dir) / "ckpt.pt")
    assert ckpt.iter_num == 10 and ckpt.config == asdict(cfg)
    best = Checkpoint.load(Path(cfg.out_dir) / "best.pt")
    evals = [r for r in metrics(cfg.out_dir) if r["kind"] == "eval"]
    assert best.best_val_loss == min(r["val_loss"] for r in evals[1:])
    model = GPT(GPTConfig(**ckpt.model_args))
    model.load_state_dict(ckpt.model)
    cfg_eval = tiny_config(init_from=str(Path(cfg.out_dir) / "ckpt.pt"), eval_only=True, out_dir=cfg.out_dir + "-eval")
    again = train.train(cfg_eval)
    assert again["val_loss"] == pytest.approx(evals[-1]["val_loss"], abs=1e-6)


def test_resume_continues_exactly(tiny_config, tmp_path):
    straight = tiny_config(out_dir=str(tmp_path / "straight"), dropout=0.1)
    train.train(straight)
    split = tiny_config(out_dir=str(tmp_path / "split"), dropout=0.1, max_iters=10)
    train.train(split)
    split_resumed = tiny_config(out_dir=str(tmp_path / "split"), dropout=0.1, init_from="resume")
    train.train(split_resumed)
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    a = Checkpoint.load(tmp_path / "straight" / "ckpt.pt").model
    b = Checkpoint.load(tmp_path / "split" / "ckpt.pt").model
    assert all(torch.equal(a[k], b[k]) for k in a)
    iters = [(r["kind"], r["iter"]) for r in metrics(tmp_path / "split")]
    assert len(iters) == len(set(iters)), "a resumed run must not log an iteration twice"


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tiny_config, tmp_path):
    one = tiny_config(out_dir=str(tmp_path / "one"), max_iters=8, eval_interval=8)
    train.train(one)
    two = tiny_config(out_dir=str(tmp_path / "two"), max_iters=8, eval_interval=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd + as_args(two), cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processes: 2" in result.stdout
    l1, l2 = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert l1.keys() == l2.keys()
    for it in l1:
        assert l2[it] == pytest.approx(l1[it], abs=1e-4)
    a = Checkpoint.load(tmp_path / "one" / "ckpt.pt").model
    b = Checkpoint.load(tmp_path / "two" / "ckpt.pt").model
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)


def test_global_batch_must_split_evenly_over_processes(tiny_config, tmp_path):
    cfg = tiny_config(gradient_accumulation_steps=3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    result = subprocess.run(cmd + as_args(cfg), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "gradient_accumulation_steps 3 is not divisible by the 2 processes" in result.stderr


# ----------------------------------------------------------------------------- failures


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_config):
    good = tiny_config(max_iters=10)
    train.train(good)
    before = Checkpoint.load(Path(good.out_dir) / "ckpt.pt")
    # An absurd learning rate overflows the weights within a step: the loss becomes NaN.
    diverging = tiny_config(init_from="resume", max_iters=20, learning_rate=1e30, min_lr=1e30)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint kept"):
        train.train(diverging)
    after = Checkpoint.load(Path(good.out_dir) / "ckpt.pt")
    assert after.iter_num == 10
    assert all(torch.equal(before.model[k], after.model[k]) for k in before.model)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_config):
    cfg = tiny_config(max_iters=100000, lr_decay_iters=100000, eval_interval=100000)
    proc = subprocess.Popen([sys.executable, "train.py", *as_args(cfg)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    log = Path(cfg.out_dir) / "metrics.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and sum(1 for _ in log.open()) >= 4) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert "stopped by signal" in out
    ckpt = Checkpoint.load(Path(cfg.out_dir) / "ckpt.pt")
    assert ckpt.iter_num >= 3
    assert ckpt.iter_num == max(train_losses(cfg.out_dir))


def test_kill_during_save_leaves_the_old_checkpoint_loadable(tmp_path):
    path = tmp_path / "ckpt.pt"
    Checkpoint(model={"w": torch.zeros(3)}, model_args={}, iter_num=1).save(path)
    # The child dies abruptly half-way through writing a large checkpoint, as with SIGKILL.
    script = f"""
import os, sys, torch
sys.path.insert(0, {str(ROOT)!r})
import model
real_save = torch.save
def dying_save(obj, f):
    real_save(obj, f)
    f.flush()
    f.truncate(f.tell() // 2)
    os._exit(9)
model.torch.save = dying_save
model.Checkpoint(model={{"w": torch.ones(1_000_000)}}, model_args={{}}, iter_num=2).save({str(path)!r})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 9
    assert (tmp_path / "ckpt.pt.tmp").exists()  # the half-written file exists, but under another name
    ckpt = Checkpoint.load(path)
    assert ckpt.iter_num == 1 and torch.equal(ckpt.model["w"], torch.zeros(3))


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    Checkpoint(model={"w": torch.ones(10000)}, model_args={}).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        Checkpoint.load(path)


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/nonexistent"


def test_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": RunsCode(), "model_args": {}}, f)
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        Checkpoint.load(path)
    assert not Path(MARKER).exists()


def test_out_of_vocab_tokens_are_refused(tiny_config, tmp_path):
    data = tmp_path / "bad"
    data.mkdir()
    tokens = np.random.default_rng(0).integers(0, 50257, 5000)
    tokens[::7] = 60000
    for split in ("train", "val"):
        (data / f"{split}.bin").write_bytes(tokens.astype(np.uint16).tobytes())
    write_meta(data, {"tokenizer": "gpt2", "vocab_size": 50257})
    with pytest.raises(ValueError, match="token id 60000, outside the model's vocabulary of 50257"):
        train.train(tiny_config(data_dir=str(data)))


def test_bins_without_meta_are_read_as_gpt2(tiny_config, tmp_path, capsys):
    data = tmp_path / "nanogpt"
    data.mkdir()
    tokens = np.random.default_rng(0).integers(0, 50257, 5000)
    for split in ("train", "val"):
        (data / f"{split}.bin").write_bytes(tokens.astype(np.uint16).tobytes())
    train.train(tiny_config(data_dir=str(data), max_iters=2))
    assert "has no meta.json; reading its bins as GPT-2 uint16 tokens" in capsys.readouterr().out


def test_wandb_logs_offline_without_network(tiny_config):
    cfg = tiny_config(max_iters=2, wandb_log=True, wandb_mode="offline", wandb_run_name="test")
    train.train(cfg)
    assert list((Path(cfg.out_dir) / "wandb").glob("offline-run-*"))
