"""Matrix-free geometric multigrid for the Q1 reference problem (docs/design.rst s.5): a float32 Chebyshev-Jacobi
V-cycle on non-nested coarse grids preconditioning float64 CG, on the operator of solvers.operator."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from poisson_tf.solvers.assembly import dirichlet_values, stiffness
from poisson_tf.solvers.operator import CHUNK_ELEMENTS, Stiffness, default_threads
from poisson_tf.solvers.problem import SolveRecord

COARSEST = 16                # nodes per axis at or below which a level is solved directly (LU of 3.6k unknowns)
SMOOTHER_DEGREE = 2          # Chebyshev degree of the pre- and post-smoother (fewest applies to 1e-10 at 32-128)
SMOOTHING_RANGE = 4.0        # Chebyshev interval [lambda_max / range, lambda_max] of D^-1 K
# Lanczos underestimates lambda_max (6 steps: by 5%). The smoother still contracts up to lambda_max (1 + 1/range),
# 1.25 x the interval's end, so the V-cycle stays positive definite for underestimates up to 1.1 * 1.25 = 1.375.
LAMBDA_SAFETY = 1.1
LANCZOS_STEPS = 6


def linear_map(n_from: int, n_to: int) -> sp.csr_matrix:
    """[n_to, n_from] matrix of piecewise-linear interpolation between uniform node sets on [0, 1].

    Row i interpolates at i / (n_to - 1) from the nodes j / (n_from - 1): two entries (1 - t, t), exact integers
    for the node index so that the end points map to the end points.
    """
    i = np.arange(n_to)
    num = i * (n_from - 1)
    j = np.minimum(num // max(n_to - 1, 1), n_from - 2)
    t = (num - j * (n_to - 1)) / max(n_to - 1, 1)
    rows = np.concatenate([i, i])
    cols = np.concatenate([j, j + 1])
    return sp.csr_matrix((np.concatenate([1.0 - t, t]), (rows, cols)), shape=(n_to, n_from))


def tensor_apply(a: sp.csr_matrix, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(A kron A kron A) x for x [m, m, m] and A [n, m], plane by plane (no temporary larger than n m^2).

    Args:
      a: [n, m] sparse matrix, applied along every axis.
      x: [m, m, m].
      out: [n, n, n] array to write into (allocated in x's dtype when None).
    """
    n, m = a.shape
    if out is None:
        out = np.empty((n, n, n), x.dtype)
    if m <= n:  # interpolation: along x first (smaller result), then y and z per fine plane
        planes = (a @ x.reshape(m, m * m)).reshape(n, m, m)
        for i in range(n):
            out[i] = (a @ (a @ planes[i]).T).T
    else:  # restriction: y and z per fine plane first, then x
        planes = np.empty((m, n, n), x.dtype)
        for i in range(m):
            planes[i] = (a @ (a @ x[i]).T).T
        out.reshape(n, n * n)[...] = a @ planes.reshape(m, n * n)
    return out


def _zero_dirichlet(x: np.ndarray) -> np.ndarray:
    """Zeroes the Dirichlet planes x = 0 and x = 1 (first and last index of axis 0)."""
    x[0] = 0
    x[-1] = 0
    return x


def _blocks(n: int, size: int = CHUNK_ELEMENTS):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _axpy(y: np.ndarray, alpha: float, x: np.ndarray) -> None:
    """y += alpha x block by block (no full-size temporary)."""
    y, x = y.reshape(-1), x.reshape(-1)
    for b in _blocks(y.size):
        y[b] += alpha * x[b]


