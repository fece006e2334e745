"""Scaling laws L(N, D) from training runs: Chinchilla's form for runs from scratch, the continual
pre-training (CPT) form for runs that start from a trained model, and the compute-optimal size for a budget.

    python scaling.py sweep --config config/scratch_python.py --n_layer 1,2,4 --out_dir out-sweep
    python scaling.py fit out-sweep/* --out fit-scratch
    python scaling.py fit out-cpt-sweep/* --form cpt --base fit-scratch/fit.json --out fit-cpt --compute 1e15
    python scaling.py fit --csv points.csv --out fit-csv

Forms, with N the non-embedding parameters and D the tokens trained on (for CPT: since the start of CPT):
  chinchilla  L = E + A / N^alpha + B / D^beta                (Hoffmann et al. 2022)
  cpt         L = E + A / N^alpha + B / (D^beta * N^gamma)    (Zheng et al. 2024, arXiv 2407.02118), with E, A,
              alpha fixed from a from-scratch fit (--base): what a model of size N can reach is the same,
              how fast it gets there from a trained start is what CPT changes.
Fitting follows Hoffmann et al.: the Huber loss (delta 1e-3) between log L and the log of the form,
written as a log-sum-exp of its terms, summed over the points and minimised by L-BFGS from a grid of
starting points; the best optimum is kept. The parameters' uncertainty comes from refitting on runs
drawn with replacement (--bootstrap). Compute-optimal sizes use C = 6 N D.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp, softmax
from threadpoolctl import threadpool_limits

from inheritune import compat
from runs import Run, Runner, read_run
from runtime import UserError, run_command, write_json

HUBER_DELTA = 1e-3
STARTS = 16  # L-BFGS runs, from the best points of the grid
BOOTSTRAP_STARTS = 4  # the same for each refit of the bootstrap, besides the full fit's optimum
FREE = {"chinchilla": ("e", "a", "alpha", "b", "beta"), "cpt": ("b", "beta", "gamma")}
# Exponents stay in a physical range: a loss that grows with N or D is no scaling law (unbounded, noisy points
# gave alpha -37.5 and a bootstrap interval of beta reaching -4455), and published exponents lie within 0.07-0.8.
# The log-constants e, a, b are free. An exponent at a bound is reported as undetermined (`unconstrained`).
BOUNDS = {"alpha": (0.0, 3.0), "beta": (0.0, 3.0), "gamma": (-3.0, 3.0)}
# Starting points of L-BFGS, as in Hoffmann et al.'s grid (coarser in the exponents).
GRID = {
    "e": (-1.0, 0.0, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.2, 0.5, 1.0),
    "beta": (0.2, 0.5, 1.0),
    "gamma": (-0.5, 0.0, 0.5),
}


class ScalingError(UserError):
    """Points or fits that cannot give a scaling law."""


# ----------------------------------------------------------------------------- points


@dataclass
class Points:
    n: np.ndarray  # non-embedding parameters
    d: np.ndarray  # training tokens (of a continued run: since it continued)
    loss: np.ndarray
    run: np.ndarray  # the name of the run each point comes from: the unit of the bootstrap

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, mask: np.ndarray) -> Points:
        return Points(self.n[mask], self.d[mask], self.loss[mask], self.run[mask])


def points_from_runs(runs: list[Run], every_eval: bool, corpus: str) -> Points:
    """(N, D, val loss) at the final eval of each run, or with every_eval at each eval after its first step.
    The law is of runs whose schedule ends at D: mid-way through a cosine schedule meant for a longer run the
    loss is not that of a run of D tokens (same N and D: 9.62 at the end of a 10-step run, 9.29 mid-way
    through a 20-step one), so intermediate evals are points only when asked for."""
    rows = []
    for run in runs:
        if run.model.get("scaling_params") is None:
            raise ScalingError(f"{run.out_dir}: config.json records no scaling_params (an older run?)")
        if run.diverged:  # its last eval is of before the divergence: no loss of a run of its D
            raise ScalingError(f"{run.out_dir} diverged at step {run.diverged['iter']} (NaN/inf): leave it out")
        if not run.finished() and not every_eval:  # mid-schedule: no run of its D (see above)
            raise ScalingError(
                f"{run.out_dir} stopped before its last step, max_iters {run.config['max_iters']}: finish it (run "
                "its command again) or leave it out"
            )
        evals = [r for r in run.evals if r["tokens"] > 0]
        if not evals:
            raise ScalingError(f"{run.out_dir} has no eval after its first step")
        for record in evals if every_eval else evals[-1:]:
            loss = run.val_loss(record, corpus)
            if not np.isfinite(loss):
                raise ScalingError(
                    f"{run.out_dir}: its val loss at step {record['iter']} is {loss} (diverged?): leave it out"
                )
            rows.append((run.model["scaling_params"], record["tokens"], loss, str(run.out_dir)))
    return to_points(rows)


KIND_OF_FORM = {"chinchilla": "from scratch", "cpt": "from a trained model (continued)"}


def mixing_warnings(runs: list[Run], form: str) -> list[str]:
    """What makes runs unfit for one law: different starts (the chinchilla form is of runs from scratch, the
    cpt form of runs continued from trained models), different training corpora, and, for cpt, source models
    whose pretraining tokens D_p are unknown or not alike: the form's N^gamma stands for what a source of
    size N learned before, which holds only when every source was trained alike (here: the same D_p / N to
    within 2x)."""
    warnings = []
    kinds = sorted({run.kind for run in runs})
    expected = {"cpt": "continued", "chinchilla": "scratch"}[form]
    if runs and kinds != [expected]:
        count = ", ".join(f"{sum(run.kind == kind for run in runs)} {kind}" for kind in kinds)
        warnings.append(f"the {form} form is of runs that start {KIND_OF_FORM[form]}; these runs are {count}")
    corpora = {run.training_corpus for run in runs}
    if len(corpora) > 1:
        warnings.append(f"the runs trained on {len(corpora)} different corpora or mixtures; one law is of one corpus")
    if form == "cpt":
        sources = [(run, source_tokens(run)) for run in runs if run.kind == "continued"]
        unknown = [str(run.out_dir) for run, d_p in sources if d_p is None]
        if unknown:
            warnings.append(f"unknown D_p (the source model's pretraining tokens) of {', '.join(unknown)}")
        ratios = [d_p / run.model["scaling_params"] for run, d_p in sources if d_p is not None]
        if ratios and max(ratios) > 2 * min(ratios):
            warnings.append(
                f"the source models were pretrained unlike: D_p / N from {min(ratios):.3g} to {max(ratios):.3g}"
            )
    return warnings


def source_tokens(run: Run) -> float | None:
    """D_p: the tokens the model a run continued from had seen (0 from scratch, None where unknown)."""
    return (run.continued_from or {}).get("tokens_seen") if run.kind == "continued" else 0


def points_from_csv(path: str) -> Points:
    """Columns N, D, loss (and optionally run: points of one run are resampled together)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets start CSV with a BOM
            reader = csv.DictReader(f)
            missing = {"N", "D", "loss"} - set(reader.fieldnames or [])
            if missing:
                raise ScalingError(
                    f"{path}: no column {', '.join(sorted(missing))} (need N,D,loss; found "
                    f"{','.join(reader.fieldnames or []) or 'nothing'})"
                )
            records = list(reader)
            unnamed = [i + 2 for i, r in enumerate(records) if not r.get("run")]
            if "run" in reader.fieldnames and unnamed:  # a row's index would pass for a run named by a number
                lines = ", ".join(map(str, unnamed[:5]))
                raise ScalingError(f"{path}: no run on line {lines}: name every row's run or leave the column out")
            rows = [(float(r["N"]), float(r["D"]), float(r["loss"]), r.get("run") or i) for i, r in enumerate(records)]
    except (ValueError, TypeError) as e:  # TypeError: a short row, whose missing cells read as None
        raise ScalingError(f"{path}: {e} (every row needs N, D and loss, and they must be numbers)") from e
    except OSError as e:
        raise ScalingError(f"{path}: {e}") from e
    return to_points(rows)


