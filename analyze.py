"""Find the lazy layers of a trained GPT: attention rank and single-column mass per layer and head.

    python analyze.py --model out-gpt2_large/ckpt.pt --data data/openwebtext --out out-analysis
    python analyze.py --model out-shakespeare/ckpt.pt --data data/shakespeare --compare out-student/ckpt.pt

For each T x T post-softmax attention matrix A (one head, one sequence):
- rank k*(tau): the fewest singular values of A that hold a fraction tau of sum(s_i^2);
- mass m*(eta): the fewest columns of A that hold a fraction eta of ||A||_F^2, taking columns by their
  share ||A[:, j]||^2 / ||A||_F^2, largest first.
Both are averaged over the sequences (and the rank of the sequence-averaged matrix, the authors' notebook's,
is reported beside). Per layer, MaxRank is the largest head rank and AvgMass the mean head mass. A head has
collapsed at a rank of at most --collapsed_rank (1.5): its attention sits in one column (often the first
token, an "attention sink"). A layer is lazy when --lazy_share (half) of its heads collapsed (1.0: every
head, the paper's MaxRank = 1). The suggested student keeps the leading non-lazy layers (Inheritune, arXiv
2404.08634).

Two measures of the residual stream h_l (block l's input; h_L leaves the last block, before ln_f):
- Block Influence BI_l = 1 - mean over tokens of cos(h_l, h_l+1) (ShortGPT, arXiv 2403.03853);
- angular distance d(l, l+k) = arccos(cos(h_l, h_l+k)) / pi at the last token (Gromov et al., arXiv
  2403.17887), for every span k.
For a student of --n_layer blocks, each way of choosing its layers (first n, largest BI, all but the span of
least angular distance) is printed with the inherit.py command that builds it. Writes analysis.json,
layers.png and heads.png to --out.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from checkpoint import load_model
from data.batches import get_batch
from data.format import corpus_vocabulary
from data.tokenizer import same_vocabulary
from model import GPT, GPTConfig
from runtime import UserError, command_main, output_folder, resolve_device_name, write_json

# A cumulative share within this of tau counts as reaching it: identity attention at tau = 0.9 holds
# exactly 0.9 of its energy in 90 of 100 singular values, and rounding must not make that 91.
SHARE_TOLERANCE = 1e-6


def smallest_count_reaching(shares: torch.Tensor, fraction: float) -> torch.Tensor:
    """For shares sorted largest first along the last dim and summing to 1: the fewest leading entries
    whose sum reaches `fraction`."""
    below = shares.cumsum(dim=-1) < fraction - SHARE_TOLERANCE
    return (below.sum(dim=-1) + 1).clamp(max=shares.size(-1))


def singular_values(att: torch.Tensor) -> torch.Tensor:
    """Batched svdvals of a (..., T, T) tensor. On CPU, torch decomposes a batch one matrix after another
    on one core; splitting it over threads (LAPACK releases the GIL) uses them all."""
    if att.device.type != "cpu":
        return torch.linalg.svdvals(att)
    chunks = att.reshape(-1, *att.shape[-2:]).chunk(torch.get_num_threads())
    with ThreadPoolExecutor(len(chunks)) as pool:
        return torch.cat(list(pool.map(torch.linalg.svdvals, chunks))).view(att.shape[:-1])


def attention_rank(att: torch.Tensor, tau: float) -> torch.Tensor:
    """k*(tau) of each T x T matrix in a (..., T, T) batch."""
    energy = singular_values(att.float()).square()
    return smallest_count_reaching(energy / energy.sum(dim=-1, keepdim=True), tau)


def attention_mass(att: torch.Tensor, eta: float) -> torch.Tensor:
    """m*(eta) of each T x T matrix in a (..., T, T) batch."""
    column_mass = att.float().square().sum(dim=-2)
    shares = (column_mass / column_mass.sum(dim=-1, keepdim=True)).sort(dim=-1, descending=True).values
    return smallest_count_reaching(shares, eta)


def block_influence(hidden: torch.Tensor) -> torch.Tensor:
    """ShortGPT's Block Influence of each block on each sequence, BI_l = 1 - mean over tokens of
    cos(h_l, h_{l+1}), from hidden states (L + 1, B, T, C): an (L, B) tensor. A block that changes no
    direction has BI 0."""
    h = hidden.float()
    return 1 - torch.nn.functional.cosine_similarity(h[:-1], h[1:], dim=-1).mean(dim=-1)


def angular_distance(hidden: torch.Tensor, span: int) -> torch.Tensor:
    """Gromov et al.'s angular distance arccos(cos(h_l, h_{l+span})) / pi at the last token, for every start
    l = 0..L-span, on each sequence: an (L - span + 1, B) tensor with values in [0, 1]."""
    last = hidden[:, :, -1].double()  # arccos is steep near 1: a float32 cosine of equal vectors gives 1e-4
    cos = torch.nn.functional.cosine_similarity(last[:-span], last[span:], dim=-1)
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


# The two ways of giving one head one rank: the mean of its per-sequence ranks (the paper's, v4 Section 2:
# Rank(h, l) = (1/N) sum_n k*_{n,h,l}), or the rank of its attention matrix averaged over the sequences first
# (the authors' attention-collapse-demo notebook: attn_weights.mean(dim=0), then the rank).
RANK_OF = {
    "sequence": "the mean over sequences of each sequence's rank (the paper's)",
    "mean": "the rank of the attention matrix averaged over the sequences (the authors' notebook)",
}


@dataclass
class AnalysisSettings:
    """What an analysis measures (the sequences, tau, eta) and how it judges heads and layers."""

    data: str
    num_seqs: int = 100
    seq_len: int = 100
    tau: float = 0.9
    eta: float = 0.9
    seed: int = 1337
    batch_size: int = 25
    # A head has collapsed when its rank is at most this: 1.5 is rank 1 in the typical sequence (a mean that
    # rounds to 1; an integer rank of the averaged matrix must be 1), the paper's "near rank-1" (v4 Figure 11;
    # its GPT-2 small's lazy layers average 1.22, Table 4).
    collapsed_rank: float = 1.5
    # A layer is lazy when at least this share of its heads collapsed. 1.0 with collapsed_rank 1.0 is the
    # paper's MaxRank = 1; LLaMA-3 8B collapses half its heads without whole layers (paper v4, Figure 11).
    lazy_share: float = 0.5
    rank_of: str = "sequence"  # which rank of a head the verdict reads: a key of RANK_OF


def validation_sequences(settings: AnalysisSettings, config: GPTConfig, vocabulary: dict | None) -> torch.Tensor:
    """num_seqs windows of seq_len tokens from val.bin, the same ones for every model with the same seed;
    refused where the model (of this vocabulary record) cannot read the corpus's tokens."""
    if settings.num_seqs < 1 or settings.seq_len < 1:
        raise UserError(f"num_seqs and seq_len must be at least 1, got {settings.num_seqs} and {settings.seq_len}")
    if settings.seq_len > config.block_size:
        raise UserError(f"seq_len {settings.seq_len} is longer than the model's block_size {config.block_size}")
    corpus = corpus_vocabulary(Path(settings.data)) if Path(settings.data).is_dir() else None
    if not same_vocabulary(vocabulary, corpus):
        raise UserError(
            f"{settings.data} was made with the tokenizer {corpus['tokenizer']}, the model reads "
            f"{vocabulary['tokenizer']}: its measures would be of tokens it never saw"
        )
    rng = np.random.default_rng(settings.seed)
    x, _ = get_batch(settings.data, "val", settings.num_seqs, settings.seq_len, config.vocab_size, rng)
    return x


