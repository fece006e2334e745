import re

import pytest

import bench


def test_a_bad_config_is_one_clear_error(capsys):
    assert bench.main(["--variants=eager", "--n_layers=2"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown config key 'n_layers'")


@pytest.mark.slow
def test_the_distill_variant_times_the_step_with_its_teacher(tmp_path, capsys):
    import torch

    from checkpoint import Checkpoint
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    Checkpoint.of(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32))).save(tmp_path / "teacher.pt")
    tiny = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=2"]
    tiny += ["--gradient_accumulation_steps=1", "--device=cpu", "--compile=False"]
    argv = ["--variants=distill", "--steps=2", "--warmup=1", "--bench_peak_flops=1e12", *tiny]
    assert bench.main([*argv, f"--teacher={tmp_path / 'teacher.pt'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[0] == "distill" and float(lines[2].split()[1]) > 0
    assert bench.main(argv) == 2
    assert "the distill variant needs a teacher" in capsys.readouterr().err
    assert bench.main([*argv, f"--teacher={tmp_path / 'nowhere.pt'}"]) == 1
    err = capsys.readouterr().err
    assert "error: variant distill:" in err and "nowhere.pt" in err


@pytest.mark.slow
def test_memory_takes_the_students_shape_from_its_reference_without_weights(tmp_path, capsys):
    """A student of a checkpoint has the reference's width and vocabulary at its own depth; GPT-2 medium's
    hub name needs no download. The parameter counts are those of the real models."""
    import torch

    from checkpoint import Checkpoint
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    reference = GPT(GPTConfig(n_layer=6, n_head=2, n_embd=32, block_size=64, vocab_size=1000, bias=False))
    Checkpoint.of(reference).save(tmp_path / "ref.pt")
    student = ["--init_from=inherit", f"--inherit_from={tmp_path / 'ref.pt'}", "--n_layer=4", "--n_embd=32"]
    assert bench.main(["--memory", "--nproc=2", *student, "--n_head=2", "--block_size=64"]) == 0
    out = capsys.readouterr().out
    params = sum(
        p.numel()
        for p in GPT(GPTConfig(n_layer=4, n_head=2, n_embd=32, vocab_size=1000, bias=False, block_size=64)).parameters()
    )
    assert out.startswith(f"{params / 1e6:,.1f}M parameters (4 layers, width 32), 2 processes")
    medium = ["--init_from=inherit", "--inherit_from=gpt2-medium", "--n_layer=16", "--n_head=16", "--n_embd=1024"]
    medium += ["--block_size=64", "--batch_size=1"]  # a short trace
    assert bench.main(["--memory", "--nproc=8", *medium]) == 0
    with torch.device("meta"):
        gpt2_16 = GPT(GPTConfig(n_layer=16, n_head=16, n_embd=1024, vocab_size=50257, bias=True, block_size=64))
    assert capsys.readouterr().out.startswith(f"{sum(p.numel() for p in gpt2_16.parameters()) / 1e6:,.1f}M parameters")
    assert bench.main(["--memory", "--init_from=inherit", f"--inherit_from={tmp_path / 'none.pt'}"]) == 1
    assert "none.pt not found" in capsys.readouterr().err
    refused = {  # what train.py refuses, refused before estimating
        "--nproc=3": "gradient_accumulation_steps 40 is not divisible by the 3 processes",
        "--init_from=inherit": "init_from='inherit' needs inherit_from",
        "--block_size=128": "block_size 128 exceeds the source model's 64",
        "--n_layer=7 --block_size=64": "the student asks for 7 layers but the reference has only 6",
        "--n_embd=64 --block_size=64": "mismatched width: the student is configured with n_embd 64, n_head 2",
    }
    for arg, message in refused.items():
        inherits = "_size" in arg or "n_layer" in arg
        width = ["--n_head=2"] + ([] if "n_embd" in arg else ["--n_embd=32"])
        extra = ["--init_from=inherit", f"--inherit_from={tmp_path / 'ref.pt'}", *width] if inherits else []
        assert bench.main(["--memory", *extra, *arg.split()]) == 2
        assert message in capsys.readouterr().err


def table(out: str) -> dict[str, list[float]]:
    """bench.py --memory's rows: setting -> GiB of weights, grads, AdamW, step peak."""
    rows = {}
    for line in out.splitlines():
        if line.startswith(("ddp ", "fsdp ")):
            rows[line[:16].strip()] = [float(x) for x in line[16:].split()]
    return rows


@pytest.mark.slow
def test_memory_of_float16_and_cpu_offload_says_what_train_py_would_do(capsys):
    """float16: DDP only (train.py refuses FSDP with it) and labelled float16; cpu_offload: FSDP's weights,
    gradients and AdamW state are counted in host memory, not on the GPU: its step peak is less by them."""
    gpt2 = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=2"]
    assert bench.main(["--memory", "--nproc=8", *gpt2, "--dtype=float16"]) == 0
    out = capsys.readouterr().out
    assert "computing in float16" in out and set(table(out)) == {"ddp", "ddp bf16-true"}
    assert "fsdp: refused with float16" in out
    assert bench.main(["--memory", "--nproc=8", *gpt2, "--dtype=bfloat16"]) == 0
    plain = table(capsys.readouterr().out)
    assert (
        bench.main(["--memory", "--nproc=8", *gpt2, "--dtype=bfloat16", "--parallel=fsdp", "--cpu_offload=True"]) == 0
    )
    out = capsys.readouterr().out
    offload = table(out)
    assert offload["ddp"] == plain["ddp"]
    for setting in ("fsdp", "fsdp bf16-true"):
        assert offload[setting][:3] == [0.0, 0.0, 0.0]
        assert offload[setting][3] == pytest.approx(plain[setting][3] - sum(plain[setting][:3]), abs=0.02)
    host = re.search(r"cpu_offload: FSDP's weights, gradients and AdamW state are in CPU memory, ([\d.]+) GiB", out)
    assert float(host[1]) == pytest.approx(sum(plain["fsdp"][:3]), abs=0.02)


@pytest.mark.slow
def test_memory_of_a_stacked_student_deeper_than_its_reference(tmp_path, capsys):
    """Stacking may build a student deeper than its reference (inherit.py's rule: ceil(n/2) blocks of it)."""
    import torch

    from checkpoint import Checkpoint
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    Checkpoint.of(GPT(GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=64, vocab_size=1000))).save(
        tmp_path / "r.pt"
    )
    stack = ["--init_from=inherit", f"--inherit_from={tmp_path / 'r.pt'}", "--inherit_layers=stack", "--block_size=64"]
    stack += ["--n_embd=32", "--n_head=2"]
    assert bench.main(["--memory", *stack, "--n_layer=6"]) == 0
    assert "(6 layers, width 32)" in capsys.readouterr().out
    assert bench.main(["--memory", *stack, "--n_layer=7"]) == 2
    assert "a stacked student of 7 layers needs 4 layers, the reference has 3" in capsys.readouterr().err
    assert bench.main(["--memory", *stack[:2], *stack[3:], "--inherit_layers=0,2", "--n_layer=2"]) == 0
    assert "(2 layers, width 32)" in capsys.readouterr().out


MEASURED_STEP = """
import sys
import torch
import bench
from configurator import parse_config
from model import GPT, GPT2_VOCAB, GPTConfig
from runtime import Runtime, autocast_context, resolve_dtype
from inheritune.training import load_teacher, make_optimizer, planned_model, train_step

def rss(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))

cfg = parse_config(sys.argv[1:])
cpu = torch.device("cpu")
dtype = resolve_dtype(cfg.dtype, cpu)
predicted = bench.traced_peak(planned_model(cfg), bench.teacher_model(cfg), cfg, 1, "ddp", False)
torch.ones(64, 64) @ torch.ones(64, 64)  # the matmul kernels loaded before the baseline
base = rss("VmRSS")
model = GPT(GPTConfig(**cfg.scratch_model_args(GPT2_VOCAB)))
model.gradient_checkpointing = cfg.gradient_checkpointing
rt = Runtime(0, 1, cpu, dtype, torch.float32)
optimizer = make_optimizer(model, cfg, rt)
teacher = load_teacher(cfg, cpu, dtype, {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB}, model)
tokens = (cfg.batch_size, cfg.block_size)
batch = (torch.randint(0, GPT2_VOCAB, tokens), torch.randint(0, GPT2_VOCAB, tokens))
batches = [batch] * cfg.gradient_accumulation_steps
scaler = torch.amp.GradScaler("cpu", enabled=False)
train_step(model, optimizer, scaler, batches, autocast_context(cpu, dtype), cfg.grad_clip, teacher)
print(predicted, rss("VmHWM") - base)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting",
    ["--dtype=float32", "--dtype=bfloat16 --gradient_checkpointing=True", "--gradient_accumulation_steps=2", "teacher"],
)
def test_the_traced_peak_of_a_step_is_the_measured_one(setting, tmp_path):
    """The peak bench.py --memory traces on fake tensors against the peak RSS that the same step adds to a fresh
    process, where the logits (4 x 256 x 50,304) dominate: within 4%. glibc returns every freed tensor above
    64 KiB at once (MALLOC_MMAP_THRESHOLD_), so the RSS follows the tensors; it also holds code paged in on first
    use and glibc's small-block arenas, which the trace does not see (0.5-1.3% here)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from checkpoint import Checkpoint
    from model import GPT, GPTConfig

    argv = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=256", "--batch_size=4", "--device=cpu"]
    argv += ["--gradient_accumulation_steps=1", "--dtype=float32", *setting.split()]
    if setting == "teacher":
        teacher = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=96, block_size=256))
        Checkpoint.of(teacher).save(tmp_path / "teacher.pt")
        argv[-1] = f"--teacher={tmp_path / 'teacher.pt'}"
    root = Path(bench.__file__).parent
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-c", MEASURED_STEP, *argv]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    predicted, measured = map(int, result.stdout.split())
    assert measured > 600 * 2**20  # the step, not torch's own memory, is measured
    assert predicted == pytest.approx(measured, rel=0.04)


