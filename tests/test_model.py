import math

import pytest
import torch
import torch.nn.functional as F

import model as model_module
from checkpoint import Checkpoint
from model import GPT, NANOGPT_FIELDS, GPTConfig, KVCache, clean_state_dict


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    cfg = dict(n_layer=3, n_head=4, n_embd=32, block_size=16, vocab_size=100, bias=True, dropout=0.0)
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg)).eval()


def shift_logits(model: GPT, shift: float) -> None:
    """Add `shift` to every real token's logit, as OpenAI's GPT-2 logits sit far below zero: ln_f emits a
    constant 1 in channel 0, and every real token's head row reads that channel with weight `shift`."""
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = 0.0
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[: model.config.vocab_size, 0] = shift
        model.lm_head.weight[model.config.vocab_size :] = 0.0  # padding rows as Hugging Face's import leaves them


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
    assert logits.shape == (2, 16, 100) and loss.dim() == 0  # the real vocabulary, not the 128 padded rows
    last, none = model(idx)
    assert none is None and last.shape == (2, 1, 100)
    torch.testing.assert_close(last[:, 0], logits[:, -1])
    # An untrained model is close to uniform over the real vocabulary: the padding takes no probability.
    assert abs(loss.item() - math.log(100)) < 0.1


@pytest.mark.parametrize("shift", [-30.0, 0.0, 40.0])
def test_padding_never_takes_part_in_the_loss_whatever_the_logits(shift):
    model = tiny(vocab_size=70)  # 58 padding rows
    shift_logits(model, shift)
    idx, targets = torch.randint(0, 70, (2, 4, 16))
    logits, loss = model(idx, targets)
    assert logits.shape[-1] == 70
    assert logits.mean().item() == pytest.approx(shift, abs=5.0)  # logits far from zero where shifted
    expected = F.cross_entropy(logits.reshape(-1, 70), targets.reshape(-1))  # over the real vocabulary only
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-6)
    assert loss.item() < math.log(70) + 1.0  # the zero-logit padding rows would make it ~ -shift at -30


def test_sequence_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="exceeds block_size"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_residual_projections_use_gpt2_scaled_init():
    model = tiny(n_layer=8, n_embd=256, n_head=4)
    std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_weights_start_centred_at_gpt2s_scale_and_biases_at_zero():
    """N(0, 0.02) for every matrix and embedding (the residual projections aside, above), zero biases, unit
    norm gains: a shifted mean or another std would start every run from scratch elsewhere."""
    model = tiny(n_layer=2, n_embd=256, n_head=4, bias=True, vocab_size=1000)
    block = model.transformer.h[0]
    for name, w in [
        ("wte", model.transformer.wte.weight),
        ("wpe", model.transformer.wpe.weight),
        ("c_attn", block.attn.c_attn.weight),
        ("c_fc", block.mlp.c_fc.weight),
    ]:
        assert abs(w.mean().item()) < 4 * 0.02 / math.sqrt(w.numel()), name
        assert w.std().item() == pytest.approx(0.02, rel=0.05), name
    assert all(torch.count_nonzero(b) == 0 for n, b in model.named_parameters() if n.endswith(".bias"))
    assert torch.equal(block.ln_1.weight, torch.ones(256))


def test_attention_dropout_acts_in_training_only_on_both_attention_paths():
    """With dropout 0.5 (the residual dropout switched off): in eval mode attention equals a dropout-free
    model's; in training it differs, through scaled_dot_product_attention and through the explicit
    probabilities that analysis reads, and is unbiased (its mean over many masks is the eval output)."""
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.5)
    attn = GPT(config).transformer.h[0].attn
    attn.resid_dropout = torch.nn.Identity()
    plain = GPT(GPTConfig(**{**config.__dict__, "dropout": 0.0})).transformer.h[0].attn
    plain.load_state_dict(attn.state_dict())
    x = 3.0 * torch.randn(2, 16, 32)
    attn.eval()
    for return_attn in (False, True):
        torch.testing.assert_close(attn(x, return_attn=return_attn)[0], plain(x, return_attn=return_attn)[0])
    expected = plain(x)[0]
    attn.train()
    for return_attn in (False, True):
        draws = torch.stack([attn(x, return_attn=return_attn)[0] for _ in range(400)])
        assert not torch.allclose(draws[0], expected, atol=1e-3)
        assert (draws.mean(0) - expected).abs().mean() < 0.1 * expected.abs().mean()