class StreamMeasures:
    """Sums over sequences of Block Influence (per block) and angular distance (per span and start), batch by
    batch, and their means."""

    def __init__(self, n_layer: int) -> None:
        self.count = 0
        self.bi = torch.zeros(n_layer)
        self.angular = {span: torch.zeros(n_layer - span + 1) for span in range(1, n_layer)}

    def add(self, hidden: torch.Tensor) -> None:
        self.count += hidden.size(1)
        self.bi += block_influence(hidden).sum(dim=1).cpu()
        for span, total in self.angular.items():
            total += angular_distance(hidden, span).sum(dim=1).cpu()

    def means(self) -> dict:
        return {
            "block_influence": (self.bi / self.count).tolist(),
            "angular_distance": {str(span): (total / self.count).tolist() for span, total in self.angular.items()},
        }


def head_statistics(model: GPT, seqs: torch.Tensor, settings: AnalysisSettings, device: str) -> dict:
    """From one forward pass per batch: every (layer, head)'s mean rank and mass over the sequences, the rank
    of its sequence-averaged attention matrix, the residual stream's StreamMeasures, and the time each stage
    took."""
    L, H = model.config.n_layer, model.config.n_head
    rank_sum, mass_sum = torch.zeros(L, H), torch.zeros(L, H)
    attention_sum = torch.zeros(L, H, seqs.size(1), seqs.size(1))
    stream = StreamMeasures(L)
    forward_s = metrics_s = 0.0
    for start in range(0, len(seqs), settings.batch_size):
        chunk = seqs[start : start + settings.batch_size].to(device)
        t0 = time.perf_counter()
        att, hidden = model.attention_and_hidden_states(chunk)  # (L, B, H, T, T), (L + 1, B, T, C)
        t1 = time.perf_counter()
        rank_sum += attention_rank(att, settings.tau).sum(dim=1).cpu()
        mass_sum += attention_mass(att, settings.eta).sum(dim=1).cpu()
        attention_sum += att.float().sum(dim=1).cpu()
        stream.add(hidden)
        forward_s += t1 - t0
        metrics_s += time.perf_counter() - t1
        print(f"  sequences {min(start + settings.batch_size, len(seqs))}/{len(seqs)}", flush=True)
    return {
        "rank": (rank_sum / len(seqs)).tolist(),
        "rank_of_mean": attention_rank(attention_sum / len(seqs), settings.tau).tolist(),
        "mass": (mass_sum / len(seqs)).tolist(),
        **stream.means(),
        "forward_seconds": round(forward_s, 2),
        "metrics_seconds": round(metrics_s, 2),
    }


