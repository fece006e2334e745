import json
import math
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

import analyze
import inherit
from analyze import (
    AnalysisSettings,
    analyze_model,
    angular_distance,
    attention_mass,
    attention_rank,
    block_influence,
    choose_layers,
    hidden_statistics,
    main,
)
from checkpoint import Checkpoint, load_model
from model import GPT, GPTConfig
from runtime import UserError
from tests.conftest import zero_output_blocks

T = 100


def uniform_causal(t: int) -> torch.Tensor:
    """Row i attends equally to positions 0..i, as a head with constant scores does."""
    return torch.ones(t, t).tril() / torch.arange(1, t + 1).unsqueeze(1)


def first_column(t: int) -> torch.Tensor:
    att = torch.zeros(t, t)
    att[:, 0] = 1.0
    return att


def test_identity_attention_has_full_rank_and_mass():
    eye = torch.eye(T)
    assert attention_rank(eye, tau=1.0).item() == T
    assert attention_mass(eye, eta=1.0).item() == T
    # Equal singular values and equal columns: 90 of 100 hold exactly 0.9 of the energy.
    assert attention_rank(eye, tau=0.9).item() == 90
    assert attention_mass(eye, eta=0.9).item() == 90


def test_all_weight_on_first_column_is_rank_one_mass_one():
    for share in (0.9, 1.0):
        assert attention_rank(first_column(T), tau=share).item() == 1
        assert attention_mass(first_column(T), eta=share).item() == 1


def test_uniform_causal_two_by_two_by_hand():
    # A = [[1, 0], [.5, .5]]: A A^T has trace 1.5 and determinant 0.25, so s1^2 = (1.5 + sqrt(1.25)) / 2,
    # a share of 0.8727 of the energy. Column norms^2 are 1.25 and 0.25: shares 0.833 and 0.167.
    att = uniform_causal(2)
    top_share = (1.5 + math.sqrt(1.25)) / 2 / 1.5
    assert attention_rank(att, tau=top_share - 0.01).item() == 1
    assert attention_rank(att, tau=top_share + 0.01).item() == 2
    assert attention_mass(att, eta=0.8).item() == 1
    assert attention_mass(att, eta=0.9).item() == 2


def test_uniform_causal_mass_matches_closed_form():
    # Column j holds sum_{i >= j} 1/(i+1)^2 of a total ||A||_F^2 = sum_i 1/(i+1), largest for j = 0.
    total = sum(1 / (i + 1) for i in range(T))
    shares = [sum(1 / (i + 1) ** 2 for i in range(j, T)) / total for j in range(T)]
    for eta in (0.5, 0.9, 0.99):
        expected = next(k for k in range(1, T + 1) if sum(shares[:k]) >= eta)
        assert attention_mass(uniform_causal(T), eta=eta).item() == expected


def test_metrics_are_per_matrix_over_a_batch():
    batch = torch.stack([torch.eye(T), first_column(T), uniform_causal(T)]).view(3, 1, 1, T, T)
    ranks = attention_rank(batch, tau=0.9).view(-1).tolist()
    assert ranks == [90, 1, attention_rank(uniform_causal(T), tau=0.9).item()]
    assert attention_mass(batch, eta=0.9).shape == (3, 1, 1)


def sink_model(sink_layers: list[int], n_layer: int = 4, heads: tuple[int, ...] = (0, 1, 2, 3)) -> GPT:
    """A random GPT whose `sink_layers` attend only to the first token in the given heads (all by default).

    Position 0 carries a large value in residual channel 0 that no other position has; a sink head's keys
    read channel 0 and its queries are a large constant, so every query scores the first key far above
    the others.
    """
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, n_layer=n_layer, n_head=4, n_embd=32, bias=True, dropout=0.0))
    C, hd = model.config.n_embd, model.config.n_embd // model.config.n_head
    with torch.no_grad():
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wpe.weight[:, 0] = 0.0
        model.transformer.wpe.weight[0, 0] = 100.0
        for layer in sink_layers:
            c_attn = model.transformer.h[layer].attn.c_attn
            for h in heads:
                q, k = slice(h * hd, (h + 1) * hd), slice(C + h * hd, C + (h + 1) * hd)
                c_attn.weight[q] = 0.0
                c_attn.weight[k] = 0.0
                c_attn.bias[q] = 10.0
                c_attn.bias[k] = 0.0
                c_attn.weight[k, 0] = 1.0
    return model


