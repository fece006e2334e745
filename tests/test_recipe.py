"""recipe.py: every way of building the small model on one budget, with a report."""

import json
from pathlib import Path

import pytest

import recipe
from tests.conftest import ROOT, write_config_file


def test_two_methods_train_side_by_side_report_and_resume_without_retraining(trained_reference, tmp_path, capsys):
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=6, lr_decay_iters=6, eval_interval=3)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "r"
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "first,bi,scratch-2x"]
    argv += ["--out_dir", str(out), "--num_seqs", "4", "--seq_len", "32"]
    assert recipe.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["reference", "first", "bi", "scratch-2x"]
    assert rows["first"]["inherited_layers"] == [0, 1] and rows["first"]["steps"] == 6
    assert rows["bi"]["inherited_layers"] == report["analysis"]["choices"]["layers"]["bi"]
    assert rows["scratch-2x"]["steps"] == 12 and rows["scratch-2x"]["inherited_layers"] is None
    assert rows["reference"]["layers"] == 4 and rows["reference"]["gap"] is None
    assert rows["first"]["gap"] == pytest.approx(rows["first"]["val_loss"] - rows["reference"]["val_loss"])
    assert all(r["time_s"] > 0 for name, r in rows.items() if name != "reference")
    markdown = (out / "report.md").read_text()
    assert "| first | 2 | 0,1 |" in markdown and "curves.png" in markdown
    assert (out / "curves.png").stat().st_size > 0 and (out / "analysis" / "layers.png").stat().st_size > 0
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("n2/*/ckpt.pt")}
    capsys.readouterr()
    assert recipe.main(argv) == 0
    assert "finished earlier" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("n2/*/ckpt.pt")} == mtimes
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n_layer", "4"], "each depth must be in 1..3"),
        (["--n_layer", "2", "--methods", "first,middle"], "unknown methods ['middle']"),
        (["--n_layer", "x"], "expected depths like 12,16"),
    ],
)
def test_bad_plans_are_refused_before_anything_trains(trained_reference, tmp_path, capsys, extra, message):
    config = write_config_file(tmp_path / "c.py", trained_reference)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    assert recipe.main(["--reference", ref, "--config", str(config), "--out_dir", str(tmp_path / "r"), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_zero_shot_tasks_are_scored_for_every_model_and_kept(trained_reference, tmp_path, capsys):
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=4, lr_decay_iters=4, eval_interval=2)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "r"
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "first", "--out_dir", str(out)]
    argv += ["--num_seqs", "4", "--seq_len", "32", "--tasks", "tiny_qa", "--tasks_limit", "4"]
    argv += ["--include_path", str(ROOT / "tests" / "lm_eval_tasks")]
    assert recipe.main(argv) == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["reference", "first"]
    assert all(0 <= r["tasks"]["tiny_qa"]["acc"] <= 1 for r in rows)
    assert "tiny_qa (acc)" in (out / "report.md").read_text()
    capsys.readouterr()
    assert recipe.main(argv) == 0
    assert "tasks of" not in capsys.readouterr().out  # scored once, read back
