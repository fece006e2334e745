"""Hugging Face GPT-2 both ways, checked against transformers itself with logits far from zero, as OpenAI's
real GPT-2 has them (random weights give logits near 0, where a padded vocabulary's zero rows go unnoticed)."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import inherit
from checkpoint import Checkpoint, load_model
from data.tokenizer import EOT_TOKEN
from hf import ConversionError, to_hf
from model import GPT, GPTConfig

VOCAB = 50257


def hf_gpt2(inverse_layer: bool = False, shift: float = -30.0, **config) -> GPT2LMHeadModel:
    """A random GPT-2 whose real logits are shifted by `shift`, the softmax over them unchanged: ln_f emits a
    constant 1 in channel 0, read by every token's (tied) head row with weight `shift`. Its attention is
    sharp enough that scaling it by layer matters."""
    torch.manual_seed(0)
    args = dict(n_layer=3, n_head=4, n_embd=64, n_positions=64, vocab_size=VOCAB)
    hf = GPT2LMHeadModel(GPT2Config(**args, scale_attn_by_inverse_layer_idx=inverse_layer, **config)).eval()
    with torch.no_grad():
        for block in hf.transformer.h:
            block.attn.c_attn.weight.mul_(8.0)
        hf.transformer.ln_f.weight[0] = 0.0
        hf.transformer.ln_f.bias[0] = 1.0
        hf.transformer.wte.weight[:, 0] = shift
    return hf


def tokens(n: int = 2, t: int = 64) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("inverse_layer", [False, True])
def test_loss_and_logits_equal_transformers_with_logits_far_from_zero(tmp_path, inverse_layer):
    hf = hf_gpt2(inverse_layer)
    hf.save_pretrained(tmp_path / "hf")
    ours = GPT.from_pretrained(str(tmp_path / "hf")).eval()
    assert ours.config.scale_attn_by_inverse_layer_idx is inverse_layer
    idx = tokens()
    with torch.no_grad():
        expected = hf(idx, labels=idx)
        logits, loss = ours(idx[:, :-1], idx[:, 1:])
    assert expected.logits.mean() < -20  # the regime of OpenAI's weights
    torch.testing.assert_close(logits, expected.logits[:, :-1], atol=1e-4, rtol=1e-5)
    assert loss.item() == pytest.approx(expected.loss.item(), abs=1e-5)  # was 33.85 against 10.84 at shift -30


def test_nanogpt_api_from_pretrained_reads_a_local_folder(tmp_path):
    hf = hf_gpt2()
    hf.save_pretrained(tmp_path / "hf")
    model = GPT.from_pretrained(str(tmp_path / "hf"), dict(dropout=0.1))
    assert model.config.dropout == 0.1 and model.config.n_layer == 3


@pytest.mark.parametrize("inverse_layer", [False, True])
def test_export_writes_the_attention_setting_and_round_trips(tmp_path, inverse_layer):
    hf_gpt2(inverse_layer).save_pretrained(tmp_path / "hf")
    ours = GPT.from_pretrained(str(tmp_path / "hf")).eval()
    exported = to_hf(ours, EOT_TOKEN)
    assert exported.config.scale_attn_by_inverse_layer_idx is inverse_layer
    exported.save_pretrained(tmp_path / "back")
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "back", local_files_only=True).eval()
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(again(idx).logits, ours(idx, idx)[0], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    "setting,text",
    [
        (dict(n_inner=96), "n_inner=96"),
        (dict(scale_attn_weights=False), "scale_attn_weights=False"),
        (dict(activation_function="relu"), "activation_function='relu'"),
        (dict(layer_norm_epsilon=1e-6), "1e-06"),
        (dict(tie_word_embeddings=False), "tie_word_embeddings=False"),
    ],
)
def test_settings_this_model_cannot_reproduce_are_refused_in_one_line(tmp_path, setting, text):
    hf_gpt2(**setting).save_pretrained(tmp_path / "hf")
    with pytest.raises(ConversionError, match="cannot reproduce the Hugging Face setting") as e:
        GPT.from_pretrained(str(tmp_path / "hf"))
    assert text in str(e.value) and "\n" not in str(e.value)


def test_the_same_tanh_gelu_under_its_other_name_and_float32_attention_are_accepted(tmp_path):
    hf = hf_gpt2(activation_function="gelu_pytorch_tanh", reorder_and_upcast_attn=True)
    hf.save_pretrained(tmp_path / "hf")
    ours = GPT.from_pretrained(str(tmp_path / "hf")).eval()
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-5)


def llm_inheritune_checkpoint(hf: GPT2LMHeadModel, path) -> None:
    """The checkpoint LLM-Inheritune's GPT-2 script writes: nanoGPT's layout under torch.compile's prefix, the
    causal mask its attention registers as a buffer named bias in every layer, 50304 rows of (trained, here
    large) padding, and its own key in model_args."""
    state = {}
    for key, value in hf.state_dict().items():
        if key.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")):
            value = value.t()
        state[f"_orig_mod.{key}"] = value
    positions = hf.config.n_positions
    mask = torch.tril(torch.ones(positions, positions)).view(1, 1, positions, positions)
    state |= {f"_orig_mod.transformer.h.{layer}.attn.bias": mask for layer in range(hf.config.n_layer)}
    wte = torch.cat([hf.transformer.wte.weight.detach(), torch.full((47, 64), 5.0)])
    state["_orig_mod.transformer.wte.weight"] = state["_orig_mod.lm_head.weight"] = wte
    c = hf.config
    model_args = dict(
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        block_size=c.n_positions,
        bias=True,
        vocab_size=50304,
        dropout=0.0,
        scale_attn_by_inverse_layer_idx=True,
    )
    torch.save(
        {
            "model": state,
            "optimizer": {},
            "model_args": model_args,
            "iter_num": 100000,
            "best_val_loss": torch.tensor(2.85),
            # their train_iniheritune.py's config: nanoGPT's keys with a per-GPU gradient_accumulation_steps
            # and its own optimizer's keys
            "config": {
                "dataset": "openwebtext",
                "batch_size": 2,
                "gradient_accumulation_steps": 8,
                "block_size": 1024,
                "optimizer_name": "adamw",
                "rho": 0.1,
            },
        },
        path,
    )


def test_llm_inheritune_checkpoints_load_with_transformers_logits_and_build_students(tmp_path):
    hf = hf_gpt2(inverse_layer=True)
    llm_inheritune_checkpoint(hf, tmp_path / "ckpt.pt")
    ours, ckpt = load_model(tmp_path / "ckpt.pt")
    assert ours.config.vocab_size == VOCAB and ckpt.iter_num == 100000
    assert ckpt.best_val_loss == pytest.approx(2.85) and isinstance(ckpt.best_val_loss, float)  # a tensor there
    assert ckpt.tokens_seen() is None  # their config cannot say how many GPUs shared a step
    idx = tokens()
    with torch.no_grad():
        expected = hf(idx, labels=idx)
        logits, loss = ours.eval()(idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(logits, expected.logits[:, :-1], atol=1e-4, rtol=1e-5)
    assert loss.item() == pytest.approx(expected.loss.item(), abs=1e-5)  # the 47 padding rows take no part
    assert (
        inherit.main(["--inherit_from", str(tmp_path / "ckpt.pt"), "--n_layer", "2", "--out", str(tmp_path / "s.pt")])
        == 0
    )
    student = Checkpoint.load(tmp_path / "s.pt")
    assert student.model_args["scale_attn_by_inverse_layer_idx"] is True
    assert student.inherit["reference_val_loss"] == pytest.approx(2.85)


def test_a_bias_free_gpt_comes_back_bias_free_from_its_export(tmp_path):
    """GPT-2's format holds biases, which export writes as zeros: read back, the model is the same size."""
    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, bias=False)).eval()
    to_hf(ours, EOT_TOKEN).save_pretrained(tmp_path / "hf")
    again = GPT.from_pretrained(str(tmp_path / "hf")).eval()
    assert again.config.bias is False and again.get_num_params() == ours.get_num_params()
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(again(idx, idx)[0], ours(idx, idx)[0], atol=1e-5, rtol=1e-5)
    assert GPT.from_pretrained(str(_saved(hf_gpt2(), tmp_path / "with"))).config.bias is True


def _saved(hf: GPT2LMHeadModel, folder) -> str:
    hf.save_pretrained(folder)
    return folder