def save(model: GPT, path) -> str:
    Checkpoint.of(model).save(path)
    return str(path)


def settings_for(data_dir) -> AnalysisSettings:
    return AnalysisSettings(str(data_dir), num_seqs=6, seq_len=48, tau=0.9, eta=0.9, seed=0, batch_size=4)


def test_forced_sink_layers_are_flagged_lazy(shakespeare_dir, tmp_path):
    source = save(sink_model([2, 3]), tmp_path / "ckpt.pt")
    result = analyze_model(source, settings_for(shakespeare_dir), "cpu")
    assert result["lazy_layers"] == [2, 3]
    assert result["max_rank"][2] == result["max_rank"][3] == 1.0
    assert min(result["max_rank"][:2]) > 1.0
    assert result["avg_mass"][2] == result["avg_mass"][3] == 1.0
    assert result["suggestion"]["n_layer"] == 2
    assert result["suggestion"]["non_lazy_layers"] == [0, 1]
    assert shlex.split(result["suggestion"]["command"])[2:6] == ["--inherit_from", source, "--n_layer", "2"]
    assert "non_lazy_command" not in result["suggestion"]
    assert runs_as_printed(result["suggestion"]["command"], tmp_path).config.n_layer == 2


def runs_as_printed(command: str, folder: Path) -> GPT:
    """The student that a suggested command, run as printed from `folder`, writes."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "inherit.py"]
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert inherit.main(argv[2:]) == 0
        return load_model(argv[argv.index("--out") + 1])[0]
    finally:
        os.chdir(cwd)


def test_lazy_layer_in_the_middle_suggests_leading_layers_and_the_non_lazy_list(shakespeare_dir, tmp_path):
    source = save(sink_model([1, 3]), tmp_path / "ckpt.pt")
    result = analyze_model(source, settings_for(shakespeare_dir), "cpu")
    assert result["lazy_layers"] == [1, 3]
    assert result["suggestion"]["n_layer"] == 1
    assert result["suggestion"]["non_lazy_layers"] == [0, 2]
    assert "--inherit_layers 0,2" in result["suggestion"]["non_lazy_command"]
    assert runs_as_printed(result["suggestion"]["non_lazy_command"], tmp_path).config.n_layer == 2


def test_max_rank_is_the_largest_head_and_avg_mass_the_mean_head(shakespeare_dir, tmp_path):
    """One sink head among three ordinary ones: the layer is not lazy, and MaxRank and AvgMass are the max
    and the mean over heads that differ widely (a swap of the two would fail here)."""
    source = save(sink_model([2], heads=(1,)), tmp_path / "ckpt.pt")
    result = analyze_model(source, settings_for(shakespeare_dir), "cpu")
    ranks, masses = result["rank"][2], result["mass"][2]
    assert ranks[1] == 1.0 and masses[1] == 1.0 and min(ranks[0], ranks[2], ranks[3]) > 3.0  # 4, 1, 4, 4
    assert result["max_rank"][2] == max(ranks) > sum(ranks) / 4 + 0.5  # 4 against a mean of 3.25
    assert result["avg_mass"][2] == pytest.approx(sum(masses) / 4)
    assert result["avg_mass"][2] < max(masses) - 1.0  # 12.25 against 16
    assert 2 not in result["lazy_layers"]


def test_sequences_are_reproducible(shakespeare_dir, tmp_path):
    source = save(sink_model([]), tmp_path / "ckpt.pt")
    first = analyze_model(source, settings_for(shakespeare_dir), "cpu")
    again = analyze_model(source, settings_for(shakespeare_dir), "cpu")
    assert first["rank"] == again["rank"] and first["mass"] == again["mass"]
    assert first["lazy_layers"] == [] and first["suggestion"]["n_layer"] == 4


def test_command_writes_json_and_plots_and_compares(shakespeare_dir, tmp_path, capsys):
    ref = save(sink_model([2, 3]), tmp_path / "ref.pt")
    student = save(sink_model([], n_layer=2), tmp_path / "student.pt")
    out = tmp_path / "analysis"
    argv = ["--model", ref, "--compare", student, "--data", str(shakespeare_dir), "--out", str(out)]
    assert main([*argv, "--num_seqs", "4", "--seq_len", "32"]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert [m["source"] for m in analysis["models"]] == [ref, student]
    assert analysis["models"][0]["lazy_layers"] == [2, 3]
    assert analysis["settings"]["num_seqs"] == 4
    assert (out / "layers.png").stat().st_size > 0 and (out / "heads.png").stat().st_size > 0
    assert "lazy layers: [2, 3]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [(["--seq_len", "65"], "block_size"), (["--tau", "1.5"], "--tau"), (["--num_seqs", "0"], "--num_seqs")],
)
def test_bad_requests_fail_clearly(shakespeare_dir, tmp_path, capsys, extra, message):
    source = save(sink_model([]), tmp_path / "ckpt.pt")
    argv = ["--model", source, "--data", str(shakespeare_dir), "--out", str(tmp_path / "a"), *extra]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a" / "analysis.json").exists()


# ----------------------------------------------------------------------------- Block Influence, angular distance


def realistic_hidden(n_layer: int, batch: int = 3, t: int = 20, c: int = 16) -> torch.Tensor:
    """(n_layer + 1, B, T, C) hidden states of residual-stream magnitude, shifted off zero and unlike each
    other, so that a wrong axis or token gives a different number."""
    g = torch.Generator().manual_seed(0)
    return 3.0 * torch.randn(n_layer + 1, batch, t, c, generator=g) + torch.linspace(-2, 2, c)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_block_influence_is_one_minus_the_mean_token_cosine_by_hand():
    hidden = realistic_hidden(3)
    hidden[2] = hidden[1]  # block 1 is the identity
    hidden[3] = -hidden[2]  # block 2 reverses every direction
    bi = block_influence(hidden)
    assert bi.shape == (3, 3)
    h = hidden.double().numpy()
    for b in range(3):
        expected = 1 - np.mean([cosine(h[0, b, t], h[1, b, t]) for t in range(20)])
        assert bi[0, b].item() == pytest.approx(expected, abs=1e-6)
    assert bi[1].abs().max().item() < 1e-6 and bi[2].sub(2).abs().max().item() < 1e-6


def test_angular_distance_is_at_the_last_token_by_hand():
    hidden = realistic_hidden(4)
    hidden[3, :, -1] = hidden[1, :, -1]  # the span 1..3 returns the last token where it was
    d = angular_distance(hidden, 2)
    assert d.shape == (3, 3)  # starts 0, 1, 2 of a span of 2 in 4 layers
    h = hidden.double().numpy()
    for start in range(3):
        for b in range(3):
            expected = math.acos(cosine(h[start, b, -1], h[start + 2, b, -1])) / math.pi
            assert d[start, b].item() == pytest.approx(expected, abs=1e-6)
    assert d[1].abs().max().item() < 1e-6
    assert angular_distance(torch.stack([hidden[0], -hidden[0]]), 1).sub(1).abs().max().item() < 1e-6


def measures_of(bi: list[float], angular: dict[int, list[float]]) -> dict:
    return {"block_influence": bi, "angular_distance": {str(k): v for k, v in angular.items()}}


def test_layer_choices_keep_the_largest_bi_and_drop_the_closest_span_in_order():
    measures = measures_of([0.5, 0.1, 0.3, 0.05, 0.2, 0.2], {2: [0.4, 0.3, 0.1, 0.2, 0.5], 4: [0.3, 0.1, 0.2]})
    assert choose_layers("first", 4, measures) == (0, 1, 2, 3)
    assert choose_layers("bi", 4, measures) == (0, 2, 4, 5)
    assert choose_layers("bi", 3, measures) == (0, 2, 4)  # of two equal BIs the later goes
    assert choose_layers("angular", 4, measures) == (0, 1, 4, 5)  # d(2, 4) is the least: blocks 2, 3 go
    assert choose_layers("angular", 2, measures) == (0, 5)  # d(1, 5): blocks 1..4 go
    assert choose_layers("angular", 6, measures) == choose_layers("bi", 6, measures) == tuple(range(6))
    with pytest.raises(UserError, match="7 layers"):
        choose_layers("bi", 7, measures)
    with pytest.raises(UserError, match="unknown layer choice"):
        choose_layers("middle", 2, measures)


def test_hidden_states_are_the_residual_stream_the_logits_read():
    model = sink_model([], n_layer=3)
    idx = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    hidden = model.hidden_states(idx)
    assert hidden.shape == (4, 2, 16, 32)
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(16))
    torch.testing.assert_close(hidden[0], x, rtol=0, atol=0)
    torch.testing.assert_close(hidden[2], model.transformer.h[1](hidden[1])[0], rtol=0, atol=0)
    logits, _ = model(idx, idx)
    torch.testing.assert_close(model._logits(hidden[-1])[..., : model.config.vocab_size], logits)


def test_identity_blocks_measure_zero_and_are_the_ones_left_out(shakespeare_dir, tmp_path, capsys):
    """A 6-layer reference whose blocks 3 and 4 are the identity: their BI is 0 and the span of both has
    angular distance 0, so a 4-layer student by either measure keeps 0, 1, 2, 5; the printed commands build
    exactly those students and record why."""
    source = save(zero_output_blocks(sink_model([], n_layer=6), [3, 4]), tmp_path / "ref.pt")
    out = tmp_path / "analysis"
    argv = ["--model", source, "--data", str(shakespeare_dir), "--out", str(out), "--n_layer", "4"]
    assert main([*argv, "--num_seqs", "6", "--seq_len", "32", "--seed", "3"]) == 0
    result = json.loads((out / "analysis.json").read_text())["models"][0]
    bi = result["block_influence"]
    assert bi[3] == pytest.approx(0, abs=1e-6) and bi[4] == pytest.approx(0, abs=1e-6) and min(bi[:3] + bi[5:]) > 1e-3
    distance = result["angular_distance"]["2"]
    assert distance[3] == pytest.approx(0, abs=1e-6) and min(distance[:3] + distance[4:]) > 1e-2
    assert result["choices"]["layers"] == {"first": [0, 1, 2, 3], "bi": [0, 1, 2, 5], "angular": [0, 1, 2, 5]}
    assert "--inherit_layers bi" in capsys.readouterr().out
    ref = load_model(source)[0]
    for method in ("bi", "angular"):
        student = runs_as_printed(result["choices"]["commands"][method], tmp_path)
        assert student.config.n_layer == 4
        torch.testing.assert_close(student.transformer.h[3].state_dict(), ref.transformer.h[5].state_dict())
        record = torch.load(tmp_path / f"out-student-{method}-4" / "student.pt", weights_only=True)["inherit"]
        assert record["layers"] == [0, 1, 2, 5] and record["chosen_by"]["method"] == method
        # the analysis's one pass computes attention explicitly, inherit.py's measure by SDPA: rounding apart
        assert record["chosen_by"]["block_influence"] == pytest.approx(bi, rel=1e-5)
        assert record["chosen_by"]["seed"] == 3 and record["chosen_by"]["num_seqs"] == 6


def test_a_student_deeper_than_the_model_is_refused_before_any_measuring(shakespeare_dir, tmp_path, capsys):
    source = save(sink_model([], n_layer=4), tmp_path / "ckpt.pt")
    argv = ["--model", source, "--data", str(shakespeare_dir), "--out", str(tmp_path / "a"), "--n_layer", "5"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "--n_layer 5 is deeper than the 4-layer" in captured.err and "sequences" not in captured.out


def test_hidden_statistics_are_means_over_every_sequence_whatever_the_batches():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=4, n_head=2, n_embd=32, bias=True, dropout=0.0))
    seqs = torch.randint(0, 64, (7, 16))
    with torch.no_grad():
        hidden = model.hidden_states(seqs)
        whole = {"bi": block_influence(hidden).mean(dim=1), 2: angular_distance(hidden, 2).mean(dim=1)}
        batched = hidden_statistics(model, seqs, batch_size=3, device="cpu")  # batches of 3, 3 and 1
    assert whole["bi"].min() > 1e-3  # far from zero: a sum, or one batch, would not pass for the mean
    assert batched["block_influence"] == pytest.approx(whole["bi"].tolist(), rel=1e-5)
    assert batched["angular_distance"]["2"] == pytest.approx(whole[2].tolist(), rel=1e-5)


# ----------------------------------------------------------------------------- heads collapsed, per layer


def test_a_layer_with_half_its_heads_collapsed_is_lazy_and_the_papers_rule_is_the_strict_setting(
    shakespeare_dir, tmp_path
):
    """Two of four heads sink in layer 1 and all four in layer 3: counted per layer; lazy at the default share
    of 0.5 (layers 1 and 3, so the student keeps layer 0), only layer 3 by the paper's MaxRank = 1
    (lazy_share 1 with collapsed_rank 1)."""
    model = sink_model([1], heads=(0, 2))
    with torch.no_grad():
        sink = sink_model([3])
        model.transformer.h[3].load_state_dict(sink.transformer.h[3].state_dict())
    source = save(model, tmp_path / "ckpt.pt")
    result = analyze_model(source, settings_for(shakespeare_dir), "cpu")
    assert result["collapsed_heads"]["sequence"] == [0, 2, 0, 4]
    assert result["lazy_layers"] == [1, 3] and result["suggestion"]["n_layer"] == 1
    strict = AnalysisSettings(**vars(settings_for(shakespeare_dir)) | {"collapsed_rank": 1.0, "lazy_share": 1.0})
    result = analyze_model(source, strict, "cpu")
    assert result["lazy_layers"] == [3] and result["suggestion"]["n_layer"] == 3
    assert result["max_rank"][3] == 1.0 < result["max_rank"][1]


def test_rank_of_the_averaged_matrix_is_numpys_rank_of_the_mean_attention(shakespeare_dir, tmp_path):
    """The authors' notebook's rank (attention averaged over the sequences, then the 90%-energy rank), against
    numpy's SVD of the mean of attention_probs."""
    source = save(sink_model([2], heads=(1,)), tmp_path / "ckpt.pt")
    settings = settings_for(shakespeare_dir)
    result = analyze_model(source, settings, "cpu")
    model, _ = load_model(source)
    seqs = analyze.validation_sequences(settings, model.config, None)
    mean = model.attention_probs(seqs).double().mean(dim=1).numpy()  # (L, H, T, T)
    energy = np.linalg.svd(mean, compute_uv=False) ** 2
    shares = np.cumsum(energy, axis=-1) / energy.sum(axis=-1, keepdims=True)
    expected = (shares < 0.9 - 1e-6).sum(axis=-1) + 1
    assert result["rank_of_mean"] == expected.tolist()


