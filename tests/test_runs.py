import errno
import json
import os
import statistics
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import runs
import train
from checkpoint import Checkpoint
from configurator import parse_config
from tests.conftest import write_config_file


@pytest.mark.slow
def test_compare_prints_the_table_and_saves_the_plot(trained_reference, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    code = runs.main(["compare", f"ref={trained_reference.out_dir}", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ref" in printed and " 4 " in printed and "20" in printed
    rows = json.loads(out.with_suffix(".json").read_text())
    assert rows[0]["layers"] == 4 and rows[0]["steps"] == 20
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
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


@pytest.mark.slow
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
    runs.link_checkpoint(tmp_path / "ckpt.pt", tmp_path / "best.pt")
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "ckpt.pt").read_bytes()
    Checkpoint(model={"w": torch.zeros(3)}, model_args={}, iter_num=2).save(tmp_path / "ckpt.pt")
    assert Checkpoint.load(tmp_path / "best.pt").iter_num == 1
    assert not (tmp_path / "best.pt.tmp").exists()


@pytest.mark.slow
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


def test_a_run_folder_from_before_the_config_grouping_compares_with_todays_config(tmp_path):
    """Its config.json holds dataset beside data_dir and eval_data_dirs as a comma string: the same plan, not
    another one; another held-out corpus is still refused."""
    config = tmp_path / "c.py"
    config.write_text("data_dir = 'data/python'\neval_data_dirs = ['data/shakespeare']\nmax_iters = 20\n")
    older = asdict(parse_config([str(config)])) | {"dataset": "python", "eval_data_dirs": "data/shakespeare"}
    fake_run(tmp_path / "run", [4.0, 3.0, 2.5], config=older)
    run = runs.read_run(tmp_path / "run")
    runs.refuse_changed_plan(run, str(config), [])
    with pytest.raises(runs.RunError, match=r"eval_data_dirs=\['data/shakespeare'\]; .* eval_data_dirs=\['data/x'\]"):
        runs.refuse_changed_plan(run, str(config), ["--eval_data_dirs=data/x"])


def fake_run(out_dir: Path, losses: list[float], n_layer: int = 2, config: dict | None = None) -> None:
    """A run folder whose evals at steps 0, 10, 20 have these val losses."""
    out_dir.mkdir(parents=True)
    model = {"model_args": {"n_layer": n_layer}, "params": 1000, "scaling_params": 500}
    config = config or {"max_iters": 10 * (len(losses) - 1), "data_dir": "data/shakespeare"}
    record = {"config": config, "model": model, "inherit": None, "continued_from": None}
    (out_dir / "config.json").write_text(json.dumps(record))
    evals = [{"kind": "eval", "iter": 10 * i, "tokens": 640 * i, "val_loss": v} for i, v in enumerate(losses)]
    (out_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))


def test_compare_over_seeds_gives_mean_spread_and_differences_paired_by_seed(tmp_path, capsys):
    finals = {
        "ref": {1: 6.0, 2: 6.2, 3: 5.9},
        "student": {1: 5.7, 2: 5.8, 3: 5.75},
        "scratch": {1: 5.95, 2: 6.1, 3: 6.0},
    }
    for name, by_seed in finals.items():
        for seed, loss in by_seed.items():
            fake_run(tmp_path / str(seed) / name, [10.8, loss + 1, loss])
    out = tmp_path / "cmp.png"
    argv = ["compare", *(f"{n}={tmp_path}/{{seed}}/{n}" for n in finals), "--seeds", "1,2,3", "--out", str(out)]
    assert runs.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.with_suffix(".json").read_text())
    for row, (name, by_seed) in zip(result["runs"], finals.items(), strict=True):
        assert row["model"] == name and row["seeds"] == [1, 2, 3]
        assert row["val_loss"] == pytest.approx(statistics.mean(by_seed.values()))
        assert row["val_loss_sd"] == pytest.approx(statistics.stdev(by_seed.values()))
        assert f"{statistics.mean(by_seed.values()):.4f}±{statistics.stdev(by_seed.values()):.4f}" in printed
    by_pair = {tuple(d["rows"]): d for d in result["differences"]}
    student_vs_ref = [finals["student"][s] - finals["ref"][s] for s in (1, 2, 3)]
    assert by_pair[("ref", "student")]["mean"] == pytest.approx(statistics.mean(student_vs_ref))
    assert by_pair[("ref", "student")]["sd"] == pytest.approx(statistics.stdev(student_vs_ref))
    assert by_pair[("ref", "student")]["lower"] == 3 and by_pair[("ref", "scratch")]["lower"] == 2
    assert "student - ref:" in printed and "lower in 3, higher in 0 of 3 seeds (holds in every seed)" in printed
    assert "scratch - ref:" in printed and "lower in 2, higher in 1 of 3 seeds (not the same sign in every" in printed
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_compare_over_seeds_refuses_unfinished_seeds_and_folders_without_seed(tmp_path, capsys):
    fake_run(tmp_path / "1" / "a", [10.8, 7.0, 6.0])
    fake_run(tmp_path / "2" / "a", [10.8, 7.0])  # interrupted after step 10
    assert runs.main(["compare", f"a={tmp_path}/{{seed}}/a", "--seeds", "1,2"]) == 1
    assert "a: seed 2 ran 10 steps of 2 layers, seed 1 20 of 2" in capsys.readouterr().err
    assert runs.main(["compare", f"a={tmp_path}/1/a", "--seeds", "1,2"]) == 1
    assert "holds no {seed}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runs.main(["compare", f"a={tmp_path}/{{seed}}/a", "--seeds", "1,1"])
    assert "names a seed twice" in capsys.readouterr().err


