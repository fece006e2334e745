"""Inheritune: build an n-layer student from a trained reference.

    python inherit.py --inherit_from out-gpt2_large/ckpt.pt --n_layer 18 --out out-student/ckpt.pt
    python inherit.py --inherit_from gpt2-medium --inherit_layers 0-11,14 --out student.pt
    python inherit.py --inherit_from out-gpt2_large/ckpt.pt --n_layer 18 --inherit_parts wte,attn,mlp,ln --out a.pt
    python inherit.py --inherit_from openlm-research/open_llama_3b --n_layer 13 --out out-openllama-13/student.pt
    python inherit.py --inherit_from out-gpt2_large/ckpt.pt --n_layer 18 --inherit_layers bi --data data/openwebtext \
        --out out-student-bi/ckpt.pt

The layers are blocks 0..n-1 (Inheritune), a list, or chosen by a measure of the reference's hidden states on
a corpus (--inherit_layers bi or angular, see analyze.py); the student's record says which and why. The
paper's warm-start baselines (arXiv 2404.08634 v4, Table 2): --inherit_layers stack repeats the first
ceil(n/2) blocks (hybrid stacking from the reference; stacking from a model of n/2 layers trained first), and
--half_width keeps every layer at half the width.

By default the student copies all of the reference's parts: its token embedding and head (one tensor in
GPT-2), its position embedding if it has one (GPT-2's; Llama's are rotary), blocks layers[0..n-1] and its
final norm. --inherit_parts chooses (the third example is the authors' own GPT-2 student, which leaves the
position embedding and final layernorm fresh; theirs of OpenLLaMA is head,attn,mlp,ln); everything not
inherited is initialised exactly as a model trained from scratch with the same seed. The reference is
this project's checkpoint, a nanoGPT / LLM-Inheritune GPT-2 checkpoint, or a Hugging Face model: GPT-2
(`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`) or the Llama family, by hub id or local folder.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from analyze import LAYER_METHODS, AnalysisSettings, choose_layers, measure_layers, validation_sequences
from checkpoint import Checkpoint, load_model, source_sha256
from model import GPT, INIT_STD, GPTConfig
from runtime import UserError, command_main, output_file

# The parts a student can inherit: modules of each inherited block, and tensors of the whole model.
BLOCK_PARTS = {
    "attn": ("attn.c_attn", "attn.c_proj"),
    "mlp": ("mlp.c_fc", "mlp.c_proj"),
    "ln": ("ln_1", "ln_2"),
}
MODEL_PARTS = ("wte", "head", "wpe", "ln_f")


class InheritError(UserError):
    """A student that cannot be built from the reference as asked."""


@dataclass(frozen=True)
class InheritSpec:
    """What a student takes from its reference."""

    layers: tuple[int, ...]  # reference blocks, in order; student block i is reference block layers[i]
    parts: tuple[str, ...]  # of BLOCK_PARTS and MODEL_PARTS


def parse_layers(text: str) -> tuple[int, ...]:
    """'0-11,14' -> (0, 1, ..., 11, 14)."""
    layers: list[int] = []
    for item in text.split(","):
        lo, sep, hi = item.strip().partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise InheritError(f"bad layer list {text!r}: expected numbers and ranges like '0-11,14'") from None
        if last < first:  # range() would give nothing: a silently different student
            raise InheritError(f"bad layer list {text!r}: the range {item.strip()} runs backwards")
        layers.extend(range(first, last + 1))
    return tuple(layers)


STACK_RULE = "the first ceil(n/2) blocks, twice (stacking, Gong et al. 2019)"
# The layer choices --inherit_layers names, with their rules; a measure chooses all of them but 'first' and 'stack'.
NAMED_CHOICES = {**LAYER_METHODS, "stack": STACK_RULE}
MEASURED = sorted(LAYER_METHODS.keys() - {"first"})


@dataclass(frozen=True)
class StudentRequest:
    """A student as asked for, before any reference is read (parse_request)."""

    n_layer: int  # its depth
    method: str  # how its blocks are chosen: "listed" or a name of NAMED_CHOICES ("first", "bi", "angular", "stack")
    layers: tuple[int, ...] | None  # the reference blocks listed (method "listed"), else None
    parts: str = "all"  # parse_parts' text: which parts exist depends on the reference


def parse_request(n_layer: int | None, inherit_layers: str = "", parts: str = "all") -> StudentRequest:
    """The student that n_layer, inherit_layers and inherit_parts ask for (inherit.py's flags, train.py's keys):
    inherit_layers empty (blocks 0..n_layer-1), a name of NAMED_CHOICES, or a list of blocks like '0-11,14'."""
    if inherit_layers in NAMED_CHOICES or not inherit_layers:
        method, layers = inherit_layers or "first", None
    else:
        method, layers = "listed", parse_layers(inherit_layers)
    if parts.strip() == "none" and method != "first":
        raise InheritError(f"inherit_parts 'none' copies nothing: no layers to choose ({inherit_layers!r})")
    if layers is not None:
        if n_layer is not None and n_layer != len(layers):
            raise InheritError(f"n_layer {n_layer} does not match the {len(layers)} layers listed")
        return StudentRequest(len(layers), method, layers, parts)
    if n_layer is None:
        if method == "first":
            raise InheritError("give the student's depth (n_layer) or its layers")
        raise InheritError(f"layers chosen by {method!r} need the student's depth (n_layer)")
    return StudentRequest(n_layer, method, None, parts)


def parts_of(config: GPTConfig) -> tuple[str, ...]:
    """Every part a model of this config has: wte, its head if untied, wpe if learned, ln_f, the blocks'."""
    model_parts = ["wte", *([] if config.tie_embeddings else ["head"]), *([] if config.rope else ["wpe"]), "ln_f"]
    return (*model_parts, *BLOCK_PARTS)


