import pytest

import sample
import train


@pytest.fixture
def trained_out_dir(tiny_config):
    cfg = tiny_config(max_iters=10)
    train.train(cfg)
    return cfg.out_dir


def run_sample(capsys, *args) -> tuple[int, str, str]:
    code = sample.main(["--device=cpu", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sampling_is_reproducible_and_continues_the_prompt(trained_out_dir, capsys):
    args = (f"--out_dir={trained_out_dir}", "--start=ROMEO:", "--num_samples=3", "--max_new_tokens=20", "--seed=7")
    code, first, _ = run_sample(capsys, *args)
    assert code == 0
    texts = first.split("---------------\n")[:-1]
    assert len(texts) == 3 and all(t.startswith("ROMEO:") for t in texts)
    assert len(set(texts)) > 1  # different samples within one call
    _, second, _ = run_sample(capsys, *args)
    assert first == second


def test_prompt_from_file_and_greedy_decoding(trained_out_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Enter HAMLET.")
    code, out, _ = run_sample(
        capsys, f"--ckpt={trained_out_dir}/best.pt", f"--start=FILE:{prompt}", "--temperature=0", "--num_samples=2"
    )
    assert code == 0
    a, b = out.split("---------------\n")[:2]
    assert a.startswith("Enter HAMLET.") and a == b


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_sample(capsys, f"--out_dir={tmp_path}")
    assert code == 1 and "not found" in err
