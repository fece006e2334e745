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

import runs
import train
from checkpoint import Checkpoint, load_model
from configurator import ConfigError, TrainConfig
from data.format import write_meta
from inheritune import training
from model import GPT, NANOGPT_FIELDS, GPTConfig, load_weights
from runtime import UserError
from tests.conftest import CodeOnUnpickle, tiny_values
from train import NonFiniteLossError, get_lr

ROOT = Path(__file__).resolve().parents[1]


def metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(out_dir) -> dict[int, float]:
    return {r["iter"]: r["train_loss"] for r in metrics(out_dir) if r["kind"] == "train"}


def as_args(cfg: TrainConfig) -> list[str]:
    """The command line of a config; corpus lists as path:weight,path:weight and path,path."""

    def text(v) -> str:
        if isinstance(v, dict):
            return ",".join(f"{path}:{weight}" for path, weight in v.items())
        return ",".join(v) if isinstance(v, list) else str(v)

    return [f"--{k}={text(v)}" for k, v in asdict(cfg).items()]


# ----------------------------------------------------------------------------- config


@pytest.mark.slow
def test_command_line_reports_config_errors_without_traceback():
    result = subprocess.run(
        [sys.executable, "train.py", "--n_layers=3"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown config key 'n_layers'")
    assert "Traceback" not in result.stderr


def test_help_lists_every_key_with_its_default(capsys):
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "torchrun --standalone" in out and "  always_save_checkpoint = True" in out
    assert "  inherit_parts = 'all'" in out


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    assert get_lr(0, cfg) == pytest.approx(1 / 11)
    assert get_lr(10, cfg) == pytest.approx(1.0)
    assert get_lr(60, cfg) == pytest.approx(0.55)
    assert get_lr(110, cfg) == pytest.approx(0.1)
    assert get_lr(500, cfg) == 0.1


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_loss_falls_on_shakespeare(tiny_config):
    cfg = tiny_config(max_iters=40, lr_decay_iters=40, eval_interval=40, eval_iters=8)
    last = train.train(cfg)
    evals = [r for r in metrics(cfg.out_dir) if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 40]
    assert evals[0]["val_loss"] == pytest.approx(math.log(50257), abs=0.2)  # uniform over the real vocabulary
    assert last["val_loss"] < evals[0]["val_loss"] - 2.0
    saved = json.loads((Path(cfg.out_dir) / "config.json").read_text())
    assert saved["config"] == cfg.record()


@pytest.mark.slow
def test_checkpoint_round_trip(tiny_config):
    cfg = tiny_config(max_iters=10, eval_interval=5)
    train.train(cfg)
    raw = torch.load(Path(cfg.out_dir) / "ckpt.pt", weights_only=True)  # nanoGPT's keys, as a plain dict
    assert {"model", "optimizer", "model_args", "config", "iter_num", "best_val_loss"} <= raw.keys()
    ckpt = Checkpoint.load(Path(cfg.out_dir) / "ckpt.pt")
    assert ckpt.iter_num == 10 and ckpt.config == cfg.record()
    best = Checkpoint.load(Path(cfg.out_dir) / "best.pt")
    evals = [r for r in metrics(cfg.out_dir) if r["kind"] == "eval"]
    assert best.best_val_loss == min(r["val_loss"] for r in evals[1:])
    model = GPT(GPTConfig.from_model_args(ckpt.model_args))
    load_weights(model, ckpt.model)
    cfg_eval = tiny_config(init_from=str(Path(cfg.out_dir) / "ckpt.pt"), eval_only=True, out_dir=cfg.out_dir + "-eval")
    again = train.train(cfg_eval)
    assert again["val_loss"] == pytest.approx(evals[-1]["val_loss"], abs=1e-6)


@pytest.mark.slow
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


def assert_adamw_state_fits_the_weights(raw: dict) -> None:
    """Each AdamW moment of a ckpt.pt has its weight's stored shape (vocab_size rows, not the padded ones):
    the state nanoGPT's train.py resumes into its model of model_args, whose parameters (tied once) it
    numbers matrices first, then vectors, in named_parameters order."""
    with torch.device("meta"):
        named = list(GPT(GPTConfig(**raw["model_args"])).named_parameters())
    order = [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]
    assert len(raw["optimizer"]["state"]) == len(order)
    for index, name in enumerate(order):
        for moment in ("exp_avg", "exp_avg_sq"):
            assert raw["optimizer"]["state"][index][moment].shape == raw["model"][name].shape, (name, moment)


@pytest.mark.slow
def test_a_checkpoints_adamw_state_has_the_shapes_of_its_weights_and_resumes(tiny_config):
    """The moments of wte are cut to the 50,257 rows its weight is stored with, and padded again on resume
    (test_resume_continues_exactly: to the same losses)."""
    train.train(tiny_config(max_iters=4))
    raw = torch.load(Path(tiny_config().out_dir) / "ckpt.pt", weights_only=True)
    assert raw["model"]["transformer.wte.weight"].shape == (50257, 32)
    assert_adamw_state_fits_the_weights(raw)
    train.train(tiny_config(max_iters=6, init_from="resume"))


@pytest.mark.slow
def test_a_resume_with_another_batch_counts_the_tokens_it_trained_on(tiny_config, tmp_path):
    """10 steps of 2 micro-batches, then 10 of 4: D is their sum, not 20 steps of the last batch."""
    train.train(tiny_config(max_iters=10, gradient_accumulation_steps=2))
    train.train(tiny_config(max_iters=20, gradient_accumulation_steps=4, init_from="resume"))
    micro_batch = 4 * 32  # batch_size x block_size of tiny_config
    expected = 10 * 2 * micro_batch + 10 * 4 * micro_batch
    ckpt = Checkpoint.load(Path(tiny_config().out_dir) / "ckpt.pt")
    assert ckpt.tokens == ckpt.tokens_seen() == expected == 7680
    last = metrics(tiny_config().out_dir)
    assert [r["tokens"] for r in last if r["kind"] == "eval"] == [0, 10 * 2 * micro_batch, expected]
    assert [r["tokens"] for r in last if r["iter"] == 11 and r["kind"] == "train"] == [
        20 * micro_batch + 4 * micro_batch
    ]


@pytest.mark.slow
def test_a_checkpoint_from_before_the_token_count_resumes(tiny_config):
    train.train(tiny_config(max_iters=10))
    path = Path(tiny_config().out_dir) / "ckpt.pt"
    state = torch.load(path, weights_only=True)
    del state["tokens"]
    state["config"]["inherit_ln_f"] = True  # a key this project's configs had then
    state["config"] |= {"dataset": "shakespeare", "eval_data_dirs": ""}  # and the corpus keys as they were then
    torch.save(state, path)
    train.train(tiny_config(max_iters=20, init_from="resume", gradient_accumulation_steps=4))
    # its 10 steps at its own config's batch (2 micro-batches), then 10 at the resumed run's 4
    assert Checkpoint.load(path).tokens == 10 * 4 * 2 * 32 + 10 * 4 * 4 * 32


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tiny_config, python_dir, tmp_path):
    mixture = {tiny_config().data_dir: 0.5, str(python_dir): 0.5}  # rows drawn from two corpora, as with replay
    one = tiny_config(out_dir=str(tmp_path / "one"), max_iters=8, eval_interval=8, data_dir=mixture)
    train.train(one)
    two = tiny_config(
        out_dir=str(tmp_path / "two"), max_iters=8, eval_interval=8, data_dir=mixture, backend="gloo", peak_flops=1e12
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd + as_args(two), cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processes: 2" in result.stdout
    l1, l2 = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert l1.keys() == l2.keys()
    evals = [[r for r in metrics(tmp_path / run) if r["kind"] == "eval"][-1] for run in ("one", "two")]
    assert evals[0]["val_losses"] == pytest.approx(evals[1]["val_losses"], abs=1e-4)
    for it in l1:
        assert l2[it] == pytest.approx(l1[it], abs=1e-4)
    a = Checkpoint.load(tmp_path / "one" / "ckpt.pt").model
    b = Checkpoint.load(tmp_path / "two" / "ckpt.pt").model
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)
    # MFU is one process's FLOP/s over one device's peak: half of the global tokens per second here.
    model, _ = load_model(tmp_path / "two" / "ckpt.pt")
    for r in [r for r in metrics(tmp_path / "two") if r["kind"] == "train"]:
        assert r["mfu"] == pytest.approx(model.flops_per_token() * r["tokens_per_s"] / 2 / 1e12, rel=1e-6)


@pytest.mark.slow
def test_global_batch_must_split_evenly_over_processes(tiny_config, tmp_path):
    cfg = tiny_config(gradient_accumulation_steps=3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    result = subprocess.run(cmd + as_args(cfg), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "gradient_accumulation_steps 3 is not divisible by the 2 processes" in result.stderr


# ----------------------------------------------------------------------------- failures


def test_a_run_that_diverges_before_its_first_checkpoint_says_none_was_saved(tiny_config):
    """The error must not promise a checkpoint that was never written."""
    diverging = tiny_config(max_iters=6, eval_interval=100, learning_rate=1e30, min_lr=1e30, warmup_iters=0)
    with pytest.raises(NonFiniteLossError, match="training stopped; no checkpoint was saved"):
        train.train(diverging)
    assert not (Path(diverging.out_dir) / "ckpt.pt").exists()


@pytest.mark.slow
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_config):
    good = tiny_config(max_iters=10)
    train.train(good)
    before = Checkpoint.load(Path(good.out_dir) / "ckpt.pt")
    # An absurd learning rate overflows the weights within a step: the loss becomes NaN.
    diverging = tiny_config(init_from="resume", max_iters=20, learning_rate=1e30, min_lr=1e30)
    with pytest.raises(NonFiniteLossError, match="training stopped; its last good checkpoint is kept"):
        train.train(diverging)
    after = Checkpoint.load(Path(good.out_dir) / "ckpt.pt")
    assert after.iter_num == 10
    assert all(torch.equal(before.model[k], after.model[k]) for k in before.model)


@pytest.mark.slow
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


def test_out_of_vocab_tokens_are_refused(tiny_config, tmp_path):
    data = tmp_path / "bad"
    data.mkdir()
    tokens = np.random.default_rng(0).integers(0, 50257, 5000)
    tokens[::7] = 60000
    for split in ("train", "val"):
        (data / f"{split}.bin").write_bytes(tokens.astype(np.uint16).tobytes())
    write_meta(data, {"tokenizer": "gpt2", "vocab_size": 50257})
    with pytest.raises(UserError, match="token id 60000, outside the model's vocabulary of 50257"):
        train.train(tiny_config(data_dir=str(data)))


def test_bins_without_meta_are_read_as_gpt2(tiny_config, tmp_path, capsys):
    data = tmp_path / "nanogpt"
    data.mkdir()
    tokens = np.random.default_rng(0).integers(0, 50257, 5000)
    for split in ("train", "val"):
        (data / f"{split}.bin").write_bytes(tokens.astype(np.uint16).tobytes())
    train.train(tiny_config(data_dir=str(data), max_iters=2))
    assert "has no meta.json or meta.pkl; reading its bins as GPT-2 tokens" in capsys.readouterr().out


# A shrunk copy of nanoGPT's config/train_shakespeare_char.py, with its keys and style.
NANOGPT_CHAR_CONFIG = """
out_dir = 'out-shakespeare-char'
eval_interval = 10
eval_iters = 4
log_interval = 5
always_save_checkpoint = False
wandb_log = False
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'
dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 64
n_layer = 2
n_head = 2
n_embd = 64
dropout = 0.2
learning_rate = 1e-2
max_iters = 40
lr_decay_iters = 40
min_lr = 1e-3
beta2 = 0.99
warmup_iters = 5
device = 'cpu'
compile = False
"""


@pytest.fixture
def char_run(char_data_root, monkeypatch) -> Path:
    """nanoGPT's character-level Shakespeare, trained by train.py from nanoGPT's repository layout."""
    monkeypatch.chdir(char_data_root)
    (char_data_root / "train_shakespeare_char.py").write_text(NANOGPT_CHAR_CONFIG)
    assert train.main(["train_shakespeare_char.py"]) == 0
    return char_data_root / "out-shakespeare-char"


@pytest.mark.slow
def test_a_character_level_corpus_trains_with_its_own_vocabulary(char_run, char_data_root):
    meta = pickle.loads((char_data_root / "data" / "shakespeare_char" / "meta.pkl").read_bytes())
    evals = [r for r in metrics(char_run) if r["kind"] == "eval"]
    assert evals[0]["val_loss"] == pytest.approx(math.log(meta["vocab_size"]), abs=0.3)  # uniform over the chars
    assert evals[-1]["val_loss"] < math.log(meta["vocab_size"]) - 1.0  # learned the characters' statistics
    raw = torch.load(char_run / "ckpt.pt", weights_only=True)
    assert raw["model_args"]["vocab_size"] == meta["vocab_size"]


@pytest.mark.slow
def test_checkpoints_load_as_nanogpt_loads_them(char_run, char_data_root):
    """nanoGPT's sample.py: GPTConfig(**model_args) with its fields, load_state_dict of the tensors as they
    are, and the character vocabulary found at data/<config['dataset']>/meta.pkl."""
    raw = torch.load(char_run / "ckpt.pt", weights_only=True)
    assert set(raw["model_args"]) <= set(NANOGPT_FIELDS)
    assert raw["model"]["transformer.wte.weight"].shape == (raw["model_args"]["vocab_size"], 64)
    assert raw["model"]["lm_head.weight"].shape == raw["model"]["transformer.wte.weight"].shape
    assert (Path("data") / raw["config"]["dataset"] / "meta.pkl").exists()


@pytest.mark.slow
def test_always_save_checkpoint_false_saves_only_when_val_improves(trained_reference, tiny_config, tmp_path):
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    # A learning rate this high wrecks the trained model: the val loss only rises after iter 0.
    common = dict(init_from=ref, n_layer=4, learning_rate=0.3, min_lr=0.3, warmup_iters=0, max_iters=6, eval_interval=2)
    train.train(tiny_config(out_dir=str(tmp_path / "only_best"), always_save_checkpoint=False, **common))
    val = [r["val_loss"] for r in metrics(tmp_path / "only_best") if r["kind"] == "eval"]
    assert val[0] < min(val[1:])
    assert not (tmp_path / "only_best" / "ckpt.pt").exists()
    train.train(tiny_config(out_dir=str(tmp_path / "always"), always_save_checkpoint=True, **common))
    assert Checkpoint.load(tmp_path / "always" / "ckpt.pt").iter_num == 6


@pytest.mark.slow
def test_a_model_with_more_positions_is_cropped_to_block_size(trained_reference, tiny_config, tmp_path):
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    cfg = tiny_config(init_from=ref, block_size=16, max_iters=2, eval_interval=2, out_dir=str(tmp_path / "c"))
    train.train(cfg)
    ckpt = Checkpoint.load(tmp_path / "c" / "ckpt.pt")
    assert ckpt.model_args["block_size"] == 16 and ckpt.model["transformer.wpe.weight"].shape == (16, 32)


def test_a_meta_pkl_that_carries_code_is_refused_without_running_it(tiny_config, char_data_root, tmp_path):
    marker = tmp_path / "pwned"
    data = tmp_path / "evil_char"
    data.mkdir()
    for split in ("train", "val"):
        (data / f"{split}.bin").write_bytes(
            (char_data_root / "data" / "shakespeare_char" / f"{split}.bin").read_bytes()
        )
    (data / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 65, "stoi": CodeOnUnpickle(marker), "itos": {}}))
    with pytest.raises(UserError, match="only plain dicts, strings and numbers"):
        train.train(tiny_config(data_dir=str(data)))
    assert not marker.exists()