def to_points(rows: list[tuple]) -> Points:
    if not rows:
        raise ScalingError("no points to fit")
    n, d, loss, run = (np.array(column) for column in zip(*rows, strict=True))
    n, d, loss = n.astype(float), d.astype(float), loss.astype(float)
    values = np.stack([n, d, loss])
    if not (np.all(values > 0) and np.all(np.isfinite(values))):
        raise ScalingError("N, D and loss must all be positive and finite")
    return Points(n, d, loss, run.astype(str))


# ----------------------------------------------------------------------------- the forms and the fit


def log_terms(p: dict, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """log E, log(A / N^alpha), log(B / (D^beta N^gamma)) per point: the form is their log-sum-exp. Parameters
    given as columns (one row per parameter set) give one row of terms per set."""
    return np.stack(
        np.broadcast_arrays(
            p["e"],
            p["a"] - p["alpha"] * log_n,
            p["b"] - p["beta"] * log_d - p["gamma"] * log_n,
        )
    )


def residuals(p: dict, log_n, log_d, log_loss) -> tuple[np.ndarray, np.ndarray]:
    """The log terms and the residual log L(N, D) - log loss of each point."""
    terms = log_terms(p, log_n, log_d)
    return terms, logsumexp(terms, axis=0) - log_loss


def objective(x: np.ndarray, names: tuple[str, ...], fixed: dict, log_n, log_d, log_loss) -> tuple[float, np.ndarray]:
    """The summed Huber loss of log L and its gradient in the free parameters."""
    p = {**fixed, **dict(zip(names, x, strict=True))}
    terms, r = residuals(p, log_n, log_d, log_loss)
    weight = softmax(terms, axis=0)  # d(log-sum-exp) / d(term)
    dr = np.clip(r, -HUBER_DELTA, HUBER_DELTA)  # d(huber) / d(r)
    partial = {
        "e": weight[0],
        "a": weight[1],
        "alpha": -weight[1] * log_n,
        "b": weight[2],
        "beta": -weight[2] * log_d,
        "gamma": -weight[2] * log_n,
    }
    return float(huber(HUBER_DELTA, r).sum()), np.array([(dr * partial[name]).sum() for name in names])


# L-BFGS-B's default tolerances stop it at once here: its ftol is relative to max(|f|, 1) and the summed Huber
# loss of good fits is ~1e-4, and its gtol (1e-5) is the size of the whole gradient. Stopped early, the fit's
# compute-optimal size was off by 2x (Besiroglu et al. 2024 found the same in Hoffmann et al.'s own fit).
# Converging fits take 100-200 iterations; a start that needs more than 2,000 is in a flat, degenerate valley.
LBFGS_OPTIONS = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2_000}


