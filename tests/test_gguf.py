"""GGUF files (llama.cpp's format) as a model source: a tiny Llama written here with gguf's own GGUFWriter, as
llama.cpp's convert_hf_to_gguf.py writes one (q/k rows permuted, F32 and Q8_0 tensors, a GPT-2-style BPE
tokenizer), read by every loader and compared with the transformers model it was written from."""

import hashlib
import json
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

import inherit
from checkpoint import Checkpoint, load_model
from data.shakespeare.prepare import prepare
from data.tokenizer import encoder_for, load_hf_tokenizer, same_vocabulary
from hf import ConversionError, gguf_tensor_types, read_hf_config
from runtime import UserError

ROOT = Path(__file__).resolve().parents[1]
# A byte-level BPE as GPT-2's: the 256 byte symbols, a few merges, and the special tokens after them.
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ġ s", "e r", "o n", "Ġ o", "r e"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_level_vocabulary() -> list[str]:
    symbols = list(bytes_to_unicode().values())
    merged = [left + right for left, right in (m.split(" ") for m in MERGES)]
    return [*SPECIALS, *symbols, *merged]


def permute_like_llama_cpp(weights: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: the rows of each head from Hugging Face's rotate-half
    layout to llama.cpp's interleaved pairs."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def tiny_llama(qwen2: bool = False, tied: bool = True, seed: int = 0):
    """A 3-layer Llama (or Qwen2) with GQA, rope theta 500,000 and weights large enough for sharp attention and
    logits of several units, so that a wrong row order or a lost tensor shows in the logits."""
    vocab = len(byte_level_vocabulary())
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=500_000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**common)) if qwen2 else LlamaForCausalLM(LlamaConfig(**common))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))  # gains that differ from 1, so a lost norm shows
            else:
                p.normal_(0, 0.15 if p.dim() > 1 else 0.5)
    return model.eval()


