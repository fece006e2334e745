import copy
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import inherit
import train
from analyze import LAYER_METHODS, AnalysisSettings
from checkpoint import Checkpoint, load_model
from inherit import InheritError, InheritSpec, build_student, make_spec, parse_layers, parse_request
from inheritune import training
from model import GPT, GPTConfig
from tests.conftest import zero_output_blocks
from tests.test_llama import rope_model

ROOT = Path(__file__).resolve().parents[1]


def reference(n_layer: int = 6) -> GPT:
    torch.manual_seed(123)
    model = GPT(GPTConfig(n_layer=n_layer, n_head=2, n_embd=32, block_size=32, vocab_size=50257, bias=True))
    with torch.no_grad():  # a "trained" reference: no tensor left at its initial value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def test_student_blocks_equal_the_reference_blocks_bit_for_bit():
    ref = reference()
    student = build_student(ref, make_spec(ref.config, parse_request(None, "0-2,4")))
    s, r = student.state_dict(), ref.state_dict()
    for i, j in enumerate((0, 1, 2, 4)):
        for key in [k for k in s if k.startswith(f"transformer.h.{i}.")]:
            assert torch.equal(s[key], r[key.replace(f"h.{i}.", f"h.{j}.", 1)]), key
    for key in ("transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight", "transformer.ln_f.weight"):
        assert torch.equal(s[key], r[key])
    assert student.lm_head.weight is student.transformer.wte.weight  # still tied


def test_parts_not_inherited_are_initialised_exactly_as_from_scratch():
    ref = reference()
    student = build_student(ref, InheritSpec(layers=(0, 1, 2), parts=("attn",)), seed=7)
    torch.manual_seed(7)
    scratch = GPT(GPTConfig(**{**asdict(ref.config), "n_layer": 3})).state_dict()
    s, r = student.state_dict(), ref.state_dict()
    for key, value in s.items():
        if ".attn.c_" in key:
            assert torch.equal(value, r[key])
        else:
            assert torch.equal(value, scratch[key]), key
    # ... and so have fresh initialisation's statistics
    assert s["transformer.h.0.mlp.c_fc.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert s["transformer.h.0.mlp.c_proj.weight"].std().item() == pytest.approx(0.02 / 6**0.5, rel=0.05)


def test_the_authors_student_takes_wte_and_blocks_and_leaves_wpe_and_ln_f_fresh():
    """LLM-Inheritune's GPT-2 script copies the blocks and wte/lm_head only: --inherit_parts wte,attn,mlp,ln."""
    ref = reference()
    student = build_student(ref, make_spec(ref.config, parse_request(3, parts="wte,attn,mlp,ln")), seed=7)
    torch.manual_seed(7)
    scratch = GPT(GPTConfig(**{**asdict(ref.config), "n_layer": 3})).state_dict()
    s, r = student.state_dict(), ref.state_dict()
    for key in (
        "transformer.wte.weight",
        "lm_head.weight",
        "transformer.h.2.attn.c_attn.weight",
        "transformer.h.2.ln_2.weight",
        "transformer.h.1.mlp.c_fc.bias",
    ):
        assert torch.equal(s[key], r[key]), key
    for key in ("transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"):
        assert torch.equal(s[key], scratch[key]) and not torch.equal(s[key], r[key]), key
    assert student.lm_head.weight is student.transformer.wte.weight
    position_only = build_student(ref, make_spec(ref.config, parse_request(3, parts="wpe")), seed=7).state_dict()
    assert torch.equal(position_only["transformer.wpe.weight"], r["transformer.wpe.weight"])
    assert torch.equal(position_only["transformer.wte.weight"], scratch["transformer.wte.weight"])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(n_layer=0), "at least 1 layer"),
        (dict(n_layer=7), "asks for 7 layers but the reference has only 6"),
        (dict(n_layer=None, inherit_layers="0-2,9"), r"layers \[9\] do not exist"),
        (dict(n_layer=None, inherit_layers="0,1,1"), "repeat a layer"),
        (dict(n_layer=None, inherit_layers="3,1"), "keep the reference's order"),
        (dict(n_layer=None, inherit_layers="0-x"), "bad layer list"),
        (dict(n_layer=3, inherit_layers="0-1"), "n_layer 3 does not match the 2 layers"),
        (dict(n_layer=3, parts="attn,ffn"), r"unknown parts \['ffn'\]; choose from all, none, wte, head, wpe"),
        (dict(n_layer=3, parts="head,attn"), "the reference's head is its token embedding"),
    ],
)
def test_bad_requests_stop_with_a_clear_message(kwargs, message):
    with pytest.raises(InheritError, match=message):
        make_spec(GPTConfig(n_layer=6), parse_request(**kwargs))


