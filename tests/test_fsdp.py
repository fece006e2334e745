"""FSDP2 (parallel='fsdp') on CPU with gloo, through torchrun: the same losses and weights as one process,
sharded checkpoints that resume on other process counts and between DDP and FSDP, survive a kill during a
save, and consolidate into a ckpt.pt that nanoGPT's loading idiom reads."""

import io
import os
import signal
import socket
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import train
from checkpoint import Checkpoint, CheckpointError, latest_checkpoint, read_sharded, sharded_step
from configurator import ConfigError, TrainConfig
from data.format import corpus_vocabulary
from model import GPT, NANOGPT_FIELDS, Block, GPTConfig
from tests.conftest import ROOT, tiny_values
from tests.test_train import as_args, assert_adamw_state_fits_the_weights, metrics, train_losses

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def torchrun(cfg: TrainConfig, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "train.py", *as_args(cfg)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def two_nodes(cfg: TrainConfig) -> None:
    """Two torchrun launches of one process each, as on two machines, by docs/scale.md's command: --nnodes, a
    c10d rendezvous at one node's address, each node's own --local_addr, no --node_rank (which c10d ignores)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rdzv = ["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}"]
    rdzv += ["--rdzv_id=two-nodes", "--local_addr=127.0.0.1"]
    nodes = [
        subprocess.Popen(
            [*TORCHRUN, *rdzv, "train.py", *as_args(cfg)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
        assert "will be ignored" not in err and "is only used" not in err
    assert sum("processes: 2 (fsdp)" in out for out, _ in outputs) == 1  # process 0 is on either node


def evals(out_dir) -> list[dict]:
    return [r for r in metrics(out_dir) if r["kind"] == "eval"]


def assert_same_run(a: Path, b: Path, iters=None) -> None:
    """Two runs took the same steps: the losses of every logged step, and their last evals."""
    la, lb = train_losses(a), train_losses(b)
    for it in iters or la:
        assert lb[it] == pytest.approx(la[it], abs=1e-4), it
    assert evals(b)[-1]["val_losses"] == pytest.approx(evals(a)[-1]["val_losses"], abs=1e-4)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=1e-4, rtol=1e-3)


@pytest.fixture(scope="module")
def config(shakespeare_dir, tmp_path_factory):
    """A 2-layer config whose runs clip their gradients (grad_clip far below the norm), accumulate four
    micro-batches (two per process of two: FSDP holds back the first's reduction), and estimate losses from
    3 batches (uneven over 2 processes)."""
    root = tmp_path_factory.mktemp("fsdp")

    def make(name: str, **overrides) -> TrainConfig:
        values = dict(
            out_dir=str(root / name),
            gradient_accumulation_steps=4,
            max_iters=8,
            lr_decay_iters=8,
            eval_interval=4,
            eval_iters=3,
            grad_clip=0.05,
            backend="gloo",
        )
        return TrainConfig(**tiny_values(shakespeare_dir) | values | overrides)

    return make


@pytest.fixture(scope="module")
def llama_source(config, shakespeare_dir) -> str:
    """A tiny Llama (RMSNorm, SwiGLU, RoPE, grouped KV heads, an untied head) to start runs from."""
    torch.manual_seed(0)
    args = dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=32, vocab_size=50257, bias=False)
    llama = dict(norm="rmsnorm", mlp="swiglu", intermediate_size=48, rope=True, tie_embeddings=False)
    path = Path(config("llama").out_dir + ".pt")
    Checkpoint.of(GPT(GPTConfig(**args, **llama)), tokenizer=corpus_vocabulary(shakespeare_dir)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def baseline(config) -> TrainConfig:
    """The uninterrupted one-process run that every FSDP run must reproduce."""
    cfg = config("one")
    train.train(cfg)
    return cfg


@pytest.fixture(scope="module")
def fsdp_gpt2(config, baseline) -> TrainConfig:
    cfg = replace(baseline, out_dir=config("fsdp").out_dir, parallel="fsdp")
    result = torchrun(cfg)
    assert "processes: 2 (fsdp)" in result.stdout
    return cfg


@pytest.mark.slow
def test_fsdp_takes_the_steps_of_one_process_tied_gpt2(baseline, fsdp_gpt2):
    assert_same_run(Path(baseline.out_dir), Path(fsdp_gpt2.out_dir))
    assert not (Path(fsdp_gpt2.out_dir) / "ckpt.pt").exists()  # sharded checkpoints only
    sharded = Checkpoint.load(Path(fsdp_gpt2.out_dir) / "sharded")
    assert sharded.iter_num == 8 and sharded.tokens == 8 * 4 * 4 * 32
    assert_same_weights(Checkpoint.load(Path(baseline.out_dir) / "ckpt.pt").model, sharded.model)


@pytest.mark.slow
def test_fsdp_takes_the_steps_of_one_process_untied_llama(config, llama_source):
    one = config("llama-one", init_from=llama_source)
    train.train(one)
    two = replace(one, out_dir=config("llama-fsdp").out_dir, parallel="fsdp")
    torchrun(two)
    assert_same_run(Path(one.out_dir), Path(two.out_dir))
    sharded = Checkpoint.load(Path(two.out_dir) / "sharded").model
    assert not torch.equal(sharded["lm_head.weight"], sharded["transformer.wte.weight"])
    assert_same_weights(Checkpoint.load(Path(one.out_dir) / "ckpt.pt").model, sharded)


@pytest.mark.slow
def test_consolidated_checkpoint_loads_as_nanogpt_loads_it_and_equals_the_shards(fsdp_gpt2, tmp_path):
    out = tmp_path / "ckpt.pt"
    cmd = [sys.executable, "checkpoint.py", "consolidate", str(Path(fsdp_gpt2.out_dir) / "sharded"), str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "step 8" in result.stdout
    raw = torch.load(out, weights_only=True)
    assert set(raw["model_args"]) <= set(NANOGPT_FIELDS)
    nanogpt = GPT(GPTConfig(**raw["model_args"])).eval()
    nanogpt.load_state_dict(raw["model"])
    assert nanogpt.lm_head.weight is nanogpt.transformer.wte.weight
    step = sharded_step(Path(fsdp_gpt2.out_dir) / "sharded")
    shards = GPT(GPTConfig(**raw["model_args"])).eval()
    shards.load_state_dict(read_sharded(step).model)
    idx = torch.randint(0, 50257, (3, 32))
    assert torch.equal(nanogpt(idx, idx)[0], shards(idx, idx)[0])
    # what a DDP run resumes: AdamW's state in torch's own format, one entry per parameter
    assert len(raw["optimizer"]["state"]) == len(list(nanogpt.parameters()))
    assert_adamw_state_fits_the_weights(raw)
    assert raw["iter_num"] == 8 and raw["config"]["parallel"] == "fsdp"


@pytest.mark.slow
def test_consolidate_refuses_what_is_not_a_sharded_checkpoint(fsdp_gpt2, tmp_path):
    cmd = [sys.executable, "checkpoint.py", "consolidate", str(tmp_path), str(tmp_path / "ckpt.pt")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 1 and "is no sharded checkpoint" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "ckpt.pt").exists()


def resumed(cfg: TrainConfig, name: str, source: TrainConfig, **overrides) -> TrainConfig:
    """cfg continued to 8 steps in a copy of `source`'s run folder."""
    import shutil

    out_dir = Path(cfg.out_dir).parent / name
    shutil.copytree(source.out_dir, out_dir)
    return replace(cfg, out_dir=str(out_dir), init_from="resume", max_iters=8, **overrides)


@pytest.mark.slow
def test_a_sharded_checkpoint_of_two_processes_resumes_on_one_and_on_two_exactly(config, baseline):
    half = replace(baseline, out_dir=config("half-fsdp").out_dir, parallel="fsdp", max_iters=4)
    torchrun(half)
    assert Checkpoint.load(Path(half.out_dir) / "sharded").iter_num == 4
    on_one_fsdp = resumed(half, "on-one-fsdp", half)
    on_one_ddp = resumed(half, "on-one-ddp", half, parallel="ddp")  # FSDP -> DDP
    for cfg in (on_one_fsdp, on_one_ddp):
        train.train(cfg)
        assert_same_run(Path(baseline.out_dir), Path(cfg.out_dir), iters=range(5, 9))
    assert (Path(on_one_ddp.out_dir) / "ckpt.pt").exists()
    on_two_nodes = resumed(half, "on-two-nodes", half)
    two_nodes(on_two_nodes)
    assert_same_run(Path(baseline.out_dir), Path(on_two_nodes.out_dir), iters=range(5, 9))


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_under_fsdp_on_two_processes_exactly(config, baseline):
    half = replace(baseline, out_dir=config("half-ddp").out_dir, max_iters=4)
    train.train(half)
    on_two = resumed(half, "ddp-to-fsdp", half, parallel="fsdp")
    torchrun(on_two)
    assert_same_run(Path(baseline.out_dir), Path(on_two.out_dir), iters=range(5, 9))


@pytest.mark.slow
def test_a_kill_during_a_sharded_save_leaves_the_previous_checkpoint(config, baseline, tmp_path):
    """SIGKILL once the second save's shards are all written, before `latest` names them: the folder looks
    complete, and must not be taken for the checkpoint."""
    cfg = replace(baseline, out_dir=config("killed").out_dir, parallel="fsdp", eval_interval=2)
    script = tmp_path / "die_in_second_save.py"
    script.write_text(f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import torch.distributed.checkpoint as dcp
import train
from inheritune import training
real, saves = dcp.save, []
def save_then_die(state, checkpoint_id):
    real(state, checkpoint_id=checkpoint_id)
    saves.append(checkpoint_id)
    if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
dcp.save = save_then_die
train.main(sys.argv[1:])
""")
    result = subprocess.run([sys.executable, str(script), *as_args(cfg)], cwd=ROOT, capture_output=True, env=ENV)
    assert result.returncode == -signal.SIGKILL
    sharded = Path(cfg.out_dir) / "sharded"
    assert len(list(sharded.glob("step-00000004-*"))) == 1  # the killed save's folder, complete but not named
    assert Checkpoint.load(sharded, weights=False).iter_num == 2
    train.train(replace(cfg, init_from="resume"))
    assert_same_run(Path(baseline.out_dir), Path(cfg.out_dir), iters=range(3, 9))
    kept = {(sharded / p).read_text() for p in ("latest", "best")}
    assert {p.name for p in sharded.glob("step-*")} == kept  # the orphan is gone with the next save
    assert Checkpoint.load(sharded, weights=False).iter_num == 8


@pytest.mark.slow
def test_a_failed_sharded_save_is_one_line_and_the_previous_checkpoint_stays(config):
    """A full disk (a file size limit) during the step-8 save: one error line, no traceback, and `latest` still
    names step 4, which resumes."""
    import resource

    cfg = config("disk-full", parallel="fsdp", max_iters=4)
    train.train(cfg)
    resume = replace(cfg, init_from="resume", max_iters=8)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB: a shard of wte's moments is more

    cmd = [sys.executable, "train.py", *as_args(resume)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, preexec_fn=small_files)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.startswith("error: cannot write the sharded checkpoint") and result.stderr.count("\n") == 1
    assert Checkpoint.load(Path(cfg.out_dir) / "sharded", weights=False).iter_num == 4
    train.train(resume)
    assert Checkpoint.load(Path(cfg.out_dir) / "sharded", weights=False).iter_num == 8


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_resume_applies_the_configs_adamw_settings_not_the_checkpoints(config, parallel, capsys):
    cfg = config(f"new-adamw-{parallel}", parallel=parallel, max_iters=4, eval_interval=2)
    train.train(cfg)
    changed = dict(weight_decay=0.5, beta2=0.9, decay_1d_params=True)
    train.train(replace(cfg, init_from="resume", max_iters=6, **changed))
    assert "resumed with the config's AdamW settings: weight_decay 0.5 (was 0.1)" in capsys.readouterr().out
    out = Path(cfg.out_dir)
    sharded = sharded_step(out / "sharded")
    saved = Checkpoint.load(out / "ckpt.pt") if parallel == "ddp" else read_sharded(sharded, optimizer=True)
    assert saved.iter_num == 6 and saved.config["weight_decay"] == 0.5
    groups = saved.optimizer["param_groups"]
    assert [(g["weight_decay"], tuple(g["betas"])) for g in groups] == [(0.5, (0.9, 0.9))] * 2


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_model_file_without_optimizer_state_is_no_run_to_resume(config, parallel, capsys):
    """A student written by inherit.py, copied in as out_dir/ckpt.pt: one clear error, not a traceback."""
    cfg = config(f"student-as-ckpt-{parallel}", parallel=parallel, init_from="resume")
    Path(cfg.out_dir).mkdir()
    torch.manual_seed(0)
    student = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50257))
    Checkpoint.of(student, tokenizer=corpus_vocabulary(Path(cfg.data_dir))).save(Path(cfg.out_dir) / "ckpt.pt")
    assert train.main(as_args(cfg)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg.out_dir}/ckpt.pt holds no optimizer state") and "Traceback" not in err
    assert f"--init_from={cfg.out_dir}/ckpt.pt" in err


@pytest.mark.slow
def test_dropout_masks_do_not_depend_on_the_number_of_processes(config):
    """Dropout 0.1 over 4 micro-batches: one process, and two under DDP and under FSDP, take the same steps."""
    one = config("dropout-one", dropout=0.1, max_iters=4, lr_decay_iters=4)
    train.train(one)
    for parallel in ("ddp", "fsdp"):
        two = replace(one, out_dir=config(f"dropout-{parallel}").out_dir, parallel=parallel)
        torchrun(two)
        assert_same_run(Path(one.out_dir), Path(two.out_dir))


def test_cpu_offload_without_a_gpu_is_refused_before_training(config):
    with pytest.raises(ConfigError, match="cpu_offload keeps weights .* it needs CUDA"):
        train.train(config("offload", parallel="fsdp", cpu_offload=True))
    assert not torch.distributed.is_initialized()  # the process group of one is closed again


@pytest.mark.slow
def test_bf16_true_keeps_weights_and_adamw_state_in_bfloat16_and_learns(config):
    cfg = config("bf16-true", dtype="bf16-true", max_iters=12, lr_decay_iters=12)
    train.train(cfg)
    ckpt = Checkpoint.load(Path(cfg.out_dir) / "ckpt.pt")
    assert {t.dtype for t in ckpt.model.values()} == {torch.bfloat16}
    moments = [s[k] for s in ckpt.optimizer["state"].values() for k in ("exp_avg", "exp_avg_sq")]
    assert {t.dtype for t in moments} == {torch.bfloat16}
    first, last = evals(cfg.out_dir)[0]["val_loss"], evals(cfg.out_dir)[-1]["val_loss"]
    assert last < first - 0.3


@pytest.mark.slow
def test_memory_estimate_matches_the_tensors_each_process_holds(config, tmp_path):
    """bench.py --memory's weights, gradients and AdamW state, against the tensors of a real step on two
    processes: whole under DDP, shards under FSDP (the first process's the largest), float32 or bf16-true;
    and the unsharded gradients FSDP holds between micro-batches."""
    cfg = config("memory", n_layer=3, n_embd=45, n_head=3)  # odd rows: shards of unequal size
    script = tmp_path / "memory_probe.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from dataclasses import asdict, replace
from pathlib import Path
import torch
import train
from inheritune import training
from bench import estimate_memory
from inheritune.training import planned_model
from configurator import TrainConfig
from runtime import autocast_context, setup_runtime
from torch.distributed.tensor import DTensor

def nbytes(tensors):
    tensors = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in tensors)

base = TrainConfig(**{asdict(cfg)!r})
rt = setup_runtime("cpu", "float32", "gloo", group=True)
report = []
run_weights = lambda true_bf16: torch.bfloat16 if true_bf16 else torch.float32
for parallel in ("ddp", "fsdp"):
    for dtype in ("float32", "bf16-true"):
        cfg = replace(base, parallel=parallel, dtype=dtype, fsdp_reduce_every_micro_batch=parallel == "fsdp")
        true_bf16 = dtype == "bf16-true"
        run = replace(rt, dtype=torch.bfloat16 if true_bf16 else rt.dtype, param_dtype=run_weights(true_bf16))
        state = train.initial_state(cfg, run, training.build_model(cfg, 50257))
        x = torch.randint(0, 50257, (cfg.batch_size, cfg.block_size))
        with autocast_context(run.device, run.dtype):
            loss = state.model(x, x)[1]
        loss.backward()
        params = list(state.model.parameters())
        state.optimizer.step()
        moments = [v for s in state.optimizer.state.values() for k, v in s.items() if k != "step"]
        held = dict(weights=nbytes(params), grads=nbytes(p.grad for p in params), adamw=nbytes(moments))
        estimate = estimate_memory(planned_model(cfg), cfg, 2, parallel, true_bf16)
        for part, value in held.items():
            expected = getattr(estimate, part)
            ok = value == expected if rt.rank == 0 else value <= expected
            verdict = "ok" if ok else "WRONG"
            report.append(f"rank {{rt.rank}} {{parallel}} {{dtype}} {{part}} {{value}} {{expected}} {{verdict}}")

# Computing in bfloat16 over float32 weights, a micro-batch whose reduction is held back leaves every unit's
# unsharded gradients, accumulated in the float32 of the reduction (FSDP2's own record of them).
cfg = replace(base, parallel="fsdp", dtype="bfloat16", gradient_accumulation_steps=4)
run = replace(rt, dtype=torch.bfloat16)
state = train.initial_state(cfg, run, training.build_model(cfg, 50257))
x = torch.randint(0, 50257, (cfg.batch_size, cfg.block_size))
with training.fsdp_no_sync(state.model):
    with autocast_context(run.device, run.dtype):
        loss = state.model(x, x)[1]
    loss.backward()
units = [m._get_fsdp_state()._fsdp_param_group for m in state.model.modules() if hasattr(m, "_get_fsdp_state")]
grads = [fp.unsharded_accumulated_grad if fp.unsharded_accumulated_grad is not None else fp._unsharded_param.grad
         for unit in units if unit is not None for fp in unit.fsdp_params]
every = replace(cfg, fsdp_reduce_every_micro_batch=True)
expected = estimate_memory(planned_model(cfg), cfg, 2, "fsdp", False).grads
expected -= estimate_memory(planned_model(every), every, 2, "fsdp", False).grads
held = nbytes(g for g in grads if g is not None)
report.append(f"rank {{rt.rank}} fsdp bfloat16 held {{held}} {{expected}} {{'ok' if held == expected else 'WRONG'}}")
# a file per process: their lines on one stdout can interleave
Path({str(tmp_path)!r}, f"rank{{rt.rank}}.txt").write_text("\\n".join(report))
""")
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node=2", str(script)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for rank in (0, 1) for line in (tmp_path / f"rank{rank}.txt").read_text().splitlines()]
    assert len(lines) == 2 * 2 * 2 * 3 + 2 and all(line.endswith(" ok") for line in lines), "\n".join(lines)
    fsdp_weights = [line.split() for line in lines if "fsdp float32 weights" in line]
    ddp_weights = [line.split() for line in lines if "ddp float32 weights" in line and "fsdp" not in line]
    assert int(fsdp_weights[0][-3]) < int(ddp_weights[0][-3]) / 1.9  # sharded: about half each


@pytest.mark.slow
def test_a_checkpoint_written_before_the_first_step_resumes_exactly(config, baseline, monkeypatch):
    """A stop before the first step checkpoints AdamW's fresh state (step 0): the resumed run takes the
    uninterrupted run's steps, its bias corrections not one step ahead."""
    cfg = replace(baseline, out_dir=config("stopped-at-0").out_dir, parallel="fsdp")
    with monkeypatch.context() as m:
        m.setattr(train.StopSignal, "requested", lambda self, *args: True)
        train.train(cfg)
    saved = read_sharded(sharded_step(Path(cfg.out_dir) / "sharded"), optimizer=True)
    assert saved.iter_num == 0 and {s["step"].item() for s in saved.optimizer["state"].values()} == {0.0}
    train.train(replace(cfg, init_from="resume"))
    assert_same_run(Path(baseline.out_dir), Path(cfg.out_dir), iters=range(1, 9))


@pytest.mark.slow
def test_resume_continues_the_checkpoint_written_last_in_a_reused_folder(config, baseline):
    """An old DDP run's ckpt.pt of 8 steps, then a new FSDP run of 4 in the same folder: resume continues the
    new one."""
    import shutil

    out_dir = config("reused").out_dir
    shutil.copytree(baseline.out_dir, out_dir)
    new = replace(baseline, out_dir=out_dir, parallel="fsdp", n_layer=1, max_iters=4)
    train.train(new)
    train.train(replace(new, init_from="resume", max_iters=6))
    resumed = Checkpoint.load(Path(out_dir) / "sharded", weights=False)
    assert resumed.iter_num == 6 and resumed.model_args["n_layer"] == 1


@pytest.mark.slow
def test_resume_continues_the_checkpoint_saved_last_whatever_the_file_times(config):
    """DDP to step 4 (ckpt.pt), FSDP on to 8 (sharded/), then ckpt.pt touched, as any copy or restore that does
    not keep times: the resume continues step 8. A new run in that folder continues nothing and removes no
    later step than its own."""
    cfg = config("touched", max_iters=4)
    out = Path(cfg.out_dir)
    train.train(cfg)
    train.train(replace(cfg, init_from="resume", parallel="fsdp", max_iters=8))
    os.utime(out / "ckpt.pt")
    assert latest_checkpoint(out) == out / "sharded"
    train.train(replace(cfg, init_from="resume", parallel="fsdp", max_iters=10))
    assert Checkpoint.load(out / "sharded", weights=False).iter_num == 10
    assert [r["iter"] for r in evals(out)] == [0, 4, 8, 10]  # continued from 8, not from 4
    step_10 = sharded_step(out / "sharded").name
    train.train(replace(cfg, parallel="fsdp", max_iters=4))  # a new run: its step 4 is saved last
    assert latest_checkpoint(out) == out / "sharded" and Checkpoint.load(out / "sharded").iter_num == 4
    assert (out / "sharded" / step_10).is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_kill_between_a_saves_two_names_leaves_best_naming_the_best_step(config, tmp_path, parallel):
    """SIGKILL once the first of `best` and `latest` (best.pt and ckpt.pt) names the step-4 save: after the
    resume, `best` names the step of the lowest val loss, whichever was written first."""
    cfg = config(f"killed-between-{parallel}", parallel=parallel, max_iters=4, lr_decay_iters=4, eval_interval=2)
    script = tmp_path / "die_between_names.py"
    script.write_text(f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import train
from inheritune import training
real, named = os.replace, []
def replace_then_die(src, dst):
    real(src, dst)
    if os.path.basename(dst) in ("ckpt.pt", "best.pt", "latest", "best"):
        named.append(dst)
        if len(named) == 3:  # the step-2 save named two, this is the first of the step-4 save
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
train.main(sys.argv[1:])
""")
    result = subprocess.run([sys.executable, str(script), *as_args(cfg)], cwd=ROOT, capture_output=True, env=ENV)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    train.train(replace(cfg, init_from="resume"))
    losses = {r["iter"]: r["val_loss"] for r in evals(cfg.out_dir)}
    assert losses[4] < losses[2]
    best = Path(cfg.out_dir) / ("sharded/best" if parallel == "fsdp" else "best.pt")
    assert Checkpoint.load(best, weights=False).iter_num == 4


@pytest.mark.slow
def test_consolidate_into_a_folder_is_refused_and_leaves_nothing(fsdp_gpt2, tmp_path):
    cmd = [sys.executable, "checkpoint.py", "consolidate", str(Path(fsdp_gpt2.out_dir) / "sharded"), str(tmp_path)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 1 and "is a folder: name the file to write" in result.stderr
    assert "Traceback" not in result.stderr and not tmp_path.with_name(tmp_path.name + ".tmp").exists()
    missing = tmp_path / "no" / "such" / "ckpt.pt"
    result = subprocess.run(cmd[:-1] + [str(missing)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "No such file" in result.stderr


def test_sample_resumes_a_sharded_run_folder(fsdp_gpt2, capsys):
    import sample

    assert (
        sample.main(["--out_dir", fsdp_gpt2.out_dir, "--max_new_tokens", "5", "--num_samples", "1", "--device", "cpu"])
        == 0
    )
    assert capsys.readouterr().out.strip()


@pytest.mark.slow
def test_an_inherited_student_distilled_on_a_mixture_under_fsdp_takes_one_process_steps(config, fsdp_gpt2, python_dir):
    """What train.py does on one process holds under FSDP: an Inheritune student (1 of the reference's 2
    blocks), distilled from the reference, on a mixture of two corpora with a val loss for each; the
    reference and the teacher read from the FSDP run's sharded checkpoints as they are."""
    sharded = Path(fsdp_gpt2.out_dir) / "sharded"
    mixture = {fsdp_gpt2.data_dir: 0.5, str(python_dir): 0.5}
    student = dict(init_from="inherit", inherit_from=str(sharded), n_layer=1, teacher=str(sharded / "best"))
    student["data_dir"] = mixture
    one = config("student-one", **student)
    train.train(one)
    two = replace(one, out_dir=config("student-fsdp").out_dir, parallel="fsdp")
    torchrun(two)
    assert_same_run(Path(one.out_dir), Path(two.out_dir))
    assert set(evals(two.out_dir)[-1]["val_losses"]) == set(mixture)
    assert all(r["train_kl"] > 0 for r in metrics(two.out_dir) if r["kind"] == "train")  # the teacher took part
    assert_same_weights(
        Checkpoint.load(Path(one.out_dir) / "ckpt.pt").model, Checkpoint.load(Path(two.out_dir) / "sharded").model
    )
    assert Checkpoint.load(Path(two.out_dir) / "sharded", weights=False).inherit["layers"] == [0]


def copy_of_run(run: TrainConfig, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(run.out_dir, tmp_path / "run")
    return tmp_path / "run"


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)


@pytest.mark.slow
def test_a_sharded_checkpoint_whose_metadata_carries_code_is_refused_without_running_it(fsdp_gpt2, tmp_path):
    """DCP pickles .metadata; reading it must run no code, as torch.load(weights_only=True) for a ckpt.pt."""
    import pickle

    from tests.conftest import CodeOnUnpickle

    run = copy_of_run(fsdp_gpt2, tmp_path)
    marker = tmp_path / "ran"
    step = sharded_step(run / "sharded")
    (step / ".metadata").write_bytes(pickle.dumps(CodeOnUnpickle(marker)))
    for args in (
        ["sample.py", f"--model={run / 'sharded'}", "--max_new_tokens=2", "--device=cpu"],
        ["checkpoint.py", "consolidate", str(run / "sharded"), str(tmp_path / "ckpt.pt")],
    ):
        result = command(*args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert f"cannot read the sharded checkpoint {step}" in result.stderr and "refused" in result.stderr
        assert not marker.exists()


@pytest.mark.slow
def test_a_truncated_shard_is_a_clear_error_for_every_reader(fsdp_gpt2, tmp_path):
    run = copy_of_run(fsdp_gpt2, tmp_path)
    step = sharded_step(run / "sharded")
    shard = step / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    for args in (
        ["checkpoint.py", "consolidate", str(run / "sharded"), str(tmp_path / "ckpt.pt")],
        ["sample.py", f"--model={run / 'sharded'}", "--max_new_tokens=2", "--device=cpu"],
    ):
        result = command(*args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert f"cannot read the sharded checkpoint {step}" in result.stderr
    with pytest.raises(CheckpointError, match="cannot read the sharded checkpoint"):
        train.train(replace(fsdp_gpt2, out_dir=str(run), init_from="resume", max_iters=10))


@pytest.mark.slow
def test_a_pointer_naming_no_checkpoint_is_refused_not_passed_over(config, fsdp_gpt2, baseline, tmp_path):
    """`latest` naming a removed step folder must not send a resume back to an older ckpt.pt in the folder,
    and an unreadable pointer is named."""
    import shutil

    run = copy_of_run(fsdp_gpt2, tmp_path)
    shutil.copy(Path(baseline.out_dir) / "ckpt.pt", run / "ckpt.pt")
    os.utime(run / "ckpt.pt", ns=(0, 0))  # written before the sharded checkpoints
    missing = sharded_step(run / "sharded").name
    shutil.rmtree(run / "sharded" / missing)
    with pytest.raises(CheckpointError, match=f"sharded/latest names {missing}, which is missing or incomplete"):
        train.train(replace(fsdp_gpt2, out_dir=str(run), init_from="resume", max_iters=10))
    (run / "sharded" / "latest").write_bytes(b"\x80\x02garbage")
    result = command("sample.py", f"--model={run / 'sharded'}", "--device=cpu")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "sharded/latest is not the name of a step folder" in result.stderr


@pytest.mark.slow
def test_consolidate_refuses_to_write_into_the_sharded_folder(fsdp_gpt2, tmp_path):
    run = copy_of_run(fsdp_gpt2, tmp_path)
    latest = (run / "sharded" / "latest").read_text()
    result = command("checkpoint.py", "consolidate", str(run / "sharded"), str(run / "sharded" / "latest"))
    assert result.returncode == 1 and "inside the sharded checkpoint" in result.stderr
    assert (run / "sharded" / "latest").read_text() == latest


@pytest.mark.slow
def test_no_way_round_the_metadata_check_runs_code(fsdp_gpt2, tmp_path):
    """A .metadata that is no DCP Metadata (DCP then reads a process's own __0.metadata with pickle), and a
    byte item (an optimizer setting, which DCP reads with torch.load(weights_only=False)) pointed at a file
    that carries code: both refused, nothing run."""
    import pickle

    from torch.distributed.checkpoint.filesystem import _StorageInfo

    from tests.conftest import CodeOnUnpickle

    marker = tmp_path / "ran"
    run = copy_of_run(fsdp_gpt2, tmp_path)
    step = sharded_step(run / "sharded")
    metadata = (step / ".metadata").read_bytes()
    consolidate = ["checkpoint.py", "consolidate", str(run / "sharded"), str(tmp_path / "ckpt.pt")]

    (step / ".metadata").write_bytes(pickle.dumps(None))
    (step / "__0.metadata").write_bytes(pickle.dumps(CodeOnUnpickle(marker)))
    result = command(*consolidate)
    assert result.returncode == 1 and "Traceback" not in result.stderr and not marker.exists(), result.stderr[-2000:]
    assert ".metadata: it holds NoneType, not DCP's Metadata" in result.stderr

    (step / "__0.metadata").unlink()
    md = pickle.loads(metadata)  # the run's own, trusted here
    evil = step / "__9_0.distcp"
    buffer = io.BytesIO()
    torch.save(CodeOnUnpickle(marker), buffer)
    evil.write_bytes(buffer.getvalue())
    lr = next(index for index in md.storage_data if index.fqn == "optim.param_groups.0.lr")
    md.storage_data[lr] = _StorageInfo(evil.name, 0, len(buffer.getvalue()))
    (step / ".metadata").write_bytes(pickle.dumps(md))
    result = command(*consolidate)
    assert result.returncode == 1 and "Traceback" not in result.stderr and not marker.exists(), result.stderr[-2000:]
    assert "Weights only load failed" in result.stderr

    md.storage_data[lr] = _StorageInfo("../../ckpt.pt", 0, 10)
    (step / ".metadata").write_bytes(pickle.dumps(md))
    result = command(*consolidate)
    assert result.returncode == 1 and "names a file outside its folder: ../../ckpt.pt" in result.stderr

    # A Metadata whose fields DCP cannot use sent it to the unchecked __0.metadata too; or gave tracebacks.
    (step / "__0.metadata").write_bytes(pickle.dumps(CodeOnUnpickle(marker)))
    for field, value in [("storage_meta", 5), ("storage_data", []), ("storage_data", {lr: _StorageInfo(3, 0, 1)})]:
        broken = pickle.loads(metadata)
        setattr(broken, field, value)
        (step / ".metadata").write_bytes(pickle.dumps(broken))
        result = command(*consolidate)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert not marker.exists() and f"cannot read the sharded checkpoint {step}: .metadata" in result.stderr


@pytest.mark.parametrize("parallel,residual", [("ddp", torch.float32), ("fsdp", torch.bfloat16)])
def test_in_bf16_fsdp_casts_each_blocks_input_and_autocast_keeps_it_float32(
    tiny_config, monkeypatch, parallel, residual
):
    """docs/scale.md's difference between DDP and FSDP in bfloat16: FSDP's MixedPrecisionPolicy casts the residual
    stream entering each block to bfloat16; autocast (DDP, one process) keeps it float32."""
    received = set()
    forward = Block.forward

    def recording(self, x, *args, **kwargs):
        received.add(x.dtype)
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(Block, "forward", recording)
    train.train(tiny_config(parallel=parallel, dtype="bfloat16", max_iters=1, eval_interval=100, eval_iters=1))
    assert received == {residual}


@pytest.mark.slow
def test_a_run_with_a_frozen_embedding_consolidates(config, tmp_path):
    """The frozen token embedding has no AdamW state: consolidate builds the run's optimizer, not one that
    expects it."""
    cfg = config("frozen", parallel="fsdp", freeze_embedding=True, max_iters=4, lr_decay_iters=4)
    torchrun(cfg)
    out = Path(cfg.out_dir) / "ckpt.pt"
    cmd = [sys.executable, "checkpoint.py", "consolidate", str(Path(cfg.out_dir) / "sharded"), str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    raw = torch.load(out, weights_only=True)
    assert len(raw["optimizer"]["state"]) == len(raw["model"]) - 2  # all but wte and lm_head, one tied tensor
