"""Scaling laws L(N, D) from training runs: Chinchilla's form for runs from scratch, the continual
pre-training (CPT) form for runs that start from a trained model, and the compute-optimal size for a budget.

    python scaling.py sweep --config config/scaling_python.py --n_layer 1,2,4 --out_dir out-sweep
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
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp, softmax

from runs import RunError, launch_training, read_run
from runtime import run_command, write_json

HUBER_DELTA = 1e-3
STARTS = 16  # L-BFGS runs, from the best points of the grid
BOOTSTRAP_STARTS = 4  # the same for each refit of the bootstrap, besides the full fit's optimum
FREE = {"chinchilla": ("e", "a", "alpha", "b", "beta"), "cpt": ("b", "beta", "gamma")}
# Starting points of L-BFGS, as in Hoffmann et al.'s grid (coarser in the exponents).
GRID = {
    "e": (-1.0, 0.0, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.2, 0.5, 1.0),
    "beta": (0.2, 0.5, 1.0),
    "gamma": (-0.5, 0.0, 0.5),
}


class ScalingError(ValueError):
    """Points or fits that cannot give a scaling law."""


# ----------------------------------------------------------------------------- points


@dataclass
class Points:
    n: np.ndarray  # non-embedding parameters
    d: np.ndarray  # training tokens
    loss: np.ndarray
    run: np.ndarray  # which run each point comes from: the unit of the bootstrap

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, mask: np.ndarray) -> Points:
        return Points(self.n[mask], self.d[mask], self.loss[mask], self.run[mask])


def points_from_runs(run_dirs: list[str], final: bool, corpus: str) -> Points:
    """(N, D, val loss) at every eval after the first step of each run (only the last with final)."""
    rows = []
    for index, out_dir in enumerate(run_dirs):
        run = read_run(out_dir)
        if run.model.get("scaling_params") is None:
            raise ScalingError(f"{out_dir}: config.json records no scaling_params (an older run?)")
        evals = [r for r in run.evals if r["tokens"] > 0]
        if not evals:
            raise ScalingError(f"{out_dir} has no eval after its first step")
        for record in evals[-1:] if final else evals:
            rows.append((run.model["scaling_params"], record["tokens"], loss_of(record, corpus, out_dir), index))
    return to_points(rows)


def loss_of(record: dict, corpus: str, out_dir: str) -> float:
    if not corpus:
        return record["val_loss"]
    losses = record.get("val_losses", {})
    if corpus not in losses:
        raise ScalingError(f"{out_dir} has no val loss of corpus {corpus!r}; it has {sorted(losses) or 'none'}")
    return losses[corpus]


def points_from_csv(path: str) -> Points:
    """Columns N, D, loss (and optionally run: points of one run are resampled together)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"N", "D", "loss"} - set(reader.fieldnames or [])
            if missing:
                raise ScalingError(
                    f"{path}: no column {', '.join(sorted(missing))} (need N,D,loss; found "
                    f"{','.join(reader.fieldnames or []) or 'nothing'})"
                )
            rows = [(float(r["N"]), float(r["D"]), float(r["loss"]), r.get("run") or i) for i, r in enumerate(reader)]
    except (ValueError, TypeError) as e:  # TypeError: a short row, whose missing cells read as None
        if isinstance(e, ScalingError):
            raise
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
    _, run = np.unique(run.astype(str), return_inverse=True)
    return Points(n, d, loss, run)


# ----------------------------------------------------------------------------- the forms and the fit