def minimise(points: Points, form: str, fixed: dict, starts: list[np.ndarray]) -> tuple[dict, float]:
    """The lowest optimum that L-BFGS converged to from the starts."""
    names = FREE[form]
    args = (names, fixed, np.log(points.n), np.log(points.d), np.log(points.loss))
    bounds = [BOUNDS.get(name, (-np.inf, np.inf)) for name in names]  # the grid and the optimum lie within
    # One BLAS thread: L-BFGS-B's matrices are 5x5, and OpenBLAS's threads spinning on them made a fit 30x
    # slower (33 s instead of 1.2 s) whenever another process held the cores (a training run, a test).
    with threadpool_limits(limits=1, user_api="blas"):
        results = [
            minimize(objective, x0, args=args, jac=True, method="L-BFGS-B", bounds=bounds, options=LBFGS_OPTIONS)
            for x0 in starts
        ]
    converged = [result for result in results if result.success and np.isfinite(result.fun)]
    if not converged:
        raise ScalingError(f"L-BFGS converged from none of the {len(starts)} starting points: no fit to report")
    best = min(converged, key=lambda result: result.fun)  # the first of equal optima, as the starts are ranked
    return {**fixed, **dict(zip(names, best.x.tolist(), strict=True))}, float(best.fun)


def fixed_parameters(form: str, base: dict | None) -> dict:
    """The log-space parameters a form does not fit: gamma 0 for chinchilla, E, A and alpha of the base law
    (a chinchilla fit.json) for cpt."""
    if form == "chinchilla":
        return {"gamma": 0.0}
    if base is None or base.get("form") != "chinchilla":
        raise ScalingError("the cpt form takes E, A and alpha from a from-scratch fit: --base a chinchilla fit.json")
    bp = base["params"]
    return {"e": float(np.log(bp["E"])), "a": float(np.log(bp["A"])), "alpha": bp["alpha"]}


