"""Sparse Q1 assembly, the AMG-preconditioned CG reference solver (DESIGN.md s.5), solve() for both methods
(assembled AMG or matrix-free gmg), and the cache of reference solutions."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from poisson_tf import fields, hdf5, q1
from poisson_tf.fields import check_diffusivity

_VALUES = q1.shape_values()        # [a, q]
_GRADIENTS = q1.shape_gradients()  # [d, a, q]
_CORNERS = np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)])
# Per Gauss point q: sum_d dN_a/ds_d dN_b/ds_d, [q, a, b]; stiffness = nu_q (detJ / h^2) times this.
_GRAD_PRODUCTS = np.einsum("daq,dbq->qab", _GRADIENTS, _GRADIENTS)
_VALUE_PRODUCTS = np.einsum("aq,bq->qab", _VALUES, _VALUES)


def _check_nodal(nu: np.ndarray, name: str = "nu") -> np.ndarray:
    nu = np.asarray(nu)
    if nu.ndim != 3 or len(set(nu.shape)) != 1 or nu.shape[0] < 2:
        raise ValueError(f"{name} must be a nodal field of shape [N, N, N] with N >= 2, got shape {nu.shape}")
    return nu


def _offset_pairs() -> dict:
    """Local node pairs (a, b) by stencil offset corner_b - corner_a, for the 14 offsets that are >= 0 in
    lexicographic order: K is symmetric, so the other 13 diagonals are copies of these."""
    pairs = {}
    for a, ca in enumerate(_CORNERS):
        for b, cb in enumerate(_CORNERS):
            offset = tuple(int(c) for c in cb - ca)
            if offset >= (0, 0, 0):
                pairs.setdefault(offset, []).append((a, b))
    return pairs


_OFFSET_PAIRS = _offset_pairs()


def _assemble(point_weights: np.ndarray, local: np.ndarray, n: int) -> sp.csr_matrix:
    """Assembles sum_e sum_q point_weights[q, e] local[q] into a symmetric [N^3, N^3] matrix, per stencil offset.

    Each (a, b) pair of local nodes couples a node to its neighbour at offset corner_b - corner_a. For each of
    the 14 offsets >= 0, the element values of its pairs, sum_q point_weights[q] local[q, a, b], are added into
    one nodal array, which becomes a diagonal and (by symmetry) its mirror. Peak memory: point_weights, the 14
    nodal arrays and one element array (no [E, E, E, 8, 8] table).

    Args:
      point_weights: [8, N-1, N-1, N-1] per Gauss point and element.
      local: [8 points, 8 nodes, 8 nodes], symmetric in the two node indices.
      n: nodes per axis.
    """
    e = n - 1
    weights = point_weights.reshape(q1.NUM_POINTS, -1)
    diagonals = {}
    for (dx, dy, dz), pairs in _OFFSET_PAIRS.items():
        diag = np.zeros((n, n, n))
        for a, b in pairs:
            i, j, k = _CORNERS[a]
            diag[i:i + e, j:j + e, k:k + e] += (local[:, a, b] @ weights).reshape(e, e, e)
        offset = (dx * n + dy) * n + dz  # row node r couples to column r + offset (C order, x slowest)
        flat = diag.ravel()[:n ** 3 - offset]
        if offset in diagonals:  # N = 2 only: two stencil offsets land on one diagonal, on different rows
            diagonals[offset] = diagonals[offset] + flat
        else:
            diagonals[offset] = flat
    offsets = sorted(set(diagonals) | {-k for k in diagonals})
    data = [diagonals[abs(k)] for k in offsets]  # the mirror diagonal holds the same values (K symmetric)
    matrix = sp.diags(data, offsets, shape=(n ** 3, n ** 3), format="csr")
    matrix.eliminate_zeros()
    return matrix


def _gauss_nu(nu: np.ndarray) -> np.ndarray:
    """nu interpolated trilinearly to the Gauss points, [8, N-1, N-1, N-1] (point q = 4 i + 2 j + k)."""
    e = nu.shape[0] - 1
    out = np.empty((q1.NUM_POINTS, e, e, e))
    for i, si in enumerate(q1.GAUSS_POINTS_1D):  # nested linear interpolation along x, then y, then z
        along_x = (1.0 - si) * nu[:-1] + si * nu[1:]
        for j, sj in enumerate(q1.GAUSS_POINTS_1D):
            along_y = (1.0 - sj) * along_x[:, :-1] + sj * along_x[:, 1:]
            for k, sk in enumerate(q1.GAUSS_POINTS_1D):
                np.add((1.0 - sk) * along_y[..., :-1], sk * along_y[..., 1:], out=out[4 * i + 2 * j + k])
    return out


def stiffness(nu) -> sp.csr_matrix:
    """The Q1 stiffness matrix K (all N^3 nodes, no boundary conditions) with nu at the 2x2x2 Gauss points.

    K_ab = sum_e sum_q detJ nu_q grad N_a . grad N_b, detJ = (h/2)^3, so that J(u) = 1/2 u^T K u for f = 0.

    Args:
      nu: [N, N, N] nodal diffusivity, finite and positive.

    Returns:
      symmetric CSR matrix [N^3, N^3] in C (x-slowest) node order.
    """
    nu = check_diffusivity(_check_nodal(nu)).astype(np.float64)
    n = nu.shape[0]
    h = 1.0 / (n - 1)
    return _assemble(_gauss_nu(nu), _GRAD_PRODUCTS * (q1.jacobian_determinant(h) / h ** 2), n)


def mass(resolution: int) -> sp.csr_matrix:
    """The Q1 mass matrix M_ab = sum_e sum_q detJ N_a N_b (exact for Q1 with 2x2x2 Gauss)."""
    n = resolution
    h = 1.0 / (n - 1)
    return _assemble(np.ones((q1.NUM_POINTS,) + (n - 1,) * 3), _VALUE_PRODUCTS * q1.jacobian_determinant(h), n)


def energy(u, nu, f=None) -> float:
    """numpy twin of fem.energy for one sample: 1/2 u^T K u - u^T M f."""
    u = _check_nodal(u, "u").astype(np.float64).ravel()
    value = 0.5 * u @ (stiffness(nu) @ u)
    if f is not None:
        value -= u @ (mass(round(len(u) ** (1 / 3))) @ np.asarray(f, np.float64).ravel())
    return float(value)


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


METHODS = ("auto", "amg", "gmg")
#: "auto" picks the matrix-free solver from this many nodes per axis on (measured in benchmarks/bench_reference.py:
#: below it the assembled AMG is as fast and its memory is small).
AUTO_GMG_RESOLUTION = 48


def dirichlet_values(resolution: int) -> np.ndarray:
    """[N, N, N] array that is 1 on x = 0, 0 elsewhere (the boundary data; interior entries unused)."""
    g = np.zeros((resolution,) * 3)
    g[0] = 1.0
    return g


def check_problem(nu, rtol: float, x0=None, f=None):
    """Validates a solve's inputs; returns (nu, x0 or None, f or None) with x0 and f as float64 arrays.

    Raises:
      ValueError: nu not a finite positive [N, N, N] field, x0 or f of another shape or not finite, rtol not in (0, 1).
    """
    nu = check_diffusivity(_check_nodal(nu))
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must lie in (0, 1), got {rtol!r}")
    checked = []
    for name, x in (("x0", x0), ("f", f)):
        if x is not None:
            x = _check_nodal(np.asarray(x, np.float64), name)
            if x.shape != nu.shape or not np.all(np.isfinite(x)):
                raise ValueError(f"{name} must be finite with the shape of nu {nu.shape}, got shape {x.shape}")
        checked.append(x)
    return nu, checked[0], checked[1]


def solve(nu, rtol: float = 1e-10, x0=None, f=None, maxiter: int = 1000, method: str = "auto",
          stop=None):
    """Solves -div(nu grad u) = f with u = 1 at x = 0, u = 0 at x = 1, natural conditions elsewhere.

    Conjugate gradients on the free nodes (Dirichlet planes eliminated) to ||b - K u|| <= rtol ||b||, with one
    of two preconditioners of the same Q1 discretization:
      "amg": the assembled stiffness, one smoothed-aggregation AMG V-cycle (pyamg); memory grows to ~30 GiB at 256^3.
      "gmg": matrix-free, a geometric multigrid V-cycle (poisson_tf.gmg); a few N^3 arrays, for N up to 512.
      "auto": "gmg" from AUTO_GMG_RESOLUTION nodes per axis on, "amg" below.

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
        from poisson_tf import gmg

        return gmg.solve(nu, rtol, x0, f, maxiter, stop)
    return _solve_amg(nu.astype(np.float64), rtol, x0, f, maxiter, stop)


