"""The assembled reference solver: CG on the free nodes of the sparse Q1 stiffness, preconditioned by one
smoothed-aggregation AMG V-cycle (pyamg; docs/design.rst s.5)."""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse.linalg as spla

from poisson_tf.solvers.assembly import dirichlet_values, mass, stiffness
from poisson_tf.solvers.problem import SolveRecord


class _Stopped(Exception):
    """Raised from scipy's CG callback to end the iteration at the caller's request."""


def solve(nu, rtol, x0, f, maxiter, stop):
    """The assembled solver of solvers.solve(method="amg"), on validated inputs (float64 nu)."""
    import pyamg

    n = nu.shape[0]
    start = time.perf_counter()
    k = stiffness(nu)
    g = dirichlet_values(n).ravel()
    free = slice(n * n, n ** 3 - n * n)  # x planes 1..N-2, contiguous in C order
    k_ff = k[free, free].tocsr()
    b = -(k[free, :] @ g)
    load = None
    if f is not None:
        load = mass(n) @ f.ravel()
        b += load[free]
    u = g.copy()

    def energy_of(x):  # J = 1/2 u^T K u - u^T M f, with the K assembled above
        return float(0.5 * x @ (k @ x) - (x @ load if load is not None else 0.0))

    if n == 2:  # no free nodes
        return u.reshape(n, n, n), SolveRecord(n, 0, 0.0, time.perf_counter() - start, 0.0, 0.0, rtol,
                                               energy_of(u))
    guess = x0.ravel()[free].copy() if x0 is not None else np.zeros(k_ff.shape[0])
    ml = pyamg.smoothed_aggregation_solver(k_ff, symmetry="symmetric", max_coarse=500)
    setup_seconds = time.perf_counter() - start
    b_norm = np.linalg.norm(b)
    initial = np.linalg.norm(b - k_ff @ guess) / b_norm
    iterations, stop_seconds, latest = [0], [0.0], [guess]

    def callback(xk):
        iterations[0] += 1
        if stop is not None:
            before = time.perf_counter()
            u[free] = xk
            stopped = bool(stop(u.reshape(n, n, n)))
            stop_seconds[0] += time.perf_counter() - before
            if stopped:
                latest[0] = xk.copy()
                raise _Stopped

    stopped = False
    try:
        x, info = spla.cg(k_ff, b, x0=guess, rtol=rtol, atol=0.0, maxiter=maxiter,
                          M=ml.aspreconditioner(cycle="V"), callback=callback)
    except _Stopped:
        x, info, stopped = latest[0], 0, True
    residual = np.linalg.norm(b - k_ff @ x) / b_norm
    if not stopped and (info != 0 or not residual <= rtol * 1.0001):
        raise RuntimeError(f"AMG-CG did not reach rtol={rtol} within {maxiter} iterations "
                           f"(relative residual {residual:.3e}); the diffusivity contrast may be too high")
    u[free] = x
    record = SolveRecord(n, iterations[0], float(residual), time.perf_counter() - start - stop_seconds[0],
                         setup_seconds, float(initial), rtol, energy_of(u), stopped=stopped)
    return u.reshape(n, n, n), record
