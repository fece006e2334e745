import bench


def test_a_bad_config_is_one_clear_error(capsys):
    assert bench.main(["--variants=eager", "--n_layers=2"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown config key 'n_layers'")


def test_the_distill_variant_times_the_step_with_its_teacher(tmp_path, capsys):
    import torch

    from checkpoint import Checkpoint
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    Checkpoint.of(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32))).save(tmp_path / "teacher.pt")
    tiny = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=2"]
    tiny += ["--gradient_accumulation_steps=1", "--device=cpu", "--compile=False"]
    argv = ["--variants=distill", "--steps=2", "--warmup=1", "--bench_peak_flops=1e12", *tiny]
    assert bench.main([*argv, f"--teacher={tmp_path / 'teacher.pt'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[0] == "distill" and float(lines[2].split()[1]) > 0
    assert bench.main(argv) == 2
    assert "the distill variant needs a teacher" in capsys.readouterr().err
    assert bench.main([*argv, f"--teacher={tmp_path / 'nowhere.pt'}"]) == 1
    err = capsys.readouterr().err
    assert "error: variant distill:" in err and "nowhere.pt" in err
