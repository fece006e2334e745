import pickle
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

import sample
import train
from configurator import TrainConfig
from data.shakespeare.prepare import prepare as prepare_shakespeare
from tests.conftest import tiny_values
from tests.test_llama import bpe_folder  # noqa: F401 - a fixture
from tests.test_train import NANOGPT_CHAR_CONFIG


@pytest.fixture(scope="module")
def trained_out_dir(shakespeare_dir, tmp_path_factory):
    """A 2-layer model trained for 10 steps, once for this file's tests: they only read it."""
    out = tmp_path_factory.mktemp("sample") / "out"
    train.train(TrainConfig(**tiny_values(shakespeare_dir) | {"max_iters": 10, "out_dir": str(out)}))
    return str(out)


def run_sample(capsys, *args) -> tuple[int, str, str]:
    code = sample.main(["--device=cpu", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def texts_of(out: str) -> list[str]:
    """The samples of sample.py's output: each printed, then a line of dashes."""
    return [text.removesuffix("\n") for text in out.split("---------------\n")[:-1]]


@pytest.mark.slow
def test_sampling_is_reproducible_and_continues_the_prompt(trained_out_dir, capsys):
    args = (f"--out_dir={trained_out_dir}", "--start=ROMEO:", "--num_samples=3", "--max_new_tokens=20", "--seed=7")
    code, first, _ = run_sample(capsys, *args)
    assert code == 0
    texts = texts_of(first)
    assert len(texts) == 3 and all(t.startswith("ROMEO:") for t in texts)
    assert len(set(texts)) > 1  # different samples within one call
    _, second, _ = run_sample(capsys, *args)
    assert first == second


@pytest.mark.slow
def test_a_run_folder_is_a_model_source_its_latest_checkpoint(trained_out_dir, capsys):
    """train.py's out_dir holds a config.json as a Hugging Face folder does; it is read as the run it is."""
    greedy = ["--start=ROMEO:", "--temperature=0", "--max_new_tokens=8", "--num_samples=1"]
    code, from_folder, err = run_sample(capsys, f"--model={trained_out_dir}", *greedy)
    assert code == 0, err
    assert run_sample(capsys, f"--model={trained_out_dir}/ckpt.pt", *greedy)[1] == from_folder


def test_a_prompt_file_that_is_not_there_is_one_line(trained_out_dir, tmp_path, capsys):
    missing = tmp_path / "no_prompt.txt"
    code, _, err = run_sample(capsys, f"--init_from={trained_out_dir}/best.pt", f"--start=FILE:{missing}")
    assert code == 1 and err == f"error: --start=FILE:{missing}: {missing} is no file to read the prompt from\n"


def test_prompt_from_file_and_greedy_decoding_from_a_checkpoint_path(trained_out_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Enter HAMLET.")
    code, out, _ = run_sample(
        capsys,
        f"--init_from={trained_out_dir}/best.pt",
        f"--start=FILE:{prompt}",
        "--temperature=0",
        "--num_samples=2",
        "--compile=False",
    )
    assert code == 0
    a, b = texts_of(out)
    assert a.startswith("Enter HAMLET.") and a == b


@pytest.mark.slow
def test_compiled_blocks_sample_exactly_what_eager_ones_do(tiny_config, tmp_path, capsys):
    cfg = tiny_config(n_layer=1, max_iters=2, eval_interval=2)
    train.train(cfg)
    capsys.readouterr()
    args = (f"--out_dir={cfg.out_dir}", "--start=ROMEO:", "--max_new_tokens=12", "--temperature=0")
    eager, compiled = (run_sample(capsys, *args, f"--compile={flag}")[1] for flag in ("False", "True"))
    assert eager == compiled and len(texts_of(eager)) == 2


def test_a_character_level_model_decodes_through_its_corpus_meta_pkl(char_data_root, monkeypatch, capsys):
    monkeypatch.chdir(char_data_root)  # nanoGPT finds data/<config['dataset']>/meta.pkl from here
    (char_data_root / "config.py").write_text(NANOGPT_CHAR_CONFIG + "max_iters = 20\nout_dir = 'out-char-sample'\n")
    assert train.main(["config.py", "--always_save_checkpoint=True"]) == 0
    capsys.readouterr()
    code, out, err = run_sample(capsys, "--out_dir=out-char-sample", "--start=HAMLET:", "--max_new_tokens=40")
    assert code == 0, err
    meta = pickle.loads((char_data_root / "data" / "shakespeare_char" / "meta.pkl").read_bytes())
    for text in texts_of(out):
        assert text.startswith("HAMLET:") and len(text) == len("HAMLET:") + 40
        assert set(text) <= set(meta["stoi"])
    assert "character vocabulary of data/shakespeare_char/meta.pkl" in err
    code, _, err = run_sample(capsys, "--out_dir=out-char-sample", "--start=HAMLET: ✓")
    assert code == 1 and "['✓'] are not in the vocabulary" in err


def test_a_hugging_face_folder_samples_gpt2_text(tmp_path, capsys):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32)).save_pretrained(tmp_path / "hf")
    code, out, _ = run_sample(capsys, f"--init_from={tmp_path / 'hf'}", "--start=Hello", "--max_new_tokens=5")
    assert code == 0 and all(t.startswith("Hello") for t in texts_of(out))


def test_missing_checkpoint_and_bad_flags_are_clear_errors(tmp_path, capsys):
    code, _, err = run_sample(capsys, f"--out_dir={tmp_path}")
    assert code == 1 and f"no checkpoint found in {tmp_path}: neither ckpt.pt nor sharded/latest" in err
    with pytest.raises(SystemExit):
        sample.main(["--compile=yes"])
    assert "expected True or False, got 'yes'" in capsys.readouterr().err
    assert Path(sample.__file__).name == "sample.py"


@pytest.mark.slow
def test_a_model_decodes_with_the_tokenizer_its_checkpoint_records_not_its_corpus_folders_today(
    tiny_config,
    shakespeare_dir,
    bpe_folder,  # noqa: F811 - the fixture
    tmp_path,
    capsys,
):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.bin", "val.bin", "meta.json"):
        (data / name).write_bytes((shakespeare_dir / name).read_bytes())
    cfg = tiny_config(data_dir=str(data), max_iters=4, eval_interval=4)
    train.train(cfg)
    capsys.readouterr()
    args = (f"--out_dir={cfg.out_dir}", "--start=ROMEO:", "--max_new_tokens=20", "--temperature=0")
    code, before, err = run_sample(capsys, *args)
    assert code == 0, err
    prepare_shakespeare(data, tokenizer=str(bpe_folder))  # the folder re-prepared with a 1,000-token BPE
    capsys.readouterr()
    code, after, err = run_sample(capsys, *args)
    assert code == 0, err
    assert after == before and texts_of(after)[0].startswith("ROMEO:")


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--dtype=bf16", "argument --dtype: invalid choice: 'bf16'"),
        ("--dtype=float64", "argument --dtype: invalid choice: 'float64'"),
        ("--num_samples=0", "--num_samples must be at least 1"),
        ("--temperature=-1", "--temperature must be 0 (greedy) or more, and finite"),
        ("--temperature=nan", "--temperature must be 0 (greedy) or more, and finite"),
        ("--temperature=inf", "--temperature must be 0 (greedy) or more, and finite"),
        ("--top_k=-1", "--top_k must be 0 (all tokens) or more"),
        ("--max_new_tokens=-1", "--max_new_tokens must be 0 or more"),
    ],
)
def test_bad_sampling_options_are_one_line_before_any_model_loads(flag, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        sample.main([flag])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_nanogpt_checkpoint_whose_corpus_was_prepared_again_with_another_tokenizer_is_refused(
    tmp_path, monkeypatch, capsys
):
    from tests.test_evaluation import nanogpt_checkpoint_over_a_corpus_prepared_again

    monkeypatch.chdir(tmp_path)  # nanoGPT's data/<dataset>
    source, data = nanogpt_checkpoint_over_a_corpus_prepared_again(tmp_path)
    code, out, err = run_sample(capsys, f"--model={source}", "--start=Hello", "--max_new_tokens=2")
    assert code == 1 and out == ""
    assert "data/shk was made with the tokenizer my-bpe, the model reads gpt2" in err
