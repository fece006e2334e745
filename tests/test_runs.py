import errno
import json
import os
from pathlib import Path

import pytest
import torch

import runs
import train
from checkpoint import Checkpoint


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


def test_compare_puts_each_corpus_of_a_mixture_beside_the_weighted_loss(tiny_config, python_dir, tmp_path, capsys):
    shakespeare = tiny_config().data_dir
    cfg = tiny_config(data_dir={str(python_dir): 0.5, shakespeare: 0.5}, max_iters=4, eval_interval=2)
    train.train(cfg)
    capsys.readouterr()
    out = tmp_path / "cmp.png"
    assert (
        runs.main(["compare", f"mix={cfg.out_dir}", "--corpus", f"{python_dir},{shakespeare}", "--out", str(out)]) == 0
    )
    row = json.loads(out.with_suffix(".json").read_text())[0]
    last = runs.read_run(cfg.out_dir).last_eval
    assert row["val_losses"] == last["val_losses"] and row["val_loss"] == last["val_loss"]
    assert f"{row['val_losses'][str(python_dir)]:.4f}" in capsys.readouterr().out
    assert runs.main(["compare", f"mix={cfg.out_dir}", "--corpus", "data/elsewhere"]) == 1
    assert "evaluates no corpus 'data/elsewhere'" in capsys.readouterr().err


def test_best_pt_is_a_copy_where_the_filesystem_has_no_hard_links(tmp_path, monkeypatch):
    Checkpoint(model={"w": torch.ones(3)}, model_args={}, iter_num=1).save(tmp_path / "ckpt.pt")

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")  # gcsfuse, s3fs

    monkeypatch.setattr(os, "link", no_links)
    runs.mark_best(tmp_path)
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "ckpt.pt").read_bytes()
    Checkpoint(model={"w": torch.zeros(3)}, model_args={}, iter_num=2).save(tmp_path / "ckpt.pt")
    assert Checkpoint.load(tmp_path / "best.pt").iter_num == 1
    assert not (tmp_path / "best.pt.tmp").exists()


@pytest.mark.parametrize("config", ["{not json", '{"config": {}}'])
def test_a_folder_that_is_no_run_is_one_clear_error(trained_reference, tmp_path, capsys, config):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text((Path(trained_reference.out_dir) / "metrics.jsonl").read_text())
    (broken / "config.json").write_text(config)
    assert runs.main(["compare", f"x={broken}"]) == 1
    assert "holds no readable run" in capsys.readouterr().err


def test_compare_refuses_two_runs_of_one_name(tmp_path, capsys):
    """Two folders both named `a` used to keep only the second, silently."""
    for parent in ("x", "y"):
        (tmp_path / parent / "a").mkdir(parents=True)
    assert runs.main(["compare", str(tmp_path / "x" / "a"), str(tmp_path / "y" / "a")]) == 1
    assert "two runs are named a: name each, as NAME=OUT_DIR" in capsys.readouterr().err