class _Stopped(Exception):
    """Raised from scipy's CG callback to end the iteration at the caller's request."""


def _solve_amg(nu, rtol, x0, f, maxiter, stop):
    """The assembled solver of solve(method="amg"), on validated inputs."""
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


def default_cache_dir() -> str:
    """Where reference solutions are cached unless a directory is given: $POISSON_TF_CACHE/references
    (default ~/.cache/poisson_tf/references), shared by training runs, evaluation and benchmarks."""
    root = os.environ.get("POISSON_TF_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "poisson_tf"))
    return os.path.join(root, "references")


class ReferenceStore:
    """Reference solutions by solve() (method "auto": the matrix-free gmg from N = 48, the assembled AMG below),
    computed once per (coefficients, eta, N) and cached in HDF5 (rtol 1e-10).

    One file per sample and resolution, named by a hash of its key, written atomically: safe to share
    between runs and workers.
    """

    def __init__(self, directory: str = "", rtol: float = 1e-10):
        self.directory = directory or default_cache_dir()
        self.rtol = rtol

    def path(self, coeffs, eta: float, resolution: int) -> str:
        key = np.asarray(coeffs, np.float64).tobytes() + np.float64(eta).tobytes() + np.int64(resolution).tobytes()
        return os.path.join(self.directory, f"ref_N{resolution}_{hashlib.sha1(key).hexdigest()[:20]}.h5")

    def get(self, coeffs, eta: float, resolution: int):
        """(nu, u_ref), each [N, N, N] float64, solving and caching on first use."""
        path = self.path(coeffs, eta, resolution)
        if os.path.exists(path):
            try:
                data, attrs = hdf5.read_fields(path, ("nu", "u_ref"))
                if np.array_equal(attrs["coeffs"], np.asarray(coeffs, np.float64)) and attrs["eta"] == eta:
                    return data["nu"], data["u_ref"]
            except ValueError:
                pass  # unreadable cache entry: solve again and overwrite it
        nu = fields.kl_diffusivity(coeffs, resolution, eta)
        u_ref, record = solve(nu, rtol=self.rtol)
        hdf5.write_fields(path, {"nu": nu, "u_ref": u_ref}, eta=eta, coeffs=np.asarray(coeffs, np.float64),
                          xdmf=False, attrs={"iterations": record.iterations, "method": record.method,
                                             "relative_residual": record.relative_residual})
        return nu, u_ref

    def ensure(self, coeffs, eta: float, resolution: int) -> None:
        """Solves and caches the reference unless its file exists, without reading a cached one (get validates
        it when it is used)."""
        if not os.path.exists(self.path(coeffs, eta, resolution)):
            self.get(coeffs, eta, resolution)

    def get_many(self, coeffs: np.ndarray, eta: float, resolution: int):
        """(nu, u_ref) stacked over samples, [B, N, N, N] each."""
        pairs = [self.get(c, eta, resolution) for c in np.asarray(coeffs)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
