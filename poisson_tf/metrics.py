"""Evaluation metrics of DESIGN.md section 6, per sample: rel_l2, max_abs, energy_gap, flux_error."""
from __future__ import annotations

import numpy as np

METRIC_NAMES = ("rel_l2", "max_abs", "energy_gap", "flux_error")


def field_metrics(u, u_ref, nu) -> list:
    """Per-sample metrics of predictions against reference solutions.

    Args:
      u, u_ref, nu: [B, N, N, N] or [B, N, N, N, 1] arrays (u_ref the AMG solution of the same nu).

    Returns:
      list of B dicts with rel_l2 = ||u - u_ref|| / ||u_ref||, max_abs = max |u - u_ref|,
      energy_gap = (J(u) - J(u_ref)) / J(u_ref) (>= 0 up to round-off: u_ref minimizes J), and
      flux_error = |F(u) - F(u_ref)| / F(u_ref) with F the reaction flux through x = 0 (F(u_ref) = 2 J(u_ref)).
    """
    import tensorflow as tf

    from poisson_tf import fem

    def as5(x):
        x = np.asarray(x, np.float64)
        return x if x.ndim == 5 else x[..., None]

    u, u_ref, nu = as5(u), as5(u_ref), as5(nu)
    if not (u.shape == u_ref.shape == nu.shape):
        raise ValueError(f"u {u.shape}, u_ref {u_ref.shape} and nu {nu.shape} must have one shape")
    diff = (u - u_ref).reshape(len(u), -1)
    ref = u_ref.reshape(len(u), -1)
    tf_u, tf_ref, tf_nu = (tf.constant(x, tf.float32) for x in (u, u_ref, nu))
    j_u, j_ref = fem.energy(tf_u, tf_nu).numpy(), fem.energy(tf_ref, tf_nu).numpy()
    f_u, f_ref = fem.boundary_flux(tf_u, tf_nu).numpy(), fem.boundary_flux(tf_ref, tf_nu).numpy()
    out = []
    for b in range(len(u)):
        out.append({
            "rel_l2": float(np.linalg.norm(diff[b]) / np.linalg.norm(ref[b])),
            "max_abs": float(np.abs(diff[b]).max()),
            "energy_gap": float((j_u[b] - j_ref[b]) / j_ref[b]),
            "flux_error": float(abs(f_u[b] - f_ref[b]) / abs(f_ref[b])),
        })
    return out


def mean_metrics(per_sample: list) -> dict:
    """Averages a list of metric dicts key by key."""
    if not per_sample:
        return {}
    return {k: float(np.mean([m[k] for m in per_sample])) for k in per_sample[0]}