def parse_parts(text: str, config: GPTConfig) -> tuple[str, ...]:
    """'all', 'none' (a model of the reference's architecture from scratch), or a comma-separated list of the
    reference's parts."""
    if text.strip() == "all":
        return parts_of(config)
    if text.strip() == "none":
        return ()
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in (*MODEL_PARTS, *BLOCK_PARTS)]
    if unknown or not parts:
        known = ", ".join(("all", "none", *MODEL_PARTS, *BLOCK_PARTS))
        raise InheritError(f"unknown parts {unknown or text!r}; choose from {known}")
    if "wpe" in parts and config.rope:
        raise InheritError("the reference has rotary position embeddings, no wpe to inherit")
    if "head" in parts and config.tie_embeddings:
        raise InheritError("the reference's head is its token embedding (tied): inherit wte")
    return parts


def stacked_layers(n_layer: int, ref_layers: int) -> tuple[int, ...]:
    """Stacking (Gong et al. 2019): the first ceil(n/2) blocks, then again from the first to fill n. From the
    reference itself this is the paper's hybrid stacking; from a model of n/2 layers trained first, stacking."""
    half = math.ceil(n_layer / 2)
    if half > ref_layers:
        raise InheritError(f"a stacked student of {n_layer} layers needs {half} layers, the reference has {ref_layers}")
    return (*range(half), *range(n_layer - half))


def make_spec(ref: GPTConfig, request: StudentRequest, measured: tuple[int, ...] | None = None) -> InheritSpec:
    """Check a request against a reference. Its blocks are those listed, the first n, the stacked ones, or those
    a measure chose (`measured`, from chosen_by); a measured choice given none stands for the first n, the
    student's shape without its weights. Only a stacked student may repeat blocks, and be deeper than its
    reference."""
    ref_layers = ref.n_layer
    stacked = request.method == "stack"
    if measured is not None:
        chosen = measured
    elif request.layers is not None:
        chosen = request.layers
    elif stacked:
        chosen = stacked_layers(request.n_layer, ref_layers)
    else:
        chosen = tuple(range(request.n_layer))
    if len(chosen) < 1:
        raise InheritError("the student needs at least 1 layer")
    if len(chosen) > ref_layers and not stacked:
        raise InheritError(f"the student asks for {len(chosen)} layers but the reference has only {ref_layers}")
    bad = [i for i in chosen if not 0 <= i < ref_layers]
    if bad:
        raise InheritError(f"layers {bad} do not exist in the {ref_layers}-layer reference (0..{ref_layers - 1})")
    if stacked:
        return InheritSpec(layers=chosen, parts=parse_parts(request.parts, ref))
    if len(set(chosen)) != len(chosen):
        raise InheritError(f"layers {list(chosen)} repeat a layer")
    if list(chosen) != sorted(chosen):
        raise InheritError(f"layers {list(chosen)} must keep the reference's order")
    return InheritSpec(layers=chosen, parts=parse_parts(request.parts, ref))