def best_of_grid(points: Points, form: str, fixed: dict, count: int) -> list[np.ndarray]:
    """The `count` points of the grid where the objective is lowest: scoring the whole grid at once costs
    milliseconds, a run of L-BFGS a tenth of a second, so L-BFGS starts from these only."""
    names = FREE[form]
    grid = np.array(list(itertools.product(*(GRID[name] for name in names))))
    columns = {name: grid[:, [i]] for i, name in enumerate(names)}  # one row per grid point
    _, r = residuals({**fixed, **columns}, np.log(points.n), np.log(points.d), np.log(points.loss))
    scores = huber(HUBER_DELTA, r).sum(axis=-1)
    return list(grid[np.argsort(scores, kind="stable")[:count]])


def fit(points: Points, form: str, base: dict | None = None) -> tuple[dict, float]:
    """The log-space parameters (e, a, alpha, b, beta, gamma) of the best fit, and its loss."""
    if len(points) < len(FREE[form]):
        raise ScalingError(f"{len(points)} points cannot fit the {len(FREE[form])} free parameters of {form}")
    fixed = fixed_parameters(form, base)
    return minimise(points, form, fixed, best_of_grid(points, form, fixed, STARTS))


def public(p: dict, form: str) -> dict[str, float]:
    """E, A, alpha, B, beta (and gamma for cpt): the constants as the papers write them."""
    out = {"E": float(np.exp(p["e"])), "A": float(np.exp(p["a"])), "alpha": p["alpha"], "B": float(np.exp(p["b"]))}
    out["beta"] = p["beta"]
    if form == "cpt":
        out["gamma"] = p["gamma"]
    return out


def log_params(params: dict[str, float]) -> dict[str, float]:
    """The inverse of `public`: log E, log A, alpha, log B, beta, gamma (0 when absent)."""
    return {
        "e": float(np.log(params["E"])),
        "a": float(np.log(params["A"])),
        "alpha": params["alpha"],
        "b": float(np.log(params["B"])),
        "beta": params["beta"],
        "gamma": params.get("gamma", 0.0),
    }


def terms(params: dict[str, float], n, d) -> tuple[np.ndarray, np.ndarray]:
    """A / N^alpha and B / (D^beta N^gamma) of public parameters (gamma 0 when absent), computed in log space
    so that a runaway exponent gives 0, not an overflow."""
    log_n, log_d = np.log(np.asarray(n, float)), np.log(np.asarray(d, float))
    n_term = np.exp(np.log(params["A"]) - params["alpha"] * log_n)
    return n_term, np.exp(np.log(params["B"]) - params["beta"] * log_d - params.get("gamma", 0.0) * log_n)


def predict(params: dict[str, float], n, d):
    """L(N, D) of public parameters."""
    n_term, d_term = terms(params, n, d)
    return params["E"] + n_term + d_term


def undetermined_design(points: Points) -> list[str]:
    """What the layout of the points leaves undetermined, whatever their losses: an exponent from fewer than
    3 distinct sizes (or token counts), whose fit then follows the noise (two sizes gave N_opt from 1.2e8 to
    1.4e10 across noise seeds); and N and D that move together (one D per N on a line in log space, e.g.
    D = 20 N), where the size term and the tokens term trade off freely (such points gave N_opt 3.4x off
    with no warning)."""
    found = []
    for name, values in (("model sizes N", points.n), ("token counts D", points.d)):
        if len(np.unique(values)) < 3:
            found.append(f"{len(np.unique(values))} distinct {name}: an exponent needs at least 3 to be determined")
    if not found and abs(np.corrcoef(np.log(points.n), np.log(points.d))[0, 1]) > 0.999:
        found.append(
            "N and D move together (log D is a linear function of log N): the points cannot tell the size term "
            "from the tokens term"
        )
    return found


def unconstrained(params: dict[str, float], points: Points) -> list[str]:
    """What the points cannot determine: what their layout leaves open (`undetermined_design`), an exponent
    near 0 or at its bound, and a term below 0.1% of the loss at every point, whose constants are arbitrary
    (sizes too close, or too noisy, to tell apart)."""
    found = undetermined_design(points)
    for name, exponent in (("alpha (model size)", params["alpha"]), ("beta (tokens)", params["beta"])):
        if abs(exponent) < 0.01:
            found.append(f"the exponent {name} is {exponent:.4f}: its term is a constant, the points show no trend")
    for name, (low, high) in BOUNDS.items():  # at 0, alpha and beta are flagged above
        value = params.get(name, 0.0)
        if value >= high - 1e-6 or (low < 0 and value <= low + 1e-6):
            found.append(f"the exponent {name} reached its bound {value:.3g}: the points do not determine it")
    n_term, d_term = terms(params, points.n, points.d)
    for name, term in (("A / N^alpha (model size)", n_term), ("B / D^beta (tokens)", d_term)):
        if np.max(term / points.loss) < 1e-3:
            found.append(f"the points do not constrain the term {name}: it is below 0.1% of the loss everywhere")
    return found