def hidden_statistics(model: GPT, seqs: torch.Tensor, batch_size: int, device: str) -> dict:
    """StreamMeasures' means without attention maps (inherit.py's measured choices need only these)."""
    stream = StreamMeasures(model.config.n_layer)
    for start in range(0, len(seqs), batch_size):
        stream.add(model.hidden_states(seqs[start : start + batch_size].to(device)))
    return stream.means()


def measure_layers(model: GPT, seqs: torch.Tensor, settings: AnalysisSettings, device: str) -> dict:
    """hidden_statistics on the validation sequences of settings, with the settings that chose them."""
    measures = {key: getattr(settings, key) for key in ("data", "num_seqs", "seq_len", "seed")}
    return measures | hidden_statistics(model, seqs, settings.batch_size, device)


# How a student's layers can be chosen by name: the measure each uses, and where it comes from.
LAYER_METHODS = {
    "first": "the first n blocks (Inheritune, arXiv 2404.08634)",
    "bi": "the n blocks of largest Block Influence (ShortGPT, arXiv 2403.03853)",
    "angular": "all but the span of L - n blocks of least angular distance (Gromov et al., arXiv 2403.17887)",
}


def choose_layers(method: str, n: int, measures: dict | None) -> tuple[int, ...]:
    """The reference blocks an n-layer student keeps, in order, by one of LAYER_METHODS; measures come
    from measure_layers (not needed for 'first')."""
    if method not in LAYER_METHODS:
        raise UserError(f"unknown layer choice {method!r}; choose from {', '.join(LAYER_METHODS)}")
    if method == "first":
        return tuple(range(n))
    bi = measures["block_influence"]
    L = len(bi)
    if not 1 <= n <= L:
        raise UserError(f"a student of {n} layers cannot be chosen from {L} layers")
    if method == "bi":
        # the L - n blocks that change their input least go; a stable sort drops the later of equal blocks
        return tuple(sorted(sorted(range(L), key=lambda layer: -bi[layer])[:n]))
    span = L - n
    if span == 0:
        return tuple(range(L))
    distance = measures["angular_distance"][str(span)]
    drop = min(range(len(distance)), key=distance.__getitem__)  # the first of equal minima
    return tuple(layer for layer in range(L) if not drop <= layer < drop + span)