def build_student(
    ref: GPT, spec: InheritSpec, seed: int = 1337, dropout: float = 0.0, embedding_std: float = INIT_STD
) -> GPT:
    """A fresh model initialised as from scratch (same seed), with the inherited tensors copied in; a token
    embedding that is not inherited drawn from N(0, embedding_std^2)."""
    torch.manual_seed(seed)
    # Each inherited block keeps its attention scale, which in GPT-2 with inverse-layer scaling depends on
    # the block's depth in the reference, not in the student.
    scales = (
        [ref.config.layer_scale_index(j) for j in spec.layers] if ref.config.scale_attn_by_inverse_layer_idx else None
    )
    student = GPT(replace(ref.config, n_layer=len(spec.layers), dropout=dropout, scale_layer_idx=scales))
    if "wte" not in spec.parts and embedding_std != INIT_STD:
        # Redrawn only for another std: a default student's fresh tensors equal a scratch model's of its seed.
        torch.nn.init.normal_(student.transformer.wte.weight, mean=0.0, std=embedding_std)
    state = student.state_dict()
    ref_state = ref.state_dict()
    prefixes = {
        "wte": ("transformer.wte.", "lm_head.") if ref.config.tie_embeddings else ("transformer.wte.",),
        "head": ("lm_head.",),
        "wpe": ("transformer.wpe.",),
        "ln_f": ("transformer.ln_f.",),
    }
    for part in [p for p in spec.parts if p in MODEL_PARTS]:
        for key in [k for k in state if k.startswith(prefixes[part])]:
            state[key] = ref_state[key]
    for i, j in enumerate(spec.layers):
        for part in [p for p in spec.parts if p in BLOCK_PARTS]:
            for module in BLOCK_PARTS[part]:
                prefix = f"transformer.h.{i}.{module}."
                for key in [k for k in state if k.startswith(prefix)]:
                    state[key] = ref_state[f"transformer.h.{j}.{module}.{key.removeprefix(prefix)}"]
    student.load_state_dict(state)
    return student


def half_width_config(ref: GPTConfig) -> GPTConfig:
    """Every layer, half the width: n_embd, n_head (and key/value heads) and the MLP's width halved, so each
    head keeps its size."""
    hidden = ref.intermediate_size or 4 * ref.n_embd
    odd = [name for name, size in (("n_head", ref.n_head), ("n_kv_head", ref.n_kv_head), ("mlp", hidden)) if size % 2]
    if odd:
        raise InheritError(f"a half-width student halves {', '.join(odd)}, which the reference has odd")
    return replace(
        ref,
        n_embd=ref.n_embd // 2,
        n_head=ref.n_head // 2,
        n_kv_head=ref.n_kv_head // 2,
        intermediate_size=ref.intermediate_size // 2,  # 0 stays 4 * n_embd
    )