def test_the_verdict_reads_the_rank_it_is_told():
    """Heads counted per layer by both ranks; the lazy layers by the one settings.rank_of names."""
    stats = {"rank": [[1.0, 1.0], [3.0, 1.2]], "rank_of_mean": [[4, 1], [3, 1]]}
    by_sequence = analyze.collapse(stats, AnalysisSettings("d"))
    assert by_sequence["collapsed_heads"] == {"sequence": [2, 1], "mean": [1, 1]}
    assert by_sequence["lazy_layers"] == [0, 1]
    assert analyze.collapse(stats, AnalysisSettings("d", lazy_share=1.0))["lazy_layers"] == [0]
    assert analyze.collapse(stats, AnalysisSettings("d", lazy_share=1.0, rank_of="mean"))["lazy_layers"] == []


def test_attention_and_hidden_states_come_from_one_forward_pass(shakespeare_dir, tmp_path, monkeypatch):
    """analyze.py runs the model once per batch: neither attention_probs nor hidden_states a second time."""
    source = save(sink_model([]), tmp_path / "ckpt.pt")
    batches = []
    one_pass = GPT.attention_and_hidden_states

    def counted(self, idx):
        batches.append(len(idx))
        return one_pass(self, idx)

    monkeypatch.setattr(GPT, "attention_and_hidden_states", counted)
    for second_pass in ("hidden_states", "attention_probs"):
        monkeypatch.setattr(GPT, second_pass, lambda *args: pytest.fail("a second forward pass"))
    analyze_model(source, settings_for(shakespeare_dir), "cpu")
    assert batches == [4, 2]  # 6 sequences in batches of 4


def test_one_pass_gives_what_the_two_single_passes_give():
    model = sink_model([1], heads=(0,))
    idx = torch.randint(0, model.config.vocab_size, (3, 20))
    att, hidden = model.attention_and_hidden_states(idx)
    assert torch.equal(att, model.attention_probs(idx))
    torch.testing.assert_close(hidden, model.hidden_states(idx), atol=1e-5, rtol=1e-5)  # SDPA against softmax


def test_a_lazy_first_layer_is_not_called_a_leading_non_lazy_one():
    result = {"lazy_layers": [0, 2], "suggestion": analyze.suggest_student("m.pt", 4, [0, 2]), "n_layer": 4}
    text = analyze.describe_suggestion(result, AnalysisSettings("d"))
    assert "the first 1 layers (layer 0 is lazy itself" in text and "leading non-lazy" not in text
