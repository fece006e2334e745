"""Weighted data mixtures and continual pre-training (CPT): replay, held-out corpora, and what a run records
of the trained model it continues from."""

import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from checkpoint import Checkpoint, source_sha256
from configurator import ConfigError, parse_config
from data.batches import batch_rng, get_batch
from data.format import write_meta
from model import GPT, GPTConfig
from runs import RunError, read_run, refuse_changed_plan
from tests.conftest import char_data_root, tiny_values  # noqa: F401 (a fixture this module uses)


def metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def token_range_corpus(path: Path, low: int, high: int) -> str:
    """A corpus whose every token id lies in [low, high): the rows of a batch tell which corpus they are from."""
    path.mkdir()
    tokens = np.random.default_rng(low).integers(low, high, 20_000).astype(np.uint16)
    for split in ("train", "val"):
        (path / f"{split}.bin").write_bytes(tokens.tobytes())
    write_meta(path, {"tokenizer": "gpt2", "vocab_size": 50257})
    return str(path)


def test_each_row_comes_from_a_corpus_drawn_by_weight_deterministically(tmp_path):
    a = token_range_corpus(tmp_path / "a", 0, 1000)
    b = token_range_corpus(tmp_path / "b", 1000, 2000)
    mixture = {a: 3.0, b: 1.0}
    rows_from_a = []
    for k in range(300):
        x, _ = get_batch(mixture, "train", 8, 16, 50257, batch_rng(0, 0, k, 0))
        from_a = (x < 1000).all(dim=1)
        assert torch.all(from_a | (x >= 1000).all(dim=1))  # every row is one corpus's window
        rows_from_a.append(from_a.float().mean().item())
        again, _ = get_batch(mixture, "train", 8, 16, 50257, batch_rng(0, 0, k, 0))
        assert torch.equal(x, again)
    assert np.mean(rows_from_a) == pytest.approx(0.75, abs=0.03)
    # One corpus written as a mixture draws exactly what the plain corpus does.
    assert torch.equal(
        get_batch({a: 1.0}, "val", 4, 16, 50257, batch_rng(1, 2, 0, 3))[0],
        get_batch(a, "val", 4, 16, 50257, batch_rng(1, 2, 0, 3))[0],
    )