class _Level:
    """One grid of the V-cycle: operator with stored weights, Jacobi scaling, Chebyshev smoother."""

    def __init__(self, nu: np.ndarray, degree: int, threads: int | None, dtype=np.float32):
        self.n = nu.shape[0]
        self.op = Stiffness(nu, dtype=dtype, store_weights=True, threads=threads)
        self.dinv = _zero_dirichlet(1.0 / self.op.diagonal())  # 0 on Dirichlet planes: they are never updated
        self.x, self.r, self.d = (np.zeros(nu.shape, dtype) for _ in range(3))
        self.tmp = np.empty(CHUNK_ELEMENTS, dtype)
        self.degree = degree
        self.lambda_max = LAMBDA_SAFETY * self._lanczos_lambda_max()

    @property
    def nbytes(self) -> int:
        """Weights, diagonal and the three vectors (the chunk buffers are counted by the operator)."""
        return self.op.weights_nbytes + self.dinv.nbytes + 3 * self.x.nbytes

    def _lanczos_lambda_max(self, steps: int | None = None) -> float:
        """Largest eigenvalue of D^-1 K on the free nodes: the largest Ritz value of a few Lanczos steps on the
        symmetric D^-1/2 K D^-1/2 (a lower bound that converges fast at the end of the spectrum)."""
        scale = np.sqrt(self.dinv)
        v, v_prev, w = self.x, self.r, self.d
        kw = np.empty_like(w)
        np.random.default_rng(0).random(out=v.reshape(-1), dtype=v.dtype)
        v += 0.5
        _zero_dirichlet(v)
        v /= np.linalg.norm(v)
        v_prev.fill(0)
        alphas, betas, beta = [], [], 0.0
        for _ in range(steps or LANCZOS_STEPS):
            np.multiply(scale, v, out=w)
            np.multiply(self.op.apply(w, out=kw), scale, out=w)
            alpha = float(np.vdot(v, w))
            w -= alpha * v
            w -= beta * v_prev
            alphas.append(alpha)
            beta = float(np.linalg.norm(w))
            if beta <= 1e-6 * abs(alpha):
                break
            betas.append(beta)
            v_prev[...] = v
            np.divide(w, beta, out=v)
        t = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1], -1)
        self.x.fill(0)
        return float(np.linalg.eigvalsh(t)[-1])

    def smooth(self, zero_start: bool, final_residual: bool) -> None:
        """degree Chebyshev-Jacobi steps on K x = b with r = b - K x given (Saad, Iterative Methods, alg. 12.1);
        x from 0 when zero_start; r updated only when final_residual (its last update costs a matvec)."""
        upper = self.lambda_max
        lower = upper / SMOOTHING_RANGE
        theta, delta = 0.5 * (upper + lower), 0.5 * (upper - lower)
        sigma = theta / delta
        rho = 1.0 / sigma
        x, r, d = self.x.reshape(-1), self.r.reshape(-1), self.d.reshape(-1)
        dinv = self.dinv.reshape(-1)
        for b in _blocks(x.size):
            np.multiply(dinv[b], r[b], out=d[b])
            d[b] *= 1.0 / theta
            if zero_start:
                x[b] = d[b]
            else:
                x[b] += d[b]
        for step in range(1, self.degree + 1):
            if step == self.degree and not final_residual:
                break
            self.op.apply(self.d, self.r, alpha=-1.0, accumulate=True)
            if step == self.degree:
                break
            rho_new = 1.0 / (2.0 * sigma - rho)
            c_d, c_r = rho_new * rho, 2.0 * rho_new / delta
            for b in _blocks(x.size):
                tmp = self.tmp[:b.stop - b.start]
                np.multiply(dinv[b], r[b], out=tmp)
                tmp *= c_r
                d[b] *= c_d
                d[b] += tmp
                x[b] += d[b]
            rho = rho_new


class _Direct:
    """The coarsest grid: the assembled free block (solvers.stiffness) factorized once."""

    def __init__(self, nu: np.ndarray, dtype=np.float32):
        self.n = n = nu.shape[0]
        k = stiffness(nu)
        self.free = slice(n * n, n ** 3 - n * n)
        self.lu = spla.splu(k[self.free, self.free].tocsc()) if n > 2 else None
        self.x, self.r = np.zeros(nu.shape, dtype), np.zeros(nu.shape, dtype)

    @property
    def nbytes(self) -> int:
        lu = sum(m.data.nbytes + m.indices.nbytes for m in (self.lu.L, self.lu.U)) if self.lu is not None else 0
        return lu + 2 * self.x.nbytes

    def solve(self) -> None:
        if self.lu is not None:
            self.x.reshape(-1)[self.free] = self.lu.solve(self.r.reshape(-1)[self.free].astype(np.float64))


