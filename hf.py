"""Hugging Face conversion, both ways: a transformers causal LM (GPT-2, or the Llama family: Llama,
OpenLLaMA, TinyLlama, SmolLM, Qwen2) read as this project's GPT, and a GPT written as one. llama.cpp's GGUF
files of the Llama family come in the same way, through transformers' own GGUF loader (which dequantises
the tensors with the `gguf` package and undoes llama.cpp's q/k row permutation).

    config_args, state = read_hf("gpt2-medium")    # GPTConfig arguments and a state dict in nanoGPT's names
    config_args, state = read_hf("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    to_hf(model, eos_token, bos_token).save_pretrained("hf-student")

It works on config arguments and state dicts and imports nothing of the project but runtime.py's UserError,
so model.py can build from it (`GPT.from_pretrained`) and checkpoint.py can read Hugging Face sources through
it. transformers is imported only inside the functions that use it: it is slow to import.
"""

from __future__ import annotations

import collections
import functools
import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from runtime import UserError

HF_GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# Their (n_layer, n_head, n_embd), as nanoGPT's from_pretrained lists them: their configs without a download.
HF_GPT2_SHAPES = {
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
# Hugging Face's GPT-2 stores these as Conv1D, i.e. transposed relative to nn.Linear.
HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
LLAMA_FAMILY = ("llama", "qwen2")  # transformers' model_type of the Llama-style models this GPT reproduces
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+", re.ASCII)  # owner/name, as the hub spells them
# Suffixes of the files a model source may name, none of them a hub name's ending.
PATH_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".gguf", ".json")


class ConversionError(UserError):
    """A Hugging Face model this GPT cannot reproduce, or a GPT that has no Hugging Face equivalent."""


def is_hf_source(source: str) -> bool:
    """A model read through transformers: OpenAI's GPT-2 names, a Hugging Face model's folder, a hub id
    (owner/name) that is no local path, or a GGUF file."""
    return is_gpt2_name(source) or is_hf_folder(Path(source)) or is_hub_id(source) or is_gguf(source)


def is_gpt2_name(source: str) -> bool:
    """One of OpenAI's GPT-2 names where no path of that name is here: transformers would read that instead."""
    return source in HF_GPT2_NAMES and not Path(source).exists()


def is_hf_folder(path: Path) -> bool:
    """A folder whose config.json names a transformers model_type (a training run's config.json names none)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):  # no such file (or no such folder), or no JSON
        return False
    return isinstance(config, dict) and "model_type" in config


def is_hub_id(source: str) -> bool:
    """owner/name in the hub's characters (letters, digits, '-', '_', '.': no ':' as in C:/x) that names nothing
    here and looks like no path: not ./, ../ or ~/ (no hub name starts with '.' or '~'), no file's suffix
    (PATH_SUFFIXES). A missing path is then refused as a missing file, not sent to the hub's name check."""
    path_like = source.startswith((".", "~")) or source.lower().endswith(PATH_SUFFIXES)
    return HUB_ID.fullmatch(source) is not None and not path_like and not Path(source).exists()


def is_gguf(source: str | Path) -> bool:
    """A llama.cpp GGUF file, by its name (a missing one is then refused as such, not taken for a hub id)."""
    return str(source).lower().endswith(".gguf")


# ----------------------------------------------------------------------------- reading