@pytest.mark.slow
def test_train_over_seeds_runs_each_seed_in_its_folder_and_skips_finished_ones(tiny_config, tmp_path, capsys):
    cfg = tiny_config(max_iters=4, lr_decay_iters=4, eval_interval=2)
    config = write_config_file(tmp_path / "tiny.py", cfg, max_iters=cfg.max_iters)
    argv = ["train", "--config", str(config), "--seeds", "1,2", "--out_dir", f"{tmp_path}/{{seed}}/run"]
    assert runs.main([*argv, "--", "--eval_iters=3"]) == 0
    first, second = runs.read_run(tmp_path / "1" / "run"), runs.read_run(tmp_path / "2" / "run")
    assert (first.config["seed"], second.config["seed"], first.config["eval_iters"]) == (1, 2, 3)
    assert first.finished() and second.finished()
    assert first.last_eval["val_loss"] != second.last_eval["val_loss"]  # other batches, other initialisation
    capsys.readouterr()
    assert runs.main([*argv, "--", "--eval_iters=3"]) == 0
    assert "2/run: finished earlier" in capsys.readouterr().out
    # the same folders asked for another estimate are refused, not taken for runs of it
    assert runs.main(argv) == 1
    assert f"{tmp_path}/1/run trained with eval_iters=3; this command asks for eval_iters=4" in capsys.readouterr().err
    assert runs.main(["train", "--config", str(config), "--seeds", "1", "--out_dir", str(tmp_path / "x")]) == 1
    assert "holds no {seed}" in capsys.readouterr().err


def test_ties_and_per_corpus_signs_are_never_read_as_a_difference_that_holds(tmp_path, capsys):
    """Equal losses are no effect; with --corpus each corpus's sign is counted by itself."""
    finals = {"a": {1: 6.0, 2: 6.1, 3: 6.2}, "b": {1: 6.0, 2: 6.3, 3: 6.4}}
    for name, by_seed in finals.items():
        for seed, loss in by_seed.items():
            fake_run(tmp_path / str(seed) / name, [10.8, loss + 1, loss])
    argv = ["compare", *(f"{n}={tmp_path}/{{seed}}/{n}" for n in finals), "--seeds", "1,2,3"]
    assert runs.main(argv) == 0
    assert "b - a: 0.1333±0.1155, lower in 0, higher in 2, equal in 1 of 3 seeds (not the same sign" in (
        capsys.readouterr().out
    )
    rows = [
        {"model": n, "val_loss_by_seed": [4.0, 4.0], "val_losses_by_seed": {"c": l}}
        for n, l in (("x", [4.0, 4.4]), ("y", [4.5, 4.1]))
    ]
    by_corpus = {d["corpus"]: d for d in runs.paired_differences(rows, ("c",))}
    assert (by_corpus[""]["equal"], by_corpus["c"]["lower"], by_corpus["c"]["higher"]) == (2, 1, 1)