def leading_slice(tensor: torch.Tensor, shape: torch.Size, sections: tuple[int, ...] = ()) -> torch.Tensor:
    """The first entries of `tensor` along every dimension, to `shape`; along dim 0 of a fused projection
    (queries, keys and values, or SwiGLU's gate and up) the first entries of each of its `sections`."""
    if sections:
        parts = tensor.split(list(sections), dim=0)
        halves = [p[:size] for p, size in zip(parts, [shape[0] * s // sum(sections) for s in sections], strict=True)]
        tensor = torch.cat(halves)
    return tensor[tuple(slice(0, size) for size in shape)]


def build_half_width(ref: GPT, seed: int = 1337, dropout: float = 0.0) -> GPT:
    """The paper's half-width baseline (arXiv 2404.08634 v4, Appendix D): every layer, half the hidden size and
    heads, initialised from the first half of the reference's heads and MLP units and the first half of every
    other tensor's width (the paper leaves the embeddings and norms open: this takes their first half too)."""
    torch.manual_seed(seed)
    student = GPT(replace(half_width_config(ref.config), dropout=dropout))
    ref_state, state = ref.state_dict(), student.state_dict()
    cfg = ref.config
    qkv = (cfg.n_head * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim)
    for key in state:
        sections: tuple[int, ...] = ()
        if ".attn.c_attn." in key:
            sections = qkv
        elif ".mlp.c_fc." in key and cfg.mlp == "swiglu":
            sections = (cfg.intermediate_size or 4 * cfg.n_embd,) * 2
        state[key] = leading_slice(ref_state[key], state[key].shape, sections).clone()
    student.load_state_dict(state)
    return student


def check_width(ref: GPTConfig | dict, n_embd: int, n_head: int) -> None:
    """A student takes its reference's width: a config of another one (n_embd, n_head) is the wrong config.
    `ref` is the reference's config, or its model_args (described without its weights)."""
    ref = GPTConfig.from_model_args(ref) if isinstance(ref, dict) else ref
    if (n_embd, n_head) != (ref.n_embd, ref.n_head):
        raise InheritError(
            f"mismatched width: the student is configured with n_embd {n_embd}, n_head {n_head}, "
            f"the reference has n_embd {ref.n_embd}, n_head {ref.n_head}"
        )


def chosen_by(
    ref: GPT, vocabulary: dict | None, request: StudentRequest, measure: AnalysisSettings | None
) -> tuple[InheritSpec, dict]:
    """The student a request makes of the reference, and the record of why it has its blocks: the method,
    its rule where it has one, and for a measured choice (bi, angular) the measure's values and the sequences."""
    method = request.method
    if method in ("first", "listed"):
        return make_spec(ref.config, request), {"method": method}
    if method == "stack":
        return make_spec(ref.config, request), {"method": "stack", "rule": STACK_RULE}
    if measure is None:
        raise InheritError(f"layers chosen by {method!r} are measured on a corpus: give its folder (data)")
    make_spec(ref.config, request)  # a bad depth or parts fail before measuring
    print(f"measuring the reference's layers on {measure.num_seqs} sequences of {measure.seq_len} from {measure.data}")
    try:
        seqs = validation_sequences(measure, ref.config, vocabulary)
        measures = measure_layers(ref, seqs, measure, "cpu")
    except UserError as e:
        raise InheritError(f"cannot measure the reference on {measure.data}: {e}") from None
    layers = choose_layers(method, request.n_layer, measures)
    return make_spec(ref.config, request, layers), {"method": method, "rule": LAYER_METHODS[method], **measures}


def provenance(source: str, ref: GPT, ref_ckpt: Checkpoint, spec: InheritSpec, choice: dict) -> dict:
    return {
        "source": str(source),
        "source_sha256": source_sha256(source),
        "reference_n_layer": ref.config.n_layer,
        "reference_val_loss": ref_ckpt.best_val_loss,
        "reference_tokenizer": ref_ckpt.tokenizer,
        "reference_dequantized": ref_ckpt.dequantized,  # a GGUF reference's tensor types
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},
        "chosen_by": choice,
    }


def inherit(
    source: str,
    request: StudentRequest,
    seed: int = 1337,
    dropout: float = 0.0,
    width: tuple[int, int] | None = None,
    embedding_std: float = INIT_STD,
    measure: AnalysisSettings | None = None,
) -> tuple[GPT, dict]:
    """Load the reference, check the request (and, if given, that the reference has this (n_embd, n_head)),
    choose its layers (listed, or by a method of analyze.LAYER_METHODS measured on measure's sequences),
    build the student; returns it with its provenance."""
    ref, ref_ckpt = load_model(source)
    if width is not None:
        check_width(ref.config, *width)
    spec, choice = chosen_by(ref, ref_ckpt.vocabulary(), request, measure)
    student = build_student(ref, spec, seed, dropout, embedding_std)
    return student, provenance(source, ref, ref_ckpt, spec, choice)


HALF_WIDTH_RULE = "every layer at half the width: the first half of each tensor (the paper's half-width baseline)"


def inherit_half_width(source: str, seed: int = 1337, dropout: float = 0.0) -> tuple[GPT, dict]:
    """The half-width student of a reference (build_half_width), with its provenance."""
    ref, ref_ckpt = load_model(source)
    student = build_half_width(ref, seed, dropout)
    spec = InheritSpec(layers=tuple(range(ref.config.n_layer)), parts=parts_of(ref.config))
    return student, provenance(source, ref, ref_ckpt, spec, {"method": "half_width", "rule": HALF_WIDTH_RULE})


# ----------------------------------------------------------------------------- command


@command_main
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="inherit.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source_help = "the reference: checkpoint path, gpt2[-medium|-large|-xl], a Hugging Face folder or hub id, "
    source_help += "or a GGUF file"
    parts_help = "what to copy: all, none (the architecture alone: a model from scratch), or any of wte (token "
    parts_help += "embedding, and the head when tied), head (an untied head), "
    parts_help += "wpe, ln_f, and of each block attn, mlp, ln"
    p.add_argument("--inherit_from", required=True, help=source_help)
    p.add_argument("--n_layer", type=int, help="student depth: inherits blocks 0..n_layer-1")
    layers_help = "reference blocks to inherit, in order, e.g. '0-11,14'; or chosen by a method: "
    layers_help += "; ".join(f"{name}: {rule}" for name, rule in NAMED_CHOICES.items())
    p.add_argument("--inherit_layers", default="", help=layers_help)
    p.add_argument("--data", default="", help="corpus folder whose val.bin the bi and angular choices measure on")
    p.add_argument("--num_seqs", type=int, default=AnalysisSettings.num_seqs, help="sequences the choice measures on")
    p.add_argument("--seq_len", type=int, default=AnalysisSettings.seq_len, help="their length in tokens")
    p.add_argument(
        "--measure_seed", type=int, default=AnalysisSettings.seed, help="which sequences (analyze.py's --seed)"
    )
    p.add_argument("--inherit_parts", default="all", help=parts_help)
    p.add_argument("--seed", type=int, default=1337, help="initialisation of what is not inherited")
    std_help = "std of the token embedding where it is not inherited (1.0: the authors' code's N(0, 1))"
    p.add_argument("--fresh_embedding_std", type=float, default=INIT_STD, help=std_help)
    half_help = "the paper's half-width baseline: every layer, half the width, the first half of every tensor"
    p.add_argument("--half_width", action="store_true", help=half_help)
    p.add_argument("--out", required=True, help="student checkpoint to write (train.py init_from=...)")
    args = p.parse_args(argv)
    output_file(args.out)
    for name in ("num_seqs", "seq_len"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.half_width and (args.n_layer or args.inherit_layers or args.inherit_parts != "all"):
        p.error("--half_width keeps every layer and part: no --n_layer, --inherit_layers or --inherit_parts")
    request = None if args.half_width else parse_request(args.n_layer, args.inherit_layers, args.inherit_parts)
    if args.data and (request is None or request.method not in MEASURED):
        measured = " or ".join(MEASURED)
        raise InheritError(f"--data is read only by the layers a measure chooses (--inherit_layers {measured})")
    measure = AnalysisSettings(args.data, args.num_seqs, args.seq_len, seed=args.measure_seed) if args.data else None
    if request is None:
        student, origin = inherit_half_width(args.inherit_from, args.seed)
    else:
        student, origin = inherit(
            args.inherit_from, request, args.seed, embedding_std=args.fresh_embedding_std, measure=measure
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The student reads its reference's token ids: it carries the reference's tokenizer, to be sampled and exported.
    Checkpoint.of(student, inherit=origin, tokenizer=origin["reference_tokenizer"], tokens=0).save(out)
    size = f"{student.config.n_layer} layers, {student.get_num_params() / 1e6:.2f}M parameters"
    reference = f"the {origin['reference_n_layer']}-layer {args.inherit_from}"
    taken = f"layers {origin['layers']} ({origin['chosen_by']['method']})"
    if not origin["parts"]:
        taken = "nothing inherited (inherit_parts none)"
    print(f"student: {size}, from {reference}: {taken}")
    print(f"wrote {out}; train it with: python train.py CONFIG --init_from={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
