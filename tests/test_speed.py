"""What makes the first GPU run fast, checked on CPU through the counts of tests/train_probe.py: torch.compile
compiles each block's forward as one graph that serves every layer, whatever its inverse-layer attention scale,
before FSDP wraps the blocks, with its backward, and recompiles nothing after the first training step; the
steps between log steps make no host sync."""

import json
import subprocess

import pytest
import torch
import torch.distributed as dist
from torch._dynamo.testing import CompileCounterWithBackend

import model as model_module
import train
from configurator import TrainConfig
from inheritune import training
from model import GPT, GPTConfig, KVCache
from runtime import Runtime
from tests.conftest import ROOT, tiny_values
from tests.test_fsdp import ENV, TORCHRUN
from tests.test_train import as_args


def probe(cfg: TrainConfig) -> dict:
    """The counts of tests/train_probe.py for a run of cfg on two processes."""
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node=2", "tests/train_probe.py", *as_args(cfg)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_one_compiled_block_graph_serves_every_layer_and_only_log_steps_sync(shakespeare_dir, tmp_path, parallel):
    # 3 layers scaled by 1, 1/2, 1/3; evals (no_grad: graphs of their own) at steps 0, 4 and 8, logs at 4 and 8.
    values = dict(compile=True, n_layer=3, scale_attn_by_inverse_layer_idx=True, parallel=parallel, backend="gloo")
    values |= dict(max_iters=8, lr_decay_iters=8, eval_interval=4, eval_iters=1, log_interval=4)
    counts = probe(TrainConfig(**tiny_values(shakespeare_dir) | values | dict(out_dir=str(tmp_path / "out"))))
    # The block and the head with its loss: a training graph each, with its backward, and an eval graph each.
    assert counts["graphs"] == 4 and counts["graph_breaks"] == 0
    assert counts["inference"] == 2 and counts["backward"] == counts["forward"] >= 2
    # The stop-signal check agrees over the processes at the log steps only, where the loss is read anyway.
    assert len(counts["syncs"]) == 8
    assert [step for step, n in enumerate(counts["syncs"], start=1) if n] == [4, 8]


def test_the_next_steps_batches_are_built_before_the_log_step_waits_for_the_device(tiny_config, monkeypatch):
    events = []

    def recording(name, function):
        def recorded(*args, **kwargs):
            events.append(name)
            return function(*args, **kwargs)

        return recorded

    monkeypatch.setattr(train, "step_batches", recording("batches", train.step_batches))
    monkeypatch.setattr(train, "train_step", recording("step", training.train_step))
    monkeypatch.setattr(train.Progress, "step", recording("log", train.Progress.step))
    train.train(tiny_config(max_iters=3, eval_interval=100))
    assert events == ["batches", *["step", "batches", "log"] * 3]  # the first step's, then each next one ahead


def test_training_computes_cuda_float32_matmuls_in_tf32_and_restores_the_setting(tiny_config, monkeypatch):
    """nanoGPT's TF32: float32 runs, and what runs outside autocast, on the tensor cores; CPU products unchanged
    (the CPU runs' exact equalities hold), and the caller's setting back after the run."""
    seen = set()

    def step(*args, **kwargs):
        seen.add((torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision))
        return train_step(*args, **kwargs)

    train_step = training.train_step
    monkeypatch.setattr(train, "train_step", step)
    before = torch.backends.cuda.matmul.fp32_precision
    train.train(tiny_config(max_iters=2, eval_interval=100))
    assert seen == {("tf32", "none")}
    assert torch.backends.cuda.matmul.fp32_precision == before != "tf32"


def test_the_compiled_decoding_step_compiles_once_for_every_position_and_layer_and_samples_as_eager(monkeypatch):
    counter = CompileCounterWithBackend("eager")
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda function, **options: compile(function, backend=counter, **options))
    caches = []
    monkeypatch.setattr(model_module, "KVCache", lambda *args: caches.append(KVCache(*args)) or caches[-1])
    torch.manual_seed(0)
    config = GPTConfig(
        n_layer=3, n_head=2, n_embd=32, block_size=64, vocab_size=100, scale_attn_by_inverse_layer_idx=True
    )
    model = GPT(config).eval()
    idx = torch.randint(0, 100, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model.generate(idx, 20, temperature=0.0)
        model.compile_decode_step()
        compiled = model.generate(idx, 20, temperature=0.0)
    assert torch.equal(compiled, eager)
    assert counter.frame_count == 1  # 19 one-token steps at positions 5..23, through 3 layers of 3 scales
    assert {c.k[0].dtype for c in caches} == {torch.bfloat16}  # autocast's, not the float32 weights'


def test_ddp_keeps_the_gradients_in_its_buckets():
    """Not a bucket copy beside each gradient: 16 bytes per float32 parameter with AdamW, not 20."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100))
        ddp = training.data_parallel(model, Runtime(0, 1, torch.device("cpu"), torch.float32, torch.float32))
        x = torch.randint(0, 100, (2, 16))
        ddp(x, x)[1].backward()
        assert ddp.gradient_as_bucket_view and all(p.grad is not None for p in model.parameters())
    finally:
        dist.destroy_process_group()