def test_compare_over_seeds_refuses_what_would_pull_the_mean(tmp_path, capsys):
    fake_run(tmp_path / "1" / "a", [10.8, 7.0, 6.0])
    fake_run(tmp_path / "2" / "a", [10.8, 7.0, float("nan")])
    assert runs.main(["compare", f"a={tmp_path}/{{seed}}/a", "--seeds", "1,2"]) == 1
    assert "a: seed 2's final val loss in" in capsys.readouterr().err
    record = json.loads((tmp_path / "1" / "a" / "config.json").read_text())
    record["config"]["seed"] = 9
    (tmp_path / "1" / "a" / "config.json").write_text(json.dumps(record))
    assert runs.main(["compare", f"a={tmp_path}/{{seed}}/a", "--seeds", "1,2"]) == 1
    assert "/1/a was trained with seed 9, not 1" in capsys.readouterr().err
    fake_run(tmp_path / "1" / "b", [10.8, 7.0, 6.0])
    fake_run(tmp_path / "2" / "b", [10.8, 7.0, 6.5])
    metrics = tmp_path / "2" / "b" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace('"iter": 10,', '"iter": 5,'))  # evaluated mid-way elsewhere
    assert runs.main(["compare", f"b={tmp_path}/{{seed}}/b", "--seeds", "1,2", "--out", str(tmp_path / "b.png")]) == 1
    assert "b: seeds 1 and 2 evaluated at different steps" in capsys.readouterr().err
    for bad in ("-1,2", "1_0,2", "1.5"):
        with pytest.raises(SystemExit):
            runs.main(["compare", f"a={tmp_path}/{{seed}}/a", f"--seeds={bad}"])
        assert "integers from 0" in capsys.readouterr().err


def test_runs_laid_out_by_seed_last_are_named_by_their_folder(tmp_path, capsys):
    for seed in (1, 2):
        fake_run(tmp_path / "ref" / str(seed), [10.8, 7.0, 6.0 + seed / 10])
        fake_run(tmp_path / "student" / str(seed), [10.8, 7.0, 5.0 + seed / 10])
    assert runs.main(["compare", f"{tmp_path}/ref/{{seed}}", f"{tmp_path}/student/{{seed}}", "--seeds", "1,2"]) == 0
    assert "student - ref: -1.0000±0.0000" in capsys.readouterr().out


def test_a_run_stopped_by_a_signal_is_not_taken_for_finished(tiny_config, tmp_path, monkeypatch, capsys):
    """train.py saves and exits 0 on SIGTERM: the seed loop must stop there, not go on to the next seed."""
    cfg = tiny_config(max_iters=20, lr_decay_iters=20, eval_interval=10)
    config = write_config_file(tmp_path / "tiny.py", cfg, max_iters=cfg.max_iters)
    # a run of this config stopped at step 10 of 20, as a signal leaves it, and a "training" process that
    # exits 0 at once
    fake_run(tmp_path / "1" / "run", [10.8, 7.0])
    record = json.loads((tmp_path / "1" / "run" / "config.json").read_text())
    record["config"] = {"max_iters": 20}
    (tmp_path / "1" / "run" / "config.json").write_text(json.dumps(record))
    (tmp_path / "1" / "run" / "ckpt.pt").write_bytes(b"")
    monkeypatch.setattr(runs, "wait_for", lambda cmd: 0)
    argv = ["train", "--config", str(config), "--seeds", "1,2", "--out_dir", f"{tmp_path}/{{seed}}/run"]
    assert runs.main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: the run in {tmp_path / '1' / 'run'} was interrupted; run the same command to resume" in err
    assert not (tmp_path / "2").exists()