def log_terms(p: dict[str, float], log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """log E, log(A / N^alpha), log(B / (D^beta N^gamma)) per point: the form is their log-sum-exp."""
    return np.stack(
        [
            np.full_like(log_n, p["e"]),
            p["a"] - p["alpha"] * log_n,
            p["b"] - p["beta"] * log_d - p["gamma"] * log_n,
        ]
    )


def objective(x: np.ndarray, names: tuple[str, ...], fixed: dict, log_n, log_d, log_loss) -> tuple[float, np.ndarray]:
    """The summed Huber loss of log L and its gradient in the free parameters."""
    p = {**fixed, **dict(zip(names, x, strict=True))}
    terms = log_terms(p, log_n, log_d)
    r = logsumexp(terms, axis=0) - log_loss
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
    best = None
    for x0 in starts:
        result = minimize(objective, x0, args=args, jac=True, method="L-BFGS-B", options=LBFGS_OPTIONS)
        if result.success and np.isfinite(result.fun) and (best is None or result.fun < best.fun):
            best = result
    if best is None:
        raise ScalingError(f"L-BFGS converged from none of the {len(starts)} starting points: no fit to report")
    return {**fixed, **dict(zip(names, best.x.tolist(), strict=True))}, float(best.fun)


def fixed_parameters(form: str, base: dict | None) -> dict:
    if form == "chinchilla":
        return {"gamma": 0.0}
    if base is None or base.get("form") != "chinchilla":
        raise ScalingError("the cpt form takes E, A and alpha from a from-scratch fit: --base a chinchilla fit.json")
    bp = base["params"]
    return {"e": float(np.log(bp["E"])), "a": float(np.log(bp["A"])), "alpha": bp["alpha"]}


def best_of_grid(points: Points, form: str, fixed: dict, count: int) -> list[np.ndarray]:
    """The `count` points of the grid where the objective is lowest: scoring the grid costs milliseconds, a
    run of L-BFGS a tenth of a second, so L-BFGS starts from these only."""
    names = FREE[form]
    grid = [np.array(x) for x in itertools.product(*(GRID[name] for name in names))]
    args = (names, fixed, np.log(points.n), np.log(points.d), np.log(points.loss))
    scores = [objective(x, *args)[0] for x in grid]
    return [grid[i] for i in np.argsort(scores)[:count]]


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


def unconstrained(params: dict[str, float], points: Points) -> list[str]:
    """What the points cannot determine: an exponent from fewer than 3 distinct sizes (or token counts),
    whose fit then follows the noise (two sizes gave N_opt from 1.2e8 to 1.4e10 across noise seeds); and a
    term below 0.1% of the loss at every point, whose constants are arbitrary (sizes too close, or too noisy,
    to tell apart)."""
    found = []
    for name, values in (("model sizes N", points.n), ("token counts D", points.d)):
        if len(np.unique(values)) < 3:
            found.append(f"{len(np.unique(values))} distinct {name}: an exponent needs at least 3 to be determined")
    for name, exponent in (("alpha (model size)", params["alpha"]), ("beta (tokens)", params["beta"])):
        if abs(exponent) < 0.01:
            found.append(f"the exponent {name} is {exponent:.4f}: its term is a constant, the points show no trend")
    n_term, d_term = terms(params, points.n, points.d)
    for name, term in (("A / N^alpha (model size)", n_term), ("B / D^beta (tokens)", d_term)):
        if np.max(term / points.loss) < 1e-3:
            found.append(f"the points do not constrain the term {name}: it is below 0.1% of the loss everywhere")
    return found


def bootstrap(points: Points, form: str, base: dict | None, best: dict, samples: int, seed: int) -> tuple[dict, int]:
    """5th and 95th percentiles of each parameter over fits to runs drawn with replacement, each started
    from the full fit's optimum and from the best grid points of its own sample (the optimum alone would
    keep every refit in its basin, and the intervals too narrow); and how many resamples gave a fit (one
    with a single model size, or where L-BFGS converges from no start, gives none)."""
    rng = np.random.default_rng(seed)
    runs = np.unique(points.run)
    names = FREE[form]
    fixed = fixed_parameters(form, base)
    fits = []
    for _ in range(samples):
        drawn = rng.choice(runs, size=len(runs), replace=True)
        sample = Points(
            *(
                np.concatenate([getattr(points.subset(points.run == r), f) for r in drawn])
                for f in ("n", "d", "loss", "run")
            )
        )
        if len(np.unique(sample.n)) < 2 or len(sample) < len(names):
            continue  # one model size says nothing about the N terms
        starts = [np.array([best[name] for name in names]), *best_of_grid(sample, form, fixed, BOOTSTRAP_STARTS)]
        try:
            params, _ = minimise(sample, form, fixed, starts)
        except ScalingError:
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
    c = np.geomspace(1e12, 1e24, 100)
    laws = {} if result["warnings"] else {result["form"]: result["params"]}
    laws |= {"scratch (--base)": base["params"]} if base else {}
    if not laws:
        frontier.set_axis_off()
        frontier.text(
            0.5,
            0.5,
            "no compute-optimal frontier:\nthe points do not constrain\nthe law's terms",
            ha="center",
            va="center",
            transform=frontier.transAxes,
        )
    for j, (name, params) in enumerate(laws.items()):
        try:
            n_opt, d_opt = compute_optimal(params, c)
        except ScalingError:
            continue
        frontier.plot(c, n_opt, color=f"C{j}", label=f"N_opt, {name}")
        frontier.plot(c, d_opt, color=f"C{j}", ls="--", label=f"D_opt, {name}")
    frontier.set_xscale("log")
    frontier.set_yscale("log")
    frontier.set_xlabel("compute C = 6ND (FLOPs)")
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


def fit_main(args: argparse.Namespace) -> int:
    try:
        if bool(args.runs) == bool(args.csv):
            raise ScalingError("give run folders or --csv FILE" + (", not both" if args.runs else ""))
        points = points_from_csv(args.csv) if args.csv else points_from_runs(args.runs, args.final, args.corpus)
        base = json.loads(Path(args.base).read_text()) if args.base else None
        best, loss = fit(points, args.form, base)
        params = public(best, args.form)
        residuals = np.log(points.loss) - np.log(predict(params, points.n, points.d))
        intervals, resamples = bootstrap(points, args.form, base, best, args.bootstrap, args.seed)
        result = {
            "form": args.form,
            "formula": FORMULAS[args.form],
            "params": params,
            "n_points": len(points),
            "n_runs": int(len(np.unique(points.run))),
            "huber_loss": loss,
            "residuals": {"rms": float(np.sqrt(np.mean(residuals**2))), "max": float(np.abs(residuals).max())},
            "bootstrap": intervals,
            "bootstrap_resamples": {"fitted": resamples, "drawn": args.bootstrap},
            "base": args.base or None,
            "points": [
                {"N": float(n), "D": float(d), "loss": float(v), "residual": float(r)}
                for n, d, v, r in zip(points.n, points.d, points.loss, residuals, strict=True)
            ],
        }
        result["warnings"] = unconstrained(params, points)
        if args.compute and not result["warnings"]:
            result |= optimum_or_warning(params, args.compute, result["warnings"])
    except (ScalingError, RunError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_fit(result))
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    if "compute_optimal" in result:
        opt = result["compute_optimal"]
        print(f"compute {opt['C']:.3g} FLOPs: N_opt {opt['N']:.4g}, D_opt {opt['D']:.4g} tokens, L {opt['loss']:.4f}")
    elif args.compute:
        print("no compute-optimal size: the warnings above say why")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "fit.json", result)
    plot_fit(points, result, base, out / "fit.png")
    print(f"wrote {out / 'fit.json'} and {out / 'fit.png'}")
    return 0