def write_gguf(model, path: Path, quantize: tuple[str, ...] = (), architecture: str | None = None, **faults) -> Path:
    """`model` as llama.cpp writes it: its names, q/k permuted (Llama; llama.cpp leaves Qwen2's as they are),
    F32 tensors, or Q8_0 for the names ending as listed in `quantize`, and a GPT-2-style BPE tokenizer. `faults`
    spoil it: drop (tensor names left out), extra (tensor names added), blocks (another block_count),
    rope_dims, rope_scaling (a type), merges=False, tokenizer=False."""
    c = model.config
    arch = architecture or c.model_type
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny")
    writer.add_block_count(faults.get("blocks", c.num_hidden_layers))
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(faults.get("rope_dims", c.hidden_size // c.num_attention_heads))
    if "rope_scaling" in faults:
        writer.add_rope_scaling_type(faults["rope_scaling"])
        writer.add_rope_scaling_factor(4.0)
    writer.add_vocab_size(c.vocab_size)
    if faults.get("tokenizer", True):
        tokens = byte_level_vocabulary()
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        types = [gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens]
        writer.add_token_types(types)
        if faults.get("merges", True):
            writer.add_token_merges(MERGES)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(c.num_hidden_layers):
        for theirs, ours in per_layer.items():
            for kind in ("weight", "bias"):
                names[f"model.layers.{i}.{theirs}.{kind}"] = f"blk.{i}.{ours}.{kind}"
    state = model.state_dict()
    for key, value in state.items():
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue  # a tied model has no output tensor: readers take the token embedding
        array = value.float().numpy()
        if arch == "llama" and key.endswith(("q_proj.weight", "k_proj.weight")):
            heads = c.num_attention_heads if "q_proj" in key else c.num_key_value_heads
            array = permute_like_llama_cpp(array, heads)
        name = names[key]
        if name in faults.get("drop", ()):
            continue
        if array.ndim == 2 and name.endswith(quantize):
            writer.add_tensor(
                name,
                gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0),
                raw_dtype=gguf.GGMLQuantizationType.Q8_0,
            )
        else:
            writer.add_tensor(name, np.ascontiguousarray(array))
    for name in faults.get("extra", ()):
        writer.add_tensor(name, np.ones(c.hidden_size // c.num_attention_heads // 2, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def logits_of(model, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(idx)
    return out.logits if hasattr(out, "logits") else model(idx, targets=idx)[0]


IDX = torch.tensor([[5, 90, 17, 200, 3, 77, 150, 260, 9, 42, 101, 11]])


@pytest.mark.parametrize("qwen2, tied", [(False, True), (False, False), (True, True)])
def test_a_gguf_reads_as_the_model_it_was_written_from(tmp_path, qwen2, tied):
    """F32 tensors are exact: the logits are the transformers model's, with GQA, rope theta 500,000, tied
    and untied heads, Qwen2's biases, and llama.cpp's q/k permutation undone."""
    hf = tiny_llama(qwen2, tied)
    path = write_gguf(hf, tmp_path / "tiny.gguf")
    model, ckpt = load_model(path)
    expected = logits_of(hf, IDX)
    assert expected.std() > 1  # realistic magnitudes: logits of several units
    torch.testing.assert_close(logits_of(model, IDX), expected, atol=2e-5, rtol=1e-5)
    assert model.config.rope_theta == 500_000.0 and model.config.n_kv_head == 2
    assert model.config.tie_embeddings == tied
    assert ckpt.dequantized == {"F32": len(gguf.GGUFReader(str(path)).tensors)}


def test_the_permutation_must_be_undone(tmp_path, monkeypatch):
    """The file holds q/k rows in llama.cpp's order: read as stored (the un-permutation skipped), the model is
    another one, so the test above would fail were it not undone."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    hf = tiny_llama()
    path = write_gguf(hf, tmp_path / "tiny.gguf")
    monkeypatch.setattr(LlamaTensorProcessor, "_reverse_permute_weights", lambda self, w, *heads: w)
    read_as_stored, _ = load_model(path)
    assert (logits_of(read_as_stored, IDX) - logits_of(hf, IDX)).abs().max() > 0.5


def test_quantised_tensors_read_as_transformers_dequantises_them(tmp_path):
    hf = tiny_llama(tied=False)
    path = write_gguf(hf, tmp_path / "q8.gguf", quantize=("attn_q.weight", "ffn_up.weight", "token_embd.weight"))
    model, ckpt = load_model(path)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="q8.gguf", dtype=torch.float32).eval()
    torch.testing.assert_close(logits_of(model, IDX), logits_of(theirs, IDX), atol=2e-5, rtol=1e-5)
    assert ckpt.dequantized["Q8_0"] == 2 * 3 + 1
    # and close to, but not, the original: Q8_0 rounds
    difference = (logits_of(model, IDX) - logits_of(hf, IDX)).abs().max()
    assert 0 < difference < 0.5


def test_its_tokenizer_prepares_a_corpus_the_model_then_accepts(tmp_path):
    hf = tiny_llama()
    path = write_gguf(hf, tmp_path / "tiny.gguf")
    tokenizer = load_hf_tokenizer(str(path))
    assert len(tokenizer) == hf.config.vocab_size and tokenizer.eos_token_id == 2
    text = " the hat is on the heron"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    encoder = encoder_for(str(path))
    assert encoder.eot == 2 and encoder.meta["vocab_size"] == hf.config.vocab_size
    _, ckpt = load_model(path)
    assert same_vocabulary(ckpt.vocabulary(), encoder.meta)
    assert ckpt.vocabulary()["tokenizer_fingerprint"] == encoder.meta["tokenizer_fingerprint"]


def test_config_alone_and_a_student_record_where_it_came_from(tmp_path):
    hf = tiny_llama()
    path = write_gguf(hf, tmp_path / "tiny.gguf", quantize=("ffn_down.weight",))
    args = read_hf_config(str(path))
    assert (args["n_layer"], args["n_head"], args["n_kv_head"], args["rope_theta"]) == (3, 4, 2, 500_000.0)
    student, origin = inherit.inherit(str(path), inherit.parse_request(2))
    assert origin["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert origin["reference_dequantized"] == gguf_tensor_types(path)
    ref, _ = load_model(path)
    for key, value in student.state_dict().items():
        assert torch.equal(value, ref.state_dict()[key]), key  # blocks 0, 1, embedding, norm: bit for bit


def test_bad_files_are_refused_in_one_line(tmp_path):
    path = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(ConversionError, match="not a complete GGUF file"):
        load_model(truncated)
    other = write_gguf(tiny_llama(), tmp_path / "gemma.gguf", architecture="gemma")
    with pytest.raises(ConversionError, match="architecture 'gemma'"):
        load_model(other)
    with pytest.raises(ConversionError, match="no such GGUF file"):
        load_model(tmp_path / "missing.gguf")


def test_a_tensor_type_gguf_cannot_dequantise_is_refused(tmp_path):
    """Q8_1 has no dequantiser in gguf 0.19 (llama.cpp uses it only for intermediate results)."""
    path = tmp_path / "q8_1.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    q8_1 = gguf.GGMLQuantizationType.Q8_1
    block_bytes = gguf.GGML_QUANT_SIZES[q8_1][1]
    writer.add_tensor("token_embd.weight", np.zeros((4, 2 * block_bytes), dtype=np.uint8), raw_dtype=q8_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ConversionError, match="cannot dequantise its Q8_1 tensors"):
        gguf_tensor_types(path)


@pytest.mark.slow
def test_every_command_reads_a_gguf(tmp_path, capsys):
    """inherit.py, analyze.py, evaluation.py (loss, export) and sample.py as a user runs them, the corpus
    prepared with the file's own tokenizer; the note that the weights were dequantised is said once."""
    import analyze
    import evaluation
    import sample

    path = write_gguf(tiny_llama(), tmp_path / "tiny.gguf", quantize=("ffn_up.weight",))
    corpus = gguf_corpus(path, tmp_path / "corpus")
    student = tmp_path / "student.pt"
    assert inherit.main(["--inherit_from", str(path), "--n_layer", "2", "--out", str(student)]) == 0
    assert Checkpoint.load(student).inherit["reference_dequantized"]["Q8_0"] == 3
    out = tmp_path / "analysis"
    argv = ["--model", str(path), "--data", str(corpus), "--out", str(out), "--num_seqs", "4", "--seq_len", "16"]
    assert analyze.main(argv) == 0
    assert json.loads((out / "analysis.json").read_text())["models"][0]["n_layer"] == 3
    loss = tmp_path / "loss.json"
    argv = ["loss", "--model", str(path), "--data", str(corpus), "--max_tokens", "2000", "--out", str(loss)]
    assert evaluation.main(argv) == 0
    assert 0 < json.loads(loss.read_text())["loss"] < 20
    text = sample.sample(sample.parse_args(["--model", str(path), "--start", " the", "--max_new_tokens", "4"]))
    assert text[0].startswith(" the") and len(text) == 2
    assert evaluation.main(["export", "--model", str(path), "--out", str(tmp_path / "hf")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model, _ = load_model(path)
    torch.testing.assert_close(logits_of(exported, IDX), logits_of(model, IDX), atol=2e-5, rtol=1e-5)
    assert capsys.readouterr().err.count("dequantised") == 1


def gguf_corpus(path: Path, out: Path) -> Path:
    """Shakespeare in the GGUF's own tokens."""
    prepare(out, str(path))
    return out


@pytest.mark.slow
def test_recipe_on_a_gguf_reference_builds_llama_students_and_scores_them_before_training(tmp_path):
    """The demo's shape in miniature: a GGUF reference, first-n and from-scratch students of its architecture
    (scratch: nothing inherited), each scored at step 0 (as built) and after the budget."""
    import recipe
    from runs import read_run

    path = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    corpus = gguf_corpus(path, tmp_path / "corpus")
    config = tmp_path / "c.py"
    values = dict(
        data_dir=str(corpus),
        device="cpu",
        compile=False,
        n_head=4,
        n_embd=64,
        block_size=16,
        batch_size=2,
        gradient_accumulation_steps=1,
        max_iters=4,
        lr_decay_iters=4,
        warmup_iters=1,
        eval_interval=2,
        eval_iters=2,
        log_interval=1,
        learning_rate=1e-3,
        freeze_embedding=True,
    )
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in values.items()))
    out = tmp_path / "r"
    argv = ["--reference", str(path), "--config", str(config), "--n_layer", "2", "--methods", "first,scratch"]
    assert recipe.main([*argv, "--out_dir", str(out), "--num_seqs", "2", "--seq_len", "16"]) == 0
    rows = {r["method"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert rows["reference"]["steps"] is None and rows["reference"]["val_loss_start"] is None
    assert rows["first"]["inherited_layers"] == [0, 1] and rows["scratch"]["inherited_layers"] is None
    scratch = read_run(out / "n2" / "scratch")
    assert scratch.model["model_args"]["rope"] and scratch.model["model_args"]["n_kv_head"] == 2
    assert scratch.inherit["parts"] == []
    for method in ("first", "scratch"):
        run = read_run(out / "n2" / method)
        assert rows[method]["val_loss_start"] == run.evals[0]["val_loss"] and run.evals[0]["iter"] == 0
    # nothing inherited: a fresh model's loss, near that of uniform guessing over the vocabulary
    assert abs(rows["scratch"]["val_loss_start"] - np.log(len(byte_level_vocabulary()))) < 0.1
    assert "| first | 2 | 0,1 |" in (out / "report.md").read_text()
    # freeze_embedding: the inherited embedding (and the head tied to it) left as inherited, the blocks trained
    student = Checkpoint.load(out / "n2" / "first" / "ckpt.pt").model
    reference = load_model(path)[0].state_dict()
    assert torch.equal(student["transformer.wte.weight"], reference["transformer.wte.weight"])
    assert not torch.equal(
        student["transformer.h.0.attn.c_attn.weight"], reference["transformer.h.0.attn.c_attn.weight"]
    )


def test_grow_reads_a_gguf_reference_and_refuses_a_broken_one_in_a_line(tmp_path, capsys):
    import grow

    path = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    assert grow.reference_facts(str(path)) == (3, None)  # its depth, and no recorded val loss
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[:5000])
    argv = ["--inherit_from", str(truncated), "--config", "config/inheritune_smollm2.py", "--target", "3.0"]
    assert grow.main(argv) == 1
    assert "not a complete GGUF file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "faults, message",
    [
        ({"drop": ("blk.1.ffn_norm.weight",)}, "blk.1.ffn_norm.weight missing"),
        ({"blocks": 4}, "blk.3.attn_q.weight missing"),
        ({"extra": ("rope_freqs.weight",)}, "rope_freqs.weight unknown"),  # Llama 3's rope scaling, dropped
        ({"rope_scaling": gguf.RopeScalingType.LINEAR}, "its RoPE is scaled (linear)"),
        ({"rope_dims": 8}, "transformers cannot load it"),  # a head size its tensors do not have
    ],
)
def test_a_gguf_that_is_not_the_model_its_header_describes_is_refused_in_one_line(tmp_path, faults, message):
    """transformers would fill a missing tensor with fresh weights, drop an unknown one and the rope scaling,
    and load a model that is not the file's, silently; or fail with pages of report."""
    path = write_gguf(tiny_llama(), tmp_path / "bad.gguf", **faults)
    with pytest.raises(ConversionError, match=re.escape(message)):
        load_model(path)


@pytest.mark.slow
def test_a_gguf_tokenizer_that_cannot_load_is_one_line_and_none_at_all_is_no_tokenizer(tmp_path, capsys):
    import analyze

    path = write_gguf(tiny_llama(), tmp_path / "no-merges.gguf", merges=False)
    with pytest.raises(UserError, match="cannot load the tokenizer"):
        load_hf_tokenizer(str(path))
    corpus = gguf_corpus(write_gguf(tiny_llama(), tmp_path / "tiny.gguf"), tmp_path / "corpus")
    argv = ["--model", str(path), "--data", str(corpus), "--num_seqs", "2", "--seq_len", "8", "--out", str(tmp_path)]
    assert analyze.main(argv) == 1
    assert "cannot load the tokenizer" in capsys.readouterr().err
    bare = write_gguf(tiny_llama(), tmp_path / "bare.gguf", tokenizer=False)
    _, ckpt = load_model(bare)
    assert ckpt.tokenizer is None  # as a Hugging Face folder without tokenizer files
    assert inherit.main(["--inherit_from", str(bare), "--n_layer", "1", "--out", str(tmp_path / "s.pt")]) == 0


def test_export_of_a_model_whose_gguf_tokenizer_is_gone_is_one_line_and_writes_nothing(tmp_path, capsys):
    import evaluation

    path = write_gguf(tiny_llama(), tmp_path / "moved.gguf")
    student = tmp_path / "student.pt"
    assert inherit.main(["--inherit_from", str(path), "--n_layer", "1", "--out", str(student)]) == 0
    path.rename(tmp_path / "elsewhere.gguf")
    out = tmp_path / "hf"
    assert evaluation.main(["export", "--model", str(student), "--out", str(out)]) == 1
    assert "cannot load the tokenizer" in capsys.readouterr().err and not out.exists()


def test_a_gguf_is_known_by_its_suffix_in_any_case_and_nothing_is_inherited_with_parts_none(tmp_path):
    from hf import is_gguf
    from inherit import InheritError

    assert is_gguf("models/X.GGUF") and is_gguf("x.gguf") and not is_gguf("x.gguf.pt")
    path = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    with pytest.raises(InheritError, match="copies nothing"):
        inherit.inherit(str(path), inherit.parse_request(2, "stack", "none"))


def test_recipe_refuses_a_config_of_another_width_for_a_llama_references_scratch_runs(tmp_path, capsys):
    """Its models from scratch are its architecture, so its width: refused before the analysis runs."""
    import recipe

    path = write_gguf(tiny_llama(), tmp_path / "tiny.gguf")
    config = tmp_path / "c.py"
    config.write_text(f"data_dir = {str(tmp_path / 'corpus')!r}\nn_embd = 768\nn_head = 12\n")
    argv = ["--reference", str(path), "--config", str(config), "--n_layer", "2", "--methods", "scratch"]
    assert recipe.main([*argv, "--out_dir", str(tmp_path / "r")]) == 1
    expected = "scratch take the reference's width: mismatched width: the student is configured with n_embd 768, "
    assert expected + "n_head 12, the reference has n_embd 64, n_head 4" in capsys.readouterr().err
    assert not (tmp_path / "r" / "analysis").exists()
