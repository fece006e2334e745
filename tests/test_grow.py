import json
from pathlib import Path

import pytest
import torch

import grow
from checkpoint import Checkpoint
from tests.conftest import write_config_file


@pytest.mark.slow
def test_growth_stops_at_the_first_match(trained_reference, tmp_path, capsys):
    config = write_config_file(tmp_path / "grow_config.py", trained_reference, max_iters=10, lr_decay_iters=10)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    args = ["--inherit_from", ref, "--config", str(config), "--out_dir", str(tmp_path / "g"), "--step", "1"]
    assert grow.main([*args, "--target", "100"]) == 0
    state = json.loads((tmp_path / "g" / "grow.json").read_text())
    assert [r["layers"] for r in state["rounds"]] == [2]  # half the reference, matched at once
    assert (tmp_path / "g" / "grow.png").stat().st_size > 0


@pytest.mark.slow
def test_growth_goes_to_full_depth_and_resumes_finished_rounds(trained_reference, tmp_path, capsys, monkeypatch):
    config = write_config_file(tmp_path / "grow_config.py", trained_reference, max_iters=10, lr_decay_iters=10)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    out = tmp_path / "g"
    args = [
        "--inherit_from",
        ref,
        "--config",
        str(config),
        "--out_dir",
        str(out),
        "--start_depth",
        "2",
        "--target",
        "-1",
    ]
    assert grow.main(args) == 0
    state = json.loads((out / "grow.json").read_text())
    assert [r["layers"] for r in state["rounds"]] == [2, 4]  # never matched: stops at the reference's depth
    assert "no student matched the target" in capsys.readouterr().out
    times = [r["time_s"] for r in state["rounds"]]
    assert all(t > 0 for t in times)  # each round's training, timed
    # Interrupted after round n=4 trained but before it was recorded: the rerun trains nothing again.
    state["rounds"] = state["rounds"][:1]
    (out / "grow.json").write_text(json.dumps(state))
    mtimes = {n: (out / f"n{n}" / "ckpt.pt").stat().st_mtime_ns for n in (2, 4)}
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("mmap")) or real_load(*a, **k))
    assert grow.main(args) == 0
    assert loads == [True]  # only the reference's description, through a memory map; no round's checkpoint
    assert f"{out / 'n2'}: finished earlier" in capsys.readouterr().out
    assert {n: (out / f"n{n}" / "ckpt.pt").stat().st_mtime_ns for n in (2, 4)} == mtimes
    rerun = json.loads((out / "grow.json").read_text())["rounds"]
    assert [r["time_s"] for r in rerun] == times  # a finished round is not timed again
    assert [r["layers"] for r in json.loads((out / "grow.json").read_text())["rounds"]] == [2, 4]


@pytest.mark.slow
def test_finished_rounds_of_another_budget_or_reference_are_refused_and_the_target_is_the_new_one(
    trained_reference, tmp_path, capsys
):
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=4, lr_decay_iters=4, eval_interval=2)
    ref = tmp_path / "ref.pt"
    Checkpoint.load(Path(trained_reference.out_dir) / "ckpt.pt").save(ref)
    out = tmp_path / "g"
    args = ["--inherit_from", str(ref), "--config", str(config), "--out_dir", str(out), "--target", "100"]
    assert grow.main(args) == 0
    val_loss = json.loads((out / "grow.json").read_text())["rounds"][0]["val_loss"]
    assert grow.main([*args[:-1], "50"]) == 0  # the same rounds against another target: reused, and recorded
    state = json.loads((out / "grow.json").read_text())
    assert state["target"] == 50 and state["rounds"][0]["gap"] == pytest.approx(val_loss - 50)
    capsys.readouterr()
    assert grow.main([*args, "--", "--max_iters=6", "--lr_decay_iters=6"]) == 1
    assert "trained with max_iters=4, lr_decay_iters=4; this command asks for max_iters=6" in capsys.readouterr().err
    replaced = Checkpoint.load(ref)
    replaced.model = {k: v + 0.01 for k, v in replaced.model.items()}
    replaced.save(ref)
    assert grow.main(args) == 1
    assert f"{out / 'n2'} inherited from another reference file" in capsys.readouterr().err


@pytest.mark.slow
def test_the_default_target_is_the_reference_checkpoints_val_loss(trained_reference, tmp_path, capsys):
    ref = Checkpoint.load(Path(trained_reference.out_dir) / "ckpt.pt")
    ref.best_val_loss = 100.0  # a target the first round reaches, to show where the target comes from
    ref.save(tmp_path / "ref.pt")
    config = write_config_file(tmp_path / "grow_config.py", trained_reference, max_iters=10, lr_decay_iters=10)
    args = ["--inherit_from", str(tmp_path / "ref.pt"), "--config", str(config), "--out_dir", str(tmp_path / "g")]
    assert grow.main(args) == 0
    state = json.loads((tmp_path / "g" / "grow.json").read_text())
    assert state["target"] == 100.0 and [r["layers"] for r in state["rounds"]] == [2]
    assert "target val loss 100.0000 (4-layer reference" in capsys.readouterr().out


def test_growth_without_a_reference_checkpoint_is_a_clear_error(tmp_path, capsys):
    args = ["--inherit_from", str(tmp_path / "missing.pt"), "--config", "config/train_shakespeare.py"]
    assert grow.main([*args, "--out_dir", str(tmp_path / "g")]) == 1
    assert "missing.pt not found" in capsys.readouterr().err


def test_growth_command_line_help_runs(capsys):
    with pytest.raises(SystemExit) as e:
        grow.main(["--help"])
    assert e.value.code == 0 and "--start_depth" in capsys.readouterr().out


def test_a_hugging_face_reference_needs_a_target_and_gives_its_depth(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=6, n_head=2, n_embd=32, n_positions=32)).save_pretrained(tmp_path / "hf")
    assert grow.reference_facts(str(tmp_path / "hf")) == (6, None)
    args = [
        "--inherit_from",
        str(tmp_path / "hf"),
        "--config",
        "config/train_shakespeare.py",
        "--out_dir",
        str(tmp_path / "g"),
    ]
    assert grow.main(args) == 1
    assert "records no val loss; give --target" in capsys.readouterr().err


def test_a_hub_reference_that_cannot_be_reached_is_one_clear_error(tmp_path, capsys):
    args = ["--inherit_from", "nobody/no-such-model", "--config", "config/train_shakespeare.py"]
    assert grow.main([*args, "--out_dir", str(tmp_path / "g")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.slow
def test_a_diverged_round_ends_the_growth_and_matches_nothing(trained_reference, tmp_path, capsys):
    """Its last good val loss (here far below the target) is no result: no match, no deeper round, no retrain."""
    config = write_config_file(tmp_path / "c.py", trained_reference, max_iters=4, lr_decay_iters=4, eval_interval=2)
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    args = ["--inherit_from", ref, "--config", str(config), "--out_dir", str(tmp_path / "g"), "--target", "100"]
    args += ["--", "--learning_rate=1e30", "--min_lr=1e30", "--warmup_iters=0"]
    assert grow.main(args) == 0
    out = capsys.readouterr().out
    assert "inheritune n=2 (diverged)" in out and "no student matched the target" in out
    rounds = json.loads((tmp_path / "g" / "grow.json").read_text())["rounds"]
    assert [(r["layers"], r["diverged"], r["gap"]) for r in rounds] == [(2, True, None)]
    assert grow.main(args) == 0
    assert f"{tmp_path / 'g' / 'n2'}: diverged earlier (at step " in capsys.readouterr().out
