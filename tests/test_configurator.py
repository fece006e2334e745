import os
from dataclasses import asdict, fields
from pathlib import Path

import pytest

import train
from configurator import (
    CONCERNS,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    SystemConfig,
    TrainConfig,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[1]


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("import math\nn_layer = 4\nlearning_rate = 1e-3\nmax_iters = 2 * 50\n_helper = 1\n")
    cfg = parse_config([str(path), "--n_layer=6", "--compile=False", "--out_dir=123", "--min_lr=0"])
    assert (cfg.n_layer, cfg.learning_rate, cfg.max_iters) == (6, 1e-3, 100)
    assert cfg.compile is False and cfg.out_dir == "123" and cfg.min_lr == 0.0


def test_unknown_key_is_named_with_the_valid_ones(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("n_layers = 4\n")
    with pytest.raises(
        ConfigError, match="unknown config key 'n_layers'.*valid keys: data_dir, eval_data_dirs, .*dataset \\(nanoGPT's"
    ):
        parse_config([str(path)])
    with pytest.raises(ConfigError, match="unknown config key 'lr'"):
        parse_config(["--lr=1e-3"])


@pytest.mark.parametrize(
    "arg,message",
    [
        ("--n_layer=4.5", "n_layer must be int, got float 4.5"),
        ("--compile=1", "compile must be bool, got int 1"),
        ("--bias=true", "bias must be bool or NoneType, got 'true'"),  # a key that may be unset
        ("--learning_rate=fast", "learning_rate must be float, got 'fast'"),
        ("--dtype=fp8", "dtype must be 'auto', 'bf16-true' or one of"),
        ("--parallel=zero3", "parallel must be one of \\['ddp', 'fsdp'\\]"),
        ("--cpu_offload=True", "cpu_offload and fsdp_reduce_every_micro_batch need parallel='fsdp'"),
        ("--fsdp_reduce_every_micro_batch=True", "need parallel='fsdp'"),
        ("--batch_size=0", "batch_size must be at least 1"),
        ("n_layer=4", "config file n_layer=4 not found"),
        ("--backend=mpi", "backend must be 'auto', 'nccl' or 'gloo'"),
        ("--dataset=shakespeare", "dataset 'shakespeare' .* and data_dir 'elsewhere' name different folders"),
    ],
)
def test_bad_values_stop_with_a_clear_error(arg, message):
    with pytest.raises(ConfigError, match=message):
        parse_config([arg, "--data_dir=elsewhere"] if arg.startswith("--dataset") else [arg])


# Every key of nanoGPT's train.py, with its default value, in a config file as nanoGPT's are written.
NANOGPT_DEFAULTS = """
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False
always_save_checkpoint = True
init_from = 'scratch'
wandb_log = False
wandb_project = 'owt'
wandb_run_name = 'gpt2'
dataset = 'openwebtext'
gradient_accumulation_steps = 5 * 8
batch_size = 12
block_size = 1024
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False
learning_rate = 6e-4
max_iters = 600000
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 600000
min_lr = 6e-5
backend = 'nccl'
device = 'cuda'
dtype = 'bfloat16'
compile = True
"""


def test_every_key_of_nanogpts_train_py_is_accepted(tmp_path):
    path = tmp_path / "nanogpt_defaults.py"
    path.write_text("import time\n" + NANOGPT_DEFAULTS + "wandb_run_name = 'ft-' + str(time.time())\n")
    cfg = parse_config([str(path)])
    assert cfg.data_dir == os.path.join("data", "openwebtext") and cfg.backend == "nccl"
    assert cfg.gradient_accumulation_steps == 40 and cfg.wandb_run_name.startswith("ft-")
    assert parse_config([str(path), "--dataset=/abs/corpus"]).data_dir == "/abs/corpus"  # os.path.join's rule
    assert parse_config([str(path), "--data_dir=data/x"]).dataset == "x"  # the command line's spelling wins


def test_shipped_configs_parse():
    for path in sorted((ROOT / "config").glob("*.py")):
        parse_config([str(path)])


@pytest.mark.parametrize(
    "size,n_layer,n_head,n_embd,student",
    [
        ("medium", 24, 16, 1024, 16),
        ("large", 36, 20, 1280, 18),
        ("xl", 48, 25, 1600, 24),
    ],
)
def test_paper_configs_are_the_authors_setup(size, n_layer, n_head, n_embd, student):
    """References, students and baselines: 48 x 1024 = 49,152 tokens per step, inverse-layer scaling, 100K
    steps (2x baselines 200K), the authors' optimizer, and each model of its published shape."""
    runs_of = {
        f"train_gpt2_{size}": (n_layer, 100_000),
        f"inheritune_gpt2_{size}_{student}": (student, 100_000),
        f"scratch_gpt2_{size}_{student}": (student, 100_000),
        f"scratch_gpt2_{size}_{student}_2x": (student, 200_000),
    }
    for name, (depth, steps) in runs_of.items():
        cfg = parse_config([str(ROOT / "config" / f"{name}.py")])
        assert cfg.batch_size * cfg.gradient_accumulation_steps * cfg.block_size == 49_152, name
        for gpus in (1, 2, 4, 8):
            assert cfg.gradient_accumulation_steps % gpus == 0, (name, gpus)
        assert (cfg.n_layer, cfg.n_head, cfg.n_embd) == (depth, n_head, n_embd), name
        assert (cfg.max_iters, cfg.lr_decay_iters, cfg.warmup_iters) == (steps, steps, 2000), name
        assert (cfg.learning_rate, cfg.min_lr, cfg.weight_decay, cfg.beta1, cfg.beta2) == (2e-4, 1e-5, 0.1, 0.9, 0.95)
        # their AdamW (GPT2-experiments/model.py) decays Linear weights only: never a norm gain or bias
        assert cfg.decay_1d_params is False and cfg.grad_clip == 1.0, name
        assert cfg.dropout == 0.0 and cfg.dtype == "bfloat16", name
        # the authors' architecture from scratch; a student takes its reference's, whichever that is
        architecture = (None, None) if name.startswith("inheritune") else (False, True)
        assert (cfg.bias, cfg.scale_attn_by_inverse_layer_idx) == architecture, name
        assert cfg.init_from == ("inherit" if name.startswith("inheritune") else "scratch"), name


def test_the_openllama_config_is_the_authors_optimizer():
    """LLM-Inheritune lit-gpt/Training/train.py: AdamW(trainable_params, lr=3e-4, weight_decay=0.01), torch's
    default betas, one group: every parameter decayed, norm gains included; no clipping; constant after warmup."""
    cfg = parse_config([str(ROOT / "config" / "inheritune_openllama_3b_13.py")])
    assert (cfg.weight_decay, cfg.decay_1d_params, cfg.beta1, cfg.beta2, cfg.grad_clip) == (0.01, True, 0.9, 0.999, 0.0)
    assert (cfg.learning_rate, cfg.min_lr, cfg.warmup_iters) == (3e-4, 3e-4, 1000)
    assert cfg.batch_size * cfg.gradient_accumulation_steps * cfg.block_size == 16_384


def test_dataset_and_data_dir_naming_one_folder_through_a_link_agree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "shakespeare").mkdir(parents=True)
    (tmp_path / "data" / "shk").symlink_to("shakespeare")
    assert parse_config(["--dataset=shakespeare", "--data_dir=data/shk"]).data_dir == "data/shk"


def test_fsdp_refuses_float16():
    with pytest.raises(ConfigError, match="parallel='fsdp' computes in bfloat16 or float32"):
        parse_config(["--parallel=fsdp", "--dtype=float16"])


def test_the_keys_are_grouped_by_concern_and_read_flat():
    """Each key in one concern; TrainConfig is all of them, flat: attributes, asdict and overrides."""
    names = [[f.name for f in fields(concern)] for concern in CONCERNS]
    every = [name for group in names for name in group]
    assert len(every) == len(set(every)) == len(fields(TrainConfig))
    assert every == list(asdict(TrainConfig()))  # read in the order of the concerns
    assert (
        "learning_rate" in names[CONCERNS.index(ScheduleConfig)] and "beta2" in names[CONCERNS.index(OptimizerConfig)]
    )
    assert "n_layer" in names[CONCERNS.index(ModelConfig)] and "parallel" in names[CONCERNS.index(SystemConfig)]
    cfg = parse_config(["--learning_rate=1e-3", "--n_layer=3"])
    assert isinstance(cfg, ScheduleConfig) and cfg.learning_rate == 1e-3 and asdict(cfg)["n_layer"] == 3


def test_each_concern_checks_its_own_keys():
    """A concern is a config of its own: a function typed by one reads and checks only that one."""
    with pytest.raises(ConfigError, match="max_iters and warmup_iters must be non-negative"):
        ScheduleConfig(max_iters=-1)
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        DataConfig(batch_size=0)
    with pytest.raises(ConfigError, match="need parallel='fsdp'"):
        SystemConfig(cpu_offload=True)
    schedule = ScheduleConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    assert train.get_lr(60, schedule) == pytest.approx(0.55)


def test_help_prints_the_keys_by_concern(capsys):
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    headers = [
        line
        for line in out.splitlines()
        if line
        and not line.startswith(" ")
        and line.split(":")[0]
        in (
            "data",
            "model",
            "init / inherit / teacher",
            "optimizer",
            "schedule",
            "parallelism and system",
            "logging and checkpointing",
        )
    ]
    assert len(headers) == len(CONCERNS)
    assert out.index("schedule:") < out.index("  learning_rate = 0.0006") < out.index("parallelism and system:")


def test_nanogpts_dataset_is_a_spelling_of_data_dir(tmp_path):
    """One key names the corpus; nanoGPT's dataset = 'name' is data_dir = 'data/name', and the config a
    checkpoint records still carries it (nanoGPT's sample.py reads config['dataset'])."""
    path = tmp_path / "c.py"
    path.write_text("dataset = 'shakespeare_char'\n")
    cfg = parse_config([str(path)])
    assert cfg.data_dir == os.path.join("data", "shakespeare_char") and "dataset" not in asdict(cfg)
    assert cfg.record()["dataset"] == "shakespeare_char" and cfg.record()["data_dir"] == cfg.data_dir
    assert parse_config(["--dataset=shakespeare_char"]) == cfg
    assert TrainConfig().data_dir == os.path.join("data", "openwebtext")  # nanoGPT's default
    with pytest.raises(ConfigError, match="data_dir is empty"):
        parse_config(["--data_dir="])


def test_a_config_file_that_is_no_python_is_one_line_naming_the_file_and_line(tmp_path):
    path = tmp_path / "bad_config.py"
    path.write_text("n_layer = 4\nx = (\n")
    with pytest.raises(ConfigError, match=f"^config file {path}, line 2: '\\(' was never closed$"):
        parse_config([str(path)])


@pytest.mark.parametrize(
    "text, message",
    [
        ("n_layer = 4\nn_head = undefined_name\n", "line 2: NameError: name 'undefined_name' is not defined"),
        ("x = 1 / 0\n", "line 1: ZeroDivisionError: division by zero"),
    ],
)
def test_an_error_while_a_config_file_runs_is_one_line_naming_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad_config.py"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        parse_config([str(path)])
    assert str(refused.value) == f"config file {path}, {message}"


def test_a_runs_config_json_given_as_a_config_file_says_what_a_config_file_is(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"n_layer": 4, "compile": false}\n')
    with pytest.raises(ConfigError, match="config.json is JSON: a config file is Python"):
        parse_config([str(path)])


def test_a_later_level_names_the_corpus_in_either_spelling(tmp_path):
    """As nanoGPT's configurator: the command line overrides a config file's corpus whichever key each spells it
    with, and a later file an earlier one's; only one level (one file, or the command line) giving both, naming
    different folders, is refused."""
    with_data_dir, with_dataset = tmp_path / "a.py", tmp_path / "b.py"
    with_data_dir.write_text("data_dir = 'data/shakespeare'\n")
    with_dataset.write_text("dataset = 'python'\n")
    assert parse_config([str(with_data_dir), "--dataset=x"]).data_dir == os.path.join("data", "x")
    assert parse_config([str(with_dataset), "--data_dir=data/x"]).data_dir == "data/x"
    assert parse_config([str(with_data_dir), str(with_dataset)]).data_dir == os.path.join("data", "python")
    assert parse_config([str(with_dataset), str(with_data_dir)]).data_dir == "data/shakespeare"
    both = tmp_path / "both.py"
    both.write_text("data_dir = 'data/shakespeare'\ndataset = 'python'\n")
    with pytest.raises(ConfigError, match=f"name different folders in {both}: give one of them"):
        parse_config([str(both), "--n_layer=2"])
    with pytest.raises(ConfigError, match="name different folders on the command line"):
        parse_config([str(with_data_dir), "--dataset=x", "--data_dir=data/y"])


def test_both_corpus_lists_take_one_syntax(tmp_path):
    """eval_data_dirs is a list as data_dir's mixture is a dict, in config files; on the command line both
    are comma lists, parsed by one function; the older comma string in a config file still reads."""
    listed, old = tmp_path / "listed.py", tmp_path / "old.py"
    listed.write_text("eval_data_dirs = ['data/a', 'data/b']\n")
    old.write_text("eval_data_dirs = 'data/a, data/b'\n")
    from_line = parse_config(["--eval_data_dirs=data/a,data/b"])
    assert from_line.eval_data_dirs == ["data/a", "data/b"]
    assert parse_config([str(listed)]) == parse_config([str(old)]) == from_line
    assert parse_config(["--eval_data_dirs="]).eval_data_dirs == []
    with pytest.raises(ConfigError, match="eval_data_dirs takes folders without weights"):
        parse_config(["--eval_data_dirs=data/a:0.5"])
    with pytest.raises(ConfigError, match="eval_data_dirs names data/a twice"):
        parse_config(["--eval_data_dirs=data/a,data/a"])
    bad = tmp_path / "bad.py"
    bad.write_text("eval_data_dirs = [1]\n")
    with pytest.raises(ConfigError, match=r"eval_data_dirs must be str or list, got list \[1\]"):
        parse_config([str(bad)])
