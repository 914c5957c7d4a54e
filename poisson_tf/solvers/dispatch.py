"""solve(): the one entry point of both reference solvers, choosing the assembled AMG-CG (amg) or the matrix-free
geometric multigrid PCG (gmg) by method and resolution."""
from __future__ import annotations

import numpy as np

from poisson_tf.solvers import amg, gmg
from poisson_tf.solvers.problem import check_problem


METHODS = ("auto", "amg", "gmg")
#: "auto" picks the matrix-free solver from this many nodes per axis on (measured in benchmarks/bench_reference.py:
#: below it the assembled AMG is as fast and its memory is small).
AUTO_GMG_RESOLUTION = 48


def solve(nu, rtol: float = 1e-10, x0=None, f=None, maxiter: int = 1000, method: str = "auto",
          stop=None):
    """Solves -div(nu grad u) = f with u = 1 at x = 0, u = 0 at x = 1, natural conditions elsewhere.

    Conjugate gradients on the free nodes (Dirichlet planes eliminated) to ||b - K u|| <= rtol ||b||, with one
    of two preconditioners of the same Q1 discretization:

    - "amg": the assembled stiffness, one smoothed-aggregation AMG V-cycle (pyamg); memory grows to ~30 GiB at 256^3.
    - "gmg": matrix-free, a geometric multigrid V-cycle (solvers.gmg); a few N^3 arrays, for N up to 512.
    - "auto": "gmg" from AUTO_GMG_RESOLUTION nodes per axis on, "amg" below.

    Args:
      nu: [N, N, N] nodal diffusivity, finite and positive.
      rtol: relative residual target (<= 1e-10 for reference solutions).
      x0: optional initial guess [N, N, N] (a network prediction, say); its Dirichlet planes are ignored.
      f: optional nodal source [N, N, N].
      maxiter: CG iteration limit.
      method: "auto", "amg" or "gmg".
      stop: optional callable(u) -> bool, called with the current iterate [N, N, N] after each CG iteration;
        True ends the solve there (record.stopped; no error although rtol was not reached). For the time a
        solver needs to reach a given error against a known solution; its own time is not counted.

    Returns:
      (u [N, N, N] float64 with exact Dirichlet planes, SolveRecord).

    Raises:
      ValueError: for a bad nu, x0, f, method, or rtol not in (0, 1).
      RuntimeError: if CG does not reach rtol within maxiter iterations, or its residual is not finite.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    nu, x0, f = check_problem(nu, rtol, x0, f)
    if method == "gmg" or (method == "auto" and nu.shape[0] >= AUTO_GMG_RESOLUTION):
        return gmg.solve(nu, rtol, x0, f, maxiter, stop)
    return amg.solve(nu.astype(np.float64), rtol, x0, f, maxiter, stop)