def test_mixtures_in_a_config_file_and_on_the_command_line(tmp_path, shakespeare_dir, python_dir):
    config = tmp_path / "mix.py"
    config.write_text(f"data_dir = {{{str(python_dir)!r}: 4, {str(shakespeare_dir)!r}: 1}}\n")
    from_file = parse_config([str(config)])
    from_line = parse_config([f"--data_dir={python_dir}:0.8,{shakespeare_dir}:0.2"])
    assert from_file.mixture == from_line.mixture == {str(python_dir): 0.8, str(shakespeare_dir): 0.2}
    assert from_line.dataset == str(python_dir)  # nanoGPT's dataset: the first corpus
    assert parse_config([f"--data_dir={python_dir}"]).mixture == {str(python_dir): 1.0}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--data_dir=data/a:0.5,data/b"], "'data/b' has no weight: write it as path:weight"),
        (["--data_dir=data/a:0.5,data/b:0"], "mixture weights must be positive numbers, got {'data/b': 0.0}"),
        (["--data_dir=data/a:1,data/b:-2"], "must be positive"),
        (["--data_dir=data/a:1,data/b:1", "--eval_data_dirs=data/b"], "in both data_dir and eval_data_dirs"),
        # one folder under two spellings, or twice: never trained on and held out, never two weights
        (["--data_dir=data/a", "--eval_data_dirs=./data/a"], r"\['data/a = ./data/a'\] in both data_dir and eval"),
        (["--data_dir=data/a:0.4,data/b:0.2,data/a:0.4"], "data_dir names data/a twice: give each corpus once"),
        (["--data_dir=data/a:0.5,./data/a:0.5"], "data_dir names one folder twice"),
        (["--data_dir=data/a", "--eval_data_dirs=data/b,data/../data/b"], "eval_data_dirs names one folder twice"),
    ],
)
def test_bad_mixtures_stop_with_one_line_before_training(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


def test_a_missing_corpus_or_another_tokenizer_stops_before_any_training(tiny_config, tmp_path, char_data_root):  # noqa: F811
    with pytest.raises(ConfigError, match="corpus folder .*/nowhere not found"):
        train.train(tiny_config(data_dir=tiny_config().data_dir + f":0.5,{tmp_path}/nowhere:0.5"))
    chars = str(char_data_root / "data" / "shakespeare_char")
    with pytest.raises(ConfigError, match="corpora with different tokenizers cannot mix: .*'characters-"):
        train.train(tiny_config(eval_data_dirs=chars))
    assert not (tmp_path / "out").exists()


def mixed(tiny_config, shakespeare_dir, python_dir, **overrides):
    return tiny_config(data_dir={str(python_dir): 0.75, str(shakespeare_dir): 0.25}, **overrides)


@pytest.mark.slow
def test_every_eval_reports_each_corpus_and_the_weighted_mean(tiny_config, shakespeare_dir, python_dir, tmp_path):
    held_out = token_range_corpus(tmp_path / "held_out", 0, 50257)
    cfg = mixed(tiny_config, shakespeare_dir, python_dir, eval_data_dirs=held_out, max_iters=10, eval_interval=10)
    train.train(cfg)
    for record in [r for r in metrics(cfg.out_dir) if r["kind"] == "eval"]:
        losses = record["val_losses"]
        assert list(losses) == [str(python_dir), str(shakespeare_dir), held_out]
        assert record["val_loss"] == pytest.approx(0.75 * losses[str(python_dir)] + 0.25 * losses[str(shakespeare_dir)])
    python_loss, shakespeare_loss = losses[str(python_dir)], losses[str(shakespeare_dir)]
    assert abs(python_loss - shakespeare_loss) > 0.1  # two corpora, measured apart
    assert losses[held_out] > math.log(50257) - 0.5  # uniform random tokens: nothing to learn


@pytest.mark.slow
def test_a_resumed_mixture_run_continues_exactly(tiny_config, shakespeare_dir, python_dir, tmp_path):
    straight = mixed(tiny_config, shakespeare_dir, python_dir, out_dir=str(tmp_path / "straight"))
    train.train(straight)
    train.train(mixed(tiny_config, shakespeare_dir, python_dir, out_dir=str(tmp_path / "split"), max_iters=10))
    train.train(mixed(tiny_config, shakespeare_dir, python_dir, out_dir=str(tmp_path / "split"), init_from="resume"))
    a = Checkpoint.load(tmp_path / "straight" / "ckpt.pt").model
    b = Checkpoint.load(tmp_path / "split" / "ckpt.pt").model
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_continual_pretraining_records_its_source_and_the_tokens_it_had_seen(
    trained_reference, tiny_config, shakespeare_dir, python_dir, tmp_path
):
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    tokens_per_step = trained_reference.batch_size * trained_reference.gradient_accumulation_steps * 32
    cpt = tiny_config(
        init_from=ref,
        data_dir=str(python_dir),
        eval_data_dirs=str(shakespeare_dir),
        max_iters=10,
        eval_interval=10,
        out_dir=str(tmp_path / "cpt"),
    )
    train.train(cpt)
    ckpt = Checkpoint.load(tmp_path / "cpt" / "ckpt.pt")
    assert ckpt.continued_from == {
        "source": ref,
        "source_sha256": source_sha256(ref),
        "tokens_seen": 20 * tokens_per_step,
    }
    assert json.loads((tmp_path / "cpt" / "config.json").read_text())["continued_from"] == ckpt.continued_from
    assert ckpt.tokens_seen() == 30 * tokens_per_step  # D_p and its own tokens
    first = metrics(tmp_path / "cpt")[0]
    # The source's knowledge before any CPT step: well below an untrained model's ln 50257 = 10.82.
    assert first["val_losses"][str(shakespeare_dir)] < math.log(50257) - 1.0
    again = tiny_config(
        init_from=str(tmp_path / "cpt" / "ckpt.pt"),
        data_dir=str(python_dir),
        max_iters=2,
        eval_interval=2,
        out_dir=str(tmp_path / "again"),
    )
    train.train(again)
    assert Checkpoint.load(tmp_path / "again" / "ckpt.pt").continued_from["tokens_seen"] == 30 * tokens_per_step
    resumed = tiny_config(init_from="resume", data_dir=str(python_dir), max_iters=4, out_dir=str(tmp_path / "again"))
    train.train(resumed)
    assert Checkpoint.load(tmp_path / "again" / "ckpt.pt").continued_from["tokens_seen"] == 30 * tokens_per_step


def test_d_p_of_a_model_whose_checkpoint_does_not_record_it_comes_from_the_config(tiny_config, python_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(tmp_path / "hf")
    cfg = tiny_config(init_from=str(tmp_path / "hf"), data_dir=str(python_dir), max_iters=2, eval_interval=2)
    train.train(cfg)
    assert Checkpoint.load(Path(cfg.out_dir) / "ckpt.pt").continued_from["tokens_seen"] is None  # unknown, said so
    cfg = tiny_config(
        init_from=str(tmp_path / "hf"),
        data_dir=str(python_dir),
        max_iters=2,
        eval_interval=2,
        init_tokens_seen=9_000_000_000,
        out_dir=str(tmp_path / "given"),
    )
    train.train(cfg)
    assert Checkpoint.load(tmp_path / "given" / "ckpt.pt").continued_from["tokens_seen"] == 9_000_000_000


def test_one_tokenizer_in_two_folders_mixes(tiny_config, shakespeare_dir, python_dir, tmp_path):
    """Vocabulary records are compared as tokenizers (by fingerprint), not as records: GPT-2 named "gpt2" in
    one folder and by a Hugging Face folder's path in another is one vocabulary."""
    from data.tokenizer import GPT2_FINGERPRINT

    other = tmp_path / "python_hf_gpt2"
    other.mkdir()
    for split in ("train", "val"):
        (other / f"{split}.bin").write_bytes((python_dir / f"{split}.bin").read_bytes())
    meta = json.loads((python_dir / "meta.json").read_text())
    meta |= {"tokenizer": "/models/gpt2-hf", "tokenizer_fingerprint": GPT2_FINGERPRINT}
    write_meta(other, meta)
    cfg = tiny_config(data_dir=f"{shakespeare_dir}:0.5,{other}:0.5")
    assert train.shared_vocabulary(cfg)["vocab_size"] == 50257


def nanogpt_checkpoint(path: Path, vocab_size: int, config: dict) -> str:
    """A checkpoint as nanoGPT's train.py writes it: no tokenizer record, its config's dataset."""
    model_args = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, bias=True, vocab_size=vocab_size, dropout=0.0)
    model = GPT(GPTConfig(**model_args))
    torch.save({"model": model.state_dict(), "model_args": model_args, "iter_num": 10, "config": config}, path)
    return str(path)


def test_a_continued_model_keeps_its_shape_and_the_run_records_it(shakespeare_dir, tmp_path, capsys):
    """A model continued from a source trains at the source's shape: config.json and the checkpoint record that
    shape, not the config's (which cannot tell a value given from its default), a note says the config's was not
    used, and the same command again (a rerun by runs.py, a resume) is still the same run."""
    source = nanogpt_checkpoint(tmp_path / "src.pt", 50304, {"dataset": "openwebtext"})  # 1 layer, 2 heads, 32 wide
    config = tmp_path / "tiny.py"
    config.write_text("".join(f"{key} = {value!r}\n" for key, value in tiny_values(shakespeare_dir).items()))
    asked = [f"--init_from={source}", "--n_layer=4", "--n_embd=64", "--max_iters=2", f"--out_dir={tmp_path / 'cpt'}"]
    train.train(parse_config([str(config), *asked]))
    note = f"init_from={source} has n_layer 1, n_head 2, n_embd 32; the config's n_layer 4, n_embd 64 not used"
    assert note in capsys.readouterr().out
    run = read_run(tmp_path / "cpt")
    recorded = Checkpoint.load(tmp_path / "cpt" / "ckpt.pt").config
    assert [(run.config[key], recorded[key]) for key in ("n_layer", "n_head", "n_embd")] == [(1, 1), (2, 2), (32, 32)]
    refuse_changed_plan(run, str(config), asked)  # the same command again: accepted
    with pytest.raises(RunError, match="max_iters=2"):
        refuse_changed_plan(run, str(config), [*asked, "--max_iters=3"])
    train.train(parse_config([str(config), *asked, "--init_from=resume", "--max_iters=4"]))
    assert Checkpoint.load(tmp_path / "cpt" / "ckpt.pt").iter_num == 4
    # resumed, config.json records init_from='resume': the run still began from `source`, at its shape
    run, asked = read_run(tmp_path / "cpt"), [*asked, "--max_iters=4"]
    assert run.config["init_from"] == "resume"
    refuse_changed_plan(run, str(config), asked)
    refuse_changed_plan(run, str(config), [*asked, "--init_from=resume"])
    refuse_changed_plan(run, str(config), [*asked, f"--init_from={tmp_path}/./src.pt"])  # the same file
    began = f"trained with n_layer=1, n_embd=32, init_from='{source}'; this command asks for n_layer=3, n_embd=64"
    with pytest.raises(RunError, match=re.escape(f"{began}, init_from='scratch'.")):
        refuse_changed_plan(run, str(config), [*asked, "--init_from=scratch", "--n_layer=3"])
    other = nanogpt_checkpoint(tmp_path / "other.pt", 50304, {"dataset": "openwebtext"})  # a model of another run
    with pytest.raises(RunError, match=re.escape(f"{began}, init_from='{other}'.")):
        refuse_changed_plan(run, str(config), [*asked, f"--init_from={other}", "--n_layer=3"])


def other_char_corpus(path: Path, vocab_size: int) -> str:
    """A character corpus of as many characters as another, but other ones."""
    path.mkdir()
    chars = [chr(0x400 + i) for i in range(vocab_size)]
    with open(path / "meta.pkl", "wb") as f:
        pickle.dump(
            {"vocab_size": vocab_size, "stoi": {c: i for i, c in enumerate(chars)}, "itos": dict(enumerate(chars))}, f
        )
    ids = np.arange(4096, dtype=np.uint16) % vocab_size
    ids.tofile(path / "train.bin")
    ids.tofile(path / "val.bin")
    return str(path)


def test_a_nanogpt_checkpoint_continues_only_on_its_own_vocabulary(tiny_config, tmp_path, char_data_root, monkeypatch):  # noqa: F811
    """nanoGPT's checkpoints record no tokenizer; what they carry tells: GPT-2's vocabulary size, or the meta
    of config['dataset']'s corpus. A GPT-2 model continued on characters used to train silently."""
    monkeypatch.chdir(char_data_root)  # nanoGPT finds data/<dataset> from where it runs
    chars = "data/shakespeare_char"
    gpt2 = nanogpt_checkpoint(tmp_path / "gpt2.pt", 50304, {"dataset": "openwebtext"})
    run = dict(max_iters=2, eval_interval=2, block_size=32)
    with pytest.raises(
        ConfigError, match="trained with the tokenizer gpt2, data/shakespeare_char was made with characters-"
    ):
        train.train(tiny_config(init_from=gpt2, data_dir=chars, **run))
    vocab = len(pickle.loads((char_data_root / chars / "meta.pkl").read_bytes())["stoi"])
    char_model = nanogpt_checkpoint(tmp_path / "chars.pt", vocab, {"dataset": "shakespeare_char"})
    with pytest.raises(ConfigError, match="was made with characters-.*the characters of the model's own corpus"):
        train.train(tiny_config(init_from=char_model, data_dir=other_char_corpus(tmp_path / "other", vocab), **run))
    cfg = tiny_config(init_from=char_model, data_dir=chars, out_dir=str(tmp_path / "ok"), **run)
    train.train(cfg)
    assert Checkpoint.load(Path(cfg.out_dir) / "ckpt.pt").tokenizer["tokenizer"].startswith("characters-")