def test_a_torn_last_metrics_line_is_ignored_and_reported_and_a_bad_one_elsewhere_named(tmp_path, capsys):
    fake_run(tmp_path / "a", [6.0, 5.5, 5.0])
    metrics = tmp_path / "a" / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + '{"kind": "eval", "iter": 30, "tok')  # a crash in the middle of an append
    assert [r["iter"] for r in runs.read_run(tmp_path / "a").records] == [0, 10, 20]
    assert f"warning: {metrics}: its last line is torn (a crash mid-write?); ignored" in capsys.readouterr().err
    assert runs.main(["compare", str(tmp_path / "a")]) == 0
    runs.MetricsLog(tmp_path / "a", resume_iter=10)  # a resume keeps what its checkpoint covers, nothing torn
    assert metrics.read_text() == "".join(whole.splitlines(keepends=True)[:2])
    metrics.write_text(whole.replace("\n", "\nnot json\n", 1))
    with pytest.raises(runs.RunError, match=f"{metrics}: line 2 is not JSON"):
        runs.read_run(tmp_path / "a")
    with pytest.raises(runs.RunError, match=f"{metrics}: line 2 is not JSON"):
        runs.MetricsLog(tmp_path / "a", resume_iter=10)


def test_compare_writes_a_diverged_runs_loss_as_null_not_nan(tmp_path, capsys):
    fake_run(tmp_path / "ok", [6.0, 5.5])
    fake_run(tmp_path / "diverged", [6.0, float("nan")])
    out = tmp_path / "compare.png"
    assert runs.main(["compare", str(tmp_path / "ok"), str(tmp_path / "diverged"), "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert [row["val_loss"] for row in rows] == [5.5, None]


def test_compare_names_the_plot_file_it_writes(tmp_path, capsys):
    """--out without a suffix: matplotlib writes NAME.png, and the message names that file."""
    fake_run(tmp_path / "ok", [6.0, 5.5])
    assert runs.main(["compare", str(tmp_path / "ok"), "--out", str(tmp_path / "cmp")]) == 0
    assert f"wrote {tmp_path / 'cmp.png'} and {tmp_path / 'cmp.json'}" in capsys.readouterr().out
    assert (tmp_path / "cmp.png").stat().st_size > 0 and not (tmp_path / "cmp").exists()


def test_compare_names_a_run_that_diverged(tmp_path, capsys):
    """train.py records the divergence; the run's last eval, of before it, is no result to read as one."""
    fake_run(tmp_path / "ok", [6.0, 5.5])
    fake_run(tmp_path / "diverged", [6.0, 5.9])
    with open(tmp_path / "diverged" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "diverged", "iter": 15, "error": "loss is nan at iter 15"}) + "\n")
    out = tmp_path / "compare.png"
    assert runs.main(["compare", f"ok={tmp_path / 'ok'}", f"b={tmp_path / 'diverged'}", "--out", str(out)]) == 0
    assert "b (diverged)" in capsys.readouterr().out
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [(row["model"], row["diverged"]) for row in rows] == [("ok", False), ("b (diverged)", True)]