def read_hf(source: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """A Hugging Face causal LM (hub name, or a local folder read offline) as the GPTConfig arguments and the
    state dict (this project's names, float32) of the same network."""
    from transformers import AutoModelForCausalLM

    if is_gguf(source):
        gguf_header(source)  # refuses a truncated file, another architecture, a missing tensor, an unknown type
        try:
            hf = from_gguf(AutoModelForCausalLM, source, dtype=torch.float32)
        except (RuntimeError, ValueError, KeyError) as e:  # its metadata and tensors disagree (a head size...)
            raise ConversionError(f"{source}: transformers cannot load it: {str(e).splitlines()[0]}") from None
    else:
        hf = from_hub_or_folder(AutoModelForCausalLM, source, dtype=torch.float32)
    if hf.config.model_type == "gpt2":
        return read_hf_gpt2(hf, source)
    if hf.config.model_type in LLAMA_FAMILY:
        return read_hf_llama(hf, source)
    known = ", ".join(("gpt2", *LLAMA_FAMILY))
    raise ConversionError(f"{source}: a {hf.config.model_type} model; this GPT reproduces {known}")


def from_hub_or_folder(cls, source: str, **kwargs):
    """transformers' `cls.from_pretrained` of a local folder (read offline) or a hub name; a folder without
    the files, or a name the hub does not answer for, is a ConversionError naming it."""
    local = Path(source).is_dir()
    try:
        return cls.from_pretrained(source, local_files_only=local, **kwargs)
    except OSError as e:  # transformers' "not found", "cannot connect" and HTTP errors are all OSErrors
        # a name the hub cannot give may be a mistyped path (runs/ref): say none is here either
        where = "" if local else f" (no local path {source} either)"
        raise ConversionError(f"{source}: {(str(e).splitlines() or [repr(e)])[0]}{where}") from None


def read_hf_config(source: str) -> dict:
    """The GPTConfig arguments of a Hugging Face causal LM from its config alone, no weights (a GPT-2's
    biases, which only its weights tell, are counted as there)."""
    from transformers import AutoConfig

    if is_gpt2_name(source):
        n_layer, n_head, n_embd = HF_GPT2_SHAPES[source]
        return dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=1024, vocab_size=50257, bias=True)
    if is_gguf(source):
        gguf_header(source)
        c = from_gguf(AutoConfig, source)
    else:
        c = from_hub_or_folder(AutoConfig, source)
    if c.model_type == "gpt2":
        return gpt2_args(c, source, bias=True)
    if c.model_type in LLAMA_FAMILY:
        return llama_args(c, source)
    known = ", ".join(("gpt2", *LLAMA_FAMILY))
    raise ConversionError(f"{source}: a {c.model_type} model; this GPT reproduces {known}")


def check_hf_config(source: str, cannot: dict[str, bool], config) -> None:
    """Stop with one line naming every setting of a transformers config that this GPT cannot reproduce."""
    settings = [f"{name}={getattr(config, name, None)!r}" for name, unsupported in cannot.items() if unsupported]
    if settings:
        raise ConversionError(f"{source}: this GPT cannot reproduce the Hugging Face setting {', '.join(settings)}")


def gpt2_args(c, source: str, bias: bool) -> dict:
    """GPTConfig arguments of a transformers GPT2Config, checked reproducible."""
    # (reorder_and_upcast_attn only computes the same attention in float32)
    cannot = {
        "activation_function": c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"),  # tanh GELU
        "layer_norm_epsilon": c.layer_norm_epsilon != 1e-5,
        "scale_attn_weights": not c.scale_attn_weights,
        "n_inner": c.n_inner not in (None, 4 * c.n_embd),
        "add_cross_attention": c.add_cross_attention,
        "tie_word_embeddings": not c.tie_word_embeddings,
    }
    check_hf_config(source, cannot, c)
    return dict(
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        block_size=c.n_positions,
        vocab_size=c.vocab_size,
        bias=bias,
        scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx,
    )


def read_hf_gpt2(hf, source: str) -> tuple[dict, dict[str, torch.Tensor]]:
    state = {}
    for key, value in hf.state_dict().items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers in older transformers versions
        state[key] = value.t() if key.endswith(HF_TRANSPOSED) else value
    # Every bias exactly zero: a GPT trained without biases, which GPT-2's format (and our export) writes as
    # zeros; a trained GPT-2's biases are never all zero. Read back as bias-free, the model keeps its size.
    biases = [key for key in state if key.endswith(".bias")]
    bias = any(state[key].any() for key in biases)
    args = gpt2_args(hf.config, source, bias)
    return args, state if bias else {k: v for k, v in state.items() if k not in biases}