@pytest.mark.slow
def test_every_process_stops_when_one_holds_non_finite_weights(tmp_path):
    """Under DDP each process holds the whole model; under FSDP only its shards, here the NaN in rank 1's."""
    script = tmp_path / "diverge_on_rank_1.py"
    script.write_text(f"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, {str(ROOT)!r})
from torch.distributed.fsdp import fully_shard
from model import GPT, GPTConfig
from runtime import Runtime
from train import NonFiniteLossError, stop_if_weights_diverged
dist.init_process_group("gloo")
rank = dist.get_rank()
for parallel in ("ddp", "fsdp"):
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=10))
    if rank == 1:
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight[-1, 0] = float("nan")  # a row of the second shard
    if parallel == "fsdp":
        fully_shard(model)
        assert torch.isfinite(model.transformer.h[0].mlp.c_fc.weight.to_local()).all() == (rank == 0)
    try:
        stop_if_weights_diverged(model, Runtime(rank, 2, torch.device("cpu"), torch.float32, torch.float32), 5)
        print(f"{{parallel}} rank {{rank}} went on")
    except NonFiniteLossError as e:
        print(f"{{parallel}} rank {{rank}} stopped: {{e}}")
dist.destroy_process_group()
""")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    for parallel in ("ddp", "fsdp"):
        assert f"{parallel} rank 0 stopped: parameters became NaN/inf by iter 5" in result.stdout
        assert f"{parallel} rank 1 stopped" in result.stdout
    assert "went on" not in result.stdout


@pytest.mark.slow
def test_wandb_logs_offline_without_network(tiny_config):
    cfg = tiny_config(max_iters=2, wandb_log=True, wandb_mode="offline", wandb_run_name="test")
    train.train(cfg)
    assert list((Path(cfg.out_dir) / "wandb").glob("offline-run-*"))


def test_a_resume_with_another_block_size_is_refused(tiny_config):
    """AdamW's moments of wpe have the checkpoint's positions: cropping on resume would pair them with a
    smaller wpe."""
    train.train(tiny_config(max_iters=4))
    with pytest.raises(ConfigError, match="a resumed run keeps its block_size, 32: to train at 16, start a new run"):
        train.train(tiny_config(max_iters=8, init_from="resume", block_size=16))


@pytest.mark.slow
def test_a_resume_that_asks_for_another_model_is_refused_not_ignored(tiny_config):
    """The checkpoint's model continues; a resume whose config asks for another shape would train it while
    config.json recorded the other."""
    train.train(tiny_config(max_iters=4))
    config_json = (Path(tiny_config().out_dir) / "config.json").read_text()
    with pytest.raises(
        ConfigError, match=r"the config it was started with: n_layer 2 \(asked 3\), n_embd 32 \(asked 64"
    ):
        train.train(tiny_config(max_iters=8, init_from="resume", n_layer=3, n_embd=64))
    assert (Path(tiny_config().out_dir) / "config.json").read_text() == config_json
    train.train(tiny_config(max_iters=8, init_from="resume", dropout=0.1))  # not the shape: dropout may change


def test_a_run_from_before_freeze_embedding_resumes_only_with_it_off(tmp_path):
    """Its config has no freeze_embedding: it trained the embedding, and a resume that freezes it is refused
    in one line (its AdamW state holds the embedding's moments)."""
    ckpt = Checkpoint(model_args={}, config={"n_layer": 2})
    training.refuse_another_model(TrainConfig(n_layer=2), ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(ConfigError, match=r"freeze_embedding False \(asked True\)"):
        training.refuse_another_model(TrainConfig(n_layer=2, freeze_embedding=True), ckpt, tmp_path / "ckpt.pt")


def test_an_inherited_run_records_the_architecture_of_its_reference(tiny_config, tmp_path):
    """bias and scale_attn_by_inverse_layer_idx come from the reference: config.json records the student's
    values, a rerun of the same command is accepted (resume and runs.py), one asking for others is refused."""
    reference = tiny_config(out_dir=str(tmp_path / "ref"), max_iters=2, bias=True, scale_attn_by_inverse_layer_idx=True)
    train.train(reference)
    command = dict(init_from="inherit", inherit_from=str(tmp_path / "ref" / "ckpt.pt"), max_iters=2, eval_interval=2)
    train.train(tiny_config(**command))
    run = runs.read_run(Path(tiny_config().out_dir))
    assert (run.config["bias"], run.config["scale_attn_by_inverse_layer_idx"]) == (True, True)
    assert run.model["model_args"]["bias"] and run.model["model_args"]["scale_attn_by_inverse_layer_idx"]
    train.train(tiny_config(**command | {"init_from": "resume", "max_iters": 4}))
    config = tmp_path / "student.py"
    values = tiny_values(Path(reference.data_dir)) | command | {"max_iters": 4}
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in values.items()))
    overrides = [f"--out_dir={tiny_config().out_dir}"]
    runs.refuse_changed_plan(runs.read_run(Path(tiny_config().out_dir)), str(config), overrides)
    with pytest.raises(runs.RunError, match=r"trained with bias=True; this command asks for bias=False"):
        runs.refuse_changed_plan(runs.read_run(Path(tiny_config().out_dir)), str(config), [*overrides, "--bias=False"])
    with pytest.raises(ConfigError, match=r"bias=False asked, but the model of init_from=inherit has bias=True"):
        train.train(tiny_config(**command | {"out_dir": str(tmp_path / "other"), "bias": False}))
    assert not (tmp_path / "other").exists()


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(Path(out_dir) / "ckpt.pt").model


