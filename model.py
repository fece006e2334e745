"""A GPT language model in one file: GPT-2, and the options of the Llama family (RMSNorm, SwiGLU, rotary
embeddings, grouped key/value heads, an untied head). It imports nothing of the project when imported; only
`GPT.from_pretrained` (nanoGPT's API) reads Hugging Face weights through hf.py when called.

Parameter names follow nanoGPT (``transformer.wte``, ``transformer.h.{i}.attn.c_attn``, ``lm_head``...),
so nanoGPT-style checkpoints load directly (checkpoint.py reads every model source):

    from model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128))
    logits, loss = model(idx, targets)
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

# nanoGPT's estimate_mfu is relative to the A100's dense bf16 peak (runtime.PEAK_FLOPS has other devices').
A100_PEAK_FLOPS = 312e12

# nanoGPT's GPTConfig fields: its model_args hold exactly these (see GPTConfig.model_args).
NANOGPT_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias")
GPT2_VOCAB = 50257  # GPT-2's tokens (nanoGPT's checkpoints record them padded: inheritune/compat.py reads that)
INIT_STD = 0.02  # GPT-2's initialisation of every weight matrix and embedding
VOCAB_ROWS = ("transformer.wte.weight", "lm_head.weight")  # one row per token, padded in the model


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257  # tokens that exist; the embedding is padded beyond this for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linear and LayerNorm layers, as GPT-2
    # Attention logits of layer l also divided by l + 1 (Hugging Face's GPT2Config option of this name),
    # as the Inheritune authors trained their GPT-2s.
    scale_attn_by_inverse_layer_idx: bool = False
    # With that scaling, the l of each block's 1 / (l + 1) where it is not the block's own index: a student's
    # blocks keep the scales of the reference blocks they were inherited from. None: block i uses i.
    scale_layer_idx: list[int] | None = None
    # The Llama family (Llama, OpenLLaMA, TinyLlama, SmolLM, Qwen2); the defaults are GPT-2's.
    norm: str = "layernorm"  # or "rmsnorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # or "swiglu": silu(gate) * up, gate and up computed together by c_fc
    intermediate_size: int = 0  # width of the MLP; 0: 4 * n_embd
    rope: bool = False  # rotary position embeddings instead of the learned wpe
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # Llama 3's: factor, low_freq_factor, high_freq_factor, original_max_...
    n_kv_head: int = 0  # key/value heads, shared by groups of query heads (GQA); 0: n_head
    tie_embeddings: bool = True  # the head shares wte's weights (GPT-2); False: a head of its own (Llama)
    qkv_bias: bool = False  # biases on the query, key and value projections only (Qwen2)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.norm not in ("layernorm", "rmsnorm") or self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"norm must be layernorm or rmsnorm and mlp gelu or swiglu, got {self.norm}, {self.mlp}")
        if self.n_head % self.kv_heads != 0:
            raise ValueError(f"n_head {self.n_head} is not a multiple of n_kv_head {self.kv_heads}")
        if self.rope and self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head size, got {self.head_dim}")
        if self.scale_layer_idx is not None:
            self.scale_layer_idx = [int(i) for i in self.scale_layer_idx]
            if len(self.scale_layer_idx) != self.n_layer or min(self.scale_layer_idx) < 0:
                raise ValueError(f"scale_layer_idx needs one index >= 0 per layer, got {self.scale_layer_idx}")
            if self.scale_layer_idx == list(range(self.n_layer)):
                self.scale_layer_idx = None  # each block's own index: the default, as nanoGPT and HF lay it out

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    def layer_scale_index(self, layer: int) -> int:
        """The l of block `layer`'s inverse-layer attention scale 1 / (l + 1)."""
        return layer if self.scale_layer_idx is None else self.scale_layer_idx[layer]

    @property
    def padded_vocab_size(self) -> int:
        """Rows of wte / lm_head: vocab_size rounded up to a multiple of 64, for fast matrix products.
        The extra rows are padding: they never take part in the loss or in sampling."""
        return 64 * math.ceil(self.vocab_size / 64)

    def model_args(self) -> dict:
        """The checkpoint's model_args: nanoGPT's fields, and any other option only where it differs from
        its default, so nanoGPT's `GPTConfig(**model_args)` builds any model that nanoGPT can represent."""
        default = GPTConfig()
        args = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in args.items() if k in NANOGPT_FIELDS or v != getattr(default, k)}

    @classmethod
    def from_model_args(cls, model_args: dict, **overrides) -> GPTConfig:
        """The config of a checkpoint's model_args (older and nanoGPT's are translated when the checkpoint is
        read: inheritune/compat.py)."""
        return cls(**{**model_args, **overrides})


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot drop only the bias)."""

    def __init__(self, ndim: int, bias: bool, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """Llama's norm: x / rms(x), computed in float32, times a gain."""

    def __init__(self, ndim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return LayerNorm(config.n_embd, config.bias, config.norm_eps)


def rope_frequencies(config: GPTConfig) -> torch.Tensor:
    """The inverse frequencies of rotary embeddings, with Llama 3's long-context rescaling if configured."""
    dim = config.head_dim
    inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    if not config.rope_scaling:
        return inv_freq
    s = config.rope_scaling  # Llama 3.1: stretch long wavelengths by factor, keep short ones, blend between
    low_wavelen = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wavelen = s["original_max_position_embeddings"] / s["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s["factor"], inv_freq)
    smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (
        s["high_freq_factor"] - s["low_freq_factor"]
    )
    blended = (1 - smooth) * scaled / s["factor"] + smooth * scaled
    return torch.where((wavelen >= high_wavelen) & (wavelen <= low_wavelen), blended, scaled)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i + d/2}) of each head by position-dependent angles (Llama's layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-x2, x1), dim=-1) * sin.to(x.dtype)


class KVCache:
    """Keys and values of every layer for incremental decoding, preallocated up to `length` positions. Its shapes
    never change, and the position where the next keys go is a tensor (`start`), so one compiled decoding step
    serves every position: a Python int would be a constant of the graph, one recompile per position."""

    def __init__(self, config: GPTConfig, batch_size: int, length: int, device: torch.device, dtype: torch.dtype):
        shape = (batch_size, config.kv_heads, length, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.start = torch.zeros((), dtype=torch.long, device=device)
        self._length = 0

    @property
    def length(self) -> int:
        """Positions filled so far (the host's count; `start` holds it on the device)."""
        return self._length

    @length.setter
    def length(self, value: int) -> None:
        self._length = value
        self.start.fill_(value)


Rope = tuple[torch.Tensor, torch.Tensor] | None  # cos and sin of the positions being computed


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        qkv = (self.n_head + 2 * self.n_kv_head) * self.head_dim  # queries, then keys, then values
        self.c_attn = nn.Linear(config.n_embd, qkv, bias=config.bias or config.qkv_bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.layer = layer  # this block's index: its slot in the KV cache
        self.scale = 1.0 / math.sqrt(self.head_dim)  # the same in every layer, so one compiled graph serves all
        # The inverse-layer scale 1 / (l + 1) multiplies the queries, from a buffer: a per-layer Python float
        # would be a constant of each block's compiled graph (dynamo guards on it), one recompile per layer.
        self.scale_by_layer = config.scale_attn_by_inverse_layer_idx
        inverse_layer = 1.0 / (config.layer_scale_index(layer) + 1) if self.scale_by_layer else 1.0
        self.register_buffer("layer_scale", torch.tensor(inverse_layer), persistent=False)

    def forward(
        self, x: torch.Tensor, rope: Rope = None, cache: KVCache | None = None, return_attn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        sizes = (self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim)
        q, k, v = self.c_attn(x).split(sizes, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2) for t in (k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.scale_by_layer:
            q = q * self.layer_scale
        att = None
        gqa = self.n_kv_head != self.n_head
        if cache is not None:
            # Written at positions start.. of the whole cache, and attended through a mask of the positions filled
            # so far: static shapes. The mask leaves SDPA's memory-efficient or math kernel, not flash (is_causal
            # aligns its mask top-left, wrong for queries that start at `start`); for one query per step, the
            # work is reading the cache, which every kernel does once.
            positions = cache.start + torch.arange(T, device=x.device)
            k_all, v_all = cache.k[self.layer], cache.v[self.layer]
            k_all.index_copy_(2, positions, k)
            v_all.index_copy_(2, positions, v)
            mask = torch.arange(k_all.size(2), device=x.device) <= positions[:, None]
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, scale=self.scale, enable_gqa=gqa)
        elif return_attn:
            att = self.attention_probs(q, k)
            y = self.attn_dropout(att) @ v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        else:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=True, scale=self.scale, enable_gqa=gqa
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), att

    def attention_probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The post-softmax attention matrix that scaled_dot_product_attention computes internally."""
        T, S = q.size(-2), k.size(-2)
        k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)  # each key head serves a group of queries
        scores = (q @ k.transpose(-2, -1)) * self.scale
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.intermediate_size or 4 * config.n_embd
        self.swiglu = config.mlp == "swiglu"
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.swiglu else hidden, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            return self.dropout(self.c_proj(F.silu(gate) * up))
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, rope: Rope = None, cache: KVCache | None = None, return_attn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, att = self.attn(self.ln_1(x), rope, cache, return_attn)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, att


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        # nanoGPT's order of modules: initialisation draws from the seeded generator in this order, so a seed
        # gives the GPT-2 that nanoGPT's GPT gives.
        modules = dict(wte=nn.Embedding(config.padded_vocab_size, config.n_embd))
        if not config.rope:
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules |= dict(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
            ln_f=make_norm(config),
        )
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2
        if config.rope:  # cos and sin of every position's angles, [f, f] per head as Llama lays them out
            angles = torch.outer(torch.arange(config.block_size).float(), rope_frequencies(config)).repeat(1, 2)
            self.register_buffer("rope_cos", angles.cos(), persistent=False)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)
        self.gradient_checkpointing = False  # recompute each block in the backward pass: less memory, more time
        self.compiled_decode_step = None  # generate's one-token step, once compile_decode_step has compiled it
        # Added to the logits: -inf on the padding rows, so that they never take part in the loss or in
        # sampling whatever their weights (Hugging Face's GPT-2 leaves them zero: logit 0 would outweigh
        # OpenAI's real logits, which sit around -60..-100). Folded into the head's matrix product as its
        # bias, it costs nothing. Not saved: it follows from vocab_size.
        mask = torch.zeros(config.padded_vocab_size)
        mask[config.vocab_size :] = float("-inf")
        self.register_buffer("vocab_mask", mask, persistent=False)
        # The padding is a detail of the tensors, not of the model: state dicts hold vocab_size rows of wte and
        # lm_head, as nanoGPT's GPT-2 and Hugging Face's do, and loading one pads it again. So nanoGPT's idiom
        # GPT(GPTConfig(**ckpt["model_args"])).load_state_dict(ckpt["model"]) works on this project's files.
        self.register_state_dict_post_hook(GPT._unpad_vocab_rows)
        self.register_load_state_dict_pre_hook(GPT._pad_vocab_rows)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer), one per sublayer.
                torch.nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    @classmethod
    def from_pretrained(cls, model_type: str, override_args: dict | None = None) -> GPT:
        """nanoGPT's API: OpenAI's GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') through transformers;
        a local Hugging Face folder works too (GPT-2 or the Llama family). Only dropout can be overridden."""
        override_args = override_args or {}
        if set(override_args) - {"dropout"}:
            raise ValueError(f"only dropout can be overridden, got {sorted(override_args)}")
        from hf import read_hf  # here, not at the top: model.py stays importable without the project's other files

        config_args, state = read_hf(model_type)
        model = cls(GPTConfig(**config_args, dropout=override_args.get("dropout", 0.0)))
        load_weights(model, state)
        return model

    def get_num_params(self, non_embedding: bool = True) -> int:
        """nanoGPT's parameter count: with non_embedding (its default) the position embedding is left out, as in
        the GPT-2 papers' counts, while the token embedding stays (tied, it is the head's weights too). Not the
        "non-embedding" N of the scaling laws, which leaves out the token embedding and the head as well:
        get_num_scaling_params."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and not self.config.rope:
            n -= self.transformer.wpe.weight.numel()
        return n

    def get_num_scaling_params(self) -> int:
        """N of the scaling laws: every parameter but the token and position embeddings and the head, so N
        measures the network rather than its vocabulary (Kaplan et al.'s non-embedding count)."""
        untied_head = 0 if self.config.tie_embeddings else self.lm_head.weight.numel()
        return self.get_num_params() - self.transformer.wte.weight.numel() - untied_head

    @staticmethod
    def _unpad_vocab_rows(module: GPT, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        for key in VOCAB_ROWS:
            state_dict[prefix + key] = state_dict[prefix + key][: module.config.vocab_size]

    @staticmethod
    def _pad_vocab_rows(module: GPT, state_dict: dict, prefix: str, *args) -> None:
        """Zero rows up to the padded size, for a state dict of exactly vocab_size rows (ours, HF's, nanoGPT's);
        any other size is left for load_state_dict to refuse as a mismatch."""
        for key in (prefix + k for k in VOCAB_ROWS):
            rows = state_dict.get(key)
            missing = module.config.padded_vocab_size - rows.size(0) if rows is not None else 0
            if missing > 0 and rows.size(0) == module.config.vocab_size:
                state_dict[key] = torch.cat([rows, rows.new_zeros(missing, rows.size(1))])

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        """optimizer.state_dict() with the AdamW moments of wte and lm_head cut to vocab_size rows, as
        state_dict() cuts the weights: what a model of vocab_size rows (nanoGPT's) resumes. The padding rows
        never get a gradient, so their moments are zero and the cut loses nothing."""
        state = optimizer.state_dict()
        rows = self.config.vocab_size
        for index in self._vocab_param_indices(optimizer):
            moments = state["state"].get(index, {})
            state["state"][index] = {
                k: v[:rows].clone() if self._is_vocab_moment(v, self.config.padded_vocab_size) else v
                for k, v in moments.items()
            }
        return state

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """optimizer.load_state_dict, the moments of wte and lm_head of vocab_size rows (optimizer_state_dict's,
        nanoGPT's) padded with the zero moments of the padding rows."""
        padded = dict(state["state"])
        missing = self.config.padded_vocab_size - self.config.vocab_size
        for index in self._vocab_param_indices(optimizer):
            moments = state["state"].get(index, {})
            padded[index] = {
                k: torch.cat([v, v.new_zeros(missing, *v.shape[1:])])
                if self._is_vocab_moment(v, self.config.vocab_size)
                else v
                for k, v in moments.items()
            }
        optimizer.load_state_dict({**state, "state": padded})

    def _vocab_param_indices(self, optimizer: torch.optim.Optimizer) -> list[int]:
        """Where wte and lm_head (once, when tied) stand in torch's numbering of an optimizer's parameters."""
        vocab = {id(self.transformer.wte.weight), id(self.lm_head.weight)}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return [i for i, p in enumerate(params) if id(p) in vocab]

    def _is_vocab_moment(self, value: object, rows: int) -> bool:
        """A moment of `rows` rows, where the padding makes a difference (else there is nothing to cut or pad)."""
        padding = self.config.padded_vocab_size != self.config.vocab_size
        return padding and torch.is_tensor(value) and value.dim() == 2 and value.size(0) == rows

    def crop_block_size(self, block_size: int) -> None:
        """nanoGPT's model surgery: keep the first block_size positions, e.g. to train GPT-2 at 256 tokens."""
        if block_size > self.config.block_size:
            raise ValueError(f"cannot grow block_size from {self.config.block_size} to {block_size}")
        self.config.block_size = block_size
        if self.config.rope:
            self.rope_cos, self.rope_sin = self.rope_cos[:block_size], self.rope_sin[:block_size]
        else:
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def _embed(self, idx: torch.Tensor, start: int | torch.Tensor = 0) -> tuple[torch.Tensor, Rope]:
        """Token (and learned position) embeddings of positions start.., and their rotary angles if any; `start` a
        tensor where it must not be a constant of a compiled graph (a KV cache's), and is then not checked."""
        T = idx.size(1)
        if isinstance(start, int) and start + T > self.config.block_size:
            raise ValueError(f"sequence of length {start + T} exceeds block_size {self.config.block_size}")
        pos = start + torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx)
        if self.config.rope:
            return self.transformer.drop(x), (self.rope_cos[pos], self.rope_sin[pos])
        return self.transformer.drop(x + self.transformer.wpe(pos)), None

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over the padded vocabulary, -inf on the padding."""
        return F.linear(self.transformer.ln_f(x), self.lm_head.weight, self.vocab_mask)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits over the vocabulary (vocab_size columns), and the mean cross-entropy when targets are given.

        Without targets only the last position's logits are computed (all that sampling needs).
        """
        x = self._residual_stream(idx)
        if targets is None:
            return self._real_tokens(self._logits(x[:, [-1], :])), None
        logits, loss = self._logits_and_loss(x, targets)
        return self._real_tokens(logits), loss

    def all_logits(self, idx: torch.Tensor) -> torch.Tensor:
        """The logits of every position over the vocabulary (vocab_size columns), and no loss: a teacher's."""
        return self._real_tokens(self._logits(self._residual_stream(idx)))

    def _residual_stream(self, idx: torch.Tensor) -> torch.Tensor:
        """The output of the last block, before ln_f."""
        x, rope = self._embed(idx)
        for block in self.transformer.h:
            if self.gradient_checkpointing and self.training:
                x, _ = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x, _ = block(x, rope)
        return x

    def _logits_and_loss(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._logits(x)
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    def compile_blocks(self) -> None:
        """torch.compile, in place, each block's forward (one graph that every layer shares) and the head with
        its loss, as torchtitan compiles: before FSDP shards the blocks, whose hooks then run around the
        compiled code, not inside it (they are opaque to dynamo, and split any graph that holds them). The
        parameters keep their names, and the embedding lookup and the loop over blocks stay eager."""
        for block in self.transformer.h:
            block.forward = torch.compile(block.forward, fullgraph=True)
        self._logits_and_loss = torch.compile(self._logits_and_loss, fullgraph=True)

    @torch.compiler.disable
    def _real_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits of the vocab_size real tokens: a view, taken outside any compiled graph, where returning
        a slice would make inductor copy the whole logits tensor (15% of a training step, measured)."""
        return logits[..., : self.config.vocab_size]

    @torch.no_grad()
    def attention_probs(self, idx: torch.Tensor) -> torch.Tensor:
        """Post-softmax attention of every layer and head: a (n_layer, B, n_head, T, T) tensor."""
        return self.attention_and_hidden_states(idx)[0]

    @torch.no_grad()
    def attention_and_hidden_states(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """attention_probs and hidden_states from one forward pass (an analysis measures both)."""
        x, rope = self._embed(idx)
        maps, states = [], [x]
        for block in self.transformer.h:
            x, att = block(x, rope, return_attn=True)
            maps.append(att)
            states.append(x)
        return torch.stack(maps), torch.stack(states)

    @torch.no_grad()
    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """The residual stream entering each block and leaving the last (before ln_f): (n_layer + 1, B, T, n_embd).
        Entry l is block l's input, so blocks l..l+k-1 map entry l to entry l+k."""
        x, rope = self._embed(idx)
        states = [x]
        for block in self.transformer.h:
            x, _ = block(x, rope)
            states.append(x)
        return torch.stack(states)

    def configure_optimizers(
        self,
        weight_decay: float,
        learning_rate: float,
        betas: tuple[float, float],
        device_type: str,
        decay_1d: bool = False,
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices and embeddings only, or with decay_1d on biases and norm gains
        too (as LLM-Inheritune's single-group AdamW call does)."""
        groups = self.optimizer_groups(weight_decay, decay_1d)
        fused = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def optimizer_groups(self, weight_decay: float, decay_1d: bool = False) -> list[dict]:
        """configure_optimizers' parameter groups: the trained parameters, those decayed and the others."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": weight_decay if decay_1d else 0.0},
        ]

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N for the matmuls plus attention's 12 * L * C * T (PaLM appendix B). N counts
        the head, a matrix product, and not an untied token embedding, a lookup (tied, the two are one matrix)."""
        cfg = self.config
        lookup = 0 if cfg.tie_embeddings else self.transformer.wte.weight.numel()
        return 6 * (self.get_num_params() - lookup) + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, peak_flops: float = A100_PEAK_FLOPS) -> float:
        """nanoGPT's model FLOPs utilisation: this process's training FLOP/s over its device's peak, for
        fwdbwd_per_iter sequences of block_size tokens per iteration of dt seconds. Under DDP, pass this
        process's sequences, not all processes'. The default peak is the A100's, as in nanoGPT."""
        return self.flops_per_token() * self.config.block_size * fwdbwd_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_kv_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample max_new_tokens continuations of idx (B, T); tokens beyond vocab_size are never drawn.

        With the KV cache each new token costs one position's forward pass; the cache holds only the
        positions this call can reach. Once the context reaches block_size, the window is cropped to the
        last block_size tokens and recomputed, since positions shift with the window.
        """
        block_size = self.config.block_size
        cache, token = None, idx[:, -1:]
        for step in range(max_new_tokens):
            if use_kv_cache and cache is not None and cache.length < cache.k[0].size(2):
                logits = (self.compiled_decode_step or self._next_logits)(token, cache)
                cache.length += 1
            else:
                idx_cond = idx[:, -block_size:]
                if use_kv_cache:
                    room = min(block_size, idx_cond.size(1) + max_new_tokens - step)
                    cache = KVCache(self.config, idx.size(0), room, idx.device, self._cache_dtype(idx.device))
                logits = self._next_logits(idx_cond, cache)
                if cache is not None:
                    cache.length = idx_cond.size(1)
            token = self._sample(logits, temperature, top_k, generator)  # (B, 1) of its own, unlike a view of idx
            idx = torch.cat((idx, token), dim=1)
        return idx

    def _next_logits(self, idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """Logits (B, vocab_size) of the token after idx: its positions continue the cache's, their keys and
        values written into it, or, without a cache, start at 0."""
        x, rope = self._embed(idx, cache.start if cache is not None else 0)
        for block in self.transformer.h:
            x, _ = block(x, rope, cache)
        return self._logits(x[:, -1, :])[:, : self.config.vocab_size]

    def compile_decode_step(self) -> None:
        """torch.compile generate's one-token step with a KV cache: one graph for every position and layer (the
        cache's shapes are static and its position a tensor). The prompt's first pass stays eager."""
        self.compiled_decode_step = torch.compile(self._next_logits, fullgraph=True)

    def _cache_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype keys and values are computed in: autocast's where it is on (half the memory of float32)."""
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.lm_head.weight.dtype

    @staticmethod
    def _sample(
        logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        if temperature == 0.0:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits / temperature
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
        return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)


# ----------------------------------------------------------------------------- loading a state dict


def load_weights(model: GPT, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a state dict of ours, nanoGPT's or LLM-Inheritune's into the model: prefixes and stored masks
    are dropped (the vocabulary's padding rows, if missing, are added by the model itself)."""
    model.load_state_dict(clean_state_dict(state_dict))


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip torch.compile's `_orig_mod.` and DDP's `module.` prefixes, and nanoGPT's stored causal masks."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            key = key.removeprefix(prefix)
        if key.endswith(".attn.bias") and value.dim() == 4:
            continue  # old nanoGPT's registered causal-mask buffer, not a parameter
        cleaned[key] = value
    return cleaned
