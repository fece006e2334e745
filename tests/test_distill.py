"""Distillation from a teacher while the student trains (train.py's teacher, distill_alpha, distill_temperature)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import train
from checkpoint import Checkpoint
from configurator import ConfigError
from inheritune import training
from inheritune.training import Teacher, distillation_term
from model import GPT, GPTConfig
from tests.conftest import ROOT
from tests.test_train import as_args


def metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


class FixedLogits(torch.nn.Module):
    """A teacher that answers every batch with the same logits."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def all_logits(self, x):
        return self.logits


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_the_distillation_term_is_t_squared_kl_teacher_to_student_by_hand(temperature):
    """Logits far from zero and unlike each other, positions without a target (-1) left out: the term equals
    T^2 sum_v p_t (log p_t - log p_s) of the softened distributions, averaged over the positions with a target."""
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 7, 11
    student = 4.0 * torch.randn(B, T, V, generator=g) + 20.0
    teacher = 6.0 * torch.randn(B, T, V, generator=g) - 5.0
    y = torch.randint(0, V, (B, T), generator=g)
    y[0, :3] = -1
    term = distillation_term(student, Teacher(FixedLogits(teacher), 0.5, temperature), torch.zeros_like(y), y)
    s = log_softmax(student.double().numpy() / temperature)
    t = log_softmax(teacher.double().numpy() / temperature)
    kl = (np.exp(t) * (t - s)).sum(axis=-1)
    expected = temperature**2 * kl[y.numpy() != -1].mean()
    assert term.item() == pytest.approx(expected, rel=1e-5)
    assert term.item() != pytest.approx(temperature**2 * kl.mean(), rel=1e-3)  # the -1 positions matter


def test_a_teacher_equal_to_the_student_with_a_padded_vocabulary_has_no_distillation_term():
    """GPT-2's 50,257 tokens padded to 50,304 rows: the padding's -inf logits never take part (they would
    give NaN)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=50257))
    x = torch.randint(0, 50257, (2, 16))
    logits, _ = model(x, x)
    assert logits.size(-1) == 50257 and model.config.padded_vocab_size == 50304
    assert distillation_term(logits, Teacher(model, 0.5, 2.0), x, x).abs().item() < 1e-6


@pytest.mark.slow
def test_alpha_zero_gives_exactly_the_plain_runs_losses(trained_reference, tiny_config, tmp_path):
    teacher = str(Path(trained_reference.out_dir) / "ckpt.pt")
    plain = tiny_config(out_dir=str(tmp_path / "plain"), max_iters=6, eval_interval=3)
    train.train(plain)
    distilled = tiny_config(
        out_dir=str(tmp_path / "kd"), max_iters=6, eval_interval=3, teacher=teacher, distill_alpha=0.0
    )
    train.train(distilled)
    a, b = metrics(plain.out_dir), metrics(distilled.out_dir)
    assert [r["train_loss"] for r in a if r["kind"] == "train"] == [r["train_loss"] for r in b if r["kind"] == "train"]
    assert [r["val_loss"] for r in a if r["kind"] == "eval"] == [r["val_loss"] for r in b if r["kind"] == "eval"]
    assert all(r["train_kl"] > 0.01 for r in b if r["kind"] == "train")  # the teacher was there, and weighed 0


@pytest.mark.slow
def test_a_distilled_student_comes_closer_to_its_teacher_and_logs_both_parts(trained_reference, tiny_config, tmp_path):
    """The same student trained with and without the distillation term's weight: the distilled one ends
    nearer its teacher (training on the data alone also brings it nearer)."""
    teacher = str(Path(trained_reference.out_dir) / "ckpt.pt")
    final_kl = {}
    for alpha in (0.0, 0.9):
        cfg = tiny_config(
            out_dir=str(tmp_path / str(alpha)), teacher=teacher, distill_alpha=alpha, distill_temperature=2.0
        )
        train.train(cfg)
        steps = [r for r in metrics(cfg.out_dir) if r["kind"] == "train"]
        for r in steps:
            assert r["train_loss"] == pytest.approx((1 - alpha) * r["train_ce"] + alpha * r["train_kl"], rel=1e-5)
        final_kl[alpha] = steps[-1]["train_kl"]
    assert final_kl[0.9] < 0.6 * final_kl[0.0]  # measured: 0.0056 against 0.0134


def test_a_teacher_of_another_tokenizer_is_refused_in_one_line(tiny_config, tmp_path):
    torch.manual_seed(0)
    chars = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=65))
    Checkpoint.of(chars, tokenizer={"tokenizer": "characters-abc", "vocab_size": 65}).save(tmp_path / "t.pt")
    with pytest.raises(ConfigError, match=r"^teacher .* reads the tokenizer characters-abc, the run's corpora gpt2$"):
        train.train(tiny_config(teacher=str(tmp_path / "t.pt")))
    short = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=50257))
    Checkpoint.of(short, tokenizer={"tokenizer": "gpt2", "vocab_size": 50257}).save(tmp_path / "short.pt")
    with pytest.raises(ConfigError, match=r"^teacher .*short.pt reads 16 positions, the run's block_size is 32$"):
        train.train(tiny_config(teacher=str(tmp_path / "short.pt")))
    with pytest.raises(ConfigError, match="distill_alpha must be in"):
        tiny_config(teacher=str(tmp_path / "t.pt"), distill_alpha=1.5)


@pytest.mark.slow
def test_a_distilled_run_on_two_processes_matches_one_and_resumes(trained_reference, tiny_config, tmp_path):
    """DDP: each process holds the teacher and distils its own micro-batches; the losses equal one process's
    with the same global batch. A resumed distilled run continues exactly."""
    teacher = str(Path(trained_reference.out_dir) / "ckpt.pt")
    kd = dict(teacher=teacher, distill_alpha=0.7, distill_temperature=2.0, max_iters=6, eval_interval=3)
    one = tiny_config(out_dir=str(tmp_path / "one"), **kd)
    train.train(one)
    two = tiny_config(out_dir=str(tmp_path / "two"), backend="gloo", **kd)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd + as_args(two), cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = ([r for r in metrics(run.out_dir) if r["kind"] == "train"] for run in (one, two))
    for key in ("train_loss", "train_ce", "train_kl"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], abs=1e-4), key
    half = tiny_config(out_dir=str(tmp_path / "resumed"), **{**kd, "max_iters": 3})
    train.train(half)
    train.train(tiny_config(out_dir=str(tmp_path / "resumed"), init_from="resume", **kd))
    resumed = [r for r in metrics(tmp_path / "resumed") if r["kind"] == "train"]
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in a]


def definition(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
    """The term as autograd computes it from its definition, to check the chunked one and its gradient by."""
    log_s, log_t = (F.log_softmax(z.float() / t, dim=-1) for z in (student, teacher))
    mask = (y != -1).float()
    return t * t * ((log_t.exp() * (log_t - log_s)).sum(dim=-1) * mask).sum() / mask.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_chunked_term_and_its_gradient_equal_autograds_through_the_definition(monkeypatch, dtype):
    monkeypatch.setattr(training, "DISTILL_CHUNK", 5)  # 21 positions: chunks of 5 and a last one of 1
    g = torch.Generator().manual_seed(0)
    student = (4.0 * torch.randn(3, 7, 11, generator=g) + 20.0).to(dtype)
    teacher = (6.0 * torch.randn(3, 7, 11, generator=g) - 5.0).to(dtype)
    y = torch.randint(0, 11, (3, 7), generator=g)
    y[0, :3] = -1
    ours, theirs = student.clone().requires_grad_(), student.clone().requires_grad_()
    term = distillation_term(ours, Teacher(FixedLogits(teacher), 0.5, 2.5), torch.zeros_like(y), y)
    expected = definition(theirs, teacher, y, 2.5)
    (3.0 * term).backward()
    (3.0 * expected).backward()
    torch.testing.assert_close(term, expected)
    assert ours.grad.dtype == dtype and ours.grad[0, :3].abs().max() == 0  # no gradient where there is no target
    torch.testing.assert_close(ours.grad, theirs.grad)


class LargestFloat32(TorchDispatchMode):
    """The most elements of any float32 tensor an operation makes."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