def test_a_seed_initialises_gpt2_in_nanogpts_order():
    """Initialisation draws from the seeded generator module by module: in nanoGPT's order (wpe right after
    wte), a seed gives the weights nanoGPT's GPT gives, and runs from scratch stay what they were."""
    model = tiny(n_layer=1, bias=False)
    block = [
        "ln_1.weight",
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "ln_2.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    ]
    expected = [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        *(f"transformer.h.0.{b}" for b in block),
        "transformer.ln_f.weight",
        "lm_head.weight",
    ]
    assert list(model.state_dict()) == expected  # modules are built, and then initialised, in this order


@pytest.mark.parametrize("inverse_layer", [False, True])
def test_attention_probs_are_causal_distributions_that_reproduce_the_forward_pass(inverse_layer):
    model = tiny(scale_attn_by_inverse_layer_idx=inverse_layer)
    idx = torch.randint(0, 100, (2, 16))
    att = model.attention_probs(idx)
    assert att.shape == (3, 2, 4, 16, 16)
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 2, 4, 16))
    assert torch.all(att.triu(diagonal=1) == 0)
    x, rope = model._embed(idx)
    for block in model.transformer.h:  # every layer: each has its own scale when scaled by inverse layer index
        torch.testing.assert_close(block(x, rope, return_attn=True)[0], block(x, rope)[0], atol=1e-5, rtol=1e-5)
        x = block(x, rope)[0]


def test_inverse_layer_scaling_divides_each_layers_logits_by_its_index_plus_one():
    model = tiny(scale_attn_by_inverse_layer_idx=True)
    with torch.no_grad():  # sharp attention: logits of several units, where the scale changes the result
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(20.0)
    idx = torch.randint(0, 100, (2, 16))
    probs = model.attention_probs(idx)
    x, _ = model._embed(idx)
    for layer, block in enumerate(model.transformer.h):
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(32, dim=2)
        q, k = (t.view(2, 16, 4, 8).transpose(1, 2) for t in (q, k))
        logits = (q @ k.transpose(-2, -1)) / math.sqrt(8) / (layer + 1)
        expected = logits.masked_fill(torch.ones(16, 16).triu(1).bool(), float("-inf")).softmax(-1)
        torch.testing.assert_close(probs[layer], expected, atol=1e-6, rtol=1e-5)
        if layer > 0:  # and the scale matters at this sharpness
            unscaled = (logits * (layer + 1)).masked_fill(torch.ones(16, 16).triu(1).bool(), float("-inf"))
            assert (unscaled.softmax(-1) - expected).abs().max() > 0.1
        x = block(x)[0]


@pytest.mark.parametrize("temperature,top_k,inverse_layer", [(0.0, None, False), (1.0, None, True), (0.8, 5, True)])
def test_kv_cache_generation_equals_full_recomputation(temperature, top_k, inverse_layer):
    model = tiny(scale_attn_by_inverse_layer_idx=inverse_layer)
    idx = torch.randint(0, 100, (2, 5))
    # 30 new tokens run past block_size 16: the cropped-window path is exercised too.
    out = [
        model.generate(idx, 30, temperature, top_k, use_kv_cache=cache, generator=torch.Generator().manual_seed(3))
        for cache in (True, False)
    ]
    assert out[0].shape == (2, 35)
    assert torch.equal(out[0], out[1])