def llama_rope_scaling(rope: dict) -> dict | None:
    """Llama 3's rope scaling, the one rescaling this GPT reproduces; None for plain RoPE."""
    if rope.get("rope_type", "default") == "default":
        return None
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return {k: rope[k] for k in keys}


def llama_args(c, source: str) -> dict:
    """GPTConfig arguments of a transformers Llama or Qwen2 config, checked reproducible."""
    rope = c.rope_parameters or {}
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    cannot = {
        "hidden_act": c.hidden_act != "silu",
        "head_dim": head_dim * c.num_attention_heads != c.hidden_size,
        "rope_parameters": rope.get("rope_type", "default") not in ("default", "llama3"),
        "attention_bias": getattr(c, "attention_bias", False),  # Llama's puts one on the output too
        "mlp_bias": getattr(c, "mlp_bias", False),
        "use_sliding_window": getattr(c, "use_sliding_window", False),
    }
    check_hf_config(source, cannot, c)
    return dict(
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_embd=c.hidden_size,
        block_size=c.max_position_embeddings,
        vocab_size=c.vocab_size,
        bias=False,
        norm="rmsnorm",
        norm_eps=c.rms_norm_eps,
        mlp="swiglu",
        intermediate_size=c.intermediate_size,
        rope=True,
        rope_theta=rope.get("rope_theta", 10000.0),
        rope_scaling=llama_rope_scaling(rope),
        n_kv_head=c.num_key_value_heads,
        tie_embeddings=c.tie_word_embeddings,
        qkv_bias=c.model_type == "qwen2",
    )


def read_hf_llama(hf, source: str) -> tuple[dict, dict[str, torch.Tensor]]:
    c = hf.config
    args = llama_args(c, source)
    qkv_bias = args["qkv_bias"]
    theirs = hf.state_dict()
    state = {mine: theirs[name] for mine, name in llama_names(c.num_hidden_layers).items()}
    for i in range(c.num_hidden_layers):
        for mine, names in llama_fused(qkv_bias).items():
            state[f"transformer.h.{i}.{mine}"] = torch.cat([theirs[f"model.layers.{i}.{name}"] for name in names])
    return args, state


