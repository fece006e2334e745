"""recipe.py: every way of building the small model on one budget, with a report."""

import json
import statistics
from pathlib import Path

import pytest

import recipe
from checkpoint import Checkpoint
from runs import read_run
from tests.conftest import ROOT, write_config_file


@pytest.mark.slow
def test_two_methods_train_side_by_side_report_and_resume_without_retraining(trained_reference, tmp_path, capsys):
    # the students' block_size (16) is below the reference's (32) and --seq_len: bi measures 16 tokens, and so
    # must the analysis whose choice the report prints
    config = write_config_file(
        tmp_path / "c.py", trained_reference, max_iters=6, lr_decay_iters=6, eval_interval=3, block_size=16
    )
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "r"
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "first,bi, first,scratch-2x"]
    argv += ["--out_dir", str(out), "--num_seqs", "4", "--seq_len", "32"]
    assert recipe.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert [r["method"] for r in report["rows"]] == ["reference", "first", "bi", "scratch-2x"]
    assert rows["first"]["inherited_layers"] == [0, 1] and rows["first"]["steps"] == 6
    assert rows["bi"]["inherited_layers"] == report["analysis"]["choices"]["2"]["bi"]
    chosen_by = json.loads((out / "n2" / "bi" / "config.json").read_text())["inherit"]["chosen_by"]
    assert chosen_by["block_influence"] == pytest.approx(report["analysis"]["block_influence"], abs=1e-6)
    # the reference's own training (20 steps of 4 x 2 sequences of 32), evaluated on the students' batches
    assert (rows["reference"]["steps"], rows["reference"]["tokens"]) == (20, 20 * 4 * 2 * 32)
    assert rows["scratch-2x"]["steps"] == 12 and rows["scratch-2x"]["inherited_layers"] is None
    assert rows["reference"]["layers"] == 4 and rows["reference"]["gap"] is None
    assert rows["first"]["gap"] == pytest.approx(rows["first"]["val_loss"] - rows["reference"]["val_loss"])
    assert all(r["time_s"] > 0 for name, r in rows.items() if name != "reference")
    # params as the checkpoint's tensors hold them (no padding rows of the vocabulary; the tied head once; wpe
    # left out, GPT-2's way)
    student = Checkpoint.load(out / "n2" / "first" / "ckpt.pt").model
    tensors = {t.data_ptr(): t.numel() for k, t in student.items() if k != "transformer.wpe.weight"}
    assert rows["first"]["params"] == sum(tensors.values())
    # tokens seen: an inherited student carries the reference's 20 x 4 x 2 x 32, one from scratch nothing
    assert rows["first"]["tokens_seen"] == rows["first"]["tokens"] + 20 * 4 * 2 * 32
    assert rows["scratch-2x"]["tokens_seen"] == rows["scratch-2x"]["tokens"]
    steps = [r["ms_per_iter"] for r in read_run(out / "n2" / "first").records if r["kind"] == "train"]
    assert rows["first"]["ms_per_iter"] == statistics.median(steps) > 0 and len(steps) == 6
    markdown = (out / "report.md").read_text()
    assert "| first | 2 | 0,1 |" in markdown and "curves.png" in markdown
    assert (out / "curves.png").stat().st_size > 0 and (out / "analysis" / "layers.png").stat().st_size > 0
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("n2/*/ckpt.pt")}
    capsys.readouterr()
    assert recipe.main(argv) == 0
    assert "finished earlier" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("n2/*/ckpt.pt")} == mtimes
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]
    # another budget in the same out_dir is refused, not reported as the finished runs of the old one
    assert recipe.main([*argv, "--", "--max_iters=7"]) == 1
    assert "max_iters: 6 then, 7 now (--max_iters after '--') in " in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]
    # another reference under the same path is refused: the finished students inherited from the old one
    replaced = Checkpoint.load(ref)
    replaced.model = {k: v + 0.01 for k, v in replaced.model.items()}
    replaced.save(ref)
    assert recipe.main(argv) == 1
    assert f"{ref} has changed since the runs in {out} were trained from it" in capsys.readouterr().err


