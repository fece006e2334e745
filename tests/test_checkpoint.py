import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from checkpoint import Checkpoint, CheckpointError, describe, load_model, source_sha256
from hf import ConversionError, is_hf_source
from model import GPT, GPTConfig
from tests.conftest import ROOT, CodeOnUnpickle


@pytest.mark.slow
def test_kill_during_save_leaves_the_old_checkpoint_loadable(tmp_path):
    path = tmp_path / "ckpt.pt"
    Checkpoint(model={"w": torch.zeros(3)}, model_args={}, iter_num=1).save(path)
    # The child dies abruptly half-way through writing a large checkpoint, as with SIGKILL.
    script = f"""
import os, sys, torch
sys.path.insert(0, {str(ROOT)!r})
import checkpoint
real_save = torch.save
def dying_save(obj, f):
    real_save(obj, f)
    f.flush()
    f.truncate(f.tell() // 2)
    os._exit(9)
checkpoint.torch.save = dying_save
checkpoint.Checkpoint(model={{"w": torch.ones(1_000_000)}}, model_args={{}}, iter_num=2).save({str(path)!r})
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


# a file's suffix or a ':' marks a path: hub ids end in none of these and hold no ':' (C:/x gave "Repo id must use
# alphanumeric chars", a/b.safetensors "couldn't connect to huggingface.co")
MISSING_PATHS = ["/nonexistent", "./missing", "../missing", "~/missing", "a/b.safetensors", "a/b.json", "C:/x"]


@pytest.mark.parametrize("source", MISSING_PATHS)
def test_a_missing_path_is_a_missing_checkpoint_not_a_hub_id(source, tmp_path, monkeypatch):
    """Every model reader (train.py's init_from and inherit_from, sample.py, analyze.py, inherit.py) goes through
    describe or load_model: a path with one '/' that names nothing used to go to the hub's name check ("Repo id
    must use alphanumeric chars...")."""
    monkeypatch.chdir(tmp_path)
    assert not is_hf_source(source) and is_hf_source("owner/name")  # a hub id is still one
    for read in (describe, load_model):
        with pytest.raises(CheckpointError, match=f"^checkpoint .*{source.rpartition('/')[2]} not found$"):
            read(source)


def test_a_path_from_home_is_expanded_for_every_model_reader(tmp_path, monkeypatch):
    """No shell expands ~ after --model= or --init_from= (nor in a config file): describe, load_model and
    source_sha256, which every command reads its models through, expand it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ref4").mkdir()
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    Checkpoint.of(model, iter_num=7).save(tmp_path / "ref4" / "ckpt.pt")
    assert describe("~/ref4/ckpt.pt").iter_num == 7 and describe("~/ref4").iter_num == 7  # a file, a run folder
    loaded, ckpt = load_model("~/ref4/ckpt.pt")
    assert ckpt.iter_num == 7 and torch.equal(loaded.lm_head.weight[:32], model.lm_head.weight[:32])
    assert source_sha256("~/ref4/ckpt.pt") == source_sha256(tmp_path / "ref4" / "ckpt.pt") != ""


def test_an_owner_name_the_hub_cannot_give_says_no_local_path_has_that_name_either(tmp_path, monkeypatch):
    """A mistyped relative path (runs/ref, out-shakespeare/ckpt) looks like a hub id: the hub's error alone
    ("couldn't connect to huggingface.co") did not say that no such path is here either."""
    monkeypatch.chdir(tmp_path)
    for read in (describe, load_model):
        with pytest.raises(ConversionError, match="^runs/ref: .*\\(no local path runs/ref either\\)$"):
            read("runs/ref")


def test_an_empty_or_cut_short_file_says_why_it_cannot_load(tmp_path):
    """torch.load of an empty file, or of a legacy (non-zip) checkpoint cut short, raises an EOFError without a
    message: the error used to end in a bare colon."""
    empty = tmp_path / "e.pt"
    empty.touch()
    with pytest.raises(CheckpointError, match="e.pt: an empty file \\(0 bytes\\), no checkpoint was written to it$"):
        Checkpoint.load(empty)
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": {}, "model_args": {}}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint\\): it ends early: truncated$"):
        Checkpoint.load(legacy)


def test_a_folder_without_a_model_says_what_was_looked_for(tmp_path):
    looked_for = "is a folder with no checkpoint: looked for ckpt.pt, a sharded checkpoint (sharded/latest, or a step"
    for read in (describe, load_model):
        with pytest.raises(CheckpointError, match=f"^{tmp_path} {re.escape(looked_for)}.* Hugging Face config.json$"):
            read(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").touch()  # a run that has not saved yet
    with pytest.raises(CheckpointError, match="a training run's folder: it saves its first checkpoint at its first"):
        describe(tmp_path)


def test_a_folder_named_like_openai_gpt2_is_that_folder_not_the_hub_model(tmp_path, monkeypatch):
    """transformers reads a folder ./gpt2 for "gpt2" and failed on one without a model ("Unrecognized model in
    gpt2", a traceback); the hub model is not what such a folder means either: the error says which was read."""
    monkeypatch.chdir(tmp_path)
    assert describe("gpt2").model_args["n_layer"] == 12  # OpenAI's, where no such folder is here
    (tmp_path / "gpt2").mkdir()
    hub = "the folder gpt2 here is read, not OpenAI's gpt2 from the hub"
    for read in (describe, load_model):
        with pytest.raises(CheckpointError, match=f"^gpt2 is a folder with no checkpoint: .*; {hub}"):
            read("gpt2")
    (tmp_path / "gpt2" / "config.json").write_text('{"config": {}}')
    (tmp_path / "gpt2" / "metrics.jsonl").touch()  # a run named gpt2 that has not saved yet
    with pytest.raises(CheckpointError, match=f"a training run's folder: .*; {hub}"):
        load_model("gpt2")
    Checkpoint.of(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32))).save("gpt2/ckpt.pt")
    assert describe("gpt2").model_args["n_layer"] == 2 and load_model("gpt2")[0].config.n_layer == 2