def base_points(base: dict) -> Points | None:
    """The points a base fit.json was fitted to (None for a base written without them)."""
    rows = [(p["N"], p["D"], p["loss"], p["run"]) for p in base.get("points", [])]
    return to_points(rows) if rows else None


def resample(points: Points, rng: np.random.Generator) -> Points:
    """As many runs as there are, drawn with replacement, with all their points."""
    runs = np.unique(points.run)
    drawn = rng.choice(runs, size=len(runs), replace=True)
    subsets = [points.subset(points.run == r) for r in drawn]
    return Points(*(np.concatenate([getattr(sub, f) for sub in subsets]) for f in ("n", "d", "loss", "run")))


def refit(sample: Points, form: str, fixed: dict, best: dict) -> dict | None:
    """The fit of a resample, started from the full fit's optimum and from the best grid points of its own
    sample (the optimum alone would keep every refit in its basin, and the intervals too narrow); None where
    the sample's layout cannot determine the law (as the full fit would say: with two sizes a refit's A
    reached 1.5e19) or L-BFGS converges from no start."""
    names = FREE[form]
    if undetermined_design(sample) or len(sample) < len(names):
        return None
    starts = [np.array([best[name] for name in names]), *best_of_grid(sample, form, fixed, BOOTSTRAP_STARTS)]
    try:
        return minimise(sample, form, fixed, starts)[0]
    except ScalingError:
        return None


def bootstrap(points: Points, form: str, base: dict | None, best: dict, samples: int, seed: int) -> tuple[dict, int]:
    """5th and 95th percentiles of each parameter over fits to runs drawn with replacement, and how many
    resamples gave a fit. A cpt fit's E, A and alpha come from its base law, whose own uncertainty is carried
    over by a joint bootstrap: each resample also redraws the base fit's runs and refits the base law (with
    E, A, alpha held at the base's point estimate, the cpt intervals were too narrow, and E's zero-width)."""
    rng = np.random.default_rng(seed)
    fixed = fixed_parameters(form, base)
    base_runs = base_points(base) if form == "cpt" else None
    fits = []
    for _ in range(samples):
        sample = resample(points, rng)
        if base_runs is not None:
            base_fit = refit(resample(base_runs, rng), "chinchilla", {"gamma": 0.0}, log_params(base["params"]))
            if base_fit is None:
                continue
            fixed = {k: base_fit[k] for k in ("e", "a", "alpha")}
        params = refit(sample, form, fixed, best)
        if params is None:
            continue
        with np.errstate(over="ignore"):
            constants = public(params, form)
        if all(np.isfinite(list(constants.values()))):  # exp of a runaway log-constant is no fit
            fits.append(constants)
    if not fits:
        return {}, 0
    return {key: [float(np.percentile([f[key] for f in fits], q)) for q in (5, 95)] for key in fits[0]}, len(fits)