@pytest.mark.parametrize(
    "n_layer, text, method, layers",
    [
        (3, "", "first", None),
        (3, "first", "first", None),
        (3, "bi", "bi", None),
        (3, "angular", "angular", None),
        (5, "stack", "stack", None),
        (None, "0-2,5", "listed", (0, 1, 2, 5)),
        (4, "0-2,5", "listed", (0, 1, 2, 5)),
        (None, "7", "listed", (7,)),
    ],
)
def test_the_parser_maps_each_spelling_of_inherit_layers_to_a_method_and_layers(n_layer, text, method, layers):
    request = parse_request(n_layer, text, "wte,attn")
    assert (request.method, request.layers, request.parts) == (method, layers, "wte,attn")
    assert request.n_layer == (len(layers) if layers else n_layer)


@pytest.mark.parametrize(
    "n_layer, text, parts, message",
    [
        (3, "bi,3", "all", "bad layer list 'bi,3': expected numbers and ranges like '0-11,14'"),
        (3, "0-x", "all", "bad layer list '0-x'"),
        (3, ",", "all", "bad layer list ','"),
        (3, "BI", "all", "bad layer list 'BI'"),
        (2, "0-1,3-2", "all", "bad layer list '0-1,3-2': the range 3-2 runs backwards"),
        (None, "3-0", "all", "bad layer list '3-0': the range 3-0 runs backwards"),
        (None, "", "all", "give the student's depth (n_layer) or its layers"),
        (None, "stack", "all", "layers chosen by 'stack' need the student's depth (n_layer)"),
        (2, "0,1", "none", "inherit_parts 'none' copies nothing: no layers to choose ('0,1')"),
    ],
)
def test_the_parser_refuses_garbage_in_one_line(n_layer, text, parts, message):
    with pytest.raises(InheritError) as refused:
        parse_request(n_layer, text, parts)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_layer_lists():
    assert parse_layers("0-3,5") == (0, 1, 2, 3, 5)
    assert make_spec(GPTConfig(n_layer=6), parse_request(3)).layers == (0, 1, 2)
    assert make_spec(GPTConfig(n_layer=6), parse_request(3)).parts == ("wte", "wpe", "ln_f", "attn", "mlp", "ln")


def test_hf_student_matches_truncated_hf_model(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)).eval()
    hf.save_pretrained(tmp_path / "hf")
    student, origin = inherit.inherit(str(tmp_path / "hf"), parse_request(2))
    assert origin["reference_n_layer"] == 4 and len(origin["source_sha256"]) == 64
    hf.transformer.h = hf.transformer.h[:2]
    hf.config.n_layer = 2
    idx = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        expected = hf(idx).logits
        ours, _ = student.eval()(idx, idx)
    torch.testing.assert_close(ours[..., :50257], expected, atol=1e-5, rtol=1e-5)