@pytest.mark.slow
def test_a_rerun_with_a_changed_flag_is_refused_naming_the_flag_and_the_runs_it_changes(
    trained_reference, tmp_path, capsys
):
    """Not the first run folder the rerun happens to reach (the reference's evaluation) and train.py's key, but
    what the user changed, where, and every run it was in; before the analysis is measured again."""
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=2, lr_decay_iters=2, eval_interval=2)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "r"
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "first"]
    argv += ["--out_dir", str(out), "--num_seqs", "4", "--seq_len", "32"]
    assert recipe.main(argv) == 0
    analysis = (out / "analysis" / "analysis.json").read_text()
    capsys.readouterr()
    assert recipe.main([*argv, "--", "--learning_rate=0.001"]) == 1
    lr = trained_reference.learning_rate
    changed = f"learning_rate: {lr!r} then, 0.001 now (--learning_rate after '--') in {out / 'reference'}, "
    assert changed + f"{out / 'n2' / 'first'}. Give another --out_dir" in capsys.readouterr().err
    assert recipe.main([*argv, "--num_seqs", "5"]) == 1
    changed = f"inherit_measure_seqs: 4 then, 5 now (recipe.py --num_seqs) in {out / 'n2' / 'first'}. Give"
    assert changed in capsys.readouterr().err
    assert (out / "analysis" / "analysis.json").read_text() == analysis


@pytest.mark.slow
def test_a_reference_replaced_after_an_interrupted_call_is_refused_not_reported(trained_reference, tmp_path, capsys):
    """Killed while the first student trains (the analysis and the reference's evaluation done), the reference
    replaced by another model of its shape: the next call must not report the old model's numbers, and a
    report.json lost (or of an older version) cannot make the folder accept it either."""
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=2, lr_decay_iters=2, eval_interval=2)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "r"
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "first,scratch"]
    argv += ["--out_dir", str(out), "--num_seqs", "4", "--seq_len", "32"]

    def killed(*args):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr(recipe, "run_overrides", killed)  # as the first student starts
        with pytest.raises(KeyboardInterrupt):
            recipe.main(argv)
    assert (out / "reference" / "metrics.jsonl").exists() and (out / "analysis" / "analysis.json").exists()
    replaced = Checkpoint.load(ref)
    replaced.model = {k: v + 0.01 for k, v in replaced.model.items()}
    replaced.save(ref)
    capsys.readouterr()
    assert recipe.main(argv) == 1
    assert f"{ref} has changed since the runs in {out} were trained from it" in capsys.readouterr().err
    (out / "report.json").unlink()
    assert recipe.main(argv) == 1
    assert f"{out / 'reference'} was made from another reference file" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n_layer", "4"], "each depth must be in 1..3"),
        (["--n_layer", "2", "--methods", "first,middle"], "unknown methods ['middle']"),
        (["--n_layer", "x"], "expected depths like 12,16"),
        (
            ["--n_layer", "2", "--methods", "first", "--", "--n_embd=64", "--n_head=4"],
            "first take the reference's width: mismatched width",
        ),
        (["--n_layer", "2", "--methods", "first", "--tasks", "tiny_qa,no_such_task"], "task no_such_task: unknown"),
    ],
)
def test_bad_plans_are_refused_before_anything_trains(trained_reference, tmp_path, capsys, extra, message):
    config = write_config_file(tmp_path / "c.py", trained_reference)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    assert recipe.main(["--reference", ref, "--config", str(config), "--out_dir", str(tmp_path / "r"), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
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


@pytest.mark.slow
def test_grow_rounds_start_at_half_the_reference_without_lazy_layers_and_stop_at_its_loss(trained_reference, tmp_path):
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=2, lr_decay_iters=2, eval_interval=2)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "r"
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "first,grow"]
    argv += ["--out_dir", str(out), "--num_seqs", "4", "--seq_len", "32"]  # grow_step 2: rounds of 2, then 4
    assert recipe.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["analysis"]["lazy_layers"] == []
    rounds = [r for r in report["rows"] if r["method"] == "grow"]
    target = report["rows"][0]["val_loss"]
    assert [r["layers"] for r in rounds] == [2, 4][: len(rounds)]
    assert all(r["val_loss"] > target for r in rounds[:-1])
    assert rounds[-1]["val_loss"] <= target or rounds[-1]["layers"] == 4
    assert [r["inherited_layers"] for r in rounds] == [list(range(r["layers"])) for r in rounds]
    assert json.loads((out / "grow" / "grow.json").read_text())["target"] == target
    assert all(r["time_s"] > 0 for r in rounds)
    assert "| grow | 2 | 0,1 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_growth_plan_out_of_range_is_refused_before_anything_trains(trained_reference, tmp_path, capsys):
    config = write_config_file(tmp_path / "c.py", trained_reference)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "grow", "--grow_start", "4"]
    assert recipe.main([*argv, "--out_dir", str(tmp_path / "r")]) == 1
    assert "--grow_start in 1..3" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_half_width_student_trains_in_a_new_out_dir(trained_reference, tmp_path):
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=2, lr_decay_iters=2, eval_interval=2)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "new" / "r"
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "half_width"]
    assert recipe.main([*argv, "--out_dir", str(out), "--num_seqs", "4", "--seq_len", "32"]) == 0
    row = json.loads((out / "report.json").read_text())["rows"][1]
    assert (row["method"], row["layers"], row["steps"]) == ("half_width", 4, 2)
    assert json.loads((out / "half_width" / "config.json").read_text())["model"]["model_args"]["n_embd"] == 16