def compute_optimal(params: dict[str, float], compute: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """N and D that minimise L(N, D) subject to 6 N D = C: N^(alpha + beta - gamma) = alpha A (C/6)^beta /
    ((beta - gamma) B); Chinchilla's closed form when gamma = 0."""
    alpha, beta, gamma = params["alpha"], params["beta"], params.get("gamma", 0.0)
    if alpha <= 0 or beta - gamma <= 0:
        raise ScalingError(f"no compute-optimal size: the fit has alpha {alpha:.3f}, beta - gamma {beta - gamma:.3f}")
    c = np.asarray(compute, float) / 6
    n = (alpha * params["A"] * c**beta / ((beta - gamma) * params["B"])) ** (1 / (alpha + beta - gamma))
    return n, c / n


# ----------------------------------------------------------------------------- output


def format_fit(result: dict) -> str:
    lines = [f"form {result['form']}: {result['formula']}, {result['n_points']} points from {result['n_runs']} runs"]
    for key, value in result["params"].items():
        interval = result["bootstrap"].get(key)
        spread = f"   90% interval {interval[0]:.4g} .. {interval[1]:.4g}" if interval else ""
        lines.append(f"  {key:<6} {value:>12.5g}{spread}")
    residuals = result["residuals"]
    lines.append(f"  residuals of log L: rms {residuals['rms']:.4f}, max |r| {residuals['max']:.4f}")
    resamples = result["bootstrap_resamples"]
    if resamples["drawn"]:
        lines.append(
            f"  intervals from {resamples['fitted']} of {resamples['drawn']} bootstrap resamples (the rest fit no law)"
        )
    return "\n".join(lines)


FORMULAS = {"chinchilla": "L = E + A/N^alpha + B/D^beta", "cpt": "L = E + A/N^alpha + B/(D^beta N^gamma)"}


def frontier_laws(result: dict, base: dict | None) -> tuple[dict[str, dict], list[str]]:
    """The laws whose compute-optimal frontier can be drawn (the fit's, and a cpt fit's base law), and for
    each other one why not: the plot says what it leaves out."""
    candidates = {result["form"]: result["params"]} | ({"scratch (--base)": base["params"]} if base else {})
    undetermined = {result["form"]: result["unconstrained"], "scratch (--base)": base and base.get("unconstrained")}
    laws, omitted = {}, []
    for name, params in candidates.items():
        if undetermined[name]:
            omitted.append(f"{name}: the points leave the law undetermined")
            continue
        try:
            compute_optimal(params, 1.0)
        except ScalingError as e:
            omitted.append(f"{name}: {str(e).removeprefix('no compute-optimal size: ')}")
            continue
        laws[name] = params
    return laws, omitted


def compute_range(points: Points, compute: float | None) -> np.ndarray:
    """Compute budgets to plot: from a tenth of the smallest point's 6 N D to 1,000 times the largest (and
    past the budget asked for with --compute)."""
    c = 6 * points.n * points.d
    return np.geomspace(c.min() / 10, max(c.max() * 1e3, 10 * (compute or 0)), 100)


def plot_fit(points: Points, result: dict, base: dict | None, out: Path) -> None:
    """Left: loss against tokens per model size, points and fitted curves. Right: the compute-optimal N and
    D against compute, for this fit and, for a CPT fit, the from-scratch law it builds on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, frontier) = plt.subplots(1, 2, figsize=(12, 4.5))
    d_grid = np.geomspace(points.d.min() / 2, points.d.max() * 2, 100)
    for i, n in enumerate(sorted(set(points.n.tolist()))):
        mine = points.n == n
        color = f"C{i % 10}"
        curves.scatter(points.d[mine], points.loss[mine], color=color, s=14, label=f"N = {n / 1e6:.3g}M")
        curves.plot(d_grid, predict(result["params"], n, d_grid), color=color)
    curves.set_xscale("log")
    curves.set_xlabel("tokens D")
    curves.set_ylabel("validation loss")
    curves.set_title(f"{result['form']} fit: {result['formula']}")
    curves.grid(alpha=0.3, which="both")
    curves.legend(fontsize=8)
    laws, omitted = frontier_laws(result, base)
    if not laws:
        frontier.set_axis_off()
    c = compute_range(points, result.get("compute_optimal", {}).get("C"))
    for j, (name, params) in enumerate(laws.items()):
        n_opt, d_opt = compute_optimal(params, c)
        frontier.plot(c, n_opt, color=f"C{j}", label=f"N_opt, {name}")
        frontier.plot(c, d_opt, color=f"C{j}", ls="--", label=f"D_opt, {name}")
    if omitted:
        text = "no compute-optimal frontier of\n" + "\n".join(omitted)
        x, y, ha, va = (0.98, 0.02, "right", "bottom") if laws else (0.5, 0.5, "center", "center")
        frontier.text(x, y, text, ha=ha, va=va, fontsize=8, transform=frontier.transAxes)
    frontier.set_xscale("log")
    frontier.set_yscale("log")
    frontier.set_xlabel("compute C = 6ND (FLOPs)")
    frontier.set_ylabel("N_opt (parameters), D_opt (tokens)")
    frontier.set_title("compute-optimal model size and tokens")
    frontier.grid(alpha=0.3, which="both")
    if laws:
        frontier.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def optimum_or_warning(params: dict[str, float], compute: float, warnings: list[str]) -> dict:
    """{"compute_optimal": ...} for C FLOPs, or, where the law has no optimum, a warning (the fit is kept)."""
    try:
        n_opt, d_opt = compute_optimal(params, compute)
    except ScalingError as e:
        warnings.append(str(e))
        return {}
    return {
        "compute_optimal": {
            "C": compute,
            "N": float(n_opt),
            "D": float(d_opt),
            "loss": float(predict(params, n_opt, d_opt)),
        }
    }


def read_base(path: str) -> dict | None:
    """The from-scratch fit.json a cpt fit builds on."""
    if not path:
        return None
    try:
        base = json.loads(Path(path).read_text())
        if base.get("form") != "chinchilla" or not {"E", "A", "alpha"} <= base["params"].keys():
            raise ScalingError(f"--base {path} is no chinchilla fit.json (it needs form chinchilla and E, A, alpha)")
        base = compat.fit(base)
        values = [base["params"][key] for key in ("E", "A", "alpha")]
        if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values) or min(values[:2]) <= 0:
            raise ScalingError(f"--base {path}: E, A and alpha must be finite numbers, E and A positive")
        base_points(base)  # the points of the joint bootstrap, checked now
    except (OSError, json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
        raise ScalingError(f"--base {path}: {type(e).__name__}: {e} (is it a fit.json of scaling.py fit?)") from e
    return base


def fit_result(points: Points, form: str, base: dict | None, args: argparse.Namespace) -> dict:
    """The fit, its residuals and bootstrap intervals, and what the points leave undetermined."""
    best, loss = fit(points, form, base)
    params = public(best, form)
    residuals = np.log(points.loss) - np.log(predict(params, points.n, points.d))
    n_runs, notes = len(np.unique(points.run)), []
    if args.bootstrap and n_runs < 3:
        notes.append(f"the points come from {n_runs} run(s): too few to resample, so no intervals")
        intervals, resamples = {}, 0
    else:
        intervals, resamples = bootstrap(points, form, base, best, args.bootstrap, args.seed)
    if form == "cpt" and base_points(base) is None and intervals:
        intervals = {key: value for key, value in intervals.items() if key not in ("E", "A", "alpha")}
        notes.append(
            "the base fit.json records no points: the uncertainty of E, A and alpha is not carried over (no "
            "intervals for them, and those of B, beta and gamma are too narrow)"
        )
    undetermined = unconstrained(params, points)
    if form == "cpt":
        undetermined += [f"the base law: {warning}" for warning in base["unconstrained"]]
    return {
        "form": form,
        "formula": FORMULAS[form],
        "params": params,
        "n_points": len(points),
        "n_runs": int(n_runs),
        "huber_loss": loss,
        "residuals": {"rms": float(np.sqrt(np.mean(residuals**2))), "max": float(np.abs(residuals).max())},
        "bootstrap": intervals,
        "bootstrap_resamples": {"fitted": resamples, "drawn": args.bootstrap},
        "base": args.base or None,
        "unconstrained": undetermined,
        "warnings": notes,
        "points": [
            {"N": float(n), "D": float(d), "loss": float(v), "run": str(run), "residual": float(r)}
            for n, d, v, run, r in zip(points.n, points.d, points.loss, points.run, residuals, strict=True)
        ],
    }


def fit_main(args: argparse.Namespace) -> int:
    if bool(args.runs) == bool(args.csv):
        raise ScalingError("give run folders or --csv FILE" + (", not both" if args.runs else ""))
    twice = [d for i, d in enumerate(args.runs) if os.path.realpath(d) in map(os.path.realpath, args.runs[:i])]
    if twice:
        raise ScalingError(f"run folder {twice[0]} is given twice: each run is one unit of the fit and bootstrap")
    runs = [read_run(out_dir) for out_dir in args.runs]
    points = points_from_csv(args.csv) if args.csv else points_from_runs(runs, args.every_eval, args.corpus)
    base = read_base(args.base)
    result = fit_result(points, args.form, base, args)
    sources = {str(run.out_dir): source_tokens(run) for run in runs}
    for point in result["points"]:
        point["D_p"] = sources.get(point["run"])
    result["warnings"] = mixing_warnings(runs, args.form) + result["warnings"] + result["unconstrained"]
    if args.compute and not result["unconstrained"]:
        result |= optimum_or_warning(result["params"], args.compute, result["warnings"])
    print(format_fit(result))
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    if "compute_optimal" in result:
        opt = result["compute_optimal"]
        print(f"compute {opt['C']:.3g} FLOPs: N_opt {opt['N']:.4g}, D_opt {opt['D']:.4g} tokens, L {opt['loss']:.4f}")
        if args.form == "cpt":
            print("  (C = 6 N D counts the continued training only: the source's pretraining, 6 N D_p, comes on top)")
    elif args.compute:
        print("no compute-optimal size: the warnings above say why")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "fit.json", result)
    plot_fit(points, result, base, out / "fit.png")
    print(f"wrote {out / 'fit.json'} and {out / 'fit.png'}")
    return 0


# ----------------------------------------------------------------------------- sweep


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def flops(text: str) -> float:
    value = float(text)
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of FLOPs like 1e21, got {text}")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 2,4,8, got {text!r}")
    return values


def sweep_main(args: argparse.Namespace) -> int:
    """Every (n_layer, max_iters) of the grid in its own run folder, skipped when finished and resumed when
    interrupted; the schedule of each run decays over its own max_iters."""
    runner = Runner(args.config, args.nproc)
    runs = []
    for n_layer, max_iters in itertools.product(args.n_layer, args.max_iters or [0]):
        name = f"L{n_layer}" + (f"_T{max_iters}" if max_iters else "")
        out_dir = Path(args.out_dir) / name
        overrides = [*args.overrides, f"--n_layer={n_layer}"]
        if max_iters:
            overrides += [f"--max_iters={max_iters}", f"--lr_decay_iters={max_iters}"]
        init = [f"--init_from={args.init_from.format(n_layer=n_layer)}"] if args.init_from else []
        print(f"run {name}", flush=True)
        if runner.train(out_dir, overrides, init).diverged:
            print(f"warning: run {name} diverged (NaN/inf): the fit refuses it; leave it out", file=sys.stderr)
            continue
        runs.append(str(out_dir))
    print("fit them with: python scaling.py fit " + " ".join(runs) + f" --out {args.out_dir}/fit")
    return 0


def fit_arguments(f: argparse.ArgumentParser) -> None:
    f.add_argument("runs", nargs="*", help="training run folders (train.py out_dir)")
    f.add_argument("--csv", default="", help="points instead of runs: columns N,D,loss (optional run)")
    f.add_argument("--form", choices=sorted(FORMULAS), default="chinchilla")
    f.add_argument("--base", default="", help="fit.json of a from-scratch (chinchilla) fit: E, A, alpha for cpt")
    every = "a point at every eval of each run, not only its final one (mid-schedule losses are not those of runs "
    f.add_argument("--every_eval", action="store_true", help=every + "that end there)")
    f.add_argument("--corpus", default="", help="the val loss of this corpus (default: the mixture's weighted mean)")
    f.add_argument("--bootstrap", type=count, default=100, help="refits on runs drawn with replacement (0: none)")
    f.add_argument("--compute", type=flops, default=0.0, help="also print the compute-optimal N and D for C FLOPs")
    f.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    f.add_argument("--out", required=True, help="folder for fit.json and fit.png")


def sweep_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--config", required=True, help="train.py config of every run")
    s.add_argument("--n_layer", type=int_list, required=True, help="depths, e.g. 2,4,8")
    s.add_argument("--max_iters", type=int_list, default=None, help="steps, e.g. 100,200 (default: the config's)")
    s.add_argument("--init_from", default="", help="train.py init_from of every run; {n_layer} is replaced")
    s.add_argument("--out_dir", required=True, help="one sub-folder per run: L{n_layer}[_T{max_iters}]")
    s.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun when above 1)")
    s.add_argument("overrides", nargs="*", help="--key=value overrides for train.py, after a '--'")


COMMANDS = {
    "fit": (fit_arguments, fit_main, "fit a scaling law to run folders or a CSV of points"),
    "sweep": (sweep_arguments, sweep_main, "train a grid of runs to fit, each in its own folder, resumable"),
}


def main(argv: list[str]) -> int:
    return run_command("scaling.py", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
