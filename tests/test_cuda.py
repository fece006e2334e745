"""The GPU path: what runs only where CUDA is present (skipped elsewhere, so CPU-only CI passes them over)."""

import json
import math
from pathlib import Path

import pytest
import torch

import analyze
import evaluation
import sample
import train
from checkpoint import Checkpoint, load_model
from model import KVCache

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("compile_model", [False, True])
def test_bf16_training_on_the_gpu_lowers_the_loss_and_reports_mfu(tiny_config, compile_model):
    cfg = tiny_config(
        device="cuda",
        dtype="bfloat16",
        compile=compile_model,
        max_iters=30,
        lr_decay_iters=30,
        eval_interval=30,
        peak_flops=1e12,
    )
    last = train.train(cfg)
    records = metrics(cfg.out_dir)
    evals = [r for r in records if r["kind"] == "eval"]
    assert last["val_loss"] < evals[0]["val_loss"] - 1.0
    model, _ = load_model(Path(cfg.out_dir) / "ckpt.pt")
    for r in [r for r in records if r["kind"] == "train"]:
        assert r["mfu"] == pytest.approx(model.flops_per_token() * r["tokens_per_s"] / 1e12, rel=1e-6)


def test_a_gpu_checkpoint_resumes_exactly_and_loads_on_the_cpu(tiny_config, tmp_path):
    straight = tiny_config(device="cuda", dtype="float32", out_dir=str(tmp_path / "a"))
    train.train(straight)
    train.train(tiny_config(device="cuda", dtype="float32", out_dir=str(tmp_path / "b"), max_iters=10))
    train.train(tiny_config(device="cuda", dtype="float32", out_dir=str(tmp_path / "b"), init_from="resume"))
    a = Checkpoint.load(tmp_path / "a" / "ckpt.pt").model
    b = Checkpoint.load(tmp_path / "b" / "ckpt.pt").model
    for key in a:  # CUDA's embedding backward adds in no fixed order: equal up to rounding, not bit for bit
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3)
    gpu, _ = load_model(tmp_path / "a" / "ckpt.pt", "cuda")
    cpu, _ = load_model(tmp_path / "a" / "ckpt.pt", "cpu")
    idx = torch.randint(0, 50257, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(gpu(idx.cuda(), idx.cuda())[0].cpu(), cpu(idx, idx)[0], atol=1e-4, rtol=1e-4)


def test_analysis_runs_on_the_gpu_and_agrees_with_the_cpu(trained_reference, shakespeare_dir):
    settings = analyze.AnalysisSettings(
        str(shakespeare_dir), num_seqs=8, seq_len=32, tau=0.9, eta=0.9, seed=0, batch_size=4
    )
    source = str(Path(trained_reference.out_dir) / "ckpt.pt")
    gpu = analyze.analyze_model(source, settings, "cuda")
    cpu = analyze.analyze_model(source, settings, "cpu")
    # Counts at a threshold: a share within rounding of tau may land on either side on another device.
    assert gpu["max_rank"] == pytest.approx(cpu["max_rank"], abs=0.5)
    assert gpu["avg_mass"] == pytest.approx(cpu["avg_mass"], abs=0.5)


def test_loss_and_sampling_on_the_gpu(trained_reference, shakespeare_dir, tmp_path, capsys):
    source = str(Path(trained_reference.out_dir) / "ckpt.pt")
    results = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / f"{device}.json"
        argv = ["loss", "--model", source, "--data", str(shakespeare_dir), "--max_tokens", "4096", "--device", device]
        assert evaluation.main([*argv, "--out", str(out)]) == 0
        results[device] = json.loads(out.read_text())["loss"]
    assert results["cuda"] == pytest.approx(results["cpu"], abs=1e-4) and math.isfinite(results["cuda"])
    capsys.readouterr()
    args = [f"--init_from={source}", "--device=cuda", "--dtype=bfloat16", "--max_new_tokens=20", "--compile=True"]
    assert sample.main(args) == 0
    assert capsys.readouterr().out.count("---------------") == 2


def test_kv_cache_logits_on_the_gpu_equal_the_full_forward_pass(trained_reference):
    model, _ = load_model(Path(trained_reference.out_dir) / "ckpt.pt", "cuda")
    model.eval()
    idx = torch.randint(0, 50257, (1, 24), device="cuda")
    cache = KVCache(model.config, 1, 24, idx.device, torch.float32)
    with torch.no_grad():
        x, rope = model._embed(idx[:, :16])
        for block in model.transformer.h:
            x, _ = block(x, rope, cache)
        cache.length = 16
        x, rope = model._embed(idx[:, 16:], start=16)  # the explicit-mask kernel path
        for block in model.transformer.h:
            x, _ = block(x, rope, cache)
        full, _ = model(idx, idx)
    torch.testing.assert_close(model._logits(x)[..., : model.config.vocab_size], full[:, 16:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", ["bfloat16", "bf16-true"])
def test_fsdp_with_bf16_and_compile_on_the_gpu_learns_and_resumes(tiny_config, tmp_path, dtype):
    """FSDP2 over NCCL (a group of one process) with mixed or pure bf16 and torch.compile; its sharded
    checkpoint resumes under DDP on the GPU."""
    cfg = tiny_config(
        device="cuda",
        dtype=dtype,
        compile=True,
        parallel="fsdp",
        max_iters=30,
        lr_decay_iters=30,
        eval_interval=15,
        out_dir=str(tmp_path / "fsdp"),
    )
    last = train.train(cfg)
    evals = [r for r in metrics(cfg.out_dir) if r["kind"] == "eval"]
    assert last["val_loss"] < evals[0]["val_loss"] - 1.0
    assert Checkpoint.load(tmp_path / "fsdp" / "sharded", weights=False).iter_num == 30
    train.train(tiny_config(**{**cfg.__dict__, "parallel": "ddp", "init_from": "resume", "max_iters": 35}))
    assert Checkpoint.load(tmp_path / "fsdp" / "ckpt.pt", weights=False).iter_num == 35


def test_fsdp_with_cpu_offload_and_clipping_takes_the_steps_of_fsdp_on_the_gpu(tiny_config, tmp_path):
    """CPU offload keeps the shards and AdamW state in host memory: clipping all-reduces their norm there
    (gloo beside NCCL), and the run takes the steps of the run without offload."""
    common = dict(device="cuda", dtype="float32", parallel="fsdp", grad_clip=0.05, max_iters=10, lr_decay_iters=10)
    plain = tiny_config(**common, out_dir=str(tmp_path / "plain"))
    offload = tiny_config(**common, cpu_offload=True, out_dir=str(tmp_path / "offload"))
    train.train(plain)
    train.train(offload)
    a, b = ({r["iter"]: r["train_loss"] for r in metrics(c.out_dir) if r["kind"] == "train"} for c in (plain, offload))
    assert a.keys() == b.keys() and all(b[i] == pytest.approx(a[i], abs=1e-3) for i in a)