def test_nanogpt_checkpoint_with_orig_mod_prefix_is_a_reference(tmp_path):
    ref = reference()
    path = tmp_path / "nanogpt.pt"
    state = {f"_orig_mod.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"model": state, "model_args": asdict(ref.config), "iter_num": 5, "best_val_loss": 3.2}, path)
    code = inherit.main(["--inherit_from", str(path), "--n_layer", "3", "--out", str(tmp_path / "student.pt")])
    assert code == 0
    ckpt = Checkpoint.load(tmp_path / "student.pt")
    assert ckpt.inherit["layers"] == [0, 1, 2] and ckpt.inherit["reference_val_loss"] == 3.2
    assert ckpt.inherit["source"] == str(path)
    student, _ = load_model(tmp_path / "student.pt")
    assert torch.equal(student.transformer.h[2].attn.c_attn.weight, ref.transformer.h[2].attn.c_attn.weight)


def test_the_command_says_what_the_student_took(tmp_path, capsys):
    path = tmp_path / "ref.pt"
    Checkpoint.of(reference(), tokens=0).save(path)
    argv = ["--inherit_from", str(path), "--n_layer", "2", "--out", str(tmp_path / "s.pt")]
    assert inherit.main(argv) == 0
    assert "layers [0, 1] (first)" in capsys.readouterr().out
    assert inherit.main([*argv, "--inherit_parts", "none"]) == 0
    out = capsys.readouterr().out
    assert "nothing inherited (inherit_parts none)" in out and "layers [0, 1]" not in out


def test_cli_refuses_a_student_deeper_than_the_reference(tmp_path, capsys):
    path = tmp_path / "ref.pt"
    Checkpoint.of(reference()).save(path)
    assert inherit.main(["--inherit_from", str(path), "--n_layer", "8", "--out", str(tmp_path / "s.pt")]) == 1
    assert "asks for 8 layers but the reference has only 6" in capsys.readouterr().err
    assert not (tmp_path / "s.pt").exists()


@pytest.mark.slow
def test_train_inherits_in_one_step_and_records_provenance(trained_reference, tiny_config, tmp_path):
    ref_ckpt = str(Path(trained_reference.out_dir) / "ckpt.pt")
    cfg = tiny_config(init_from="inherit", inherit_from=ref_ckpt, n_layer=2, out_dir=str(tmp_path / "student"))
    last = train.train(cfg)
    ckpt = Checkpoint.load(tmp_path / "student" / "ckpt.pt")
    assert ckpt.model_args["n_layer"] == 2
    assert ckpt.inherit["source"] == ref_ckpt and ckpt.inherit["parts"] == ["wte", "wpe", "ln_f", "attn", "mlp", "ln"]
    first = [json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()][0]
    # The student starts well below an untrained model's loss (ln 50257 = 10.82): it inherited knowledge.
    assert first["val_loss"] < math.log(50257) - 0.5 and last["val_loss"] < first["val_loss"]
    with pytest.raises(InheritError, match="mismatched width"):
        train.train(tiny_config(init_from="inherit", inherit_from=ref_ckpt, n_layer=2, n_embd=64))


@pytest.mark.slow
def test_student_checkpoint_trains_with_init_from_path(trained_reference, tiny_config, tmp_path):
    student = tmp_path / "student.pt"
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    assert inherit.main(["--inherit_from", ref, "--inherit_layers", "0,2", "--out", str(student)]) == 0
    cfg = tiny_config(init_from=str(student), n_layer=2, out_dir=str(tmp_path / "s"), max_iters=4)
    train.train(cfg)
    ckpt = Checkpoint.load(tmp_path / "s" / "ckpt.pt")
    assert ckpt.inherit["layers"] == [0, 2]
    # The student file has trained on nothing itself: the run counts only its own tokens, as init_from=inherit does.
    assert ckpt.continued_from["tokens_seen"] == 0 and ckpt.tokens_seen() == ckpt.tokens == 4 * 4 * 2 * 32


@pytest.mark.slow
def test_inherit_command_line_help_runs():
    import subprocess

    result = subprocess.run([sys.executable, "inherit.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "--inherit_layers" in result.stdout


def inverse_layer_reference(n_layer: int = 4) -> GPT:
    """A GPT-2 with inverse-layer attention scaling (every paper config) and sharp attention, so that a wrong
    scale shows in the output."""
    torch.manual_seed(5)
    config = GPTConfig(n_layer=n_layer, n_head=2, n_embd=32, block_size=32, scale_attn_by_inverse_layer_idx=True)
    model = GPT(config)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(25.0)
    return model.eval()


@pytest.mark.parametrize("layers", ["0,3", "1-2", "3"])
def test_inherited_blocks_compute_what_they_computed_in_the_reference(layers):
    ref = inverse_layer_reference()
    student = build_student(ref, make_spec(ref.config, parse_request(None, layers))).eval()
    x = torch.randn(2, 16, 32) * 3.0
    with torch.no_grad():
        for i, j in enumerate(parse_layers(layers)):
            ours, _ = student.transformer.h[i](x)
            theirs, _ = ref.transformer.h[j](x)
            assert torch.equal(ours, theirs), (i, j)
            # The scale of the student's own depth, as it was before: a visibly different block.
            at_student_depth = copy.deepcopy(student.transformer.h[i])
            at_student_depth.attn.layer_scale.fill_(1 / (i + 1))
            assert i == j or (at_student_depth(x)[0] - theirs).abs().max() > 0.05


def test_a_student_of_a_student_keeps_the_first_references_scales(tmp_path):
    ref = inverse_layer_reference()
    student = build_student(ref, make_spec(ref.config, parse_request(None, "0,2,3")))
    Checkpoint.of(student).save(tmp_path / "student.pt")
    loaded, _ = load_model(tmp_path / "student.pt")
    assert loaded.config.scale_layer_idx == [0, 2, 3]
    grandchild = build_student(loaded, make_spec(loaded.config, parse_request(None, "1-2"))).eval()
    assert grandchild.config.scale_layer_idx == [2, 3]
    x = torch.randn(1, 8, 32) * 3.0
    with torch.no_grad():
        assert torch.equal(grandchild.transformer.h[1](x)[0], ref.eval().transformer.h[3](x)[0])


def test_a_prefix_student_keeps_the_default_layout_and_a_reordered_one_exports_exactly():
    from hf import to_hf

    ref = inverse_layer_reference()
    prefix = build_student(ref, make_spec(ref.config, parse_request(2)))
    assert prefix.config.scale_layer_idx is None and "scale_layer_idx" not in prefix.config.model_args()
    to_hf(prefix, eos_token=50256)
    reordered = build_student(ref, make_spec(ref.config, parse_request(None, "0,3"))).eval()
    exported = to_hf(reordered, eos_token=50256)  # queries rescaled: Hugging Face scales block 1 by 1/2, not 1/4
    idx = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(idx).logits, reordered(idx, idx)[0], atol=1e-4, rtol=1e-5)
    plain = reference(4)  # without inverse-layer scaling the block's depth does not matter
    assert build_student(plain, make_spec(plain.config, parse_request(None, "0,3"))).config.scale_layer_idx is None


def test_a_fresh_token_embedding_can_take_the_authors_n01_init():
    """The authors' code leaves wte as nn.Embedding made it, N(0, 1), when it is not inherited."""
    ref = reference()
    spec = make_spec(ref.config, parse_request(3, parts="wpe,attn,mlp,ln"))
    default = build_student(ref, spec, seed=7).state_dict()
    authors = build_student(ref, spec, seed=7, embedding_std=1.0).state_dict()
    assert default["transformer.wte.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert authors["transformer.wte.weight"].std().item() == pytest.approx(1.0, rel=0.05)
    for key in default:  # nothing else changes, inherited or fresh
        if key not in ("transformer.wte.weight", "lm_head.weight"):
            assert torch.equal(default[key], authors[key]), key
    inherited = build_student(ref, make_spec(ref.config, parse_request(3)), seed=7, embedding_std=1.0).state_dict()
    assert torch.equal(inherited["transformer.wte.weight"], ref.state_dict()["transformer.wte.weight"])


@pytest.mark.slow
def test_train_py_takes_the_authors_embedding_init_and_weight_decay(trained_reference, tiny_config, tmp_path):
    ref = str(Path(trained_reference.out_dir) / "ckpt.pt")
    authors = dict(inherit_parts="wpe,attn,mlp,ln", fresh_embedding_std=1.0, decay_1d_params=True)
    cfg = tiny_config(init_from="inherit", inherit_from=ref, max_iters=2, eval_interval=2, **authors)
    train.train(cfg)
    ckpt = Checkpoint.load(Path(cfg.out_dir) / "ckpt.pt")
    assert ckpt.model["transformer.wte.weight"].std().item() == pytest.approx(1.0, rel=0.1)
    assert [group["weight_decay"] for group in ckpt.optimizer["param_groups"]] == [cfg.weight_decay] * 2


def test_a_student_has_the_dropout_asked_for_and_the_default_seed_1337():
    ref = reference()
    ref.config.dropout = 0.1
    spec = make_spec(ref.config, parse_request(3, parts="wte,attn,mlp,ln"))  # wpe and ln_f fresh: the seed shows there
    assert build_student(ref, spec).config.dropout == 0.0
    assert build_student(ref, spec, dropout=0.2).config.dropout == 0.2
    default, explicit = build_student(ref, spec).state_dict(), build_student(ref, spec, seed=1337).state_dict()
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    fresh = build_student(ref, make_spec(ref.config, parse_request(3, parts="wpe,attn,mlp,ln")), embedding_std=1.0)
    wte = fresh.transformer.wte.weight
    assert abs(wte.mean().item()) < 0.01 and wte.std().item() == pytest.approx(1.0, rel=0.02)


def test_a_student_may_take_every_layer_but_none_beyond():
    assert make_spec(GPTConfig(n_layer=6), parse_request(6)).layers == (0, 1, 2, 3, 4, 5)
    with pytest.raises(InheritError, match=r"layers \[6\] do not exist"):
        make_spec(GPTConfig(n_layer=6), parse_request(None, "0,6"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--inherit_layers", "bi", "--n_layer", "4"], "measured on a corpus: give its folder"),
        (["--inherit_layers", "angular", "--data", "DATA"], "need the student's depth"),
        (
            ["--inherit_layers", "bi", "--n_layer", "8", "--data", "DATA"],
            "asks for 8 layers but the reference has only 6",
        ),
        (["--inherit_layers", "bi", "--n_layer", "3", "--data", "DATA", "--seq_len", "33"], "longer than the model's"),
        (["--inherit_layers", "bi", "--n_layer", "3", "--data", "nowhere"], "cannot measure the reference on nowhere"),
        (["--n_layer", "3", "--data", "DATA"], "--data is read only by the layers a measure chooses (--inherit_layers"),
    ],
)
def test_a_measured_layer_choice_refuses_what_it_cannot_measure(shakespeare_dir, tmp_path, capsys, extra, message):
    path = tmp_path / "ref.pt"
    Checkpoint.of(reference()).save(path)
    argv = ["--inherit_from", str(path), *[str(shakespeare_dir) if a == "DATA" else a for a in extra]]
    assert inherit.main([*argv, "--out", str(tmp_path / "s.pt")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.pt").exists()


def test_train_py_chooses_a_students_layers_by_a_measure_on_its_corpus(tiny_config, tmp_path):
    path = tmp_path / "ref.pt"
    Checkpoint.of(zero_output_blocks(reference(), [1, 4])).save(path)
    cfg = tiny_config(init_from="inherit", inherit_from=str(path), n_layer=4, inherit_layers="bi")
    start = training.build_model(cfg, 50257)
    assert start.inherit["layers"] == [0, 2, 3, 5] and start.inherit["chosen_by"]["method"] == "bi"
    assert start.inherit["chosen_by"]["rule"] == LAYER_METHODS["bi"]
    assert start.inherit["chosen_by"]["data"] == cfg.data_dir and start.inherit["chosen_by"]["seq_len"] == 32
    ref = load_model(path)[0]
    torch.testing.assert_close(start.model.transformer.h[1].state_dict(), ref.transformer.h[2].state_dict())
    first = training.build_model(tiny_config(init_from="inherit", inherit_from=str(path), n_layer=4), 50257)
    assert first.inherit["layers"] == [0, 1, 2, 3] and first.inherit["chosen_by"] == {"method": "first"}


# ----------------------------------------------------------------------------- the paper's warm starts


def test_a_stacked_student_repeats_the_first_half_of_its_source():
    assert inherit.stacked_layers(18, 36) == (*range(9), *range(9))
    assert inherit.stacked_layers(5, 3) == (0, 1, 2, 0, 1)
    with pytest.raises(InheritError, match="needs 3 layers, the reference has 2"):
        inherit.stacked_layers(5, 2)


def test_hybrid_stacking_and_stacking_copy_each_block_twice(tmp_path):
    """Hybrid stacking: a 4-layer student of a 6-layer reference's blocks 0, 1, 0, 1. Stacking: a 6-layer
    student of a 3-layer model, deeper than its source."""
    path = tmp_path / "ref.pt"
    Checkpoint.of(reference()).save(path)
    ref = load_model(path)[0]
    for n, source_layers in ((4, [0, 1, 0, 1]), (6, [0, 1, 2, 0, 1, 2])):
        source = path
        if n == 6:
            source = tmp_path / "half.pt"
            Checkpoint.of(reference(n_layer=3)).save(source)
        out = tmp_path / f"stack{n}.pt"
        argv = ["--inherit_from", str(source), "--n_layer", str(n), "--inherit_layers", "stack", "--out", str(out)]
        assert inherit.main(argv) == 0
        student, ckpt = load_model(out)
        origin = load_model(source)[0] if n == 6 else ref
        assert ckpt.inherit["layers"] == source_layers and ckpt.inherit["chosen_by"]["method"] == "stack"
        for i, j in enumerate(source_layers):
            for a, b in zip(student.transformer.h[i].parameters(), origin.transformer.h[j].parameters(), strict=True):
                assert torch.equal(a, b)
        assert (
            student.transformer.h[0].attn.c_attn.weight.data_ptr()
            != student.transformer.h[2].attn.c_attn.weight.data_ptr()
        )


@pytest.mark.parametrize("make", [reference, rope_model], ids=["gpt2", "llama-gqa-swiglu"])
def test_a_half_width_student_computes_its_heads_and_mlp_units_as_the_reference_does(make):
    """On an input whose second half of channels is zero, the student's queries, keys and values are the
    reference's first heads (and key/value heads), and its MLP units the reference's first half."""
    ref = make()
    student = inherit.build_half_width(ref)
    c, half = ref.config.n_embd, ref.config.n_embd // 2
    assert (student.config.n_layer, student.config.n_embd, student.config.n_head) == (
        ref.config.n_layer,
        half,
        ref.config.n_head // 2,
    )
    x = torch.randn(2, 5, half)
    padded = torch.cat([x, torch.zeros(2, 5, c - half)], dim=-1)
    hd, kv = ref.config.head_dim, ref.config.kv_heads
    for layer in range(ref.config.n_layer):
        r, s = ref.transformer.h[layer], student.transformer.h[layer]
        rq, rk, rv = r.attn.c_attn(padded).split([ref.config.n_head * hd, kv * hd, kv * hd], dim=-1)
        sq, sk, sv = s.attn.c_attn(x).split([student.config.n_head * hd, kv // 2 * hd, kv // 2 * hd], dim=-1)
        torch.testing.assert_close(sq, rq[..., : sq.size(-1)])
        torch.testing.assert_close(sk, rk[..., : sk.size(-1)])
        torch.testing.assert_close(sv, rv[..., : sv.size(-1)])
        if ref.config.mlp == "swiglu":
            rg, ru = r.mlp.c_fc(padded).chunk(2, dim=-1)
            sg, su = s.mlp.c_fc(x).chunk(2, dim=-1)
            torch.testing.assert_close(sg, rg[..., : sg.size(-1)])
            torch.testing.assert_close(su, ru[..., : su.size(-1)])
        else:
            torch.testing.assert_close(s.mlp.c_fc(x), r.mlp.c_fc(padded)[..., : 2 * c])
        hidden = torch.randn(2, 5, s.mlp.c_proj.in_features)
        full = torch.cat([hidden, torch.zeros(2, 5, r.mlp.c_proj.in_features - hidden.size(-1))], dim=-1)
        torch.testing.assert_close(s.mlp.c_proj(hidden), r.mlp.c_proj(full)[..., :half])
        assert torch.equal(s.ln_1.weight, r.ln_1.weight[:half])
    vocab = ref.config.vocab_size  # the padding rows beyond it are zero in any loaded model
    assert torch.equal(student.transformer.wte.weight[:vocab], ref.transformer.wte.weight[:vocab, :half])
    assert torch.equal(student.lm_head.weight[:vocab], ref.lm_head.weight[:vocab, :half])


def test_the_half_width_command_writes_a_student_every_command_reads(tmp_path, capsys):
    path = tmp_path / "ref.pt"
    Checkpoint.of(reference()).save(path)
    out = tmp_path / "half.pt"
    assert inherit.main(["--inherit_from", str(path), "--half_width", "--out", str(out)]) == 0
    student, ckpt = load_model(out)
    assert (student.config.n_layer, student.config.n_embd, student.config.n_head) == (6, 16, 1)
    assert ckpt.inherit["chosen_by"]["method"] == "half_width" and ckpt.inherit["layers"] == list(range(6))
    with pytest.raises(SystemExit):
        inherit.main(["--inherit_from", str(path), "--half_width", "--n_layer", "3", "--out", str(tmp_path / "x.pt")])
    assert "--half_width keeps every layer" in capsys.readouterr().err
    odd = GPT(GPTConfig(n_layer=1, n_head=3, n_embd=48, block_size=8, vocab_size=50))
    with pytest.raises(InheritError, match="halves n_head"):
        inherit.build_half_width(odd)


def test_a_measured_choice_refuses_empty_sequences_and_a_corpus_the_reference_cannot_read(
    shakespeare_dir, char_data_root, tmp_path, capsys
):
    path = tmp_path / "ref.pt"
    Checkpoint.of(reference(), tokenizer={"tokenizer": "gpt2", "vocab_size": 50257}).save(path)
    base = ["--inherit_from", str(path), "--inherit_layers", "bi", "--n_layer", "3", "--out", str(tmp_path / "s.pt")]
    for name in ("--num_seqs", "--seq_len"):
        with pytest.raises(SystemExit):
            inherit.main([*base, "--data", str(shakespeare_dir), name, "0"])
        assert f"{name} must be at least 1" in capsys.readouterr().err
    chars = char_data_root / "data" / "shakespeare_char"
    assert inherit.main([*base, "--data", str(chars), "--seq_len", "16"]) == 1
    assert "was made with the tokenizer characters-" in capsys.readouterr().err
    assert not (tmp_path / "s.pt").exists()


def test_warm_started_students_export_to_transformers_with_the_same_logits():
    """A hybrid-stacked student of an inverse-layer-scaled reference (blocks 0, 1, 0, 1: each keeps its
    reference scale) and a half-width one give transformers' GPT-2 the logits they compute."""
    from hf import to_hf

    ref = inverse_layer_reference()
    stacked = build_student(ref, make_spec(ref.config, parse_request(4, "stack")))
    assert stacked.config.scale_layer_idx == [0, 1, 0, 1]
    idx = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    for student in (stacked, inherit.build_half_width(ref)):
        student.eval()
        with torch.no_grad():
            torch.testing.assert_close(
                to_hf(student, eos_token=50256)(idx).logits, student(idx, idx)[0], atol=1e-4, rtol=1e-5
            )


def test_the_record_of_a_layer_choice_names_its_method_and_rule(tmp_path):
    ref = GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=4, n_head=2, n_embd=32, dropout=0.0))
    for text, method, layers in (("0,2", "listed", (0, 2)), ("", "first", (0, 1)), ("first", "first", (0, 1))):
        spec, record = inherit.chosen_by(ref, None, parse_request(2, text), None)
        assert record == {"method": method} and spec.layers == layers
    spec, record = inherit.chosen_by(ref, None, parse_request(2, "stack"), None)
    assert record == {"method": "stack", "rule": inherit.STACK_RULE} and spec.layers == (0, 0)
    # bad parts are refused before the reference is measured (here it could not be: no such corpus)
    nowhere = AnalysisSettings(str(tmp_path / "no-corpus"), num_seqs=2, seq_len=8)
    with pytest.raises(InheritError, match="parts"):
        inherit.chosen_by(ref, None, parse_request(2, "bi", "wings"), nowhere)


def test_an_untied_students_wte_part_is_the_embedding_alone_and_a_fresh_one_has_the_std_asked_for():
    ref = rope_model(n_layer=4, vocab_size=512)
    student = build_student(ref, make_spec(ref.config, parse_request(2, parts="wte,attn,mlp,ln")), embedding_std=0.02)
    assert torch.equal(student.transformer.wte.weight, ref.transformer.wte.weight)
    assert not torch.equal(student.lm_head.weight, ref.lm_head.weight)  # the head is its own part, not asked for
    fresh = build_student(ref, make_spec(ref.config, parse_request(2, parts="head,attn,mlp,ln")), embedding_std=0.3)
    assert torch.equal(fresh.lm_head.weight, ref.lm_head.weight)
    assert fresh.transformer.wte.weight.std().item() == pytest.approx(0.3, rel=0.05)
    assert fresh.transformer.wte.weight.mean().abs().item() < 0.01