def test_a_folder_whose_config_json_is_no_hugging_face_models_says_so(tmp_path):
    (tmp_path / "config.json").write_text('{"config": {"n_layer": 2}}')  # a run's, without its metrics.jsonl
    for read in (describe, load_model):
        with pytest.raises(CheckpointError, match="config.json; its config.json names no Hugging Face model_type$"):
            read(tmp_path)


def test_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": CodeOnUnpickle(marker), "model_args": {}}, f)
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        Checkpoint.load(path)
    assert not marker.exists()


def test_tokens_seen_adds_the_source_models_and_unknown_stays_unknown():
    ours = {"batch_size": 4, "gradient_accumulation_steps": 2, "block_size": 32, "data_dir": "data/python"}
    counted = Checkpoint(model_args={}, config=ours, iter_num=10, tokens=5000)
    assert counted.tokens_seen() == 5000
    assert Checkpoint(model_args={}, config=ours, iter_num=10).tokens_seen() == 10 * 4 * 2 * 32  # nanoGPT's way
    after_known = Checkpoint(model_args={}, tokens=5000, continued_from={"source": "a.pt", "tokens_seen": 7})
    assert after_known.tokens_seen() == 5007
    # A run that continued a Hugging Face model (which records no token count) has an unknown total, and so
    # has any run continued from it: a chain never turns unknown into a number.
    after_unknown = Checkpoint(model_args={}, tokens=5000, continued_from={"source": "gpt2", "tokens_seen": None})
    assert after_unknown.tokens_seen() is None


def test_llm_inheritunes_per_gpu_batch_gives_no_token_count():
    """Their script keeps gradient_accumulation_steps per GPU and records no GPU count (3 GPUs: 3x off)."""
    theirs = {"batch_size": 2, "gradient_accumulation_steps": 8, "block_size": 1024, "optimizer_name": "adamw"}
    assert Checkpoint(model_args={}, config=theirs, iter_num=1000).tokens_seen() is None


def test_a_checkpoint_of_this_projects_older_config_keys_still_counts_its_tokens():
    older = {"batch_size": 4, "gradient_accumulation_steps": 2, "block_size": 32, "inherit_ln_f": True, "dataset": "x"}
    assert Checkpoint(model_args={}, config=older, iter_num=10).tokens_seen() == 10 * 4 * 2 * 32


def test_the_corpus_of_a_checkpoint_is_its_data_dir_a_mixtures_first_or_nanogpts_dataset():
    """sample.py decodes with it; a mixture's data_dir (a dict) used to crash Path()."""
    mixture = {"data_dir": {"data/a": 0.5, "data/b": 0.5}}
    assert Checkpoint(model_args={}, config=mixture).corpus_folder() == Path("data/a")
    assert Checkpoint(model_args={}, config={"data_dir": "data/a"}).corpus_folder() == Path("data/a")
    nanogpt = {"dataset": "shakespeare_char"}
    assert Checkpoint(model_args={}, config=nanogpt).corpus_folder() == Path("data/shakespeare_char")
    assert Checkpoint(model_args={}, config=None).corpus_folder() is None