def grid_sizes(n: int, coarsest: int = COARSEST) -> list:
    """Nodes per axis of the V-cycle's grids, finest first: N, (N + 1) // 2, ... down to <= coarsest."""
    out = [n]
    while out[-1] > max(coarsest, 2):
        out.append((out[-1] + 1) // 2)
    return out


class VCycle:
    """The V-cycle preconditioner M ~ K^-1 on the free nodes (symmetric positive definite).

    N - 1 elements per axis is odd for the usual N = 2^k, so the grids are not nested: the next grid has
    (N + 1) // 2 nodes on [0, 1] (nested when N is odd), nu resampled trilinearly at its nodes (rediscretization),
    P trilinear interpolation and R = P^T (tensor products of 1D sparse matrices). Each grid smooths with
    Chebyshev-Jacobi, the same polynomial before and after the coarse correction, so M is symmetric; the coarsest
    grid (<= coarsest nodes per axis) is assembled and factorized. float32 by default: M needs no more precision
    than its own error (~0.1), and it halves the memory traffic and the weights; CG, its residual and its
    operator stay float64, so rtol means what it means for the assembled solver.

    Args:
      nu: [N, N, N] nodal diffusivity.
      degree: Chebyshev degree of each smoothing.
      coarsest: grids with at most this many nodes per axis are solved directly.
      threads: for the operator's chunk loops.
      dtype: arithmetic of the cycle (float64 makes it symmetric to round-off, for tests).
    """

    def __init__(self, nu: np.ndarray, degree: int = SMOOTHER_DEGREE, coarsest: int = COARSEST,
                 threads: int | None = None, dtype=np.float32):
        self.levels, self.prolongations, self.restrictions = [], [], []
        sizes = grid_sizes(nu.shape[0], coarsest)
        for n, m in zip(sizes[:-1], sizes[1:]):
            self.levels.append(_Level(nu, degree, threads, dtype))
            self.prolongations.append(linear_map(m, n).astype(dtype))
            self.restrictions.append(self.prolongations[-1].T.tocsr())  # R = P^T: the V-cycle stays symmetric
            nu = tensor_apply(linear_map(n, m), nu)  # nu at the coarse nodes: rediscretization
        self.direct = _Direct(nu, dtype)

    @property
    def resolutions(self) -> list:
        return [lev.n for lev in self.levels] + [self.direct.n]

    def nbytes(self) -> dict:
        """Memory the hierarchy holds, as memory_estimate names it: levels, coarsest, workspaces."""
        return {"levels": sum(lev.nbytes for lev in self.levels), "coarsest": self.direct.nbytes,
                "workspaces": sum(lev.op.workspace_nbytes for lev in self.levels)}

    def __call__(self, r: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out = M r for a residual r [N, N, N] with zero Dirichlet planes (out gets zero Dirichlet planes)."""
        top = self.levels[0] if self.levels else self.direct
        np.copyto(top.r, r, casting="same_kind")
        self._cycle(0)
        np.copyto(out, top.x)
        return out

    def _cycle(self, index: int) -> None:
        if index == len(self.levels):
            self.direct.solve()
            return
        level = self.levels[index]
        coarse = self.levels[index + 1] if index + 1 < len(self.levels) else self.direct
        level.smooth(zero_start=True, final_residual=True)
        _zero_dirichlet(tensor_apply(self.restrictions[index], level.r, out=coarse.r))
        self._cycle(index + 1)
        tensor_apply(self.prolongations[index], coarse.x, out=level.d)
        level.x += level.d
        level.op.apply(level.d, level.r, alpha=-1.0, accumulate=True)
        level.smooth(zero_start=False, final_residual=False)


def mass_1d(n: int) -> sp.csr_matrix:
    """The 1D linear-element mass matrix h/6 tridiag(1, 4, 1) (2 at the two end nodes), [n, n]."""
    h = 1.0 / (n - 1)
    main = np.full(n, 4.0)
    main[[0, -1]] = 2.0
    return sp.diags([np.ones(n - 1), main, np.ones(n - 1)], [-1, 0, 1], format="csr") * (h / 6.0)


def mass_apply(f: np.ndarray) -> np.ndarray:
    """M f for the Q1 mass matrix (exact under 2x2x2 Gauss, so the tensor product of 1D masses), float64."""
    return tensor_apply(mass_1d(f.shape[0]), np.asarray(f, np.float64))


def _dirichlet_response(nu: np.ndarray, threads: int | None) -> np.ndarray:
    """(K g) on the x plane next to x = 0 (the only free plane it reaches), g = 1 on x = 0 and 0 elsewhere:
    the operator on the two first planes of nodes."""
    n = nu.shape[0]
    g = np.zeros((2,) + nu.shape[1:])
    g[0] = 1.0
    return Stiffness(nu[:2], h=1.0 / (n - 1), threads=threads).apply(g)[1]


STORE_FLOAT64_WEIGHTS_BYTES = 2 * 1024 ** 3  # the float64 operator keeps its weights up to N = 256 (1.5 GiB)
_WORKSPACE_BUFFERS = 45  # chunk buffers a Stiffness may allocate per thread (lines, weights, windows, adjoint)
_INTERPRETER_BYTES = 0.09 * 1024 ** 3  # python, numpy, scipy, pyamg and the solve command line loaded (0.083 GiB)


def _stores_float64_weights(n: int) -> bool:
    return 12 * 8 * n ** 3 <= STORE_FLOAT64_WEIGHTS_BYTES


def memory_estimate(n: int, coarsest: int = COARSEST, threads: int | None = None) -> dict:
    """Peak memory of solve() at N nodes per axis (f = None), bytes by component, from the array sizes.

    Exact: nu (the caller's float64 field), the 5 float64 CG vectors (u, r, z, p, K p), the float64 operator's
    weights (stored up to N = 256), the levels (12 float32 weight arrays and 4 float32 vectors each). Bounds: the
    coarsest LU (within its band N^2 + N + 1), the chunk buffers, the transfer temporaries at the finest level,
    the interpreter with numpy, scipy and pyamg.
    """
    threads = threads or default_threads()
    sizes = grid_sizes(n, coarsest)

    def weights(k, itemsize):
        return 12 * (k - 1) * k * k * itemsize

    def workspace(k, itemsize):
        return threads * _WORKSPACE_BUFFERS * (min(CHUNK_ELEMENTS, (k - 1) * k * k) + k * k + k + 1) * itemsize

    c = sizes[-1]
    out = {
        "nu": 8 * n ** 3,
        "cg_vectors": 5 * 8 * n ** 3,
        "operator_weights": weights(n, 8) if _stores_float64_weights(n) else 0,
        "levels": sum(weights(k, 4) + 4 * 4 * k ** 3 for k in sizes[:-1]),
        "coarsest": 12 * 2 * (c - 2) * c * c * (c * c + c + 1) + 2 * 4 * c ** 3,  # L and U: 12 bytes per entry
        "workspaces": workspace(n, 8) + sum(workspace(k, 4) for k in sizes[:-1]),
        "transfers": 2 * 4 * n * ((n + 1) // 2) ** 2,
        "interpreter": int(_INTERPRETER_BYTES),
    }
    out["total"] = sum(out.values())
    return out


def solve(nu, rtol: float = 1e-10, x0=None, f=None, maxiter: int = 1000,
          stop: Callable[[np.ndarray], bool] | None = None, threads: int | None = None,
          degree: int = SMOOTHER_DEGREE, coarsest: int = COARSEST):
    """Solves the problem of solvers.solve by CG preconditioned with the float32 geometric V-cycle.

    Stops at ||b - K u|| <= rtol ||b|| over the free nodes (the assembled solver's norm), checked on the true
    float64 residual, or earlier when stop(u) returns True.

    Args:
      nu, rtol, x0, f, maxiter: as solvers.solve (validated there: use solvers.solve(method="gmg")).
      stop: called with the current iterate u [N, N, N] (read-only) after each iteration; True ends the solve
        (record.stopped). Its own time is excluded from the record's seconds.
      threads: for the operator's chunk loops (default: default_threads()).
      degree: Chebyshev degree of the smoother; coarsest: nodes per axis solved directly.

    Returns:
      (u [N, N, N] float64 with exact Dirichlet planes, solvers.SolveRecord with method "gmg").

    Raises:
      RuntimeError: if the residual is not finite or rtol is not reached within maxiter iterations.
    """
    start = time.perf_counter()
    n = nu.shape[0]
    op = Stiffness(nu, dtype=np.float64, store_weights=_stores_float64_weights(n), threads=threads)
    u = dirichlet_values(n)
    if x0 is not None:
        u[1:-1] = x0[1:-1]
    load = mass_apply(f) if f is not None else None
    b_norm = 0.0
    if n > 2:  # ||b|| over the free nodes, b = M f - K g (g the Dirichlet data, K g reaches plane 1 only)
        b_squared = float(np.sum(load[2:-1] ** 2)) if load is not None else 0.0
        b_plane = (load[1] if load is not None else 0.0) - _dirichlet_response(nu, threads)
        b_norm = float(np.sqrt(b_squared + np.sum(b_plane ** 2)))
    precondition = VCycle(nu, degree, coarsest, threads)
    r, z, p, q = (np.zeros_like(u) for _ in range(4))
    setup_seconds = time.perf_counter() - start
    initial, stop_seconds = 0.0, 0.0

    def residual(out):  # out = Pi (load - K u); returns its norm
        op.apply(u, out=out, alpha=-1.0)
        if load is not None:
            out += load
        return float(np.linalg.norm(_zero_dirichlet(out)))

    def finish(iterations, relative, stopped):
        ku = op.apply(u, out=q)
        energy = 0.5 * float(np.vdot(u, ku)) - (float(np.vdot(u, load)) if load is not None else 0.0)
        seconds = time.perf_counter() - start - stop_seconds
        return u, SolveRecord(n, iterations, relative, seconds, setup_seconds, initial, rtol, energy,
                                        method="gmg", stopped=stopped)

    def finite(value, iterations):  # NaN must never pass a "<= rtol" test as converged
        if not np.isfinite(value):
            raise RuntimeError(f"GMG-CG produced a non-finite residual at iteration {iterations}; nu or x0 is "
                               f"not usable")
        return value

    if b_norm == 0.0:  # no free nodes (N = 2): u is the Dirichlet data
        return finish(0, 0.0, False)
    initial = relative = finite(residual(r) / b_norm, 0)
    iterations, restart = 0, True
    while relative > rtol:
        if iterations >= maxiter:
            raise RuntimeError(f"GMG-CG did not reach rtol={rtol} within {maxiter} iterations "
                               f"(relative residual {relative:.3e}); the diffusivity contrast may be too high")
        if restart:
            precondition(r, z)
            rz = float(np.vdot(r, z))
            p[...] = z
            restart = False
        _zero_dirichlet(op.apply(p, out=q))
        alpha = rz / float(np.vdot(p, q))
        _axpy(u, alpha, p)  # p and q are zero on the Dirichlet planes
        _axpy(r, -alpha, q)
        iterations += 1
        relative = finite(float(np.linalg.norm(r)) / b_norm, iterations)
        if stop is not None:
            before = time.perf_counter()
            stopped = bool(stop(u))
            stop_seconds += time.perf_counter() - before
            if stopped:
                return finish(iterations, residual(r) / b_norm, True)
        if relative <= rtol:  # confirm on the true residual; recursion drift restarts CG from it
            relative = finite(residual(r) / b_norm, iterations)
            restart = True
            continue
        precondition(r, z)
        rz_new = float(np.vdot(r, z))
        p *= rz_new / rz
        p += z
        rz = rz_new
    return finish(iterations, relative, False)