def test_the_term_of_a_gpt2_sized_batch_has_no_data_dependent_shape_and_chunk_sized_float32_temporaries():
    """On fake tensors (no data: a shape that depends on it, as boolean indexing makes, fails there, and needs a
    device sync on a GPU), a micro-batch of 4 x 1024 over GPT-2's vocabulary: no float32 tensor of more than
    DISTILL_CHUNK positions (each 0.2 GB; the whole micro-batch's would be 0.8 GB, and there were 6 to 8)."""
    V = 50257
    with FakeTensorMode():
        student = torch.randn(4, 1024, V, dtype=torch.bfloat16, requires_grad=True)
        teacher = torch.randn(4, 1024, V, dtype=torch.bfloat16)
        y = torch.randint(-1, V, (4, 1024))
        with LargestFloat32() as tracked:
            distillation_term(student, Teacher(FixedLogits(teacher), 0.5, 2.0), y, y).backward()
        assert student.grad.shape == student.shape and student.grad.dtype == torch.bfloat16
    assert tracked.largest == training.DISTILL_CHUNK * V


def test_the_teacher_computes_no_loss_and_holds_its_weights_in_the_runs_dtype(tiny_config, tmp_path, monkeypatch):
    torch.manual_seed(0)
    vocab = {"tokenizer": "gpt2", "vocab_size": 50257}
    student = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=50257))
    Checkpoint.of(GPT(student.config), tokenizer=vocab).save(tmp_path / "t.pt")
    cfg = tiny_config(teacher=str(tmp_path / "t.pt"))
    teacher = training.load_teacher(cfg, torch.device("cpu"), torch.bfloat16, vocab, student)
    assert {p.dtype for p in teacher.model.parameters()} == {torch.bfloat16}
    losses = []
    cross_entropy = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: losses.append(1) or cross_entropy(*a, **k))
    x = torch.randint(0, 50257, (2, 32))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16)
    training.train_step(student, optimizer, scaler, [(x, x), (x, x)], ctx, 1.0, teacher)
    assert len(losses) == 2  # the student's, one per micro-batch
