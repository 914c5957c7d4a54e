"""Scoring a solver against the AMG reference (docs/design.rst s.6): metrics next to u = 1 - x, the table, the figure.

One home for scoring: poisson-tf-evaluate and the training-time validation (training.callbacks.Validator) both
call evaluate(); using a model (load, predict, export) is inference.py's.
"""
from __future__ import annotations

import time

import numpy as np

from poisson_tf import config, distributed, fem, metrics


def linear_baseline(nu: np.ndarray) -> np.ndarray:
    """fem.linear_guess, the trivial guess u = 1 - x (exact for constant nu), for each field of nu [B, N, N, N]."""
    return np.asarray(fem.linear_guess(nu.shape[-1], len(nu)), np.float64)[..., 0]


def evaluate(predict_fn, family, coeffs: np.ndarray, resolutions, store, batch_size: int = 1,
             trained_resolutions=(), baseline: bool = True) -> dict:
    """Per-sample and mean metrics of predict_fn against the cached reference, next to u = 1 - x.

    Samples are split over workers and gathered, so every worker returns the whole report.

    Args:
      predict_fn: nu [b, N, N, N] -> u [b, N, N, N].
      family: the fields.Family of the samples.
      coeffs: its coefficients [S, m] of the evaluation samples.
      resolutions: where to evaluate; those above max(trained_resolutions) are marked zero_shot.
      store: a solvers.ReferenceStore.
      baseline: also score u = 1 - x (constant over a training run, so validation leaves it out).

    Returns:
      {"resolutions": {N: {"model": means, "baseline": means, "inference_seconds_per_field", "zero_shot",
      "per_sample": [...]}}} and, on the chief, "examples" {N: (nu, u, u_ref)} of sample 0 for figures.
    """
    config.require(batch_size >= 1, "batch_size", batch_size, ">= 1")
    coeffs = np.asarray(coeffs)
    if len(coeffs) == 0:
        raise ValueError("evaluation needs at least one sample, got none")
    mine = list(range(distributed.rank(), len(coeffs), distributed.size()))
    report, examples = {}, {}
    for n in resolutions:
        rows, seconds = [], 0.0
        for sample in mine:  # every reference first: a 512^3 solve (~16 GiB) must not meet TF's memory pool
            store.ensure(family, coeffs[sample], n)
        for i in range(0, len(mine), batch_size):
            idx = mine[i:i + batch_size]
            nu, u_ref = store.get_many(family, coeffs[idx], n)
            start = time.perf_counter()
            u = np.asarray(predict_fn(nu), np.float64)
            seconds += time.perf_counter() - start
            model_m, base_m = (metrics.compare_fields([u, linear_baseline(nu)], u_ref, nu) if baseline
                               else (metrics.field_metrics(u, u_ref, nu), [{}] * len(idx)))
            for j, sample in enumerate(idx):
                rows.append(dict(sample=int(sample), **model_m[j], **{f"baseline_{k}": v for k, v in base_m[j].items()}))
            if i == 0 and distributed.is_chief():
                examples[n] = (nu[0], u[0], u_ref[0])
        parts = distributed.allgather_object((rows, seconds))  # Horovod: every worker gets every sample
        gathered = sorted((r for part in parts for r in part[0]), key=lambda r: r["sample"])
        total_seconds = sum(part[1] for part in parts)
        report[int(n)] = {
            "model": metrics.mean_metrics([{k: r[k] for k in metrics.METRIC_NAMES} for r in gathered]),
            "baseline": metrics.mean_metrics([{k: r[f"baseline_{k}"] for k in metrics.METRIC_NAMES} for r in gathered])
            if baseline else {},
            "inference_seconds_per_field": total_seconds / max(1, len(gathered)),
            "zero_shot": bool(trained_resolutions) and n > max(trained_resolutions),
            "num_samples": len(gathered),
            "per_sample": gathered,
        }
    return {"resolutions": report, "examples": examples}


#: The table's columns: metric key, heading, format (percentages but max_abs).
TABLE_COLUMNS = (("rel_l2", "rel_l2", ".3%"), ("energy_gap", "2J", ".3%"), ("energy_norm_error", "energy", ".3%"),
                 ("perturbation_error", "pert.", ".2%"), ("flux_field_error", "flux fld", ".2%"),
                 ("flux_error", "inlet", ".2%"), ("max_abs", "max_abs", ".4f"))


def format_table(report: dict) -> str:
    """A readable table: one row per resolution, every metric of the model next to the u = 1 - x baseline's
    ("(1-x)"): rel_l2, the 2J (effective conductivity) error, the energy-norm, perturbation and flux-field errors,
    the inlet reaction flux error and ``max |u - u_ref|``."""
    head = f"{'N':>5} {'samples':>7} " + " ".join(f"{label:>9} {'(1-x)':>9}" for _, label, _ in TABLE_COLUMNS) \
        + f" {'s/field':>8}"
    lines = [head, "-" * len(head)]
    for n, r in sorted(report["resolutions"].items()):
        m, b = r["model"], r["baseline"]
        cells = " ".join(f"{format(m[k], f) if k in m else '-':>9} {format(b[k], f) if k in b else '-':>9}"
                         for k, _, f in TABLE_COLUMNS)
        lines.append(f"{n:>5} {r['num_samples']:>7} {cells} {r['inference_seconds_per_field']:>8.3f}"
                     + ("  zero-shot" if r["zero_shot"] else ""))
    return "\n".join(lines)


def figure(examples: dict):
    """A matplotlib figure of mid-plane (z = 1/2) slices of nu, u, u_ref and ``|u - u_ref|`` per resolution,
    with colorbars (close it with matplotlib.pyplot.close)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(examples)
    fig, axes = plt.subplots(len(rows), 4, figsize=(14, 3.2 * len(rows)), squeeze=False)
    for r, n in enumerate(rows):
        nu, u, u_ref = examples[n]
        k = n // 2
        panels = [("nu", nu[:, :, k], "viridis"), ("u (network)", u[:, :, k], "coolwarm"),
                  ("u_ref (AMG)", u_ref[:, :, k], "coolwarm"), ("|u - u_ref|", np.abs(u - u_ref)[:, :, k], "magma")]
        for c, (title, plane, cmap) in enumerate(panels):
            ax = axes[r, c]
            image = ax.imshow(plane.T, origin="lower", extent=(0, 1, 0, 1), cmap=cmap)
            ax.set_title(f"{title}, N={n}, z=1/2")
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