LATE_LR = 2e-5  # a learning rate late in a schedule: its steps are below half a bfloat16 step of most weights


@pytest.mark.slow
def test_bf16_true_loses_weight_decay_and_stochastic_rounding_keeps_it(tiny_config, tmp_path):
    """lr x wd is far below bfloat16's 1/256, and so are the steps: rounded to nearest, AdamW's decay is lost;
    rounded stochastically, the weights shrink by it (compared by the norm of wte against a run without decay)."""
    pytest.importorskip("torchao")

    def run(name: str, weight_decay: float, rounding: str) -> dict[str, torch.Tensor]:
        out_dir = str(tmp_path / name)
        train.train(
            tiny_config(
                out_dir=out_dir,
                dtype="bf16-true",
                weight_decay=weight_decay,
                max_iters=10,
                learning_rate=LATE_LR,
                decay_lr=False,
                bf16_weight_update=rounding,
            )
        )
        return final_weights(out_dir)

    wte = "transformer.wte.weight"
    expected = 1 - (1 - LATE_LR * 1.0) ** 10  # decoupled decay: each step scales the weights by 1 - lr x wd

    def shrink(rounding: str) -> float:
        plain, decayed = run(f"{rounding}-0", 0.0, rounding), run(f"{rounding}-1", 1.0, rounding)
        return (1 - decayed[wte].float().norm() / plain[wte].float().norm()).item()

    nearest, stochastic = shrink("nearest"), shrink("stochastic")
    assert nearest < 0.1 * expected  # measured: 0.00000 of 0.00020
    assert stochastic == pytest.approx(expected, rel=0.1)


@pytest.mark.slow
def test_a_run_with_stochastic_rounding_resumes_exactly(tiny_config, tmp_path):
    pytest.importorskip("torchao")
    values = dict(dtype="bf16-true", bf16_weight_update="stochastic", max_iters=6, eval_interval=3)
    train.train(tiny_config(out_dir=str(tmp_path / "straight"), **values))
    train.train(tiny_config(out_dir=str(tmp_path / "split"), **values | {"max_iters": 3}))
    train.train(tiny_config(out_dir=str(tmp_path / "split"), init_from="resume", **values))
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stochastic_rounding_is_refused_where_the_weights_are_float32(tiny_config):
    with pytest.raises(ConfigError, match="bf16_weight_update='stochastic' rounds bfloat16 weights: it needs dtype"):
        tiny_config(dtype="bfloat16", bf16_weight_update="stochastic")