def collapsed_heads(ranks: list[list[float]], collapsed_rank: float) -> list[int]:
    """How many heads of each layer have collapsed: a rank of at most collapsed_rank."""
    return [sum(r <= collapsed_rank for r in heads) for heads in ranks]


def lazy_layers(collapsed: list[int], n_head: int, lazy_share: float) -> list[int]:
    """The layers where at least lazy_share of the n_head heads collapsed."""
    return [layer for layer, count in enumerate(collapsed) if count >= lazy_share * n_head - SHARE_TOLERANCE]


def suggest_student(source: str, n_layer: int, lazy: list[int]) -> dict:
    """The leading non-lazy layers, every non-lazy layer, and the inherit.py command for the student."""
    active = [layer for layer in range(n_layer) if layer not in lazy]
    n = lazy[0] if lazy else n_layer
    suggestion = {"n_layer": max(n, 1), "non_lazy_layers": active}
    base = ["python", "inherit.py", "--inherit_from", source]
    out = f"out-student-{suggestion['n_layer']}/student.pt"
    suggestion["command"] = shlex.join([*base, "--n_layer", str(suggestion["n_layer"]), "--out", out])
    if active and active != list(range(len(active))):
        layers = ",".join(str(layer) for layer in active)
        out = f"out-student-nonlazy-{len(active)}/student.pt"
        suggestion["non_lazy_command"] = shlex.join([*base, "--inherit_layers", layers, "--out", out])
    return suggestion