MEASURED_PROCESS_STEPS = """
import gc
import sys
from dataclasses import replace
import torch
import torch.distributed as dist
from configurator import parse_config
from model import GPT, GPT2_VOCAB, GPTConfig
from runtime import autocast_context, resolve_dtype, setup_runtime
from inheritune.training import data_parallel, deferred_reduction, make_optimizer, planned_model, shard, train_step

def rss(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))

def measured_step(cfg, rt):
    base = rss("VmRSS")
    model = GPT(GPTConfig(**cfg.scratch_model_args(GPT2_VOCAB)))
    for p in model.parameters():
        p.data = p.data.to(rt.param_dtype)
    train_model = data_parallel(model, rt) if cfg.parallel == "ddp" else model
    if cfg.parallel == "fsdp":
        shard(model, cfg, rt)
    open("/proc/self/clear_refs", "w").write("5")  # the peak from here on: FSDP's full model before its cut is not
    optimizer = make_optimizer(model, cfg, rt)
    tokens = (cfg.batch_size, cfg.block_size)
    batches = [(torch.randint(0, GPT2_VOCAB, tokens), torch.randint(0, GPT2_VOCAB, tokens))] * 2
    no_sync = deferred_reduction(train_model, model, cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ctx = autocast_context(rt.device, rt.dtype)
    train_step(train_model, optimizer, scaler, batches, ctx, cfg.grad_clip, None, no_sync)
    return rss("VmHWM") - base

shared, settings = sys.argv[1].split(), sys.argv[2:]
rt = setup_runtime("cpu", "float32", "gloo")
torch.ones(64, 64) @ torch.ones(64, 64)  # the matmul kernels and gloo's buffers before the first baseline
dist.all_reduce(torch.ones(1))
for setting in settings:
    cfg = parse_config([*shared, *setting.split()])
    weights = torch.bfloat16 if cfg.dtype == "bf16-true" else torch.float32
    peak = measured_step(cfg, replace(rt, dtype=resolve_dtype(cfg.dtype, rt.device), param_dtype=weights))
    gc.collect()
    if rt.rank == 0:
        print(peak)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_the_traced_peak_of_a_process_of_two_is_the_measured_one(tmp_path):
    """DDP and FSDP over two processes (gloo, one torchrun), against the peak RSS the step adds to the first,
    for a shape whose training state outweighs its logits: within 4% (measured 0.05-1.9% low). FSDP's trace shards
    over torch's fake process group, where its DTensors ran each op on full-size tensors to find the output's
    shape; counted, they put FSDP's peak 8% high here (and 8 processes' at twice the whole unsharded AdamW state).
    The RSS also holds code paged in on first use and glibc's small-block arenas, which the trace does not see."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from configurator import parse_config
    from inheritune.training import planned_model

    shared = "--n_layer=2 --n_head=4 --n_embd=768 --block_size=128 --batch_size=1 --gradient_accumulation_steps=4"
    settings = [
        "--parallel=ddp --dtype=float32",
        "--parallel=fsdp --dtype=float32",
        "--parallel=fsdp --dtype=bfloat16",
        "--parallel=fsdp --dtype=bf16-true",
    ]
    predicted = []
    with bench.fake_process_group(2):
        for setting in settings:
            cfg = parse_config([*shared.split(), "--device=cpu", *setting.split()])
            true_bf16 = cfg.dtype == "bf16-true"
            predicted.append(bench.traced_peak(planned_model(cfg), None, cfg, 2, cfg.parallel, true_bf16))
    root = Path(bench.__file__).parent
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    script = tmp_path / "steps.py"
    script.write_text(MEASURED_PROCESS_STEPS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    result = subprocess.run(
        [*cmd, shared, *settings], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = [int(line) for line in result.stdout.split()]
    assert min(measured) > 400 * 2**20  # the step, not torch's own memory, is measured
    for setting, p, m in zip(settings, predicted, measured, strict=True):
        assert p == pytest.approx(m, rel=0.04), setting