def llama_names(n_layer: int) -> dict[str, str]:
    """This GPT's tensors that are one Hugging Face Llama tensor each: ours -> theirs."""
    names = {
        "transformer.wte.weight": "model.embed_tokens.weight",
        "lm_head.weight": "lm_head.weight",
        "transformer.ln_f.weight": "model.norm.weight",
    }
    for i in range(n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        names |= {
            ours + "ln_1.weight": theirs + "input_layernorm.weight",
            ours + "ln_2.weight": theirs + "post_attention_layernorm.weight",
            ours + "attn.c_proj.weight": theirs + "self_attn.o_proj.weight",
            ours + "mlp.c_proj.weight": theirs + "mlp.down_proj.weight",
        }
    return names


def llama_fused(qkv_bias: bool) -> dict[str, tuple[str, ...]]:
    """Tensors of each block that this GPT fuses, row blocks in order: ours -> theirs."""
    qkv = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    fused = {
        "attn.c_attn.weight": tuple(f"{t}.weight" for t in qkv),
        "mlp.c_fc.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    }
    if qkv_bias:
        fused["attn.c_attn.bias"] = tuple(f"{t}.bias" for t in qkv)
    return fused


# ----------------------------------------------------------------------------- GGUF files (llama.cpp)

# Tensor types gguf.dequantize reads as they are; the rest need a dequantiser in its registry (gguf.quants'
# _type_traits, private but stable at the pinned gguf==0.19.0), the one transformers' GGUF loader calls.
GGUF_PLAIN_TYPES = ("F32", "F16")


# The tensors llama.cpp writes for each block of a Llama (Qwen2 adds the q, k, v biases); a tied model has no
# `output.weight`.
GGUF_BLOCK_TENSORS = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)


@dataclass(frozen=True)
class GGUFHeader:
    tensor_types: dict[str, int]  # how many tensors of each type: F32, Q8_0, Q4_1, ...
    has_tokenizer: bool


def gguf_header(source: str | Path) -> GGUFHeader:
    """What a GGUF file's header says of it, after checking that it is whole, of an architecture this GPT
    reproduces, with every tensor that architecture needs and nothing it would drop (llama.cpp's rope
    scaling, for one), of types that `gguf` can dequantise."""
    path = Path(source)
    if not path.is_file():
        raise ConversionError(f"{source}: no such GGUF file")
    stat = path.stat()
    return _gguf_header(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def gguf_tensor_types(source: str | Path) -> dict[str, int]:
    return gguf_header(source).tensor_types


@functools.cache
def _gguf_header(path: str, size: int, mtime_ns: int) -> GGUFHeader:
    """gguf_header of one version of a file (its size and time are the key: a replaced file is read again);
    a header read costs seconds, and every loader of a command checks it."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        architecture = reader.fields["general.architecture"].contents()
        n_layer = int(reader.fields[f"{architecture}.block_count"].contents())
        rope_scaling = reader.fields.get(f"{architecture}.rope.scaling.type")
        rope_scaling = rope_scaling.contents() if rope_scaling is not None else "none"
    except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as e:  # a short file fails as a
        # shape or offset mismatch, a corrupt one anywhere in its header
        raise ConversionError(f"{path}: not a complete GGUF file (truncated or corrupt?): {e!r}") from None
    if architecture not in LLAMA_FAMILY:
        readable = ", ".join(LLAMA_FAMILY)
        raise ConversionError(f"{path}: a GGUF of architecture {architecture!r}; this GPT reads {readable}")
    if rope_scaling != "none":
        raise ConversionError(f"{path}: its RoPE is scaled ({rope_scaling}), which transformers' GGUF loader drops")
    types = dict(sorted(collections.Counter(tensor.tensor_type.name for tensor in reader.tensors).items()))
    readable = set(GGUF_PLAIN_TYPES) | {t.name for t in gguf.quants._type_traits}  # gguf's registry of dequantisers
    unreadable = sorted(set(types) - readable)
    if unreadable:
        version = importlib.metadata.version("gguf")
        raise ConversionError(f"{path}: gguf {version} cannot dequantise its {', '.join(unreadable)} tensors")
    check_gguf_tensors(path, {tensor.name for tensor in reader.tensors}, architecture, n_layer)
    return GGUFHeader(types, "tokenizer.ggml.model" in reader.fields)


def check_gguf_tensors(path: str, names: set[str], architecture: str, n_layer: int) -> None:
    """Refuse a file without every tensor of its n_layer blocks, or with tensors the model would not read:
    transformers fills a missing one with fresh weights and drops an unknown one (rope_freqs: Llama 3's rope
    scaling), silently, so the model would not be the file's."""
    biases = ("attn_q", "attn_k", "attn_v") if architecture == "qwen2" else ()
    expected = {"token_embd.weight", "output_norm.weight"}
    for i in range(n_layer):
        expected |= {f"blk.{i}.{t}.weight" for t in GGUF_BLOCK_TENSORS} | {f"blk.{i}.{t}.bias" for t in biases}
    missing, unknown = sorted(expected - names), sorted(names - expected - {"output.weight"})
    if missing or unknown:
        listed = ", ".join([*(f"{n} missing" for n in missing[:4]), *(f"{n} unknown" for n in unknown[:4])])
        raise ConversionError(f"{path}: not the {n_layer}-block {architecture} its header describes ({listed})")


def from_gguf(auto_class, source: str | Path, **kwargs):
    """`auto_class` (AutoModelForCausalLM, AutoConfig, AutoTokenizer) from a local GGUF file, offline."""
    path = Path(source).resolve()
    return auto_class.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True, **kwargs)


# ----------------------------------------------------------------------------- writing


def to_hf(model: torch.nn.Module, eos_token: int, bos_token: int | None = None):
    """The same network as a transformers model: GPT2LMHeadModel (whose tokenizer has one special token, so
    bos is eos), or LlamaForCausalLM / Qwen2ForCausalLM with the tokenizer's own bos (None: it has none)."""
    return to_hf_llama(model, eos_token, bos_token) if model.config.rope else to_hf_gpt2(model, eos_token)


def to_hf_gpt2(model: torch.nn.Module, eos_token: int):
    """Conv1D weights transposed, vocabulary padding removed, zero biases where the model has none."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    if c.norm != "layernorm" or c.mlp != "gelu" or c.n_kv_head or not c.tie_embeddings:
        raise ConversionError("a GPT-2 with Llama options has no Hugging Face GPT-2 equivalent")
    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="gelu_new",
        layer_norm_epsilon=c.norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_token,
        eos_token_id=eos_token,
        tie_word_embeddings=True,
        scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx,
        n_inner=c.intermediate_size or None,
    )
    hf = GPT2LMHeadModel(config)
    state = fold_layer_scales(model.state_dict(), c) if c.scale_attn_by_inverse_layer_idx else model.state_dict()
    ours = {k: v.t() if k.endswith(HF_TRANSPOSED) else v for k, v in state.items()}
    state = {}
    for key, template in hf.state_dict().items():
        if key in ours:
            state[key] = ours[key].to(template.dtype).contiguous()
        elif key.endswith(".bias") and not c.bias:
            state[key] = torch.zeros_like(template)
        else:
            raise ConversionError(f"no weight for {key} in the model")
    hf.load_state_dict(state)
    return hf.eval()


def fold_layer_scales(state: dict[str, torch.Tensor], c) -> dict[str, torch.Tensor]:
    """Hugging Face's GPT-2 divides block i's attention logits by i + 1. A block inherited from reference block
    j must divide them by j + 1: its queries (weights and bias) are multiplied by (i + 1) / (j + 1), which
    gives the same logits, so the export computes what the model does."""
    state = dict(state)
    for i in range(c.n_layer):
        ratio = (i + 1) / (c.layer_scale_index(i) + 1)
        if ratio != 1.0:
            for name in ("weight", "bias"):
                key = f"transformer.h.{i}.attn.c_attn.{name}"
                if key in state:
                    state[key] = state[key].clone()
                    state[key][: c.n_embd] *= ratio  # the query rows come first
    return state


def to_hf_llama(model: torch.nn.Module, eos_token: int, bos_token: int | None):
    """Fused tensors split back into Hugging Face's, vocabulary padding removed."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    c = model.config
    if c.norm != "rmsnorm" or c.mlp != "swiglu" or c.bias or c.scale_attn_by_inverse_layer_idx:
        raise ConversionError("a rotary GPT without Llama's other choices has no Hugging Face Llama equivalent")
    config_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if c.qkv_bias else (LlamaConfig, LlamaForCausalLM)
    rope = {"rope_type": "llama3", **c.rope_scaling} if c.rope_scaling else {"rope_type": "default"}
    hidden = c.intermediate_size or 4 * c.n_embd
    config = config_class(
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        intermediate_size=hidden,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.kv_heads,
        max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps,
        tie_word_embeddings=c.tie_embeddings,
        rope_parameters={**rope, "rope_theta": c.rope_theta},
        hidden_act="silu",
        bos_token_id=bos_token,
        eos_token_id=eos_token,
    )
    ours = model.state_dict()
    state = {theirs: ours[mine] for mine, theirs in llama_names(c.n_layer).items()}
    sizes = {"attn": [c.n_embd, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim], "mlp": [hidden, hidden]}
    for i in range(c.n_layer):
        for mine, theirs in llama_fused(c.qkv_bias).items():
            parts = ours[f"transformer.h.{i}.{mine}"].split(sizes[mine.split(".")[0]], dim=0)
            state |= {f"model.layers.{i}.{t}": part for t, part in zip(theirs, parts, strict=True)}
    hf = model_class(config)
    hf.load_state_dict({k: v.contiguous() for k, v in state.items()})
    return hf.eval()