def starting_depth(n_layer: int, lazy: list[int] | None = None) -> int:
    """Where a student (or a growth loop) starts: before the first lazy layer where the analysis found one (the
    suggested student), else the paper's starting point, half the reference's depth."""
    return max(lazy[0], 1) if lazy else max(n_layer // 2, 1)


def layer_choices(source: str, measures: dict, n: int) -> dict:
    """Each of LAYER_METHODS' choice for an n-layer student, with the inherit.py command that builds it
    (measuring again on the same sequences, so that the student records why it has those layers)."""
    choices = {"n_layer": n, "layers": {}, "commands": {}}
    for method in LAYER_METHODS:
        choices["layers"][method] = list(choose_layers(method, n, measures))
        command = ["python", "inherit.py", "--inherit_from", source, "--n_layer", str(n)]
        if method != "first":
            command += ["--inherit_layers", method, "--data", measures["data"]]
            command += [f"--num_seqs={measures['num_seqs']}", f"--seq_len={measures['seq_len']}"]
            command += [f"--measure_seed={measures['seed']}"]
        choices["commands"][method] = shlex.join([*command, "--out", f"out-student-{method}-{n}/student.pt"])
    return choices


def collapse(stats: dict, settings: AnalysisSettings) -> dict:
    """Heads collapsed per layer by each rank of RANK_OF, and the lazy layers by settings.rank_of's."""
    ranks = {"sequence": stats["rank"], "mean": stats["rank_of_mean"]}
    collapsed = {name: collapsed_heads(r, settings.collapsed_rank) for name, r in ranks.items()}
    n_head = len(stats["rank"][0])
    return {
        "collapsed_heads": collapsed,
        "lazy_layers": lazy_layers(collapsed[settings.rank_of], n_head, settings.lazy_share),
    }


def analyze_model(source: str, settings: AnalysisSettings, device: str, n_student: int | None = None) -> dict:
    model, ckpt = load_model(source, device)
    model.eval()
    cfg = model.config
    if n_student is not None and n_student > cfg.n_layer:
        raise UserError(f"--n_layer {n_student} is deeper than the {cfg.n_layer}-layer {source}")
    if settings.rank_of not in RANK_OF:
        raise UserError(f"rank_of {settings.rank_of!r}: choose from {', '.join(RANK_OF)}")
    print(f"{source}: {cfg.n_layer} layers x {cfg.n_head} heads, {settings.num_seqs} sequences of {settings.seq_len}")
    seqs = validation_sequences(settings, cfg, ckpt.vocabulary())
    stats = head_statistics(model, seqs, settings, device)
    verdict = collapse(stats, settings)
    suggestion = suggest_student(str(source), cfg.n_layer, verdict["lazy_layers"])
    n = n_student or starting_depth(cfg.n_layer, verdict["lazy_layers"])
    measures = {key: getattr(settings, key) for key in ("data", "num_seqs", "seq_len", "seed")}
    measures |= {key: stats[key] for key in ("block_influence", "angular_distance")}
    result = {"source": str(source), "n_layer": cfg.n_layer, "n_head": cfg.n_head}
    result |= {"max_rank": [max(heads) for heads in stats["rank"]]}
    result |= {"max_rank_of_mean": [max(heads) for heads in stats["rank_of_mean"]]}
    result |= {"avg_mass": [sum(heads) / len(heads) for heads in stats["mass"]]} | verdict
    result |= {"suggestion": suggestion, "choices": layer_choices(str(source), measures, n), **stats}
    return result


def format_table(result: dict) -> str:
    """Per layer: MaxRank and heads collapsed by each rank of RANK_OF, AvgMass, Block Influence, and the angular
    distance of the span the angular choice considers (L - n blocks) starting there."""
    span = result["n_layer"] - result["choices"]["n_layer"]
    distance = result["angular_distance"].get(str(span), [])
    collapsed = result["collapsed_heads"]
    header = f"{'layer':>5} {'MaxRank':>8} {'heads':>6} {'MaxRank*':>9} {'heads*':>7} {'AvgMass':>8} {'BI':>7} "
    header += f"{f'd(l,l+{span})':>10}  lazy"
    lines = [header, "-" * len(header)]
    for layer, (r, m) in enumerate(zip(result["max_rank"], result["avg_mass"], strict=True)):
        d = f"{distance[layer]:>10.4f}" if layer < len(distance) else " " * 10
        bi = result["block_influence"][layer]
        heads, heads_of_mean = collapsed["sequence"][layer], collapsed["mean"][layer]
        lines.append(
            f"{layer:>5} {r:>8.2f} {heads:>6} {result['max_rank_of_mean'][layer]:>9} {heads_of_mean:>7} {m:>8.2f} "
            f"{bi:>7.4f} {d}  {'yes' if layer in result['lazy_layers'] else ''}"
        )
    return "\n".join(lines)


def describe_collapse(result: dict, settings: AnalysisSettings) -> str:
    """How many heads collapsed, by each rank of RANK_OF, and where."""
    total = result["n_layer"] * result["n_head"]
    half = result["n_layer"] // 2
    rule = f"rank at most {settings.collapsed_rank:g}; heads: per-sequence rank, heads*: of the averaged matrix"
    lines = [f"heads collapsed ({rule}):"]
    for name, counts in result["collapsed_heads"].items():
        deep = sum(counts[half:])
        lines.append(
            f"  {name:<8} {sum(counts)} of {total} ({sum(counts) / total:.1%}), {deep} of them in layers "
            f"{half}-{result['n_layer'] - 1}: {RANK_OF[name]}"
        )
    return "\n".join(lines)


def describe_choices(result: dict) -> str:
    choices = result["choices"]
    lines = [f"layers each measure keeps for a {choices['n_layer']}-layer student:"]
    for method, layers in choices["layers"].items():
        lines += [
            f"  {method:<8} {','.join(map(str, layers))}: {LAYER_METHODS[method]}",
            f"    {choices['commands'][method]}",
        ]
    return "\n".join(lines)


def describe_suggestion(result: dict, settings: AnalysisSettings) -> str:
    s = result["suggestion"]
    lazy = result["lazy_layers"]
    if not lazy:
        rule = f"{settings.lazy_share:.0%} of its heads collapsed by the {settings.rank_of} rank"
        return f"no lazy layer ({rule}) in {result['n_layer']} layers; the paper's starting point is n = L/2"
    why = "the leading non-lazy ones" if lazy[0] > 0 else "layer 0 is lazy itself: the smallest student"
    lines = [f"lazy layers: {lazy}", f"suggested student: the first {s['n_layer']} layers ({why})", f"  {s['command']}"]
    if "non_lazy_command" in s:
        lines += [f"every non-lazy layer ({len(s['non_lazy_layers'])}):", f"  {s['non_lazy_command']}"]
    return "\n".join(lines)


def plot_layers(results: list[dict], out: Path) -> None:
    """MaxRank, the share of heads collapsed, AvgMass and Block Influence per layer, and the angular distance of
    the span that the angular choice drops from each start layer; every model on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(3, 2, figsize=(11, 11))
    axes = axes.flatten()
    for r in results:
        layers = range(r["n_layer"])
        span = r["n_layer"] - r["choices"]["n_layer"]
        axes[0].plot(layers, r["max_rank"], marker="o", ms=3, label=r["source"])
        for name, style in (("sequence", "-"), ("mean", ":")):
            shares = [count / r["n_head"] for count in r["collapsed_heads"][name]]
            axes[1].plot(layers, shares, ls=style, marker="o", ms=3, label=f"{r['source']}: {name} rank")
        axes[2].plot(layers, r["avg_mass"], marker="o", ms=3, label=r["source"])
        axes[3].plot(layers, r["block_influence"], marker="o", ms=3, label=r["source"])
        if span:
            distance = r["angular_distance"][str(span)]
            axes[4].plot(range(len(distance)), distance, marker="o", ms=3, label=f"{r['source']}: span {span}")
    axes[0].axhline(1.0, color="black", ls="--", lw=1, label="rank 1")
    axes[5].axis("off")
    titles = (
        "MaxRank (max over heads of mean rank)",
        "share of heads collapsed",
        "AvgMass (mean over heads)",
        "Block Influence 1 - cos(h_l, h_l+1)",
        "angular distance d(l, l + span), last token",
    )
    for ax, title, xlabel in zip(axes, titles, ["layer"] * 4 + ["first layer of the span"], strict=False):
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.has_data():  # no span is dropped when the student keeps every layer
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_heads(results: list[dict], out: Path, settings: AnalysisSettings) -> None:
    """Layer x head heatmaps of the rank the verdict reads (log scale; the collapsed heads marked) and of mean
    mass, one row per model, on one colour scale per quantity so that the models compare at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import MaxNLocator

    rank = "rank" if settings.rank_of == "sequence" else "rank_of_mean"
    keys = (rank, "mass")
    scale = {key: (min(np.min(r[key]) for r in results), max(np.max(r[key]) for r in results)) for key in keys}
    height = 3 + 0.1 * max(r["n_layer"] for r in results)  # a readable row per layer, 30 or 3
    fig, axes = plt.subplots(len(results), 2, figsize=(11, height * len(results)), squeeze=False)
    for row, r in zip(axes, results, strict=True):
        for ax, key in zip(row, keys, strict=True):
            vmin, vmax = scale[key]
            norm = LogNorm(vmin, vmax) if key == rank else Normalize(vmin, vmax)  # ranks span 1 to tens
            values = np.array(r[key])
            image = ax.imshow(values, aspect="auto", cmap="viridis", origin="lower", norm=norm)
            if key == rank:
                layer, head = np.nonzero(values <= settings.collapsed_rank)
                ax.scatter(head, layer, marker="x", color="red", s=18)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            what = {"rank": "mean rank", "rank_of_mean": "rank of the mean attention", "mass": "mean mass"}[key]
            marked = f" (x: collapsed, <= {settings.collapsed_rank:g})" if key == rank else ""
            ax.set_title(f"{Path(r['source']).name}: {what}{marked}", fontsize=10)
            fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="analyze.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="checkpoint path, gpt2[-medium|-large|-xl], HF folder or GGUF file")
    p.add_argument("--data", required=True, help="prepared corpus folder; sequences come from its val.bin")
    p.add_argument("--compare", default="", help="a second model, analyzed on the same sequences and plotted beside")
    p.add_argument("--num_seqs", type=int, default=AnalysisSettings.num_seqs)
    p.add_argument("--seq_len", type=int, default=AnalysisSettings.seq_len)
    p.add_argument(
        "--tau", type=float, default=AnalysisSettings.tau, help="share of singular-value energy that defines the rank"
    )
    p.add_argument(
        "--eta", type=float, default=AnalysisSettings.eta, help="share of squared attention mass that defines the mass"
    )
    p.add_argument(
        "--collapsed_rank",
        type=float,
        default=AnalysisSettings.collapsed_rank,
        help="a head collapsed at this rank or below",
    )
    lazy_help = "a layer is lazy with this share of its heads collapsed"
    p.add_argument("--lazy_share", type=float, default=AnalysisSettings.lazy_share, help=lazy_help)
    rank_help = "the rank the verdict reads: " + "; ".join(f"{k}: {v}" for k, v in RANK_OF.items())
    p.add_argument("--rank_of", choices=list(RANK_OF), default=AnalysisSettings.rank_of, help=rank_help)
    n_help = "the student depth whose layers each measure chooses (default: the suggested student, or L/2)"
    p.add_argument("--n_layer", type=int, help=n_help)
    p.add_argument("--seed", type=int, default=AnalysisSettings.seed, help="which validation sequences")
    p.add_argument(
        "--batch_size", type=int, default=AnalysisSettings.batch_size, help="sequences per forward pass (bounds memory)"
    )
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', ...")
    p.add_argument("--out", default="out-analysis", help="folder for analysis.json, layers.png and heads.png")
    args = p.parse_args(argv)
    for name in ("num_seqs", "seq_len", "batch_size", "n_layer"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    for name in ("tau", "eta", "lazy_share"):
        if not 0 < getattr(args, name) <= 1:
            p.error(f"--{name} must be in (0, 1]")
    if args.collapsed_rank < 1:
        p.error("--collapsed_rank must be at least 1 (the lowest rank there is)")
    return args


@command_main
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    output_folder(args.out)
    measure = (args.data, args.num_seqs, args.seq_len, args.tau, args.eta, args.seed, args.batch_size)
    settings = AnalysisSettings(*measure, args.collapsed_rank, args.lazy_share, args.rank_of)
    results = []
    device = resolve_device_name(args.device)
    for source in [args.model, args.compare] if args.compare else [args.model]:
        n_student = args.n_layer if source == args.model else None  # a compared student has its own depth
        result = analyze_model(source, settings, device, n_student)
        print(format_table(result))
        print(describe_collapse(result, settings))
        print(describe_suggestion(result, settings))
        print(describe_choices(result))
        print(f"forward {result['forward_seconds']} s, rank and mass {result['metrics_seconds']} s\n")
        results.append(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "analysis.json", {"settings": vars(settings), "models": results})
    plot_layers(results, out / "layers.png")
    plot_heads(results, out / "heads.png", settings)
    print(f"wrote {out / 'analysis.json'}, {out / 'layers.png'} and {out / 'heads.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
