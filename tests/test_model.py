import math

import pytest
import torch

from model import GPT, GPTConfig, clean_state_dict, peak_flops_of


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    cfg = dict(n_layer=3, n_head=4, n_embd=32, block_size=16, vocab_size=100, bias=True, dropout=0.0)
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg)).eval()


def test_vocab_is_padded_to_a_multiple_of_64():
    model = tiny(vocab_size=50257)
    assert model.config.padded_vocab_size == 50304
    assert model.transformer.wte.weight.shape == (50304, 32)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_future_tokens_never_change_earlier_logits():
    model = tiny()
    idx = torch.randint(0, 100, (2, 16))
    logits, _ = model(idx, idx)
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 7) % 100
    logits2, _ = model(changed, changed)
    assert torch.equal(logits[:, :10], logits2[:, :10])
    assert not torch.allclose(logits[:, 10:], logits2[:, 10:])


def test_forward_returns_full_logits_with_targets_and_last_position_without():
    model = tiny()
    idx, targets = torch.randint(0, 100, (2, 2, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 16, 128) and loss.dim() == 0
    last, none = model(idx)
    assert none is None and last.shape == (2, 1, 128)
    torch.testing.assert_close(last[:, 0], logits[:, -1])
    # An untrained model is close to uniform over the padded vocabulary.
    assert abs(loss.item() - math.log(128)) < 0.1


def test_sequence_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="exceeds block_size"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_residual_projections_use_gpt2_scaled_init():
    model = tiny(n_layer=8, n_embd=256, n_head=4)
    std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_attention_probs_are_causal_distributions_that_reproduce_the_forward_pass():
    model = tiny()
    idx = torch.randint(0, 100, (2, 16))
    att = model.attention_probs(idx)
    assert att.shape == (3, 2, 4, 16, 16)
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 2, 4, 16))
    assert torch.all(att.triu(diagonal=1) == 0)
    x = model._embed(idx)
    block = model.transformer.h[0]
    torch.testing.assert_close(block(x, return_attn=True)[0], block(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.8, 5)])
def test_kv_cache_generation_equals_full_recomputation(temperature, top_k):
    model = tiny()
    idx = torch.randint(0, 100, (2, 5))
    # 30 new tokens run past block_size 16: the cropped-window path is exercised too.
    out = [
        model.generate(idx, 30, temperature, top_k, use_kv_cache=cache, generator=torch.Generator().manual_seed(3))
        for cache in (True, False)
    ]
    assert out[0].shape == (2, 35)
    assert torch.equal(out[0], out[1])


def test_kv_cache_logits_equal_full_forward_logits():
    model = tiny()
    idx = torch.randint(0, 100, (1, 12))
    from model import KVCache

    cache = KVCache(model.config, 1, idx.device, torch.float32)
    x = model._embed(idx[:, :8])
    for i, block in enumerate(model.transformer.h):
        x, _ = block(x, cache, i)
    cache.length = 8
    x = model._embed(idx[:, 8:], start=8)  # a 4-token chunk: the explicit-mask path
    for i, block in enumerate(model.transformer.h):
        x, _ = block(x, cache, i)
    full, _ = model(idx, idx)
    torch.testing.assert_close(model._logits(x), full[:, 8:], atol=1e-5, rtol=1e-5)


def test_padding_tokens_are_never_sampled():
    model = tiny(vocab_size=70)  # padded to 128
    with torch.no_grad():
        model.lm_head.weight[70:] = 10.0  # make every padding row the likeliest token
    out = model.generate(torch.zeros(4, 1, dtype=torch.long), 20, temperature=1.0)
    assert out.max().item() < 70


def test_nanogpt_style_state_dict_loads():
    """nanoGPT checkpoints of compiled models carry `_orig_mod.`; older ones store causal-mask buffers."""
    source = tiny()
    state = {f"_orig_mod.{k}": v for k, v in source.state_dict().items()}
    for i in range(3):
        state[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(16, 16)).view(1, 1, 16, 16)
    target = GPT(GPTConfig(**vars(source.config))).eval()
    target.load_state_dict(clean_state_dict(state))
    idx = torch.randint(0, 100, (1, 16))
    assert torch.equal(target(idx, idx)[0], source(idx, idx)[0])


def test_optimizer_decays_matrices_only():
    model = tiny()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_mfu_uses_6n_plus_attention_flops():
    model = tiny()
    cfg = model.config
    flops = 6 * model.get_num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
    assert model.estimate_mfu(tokens_per_iter=1000, dt=0.5, peak_flops=1e12) == pytest.approx(flops * 2000 / 1e12)
    assert peak_flops_of(torch.device("cpu")) is None