@pytest.mark.slow
def test_a_diverged_run_is_marked_the_others_go_on_and_it_is_not_retrained(trained_reference, tmp_path, capfd):
    """capfd: the growth loop is grow.py's own process, which writes to the file descriptors."""
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=4, lr_decay_iters=4, eval_interval=2)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "r"
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "2", "--methods", "scratch,first,grow"]
    argv += ["--out_dir", str(out), "--num_seqs", "4", "--seq_len", "32", "--grow_start", "2"]
    argv += ["--", "--learning_rate=1e30", "--min_lr=1e30", "--warmup_iters=0"]
    assert recipe.main(argv) == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [(r["method"], r["layers"], r["diverged"], r["gap"]) for r in rows[1:]] == [
        ("scratch", 2, True, None),
        ("first", 2, True, None),
        ("grow", 2, True, None),  # the growth loop stops at its diverged round
    ]
    assert (out / "report.md").read_text().count("diverged after step") == 3
    capfd.readouterr()
    assert recipe.main(argv) == 0
    assert capfd.readouterr().out.count("diverged earlier") == 3


@pytest.mark.slow
def test_several_depths_get_each_its_layer_choice_and_rows_named_by_depth(trained_reference, tmp_path):
    config = write_config_file(tmp_path / "c.py", trained_reference)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    argv = ["--reference", ref, "--config", str(config), "--n_layer", "1,2", "--num_seqs", "4", "--seq_len", "32"]
    argv += [
        "--out_dir",
        str(tmp_path / "r"),
        "--tasks",
        "tiny_qa",
        "--include_path",
        str(ROOT / "tests" / "lm_eval_tasks"),
    ]
    plan = recipe.make_plan(recipe.parse_args(argv), "python recipe.py ...")
    analysis = recipe.analyze_reference(plan, "")
    assert list(analysis["choices"]) == ["1", "2"] and analysis["choices"]["1"]["first"] == [0]
    assert analysis["choices"]["2"]["first"] == [0, 1]

    def row(method, layers, acc):
        scores = {"tiny_qa": {"acc": acc, "acc_stderr": 0.1}}
        size = {"method": method, "layers": layers, "inherited_layers": None, "params": 1e6, "steps": 2, "tokens": 64}
        return size | {"val_loss": 5.0, "val_losses": {}, "gap": None, "time_s": None, "tasks": scores}

    rows = [row("reference", 4, 0.5), row("first", 1, 0.25), row("first", 2, 0.75)]
    markdown = recipe.report_markdown({"reference": ref, "rows": rows, "corpora": []}, plan)
    assert "| first n=1 | 25.00 |" in markdown and "| first n=2 | 75.00 |" in markdown