def test_a_resumed_run_is_compared_by_where_its_model_began(tmp_path):
    """Once resumed, config.json records init_from='resume' (and, resumed by the runner, no inherit_from): the
    run's start is what its inherit or continued_from record says, and a plan from elsewhere is refused."""
    config = tmp_path / "c.py"
    config.write_text("data_dir = 'data/shakespeare'\nmax_iters = 20\n")
    resumed = asdict(parse_config([str(config), "--init_from=resume"]))
    fake_run(tmp_path / "student", [6.0, 5.5, 5.0], config=resumed)
    record = json.loads((tmp_path / "student" / "config.json").read_text())
    record["inherit"] = {"source": "ref/ckpt.pt", "reference_n_layer": 4}
    (tmp_path / "student" / "config.json").write_text(json.dumps(record))
    student = runs.read_run(tmp_path / "student")
    runs.refuse_changed_plan(student, str(config), ["--init_from=inherit", "--inherit_from=ref/ckpt.pt"])
    runs.refuse_changed_plan(student, str(config), ["--init_from=resume"])
    began = "init_from='inherit', inherit_from='ref/ckpt.pt'; this command asks for init_from='scratch', inherit_"
    with pytest.raises(runs.RunError, match=began):
        runs.refuse_changed_plan(student, str(config), [])
    with pytest.raises(runs.RunError, match="inherit_from='ref/ckpt.pt'; this command asks for inherit_from='x.pt'"):
        runs.refuse_changed_plan(student, str(config), ["--init_from=inherit", "--inherit_from=x.pt"])
    fake_run(tmp_path / "scratch", [6.0, 5.5, 5.0], config=resumed)
    scratch = runs.read_run(tmp_path / "scratch")
    runs.refuse_changed_plan(scratch, str(config), [])
    with pytest.raises(runs.RunError, match="init_from='scratch'; this command asks for init_from='ref/ckpt.pt'"):
        runs.refuse_changed_plan(scratch, str(config), ["--init_from=ref/ckpt.pt"])


def test_compare_refuses_an_out_of_no_plot_format_before_the_work(tmp_path, capsys):
    """matplotlib takes a name's suffix for its format: x.json or lr_0.5 ended in its traceback after all the
    reading. A name that names no format is refused at once, with the name to give."""
    fake_run(tmp_path / "ok", [6.0, 5.5])
    for name, suffix in (("x.json", ".json"), ("x.tar", ".tar"), ("lr_0.5", ".5"), ("results.v2", ".v2")):
        assert runs.main(["compare", str(tmp_path / "ok"), "--out", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert f"error: --out {tmp_path / name}: matplotlib writes no {suffix!r} plot (formats: " in err
        assert f"e.g. {tmp_path / name}.png" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ok"]
    assert runs.main(["compare", str(tmp_path / "ok"), "--out", str(tmp_path / "lr_0.5.SVG")]) == 0
    assert (tmp_path / "lr_0.5.SVG").read_text().startswith("<?xml") and (tmp_path / "lr_0.5.json").exists()


def test_compare_writes_neither_into_a_run_folder_nor_over_a_file_it_did_not_write(tmp_path, capsys):
    """--out RUN/config.png wrote the table over the run's own config.json; a table or plot of the same name
    that no compare wrote is someone's file too. An earlier compare's plot and table are rewritten."""
    fake_run(tmp_path / "ok", [6.0, 5.5])
    run_files = {path: path.read_bytes() for path in (tmp_path / "ok").iterdir()}
    assert runs.main(["compare", str(tmp_path / "ok"), "--out", str(tmp_path / "ok" / "config.png")]) == 1
    assert f"{tmp_path / 'ok'} is a training run's folder: write the comparison elsewhere" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in (tmp_path / "ok").iterdir()} == run_files
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    (tmp_path / "figure.png").write_bytes(b"\x89PNG mine")
    for out, other in (("notes.png", "notes.json"), ("figure.png", "figure.png")):
        assert runs.main(["compare", str(tmp_path / "ok"), "--out", str(tmp_path / out)]) == 1
        assert f"{tmp_path / other} exists and is no output of runs.py compare" in capsys.readouterr().err
    assert (tmp_path / "notes.json").read_text() == '{"mine": 1}' and not (tmp_path / "notes.png").exists()
    assert (tmp_path / "figure.png").read_bytes() == b"\x89PNG mine"
    for _ in range(2):  # the second rewrites the first's plot and table
        assert runs.main(["compare", str(tmp_path / "ok"), "--out", str(tmp_path / "cmp.png")]) == 0
    assert json.loads((tmp_path / "cmp.json").read_text())[0]["val_loss"] == 5.5
