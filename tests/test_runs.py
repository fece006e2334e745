import json

import pytest

import runs


def test_compare_prints_the_table_and_saves_the_plot(trained_reference, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    code = runs.main(["compare", f"ref={trained_reference.out_dir}", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ref" in printed and " 4 " in printed and "20" in printed
    rows = json.loads(out.with_suffix(".json").read_text())
    assert rows[0]["layers"] == 4 and rows[0]["steps"] == 20
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_a_run_folder_is_read_without_its_checkpoints(trained_reference):
    out_dir = trained_reference.out_dir
    for name in ("ckpt.pt", "best.pt"):
        (runs.Path(out_dir) / name).unlink()
    run = runs.read_run(out_dir)
    assert run.finished() and run.last_eval["iter"] == 20
    assert run.model["model_args"]["n_layer"] == 4 and run.config["max_iters"] == 20
    assert runs.summary("ref", run)["params"] == run.model["params"] > 0


def test_a_folder_that_is_not_a_run_is_named(tmp_path, capsys):
    assert runs.main(["compare", f"x={tmp_path}"]) == 1
    assert f"{tmp_path}/config.json not found" in capsys.readouterr().err
    with pytest.raises(runs.RunError, match="not found"):
        runs.read_run(tmp_path)