def test_kv_cache_logits_equal_full_forward_logits():
    model = tiny(scale_attn_by_inverse_layer_idx=True)
    idx = torch.randint(0, 100, (1, 12))
    cache = KVCache(model.config, 1, 12, idx.device, torch.float32)
    x, rope = model._embed(idx[:, :8])
    for block in model.transformer.h:
        x, _ = block(x, rope, cache)
    cache.length = 8
    x, rope = model._embed(idx[:, 8:], start=8)  # a 4-token chunk: the explicit-mask path
    for block in model.transformer.h:
        x, _ = block(x, rope, cache)
    full, _ = model(idx, idx)
    torch.testing.assert_close(model._logits(x)[..., :100], full[:, 8:], atol=1e-5, rtol=1e-5)


def test_padding_tokens_are_never_sampled():
    model = tiny(vocab_size=70)  # padded to 128
    shift_logits(model, -30.0)  # real logits far below the padding rows' zero
    with torch.no_grad():
        model.lm_head.weight[70:] = 10.0  # and every padding row the likeliest token
    for temperature, top_k in ((1.0, None), (2.0, 100), (0.0, None)):
        out = model.generate(torch.zeros(4, 1, dtype=torch.long), 20, temperature=temperature, top_k=top_k)
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


def test_nanogpts_loading_idiom_works_on_this_projects_checkpoints(tmp_path):
    """nanoGPT's sample.py and train.py load with GPT(GPTConfig(**model_args)).load_state_dict(model): the
    state dict holds the vocab_size rows a checkpoint stores, and loading pads them again."""
    torch.manual_seed(0)
    source = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32)).eval()  # 50,257 tokens, 50,304 rows
    shift_logits(source, -60.0)
    state = source.state_dict()
    assert state["lm_head.weight"].shape == state["transformer.wte.weight"].shape == (50257, 32)
    Checkpoint.of(source).save(tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    assert model.lm_head.weight.shape == (50304, 32) and model.lm_head.weight is model.transformer.wte.weight
    idx = torch.randint(0, 50257, (2, 32))
    assert torch.equal(model.eval()(idx, idx)[0], source(idx, idx)[0])


def test_optimizer_decays_matrices_only():
    model = tiny()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_mfu_is_nanogpts_6n_plus_attention_flops_per_sequence():
    model = tiny()
    cfg = model.config
    flops = 6 * model.get_num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
    # nanoGPT's signature: sequences of block_size tokens per iteration, seconds per iteration; A100 peak.
    assert model.estimate_mfu(10, 0.5) == pytest.approx(flops * 16 * 10 / 0.5 / 312e12)
    assert model.estimate_mfu(10, 0.5, peak_flops=1e12) == pytest.approx(flops * 16 * 10 / 0.5 / 1e12)


def test_an_untied_embedding_is_a_lookup_and_adds_no_matmul_flops():
    """Untied, the head is the same matrix product as tied, and wte's rows are only read."""
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert untied.get_num_params() == tied.get_num_params() + tied.transformer.wte.weight.numel()
    assert untied.flops_per_token() == tied.flops_per_token()


def test_crop_block_size_keeps_the_first_positions():
    model = tiny()
    idx = torch.randint(0, 100, (2, 8))
    before, _ = model(idx, idx)
    model.crop_block_size(8)
    assert model.config.block_size == 8 and model.transformer.wpe.weight.shape == (8, 32)
    torch.testing.assert_close(model(idx, idx)[0], before)
    with pytest.raises(ValueError, match="cannot grow block_size"):
        model.crop_block_size(9)


def test_model_args_are_nanogpts_unless_an_option_differs():
    assert set(GPTConfig(vocab_size=65).model_args()) == set(NANOGPT_FIELDS)
    args = GPTConfig(scale_attn_by_inverse_layer_idx=True).model_args()
    assert set(args) == {*NANOGPT_FIELDS, "scale_attn_by_inverse_layer_idx"}
    assert GPTConfig.from_model_args(args) == GPTConfig(scale_attn_by_inverse_layer_idx=True)


def test_from_pretrained_refuses_overrides_other_than_dropout():
    with pytest.raises(ValueError, match="only dropout can be overridden"):
        GPT.from_pretrained("gpt2", dict(n_layer=2))
    assert model_module.GPT.from_pretrained.__doc__.startswith("nanoGPT's API")


def test_a_state_dict_pads_its_vocabulary_rows_only_when_it_has_exactly_the_real_ones():
    """vocab_size rows (ours, Hugging Face's) are padded with zero rows; a state dict that already has the
    padded rows (nanoGPT's 50,304) loads them as they are; a vocabulary that is a multiple of 64 has none."""
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100)
    source = GPT(config)
    state = source.state_dict()
    assert state["transformer.wte.weight"].shape == (100, 32)
    loaded = GPT(config)
    loaded.load_state_dict(state)
    torch.testing.assert_close(loaded.transformer.wte.weight[:100], source.transformer.wte.weight[:100])
    assert torch.count_nonzero(loaded.transformer.wte.weight[100:]) == 0
    padded = {k: v for k, v in state.items()}
    padded["transformer.wte.weight"] = padded["lm_head.weight"] = torch.full((128, 32), 0.5)
    loaded.load_state_dict(padded)
    assert torch.equal(loaded.transformer.wte.weight, torch.full((128, 32), 0.5))
    exact = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=128)
    GPT(exact).load_state_dict(GPT(exact).state_dict())


