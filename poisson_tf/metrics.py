"""Evaluation metrics of docs/design.rst s.6 and s.10, per sample: rel_l2, max_abs, energy_gap (the error of the
effective conductivity 2J), flux_error (the inlet reaction flux), energy_norm_error, perturbation_error and
flux_field_error."""
from __future__ import annotations

from typing import Sequence

import numpy as np

METRIC_NAMES = ("rel_l2", "max_abs", "energy_gap", "flux_error", "energy_norm_error", "perturbation_error",
                "flux_field_error")


def _fields(x) -> np.ndarray:
    """[B, N, N, N] view of a [B, N, N, N] or [B, N, N, N, 1] array (no copy, any float dtype)."""
    x = np.asarray(x)
    return x[..., 0] if x.ndim == 5 and x.shape[-1] == 1 else x


def energy_and_flux(stiffness, u: np.ndarray):
    """(J(u), F(u)) from one application of the operator, in float64 (f = 0).

    J = 1/2 u . K u (docs/design.rst s.4) and F = sum over the x = 0 nodes of (K u)_i, the reaction flux through
    x = 0 (dJ/du = K u); for the discrete solution F = 2 J, the effective diffusivity.

    Args:
      stiffness: a solvers.operator.Stiffness of nu (float64).
      u: [N, N, N] nodal field.
    """
    ku = stiffness.apply(u)
    energy = 0.5 * sum(float(np.dot(np.asarray(plane, np.float64).ravel(), k.ravel())) for plane, k in zip(u, ku))
    return energy, float(ku[0].sum())


def _difference_norms(u: np.ndarray, u_ref: np.ndarray):
    """(||u - u_ref||_2, max |u - u_ref|, ||u_ref||_2) in float64, plane by plane (no full-size temporary)."""
    squared, largest, ref_squared = 0.0, 0.0, 0.0
    for a, b in zip(u, u_ref):
        b = np.asarray(b, np.float64)
        d = a - b
        squared += float(np.dot(d.ravel(), d.ravel()))
        largest = max(largest, float(np.abs(d).max()))
        ref_squared += float(np.dot(b.ravel(), b.ravel()))
    return np.sqrt(squared), largest, np.sqrt(ref_squared)


def _quadratic(stiffness, v: np.ndarray) -> float:
    """v . K v in float64 (K the operator), plane by plane."""
    kv = stiffness.apply(v)
    return float(sum(np.dot(np.asarray(a, np.float64).ravel(), b.ravel()) for a, b in zip(v, kv)))


def _perturbation_norm(u_ref: np.ndarray) -> float:
    """||u_ref - (1 - x)||_2: the part of the solution the trivial guess misses."""
    x = np.linspace(0.0, 1.0, u_ref.shape[0])
    return float(np.sqrt(sum(np.sum((np.asarray(plane, np.float64) - (1.0 - t)) ** 2) for plane, t in zip(u_ref, x))))


def field_metrics(u, u_ref, nu) -> list:
    """Per-sample metrics of predictions against reference solutions.

    J, the reaction flux and the energy norms come from float64 matrix-free applications of the stiffness operator
    (solvers.operator.Stiffness, weights recomputed from nu on the fly), so a 512^3 sample needs a few N^3 arrays.

    Args:
      u, u_ref, nu: [B, N, N, N] or [B, N, N, N, 1] arrays (u_ref the reference solution of the same nu).

    Returns:
      list of B dicts with rel_l2 = ``||u - u_ref|| / ||u_ref||``, max_abs = ``max |u - u_ref|``,
      energy_gap = (J(u) - J(u_ref)) / J(u_ref) (>= 0 up to round-off: u_ref minimizes J; the relative error of
      the effective conductivity 2J), flux_error = ``|F(u) - F(u_ref)| / F(u_ref)`` with F the reaction flux
      through x = 0 (F(u_ref) = 2 J(u_ref)), energy_norm_error = ``||e||_K / ||u_ref||_K`` with e = u - u_ref
      (the square root of energy_gap in exact arithmetic), perturbation_error = ``||e|| / ||u_ref - (1 - x)||``,
      and flux_field_error = ``||nu grad e|| / ||nu grad u_ref||``, the error of the flux (Darcy velocity)
      field, with the norm ``||v||^2 = v . K(nu^2) v`` (the Q1 quadrature of the integral of
      ``nu^2 |grad v|^2``, nu^2 interpolated trilinearly between the nodes like nu in K).
    """
    return compare_fields([u], u_ref, nu)[0]


def compare_fields(candidates: Sequence, u_ref, nu) -> list:
    """field_metrics of several solutions of the same fields (a model's and the u = 1 - x baseline's): the
    operators of every nu and the reference's norms are computed once for all of them.

    Returns:
      one list of per-sample dicts per candidate, in order.
    """
    from poisson_tf.solvers.operator import Stiffness

    candidates, u_ref, nu = [_fields(u) for u in candidates], _fields(u_ref), _fields(nu)
    for i, u in enumerate(candidates):
        if not (u.shape == u_ref.shape == nu.shape) or u.ndim != 4:
            name = "u" if len(candidates) == 1 else f"candidate {i}"
            raise ValueError(f"{name} {u.shape}, u_ref {u_ref.shape} and nu {nu.shape} must have one shape "
                             f"[B, N, N, N] or [B, N, N, N, 1]")
    out = [[] for _ in candidates]
    for b in range(len(u_ref)):
        stiffness = Stiffness(nu[b])
        flux_field = Stiffness(np.square(np.asarray(nu[b], np.float64)))
        j_ref, f_ref = energy_and_flux(stiffness, u_ref[b])
        ref_flux_field = _quadratic(flux_field, u_ref[b])
        perturbation = _perturbation_norm(u_ref[b])
        for u, rows in zip(candidates, out):
            j_u, f_u = energy_and_flux(stiffness, u[b])
            diff_norm, max_abs, ref_norm = _difference_norms(u[b], u_ref[b])
            error = np.asarray(u[b], np.float64) - u_ref[b]
            rows.append({
                "rel_l2": float(diff_norm / ref_norm),
                "max_abs": max_abs,
                "energy_gap": float((j_u - j_ref) / j_ref),
                "flux_error": float(abs(f_u - f_ref) / abs(f_ref)),
                "energy_norm_error": float(np.sqrt(max(_quadratic(stiffness, error), 0.0) / (2.0 * j_ref))),
                "perturbation_error": float(diff_norm / perturbation) if perturbation > 0 else float("inf"),
                "flux_field_error": float(np.sqrt(max(_quadratic(flux_field, error), 0.0) / ref_flux_field)),
            })
    return out


def mean_metrics(per_sample: list) -> dict:
    """Averages a list of metric dicts key by key."""
    if not per_sample:
        return {}
    return {k: float(np.mean([m[k] for m in per_sample])) for k in per_sample[0]}