# ----------------------------------------------------------------------------- sweep


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
    runs = []
    for n_layer, max_iters in itertools.product(args.n_layer, args.max_iters or [0]):
        name = f"L{n_layer}" + (f"_T{max_iters}" if max_iters else "")
        out_dir = Path(args.out_dir) / name
        overrides = [*args.overrides, f"--n_layer={n_layer}"]
        if max_iters:
            overrides += [f"--max_iters={max_iters}", f"--lr_decay_iters={max_iters}"]
        init = [f"--init_from={args.init_from.format(n_layer=n_layer)}"] if args.init_from else []
        print(f"run {name}", flush=True)
        code = launch_training(args.config, out_dir, overrides, init, args.nproc)
        if code != 0:
            print(f"error: run {name} failed (exit code {code}); rerun to resume", file=sys.stderr)
            return 1
        runs.append(str(out_dir))
    print("fit them with: python scaling.py fit " + " ".join(runs) + f" --out {args.out_dir}/fit")
    return 0


def fit_arguments(f: argparse.ArgumentParser) -> None:
    f.add_argument("runs", nargs="*", help="training run folders (train.py out_dir)")
    f.add_argument("--csv", default="", help="points instead of runs: columns N,D,loss (optional run)")
    f.add_argument("--form", choices=sorted(FORMULAS), default="chinchilla")
    f.add_argument("--base", default="", help="fit.json of a from-scratch (chinchilla) fit: E, A, alpha for cpt")
    f.add_argument("--final", action="store_true", help="only each run's last eval, not every eval")
    f.add_argument("--corpus", default="", help="the val loss of this corpus (default: the mixture's weighted mean)")
    f.add_argument("--bootstrap", type=int, default=100, help="refits on runs drawn with replacement (0: none)")
    f.add_argument("--compute", type=float, default=0.0, help="also print the compute-optimal N and D for C FLOPs")
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
