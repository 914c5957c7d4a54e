"""What a reference solve takes and returns: its inputs checked (check_problem) and its record (SolveRecord)."""
from __future__ import annotations

import dataclasses

import numpy as np

from poisson_tf.fields import check_diffusivity
from poisson_tf.solvers.assembly import check_nodal


@dataclasses.dataclass(frozen=True)
class SolveRecord:
    """What one reference solve did."""

    resolution: int
    iterations: int
    relative_residual: float
    seconds: float
    setup_seconds: float
    initial_relative_residual: float
    rtol: float
    energy: float = 0.0  # J(u) of the solution; with f = 0, 2 J is the effective diffusivity (flux at x = 0)
    method: str = "amg"  # "amg" (assembled, pyamg) or "gmg" (matrix-free geometric multigrid)
    stopped: bool = False  # True when the caller's stop(u) ended CG before rtol was reached

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_problem(nu, rtol: float, x0=None, f=None):
    """Validates a solve's inputs; returns (nu, x0 or None, f or None) with x0 and f as float64 arrays.

    Raises:
      ValueError: nu not a finite positive [N, N, N] field, x0 or f of another shape or not finite, rtol not in (0, 1).
    """
    nu = check_diffusivity(check_nodal(nu))
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must lie in (0, 1), got {rtol!r}")
    checked = []
    for name, x in (("x0", x0), ("f", f)):
        if x is not None:
            x = check_nodal(np.asarray(x, np.float64), name)
            if x.shape != nu.shape or not np.all(np.isfinite(x)):
                raise ValueError(f"{name} must be finite with the shape of nu {nu.shape}, got shape {x.shape}")
        checked.append(x)
    return nu, checked[0], checked[1]