def test_a_state_dict_of_another_vocabulary_is_refused_not_padded():
    small = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100)).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=1000)).load_state_dict(small)


def test_weight_decay_spares_biases_and_norm_gains_unless_decay_1d():
    """The authors' AdamW call decays every parameter; nanoGPT's (the default) only matrices and embeddings."""
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=64, bias=True))
    for decay_1d, decays in ((False, {2: 0.1, 1: 0.0}), (True, {2: 0.1, 1: 0.1})):
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", decay_1d=decay_1d)
        by_dim = {p.dim(): group["weight_decay"] for group in opt.param_groups for p in group["params"]}
        assert by_dim == decays
        assert sum(len(group["params"]) for group in opt.param_groups) == len(list(model.parameters()))


def test_adamw_gets_the_learning_rate_betas_and_fused_kernel_asked_for():
    """nanoGPT's API: configure_optimizers is also called outside train.py, which resets lr every step."""
    opt = tiny().configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
    assert all(g["lr"] == 6e-4 and g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    assert opt.defaults["fused"] is True  # the fused kernel exists on CPU and CUDA in this torch
    # the choice by device type (the parameters' own device does not matter to it): fused where torch has it
    assert tiny().configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cuda").defaults["fused"] is True
    assert not tiny().configure_optimizers(0.1, 6e-4, (0.9, 0.95), "mps").defaults["fused"]


def test_parameter_count_leaves_out_only_learned_positions():
    """GPT-2's counts (and MFU) leave out wpe; a rotary model has no position table to leave out."""
    for model in (tiny(), tiny(rope=True, norm="rmsnorm", mlp="swiglu", bias=False)):
        total = sum(p.numel() for p in model.parameters())
        positions = 0 if model.config.rope else model.transformer.wpe.weight.numel()
        assert positions == (0 if model.config.rope else 16 * 32)
        assert model.get_num_params() == total - positions
        assert model.get_num_params(non_embedding=False) == total


def test_cropping_to_the_same_length_changes_nothing_and_a_rotary_model_crops_its_tables():
    model = tiny()
    idx = torch.randint(0, 100, (2, 16))
    before, _ = model(idx, idx)
    model.crop_block_size(16)
    assert torch.equal(model(idx, idx)[0], before)
    rotary = tiny(rope=True, norm="rmsnorm", mlp="swiglu", bias=False)
    before, _ = rotary(idx[:, :8], idx[:, :8])
    rotary.crop_block_size(8)
    assert rotary.config.block_size == 8 and rotary.rope_cos.shape[0] == rotary.rope_sin.shape[0] == 8
    assert torch.equal(rotary(idx[:, :8], idx[:, :8])[0], before)


def test_sampling_draws_from_the_top_k_softmax_at_the_temperature():
    """Frequencies of 4,000 draws against softmax(top-k logits / T), written out independently."""
    logits = torch.tensor([[4.0, 3.5, 3.0, 1.0, 0.0, -30.0], [-20.0, -21.0, -19.5, -22.0, -40.0, -19.0]])
    generator = torch.Generator().manual_seed(0)
    for temperature, top_k in ((0.5, 3), (2.0, 3), (1.5, None)):
        draws = torch.cat([GPT._sample(logits, temperature, top_k, generator) for _ in range(4000)], dim=1)
        for row, draws_of_row in zip(logits, draws, strict=True):
            kept = row.clone()
            if top_k is not None:
                kth = sorted(row.tolist(), reverse=True)[top_k - 1]
                kept[row < kth] = -math.inf
            expected = torch.exp(kept / temperature - (kept / temperature).max())
            expected = expected / expected.sum()
            seen = torch.bincount(draws_of_row, minlength=6) / draws_of_row.numel()
            assert torch.all(seen[expected == 0] == 0)
            torch.testing.assert_close(seen, expected, atol=0.03, rtol=0)
    assert GPT._sample(logits, 0.0, None, generator).tolist() == [[0], [5]]


@pytest.mark.parametrize("rotary", [False, True])
def test_a_bfloat16_model_generates_with_its_cache_what_it_computes_without(rotary):
    """Everything stays in the model's dtype: the cache (a float32 cache beside bf16 queries cannot be
    attended), and RMSNorm's and the rotary embedding's float32 intermediates cast back."""
    llama = dict(rope=True, norm="rmsnorm", mlp="swiglu", bias=False) if rotary else {}
    model = tiny(**llama).to(torch.bfloat16)
    idx = torch.randint(0, 100, (2, 4))
    out = [model.generate(idx, 8, temperature=0.0, use_kv_cache=cache) for cache in (True, False)]
    assert torch.equal(out[0], out[1])
    logits, _ = model(idx)
    assert logits.dtype == torch.bfloat16


def test_scaling_params_leave_out_the_embeddings_and_an_untied_head():
    """Kaplan et al.'s N, counted by hand: 3 blocks of (2 layernorms, c_attn, c_proj, c_fc, mlp c_proj) + ln_f."""
    block = 2 * 64 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32)
    assert tiny().get_num_scaling_params() == 3 * block + 64
    untied = tiny(tie_embeddings=False)
    head = untied.lm_head.weight.numel()
    assert untied.get_num_scaling_params() == 3 * block + 64 and head == 128 * 32


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    for llama in ({}, dict(rope=True, norm="rmsnorm", mlp="swiglu", bias=False)):
        idx = torch.randint(0, 100, (2, 16))
        grads = []
        for checkpointing in (False, True):
            model = tiny(**llama).train()
            model.gradient_checkpointing = checkpointing
            _, loss = model(idx, idx)
            loss.backward()
            grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
        assert grads[0][0] == grads[1][0]
        for a, b in zip(grads[0][1], grads[1][1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_targets_of_minus_one_are_left_out_of_the_loss():
    """nanoGPT's convention for positions without a target (ignore_index=-1)."""
    model = tiny()
    idx = torch.randint(0, 100, (2, 16))
    targets = idx.clone()
    targets[:, :5] = -1
    logits, loss = model(idx, targets)
    kept = F.cross_entropy(logits[:, 5:, :100].reshape(-1, 100), idx[:, 5:].reshape(-1))
    torch.testing.assert_close(loss, kept)
