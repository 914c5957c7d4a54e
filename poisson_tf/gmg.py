"""Matrix-free geometric multigrid for the Q1 reference problem (DESIGN.md s.5): K applied from nu, V-cycle PCG."""
from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from poisson_tf import q1

_G = q1.GAUSS_POINTS_1D[0]  # the lower Gauss abscissa on [0, 1]; the upper one is 1 - _G
# diag(K) uses squared interpolation weights: (1-g)^2 a + g^2 b = 2/3 ((1 - g') a + g' b) with g' = g^2 / (2/3).
_SQUARED_SCALE = (1.0 - _G) ** 2 + _G ** 2
_G_SQUARED = _G ** 2 / _SQUARED_SCALE

CHUNK_ELEMENTS = 1 << 15     # elements per chunk: ~20 chunk-sized buffers of this stay in a 32 MiB L3 per thread
COARSEST = 16                # nodes per axis at or below which a level is solved directly (LU of 3.6k unknowns)
SMOOTHER_DEGREE = 2          # Chebyshev degree of the pre- and post-smoother (fewest applies to 1e-10 at 32-128)
SMOOTHING_RANGE = 4.0        # Chebyshev interval [lambda_max / range, lambda_max] of D^-1 K
# Lanczos underestimates lambda_max (6 steps: by 5%). The smoother still contracts up to lambda_max (1 + 1/range),
# 1.25 x the interval's end, so the V-cycle stays positive definite for underestimates up to 1.1 * 1.25 = 1.375.
LAMBDA_SAFETY = 1.1
LANCZOS_STEPS = 6


def default_threads() -> int:
    """Threads for the chunk loops: $POISSON_TF_GMG_THREADS if set, else the cores this process may use, at most 2.

    Raises:
      ValueError: if POISSON_TF_GMG_THREADS is set to anything but a positive integer.
    """
    value = os.environ.get("POISSON_TF_GMG_THREADS")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"POISSON_TF_GMG_THREADS must be a positive integer, got {value!r}")
        return int(value)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


_EXECUTORS: dict = {}


def _executor(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    if threads not in _EXECUTORS:
        _EXECUTORS[threads] = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="poisson_tf_gmg")
    return _EXECUTORS[threads]


def _interp(lo, hi, g, out0, out1, tmp):
    """Values at the abscissae g and 1 - g between lo and hi: out0 = lo + g (hi - lo), out1 = hi - g (hi - lo)."""
    tmp = tmp[:lo.size]
    np.subtract(hi, lo, out=tmp)
    tmp *= g
    np.add(lo, tmp, out=out0)
    np.subtract(hi, tmp, out=out1)


def _interp_t(a0, a1, g, buf, shift, tmp, fresh):
    """Adjoint of _interp into buf: buf[:m] += (1-g) a0 + g a1 and buf[shift:shift+m] += g a0 + (1-g) a1
    (m = a0.size); fresh=True overwrites buf[:shift+m] instead of adding (no zero fill)."""
    m = a0.size
    tmp = tmp[:m]
    np.subtract(a1, a0, out=tmp)
    tmp *= g
    lo, hi = buf[:m], buf[shift:shift + m]
    if fresh:
        np.add(a0, tmp, out=lo)
        buf[m:shift + m] = 0
    else:
        lo += a0
        lo += tmp
    hi += a1
    hi -= tmp


def _pair_t(v, buf, shift, sign, fresh):
    """Adjoint of the difference hi - lo (sign -1) or of the pair-sum (sign +1) into buf: buf[:m] += sign v,
    buf[shift:shift+m] += v; fresh=True overwrites buf[:shift+m] instead of adding."""
    m = v.size
    lo, hi = buf[:m], buf[shift:shift + m]
    if fresh:
        np.multiply(v, sign, out=lo)
        buf[m:shift + m] = 0
    elif sign < 0:
        lo -= v
    else:
        lo += v
    hi += v


class _Workspace:
    """Per-thread chunk buffers (allocated once; the chunk loops never allocate)."""

    def __init__(self, length: int, dtype):
        self.length = length
        self.dtype = dtype
        self._buffers: dict = {}

    def __call__(self, name: str, n: int) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = np.zeros(self.length, self.dtype)
        return buf[:n]


class Stiffness:
    """The Q1 stiffness K of nodal nu (DESIGN.md s.4), applied without assembling it.

    K u equals reference.stiffness(nu) @ u (all nodes, no boundary conditions), to round-off.

    On a trilinear element the derivative along d is constant along d, so at the 2x2x2 Gauss points it takes 4
    values per element (one per Gauss line), and the sum of nu_q over the 2 points of a line is the nodal pair-sum
    nu_i + nu_i+1 along d interpolated to that line. With g_d the 4 Gauss-line values of the difference of u along
    d (interpolated at the Gauss abscissae of the other two axes),

        J(u) = 1/2 sum_d sum_lines W_d g_d^2,   W_d = (detJ / h^2) (pair-sum of nu along d, interpolated alike),
        K u  = sum_d D_d^T (W_d (D_d u)),

    exactly: 12 weight arrays. Everything runs on flat C-order arrays in contiguous chunks of element rows (a
    neighbour along z, y, x is the index + 1, + Nz, + Ny Nz), so each numpy pass covers a chunk that stays in
    cache; the element entries at y = Ny-1 or z = Nz-1 are padding with zero weight. Threads run disjoint chunk
    ranges (numpy releases the GIL).

    Args:
      nu: nodal diffusivity [Nx, Ny, Nz] (any float dtype; the unit cube has Nx = Ny = Nz = N).
      h: element size (default 1 / (Nz - 1)).
      dtype: arithmetic dtype of apply() (float64 for residuals and metrics, float32 inside the V-cycle).
      store_weights: keep the 12 Gauss-line weight arrays (12 N^3 values of dtype) instead of recomputing them
        from nu in each apply (about 30% more work, no memory beyond nu).
      threads: worker threads (default: default_threads()).
      chunk_elements: elements per chunk (rounded to whole rows of Nz).
    """

    def __init__(self, nu: np.ndarray, h: float | None = None, dtype=np.float64, store_weights: bool = False,
                 threads: int | None = None, chunk_elements: int = CHUNK_ELEMENTS):
        nu = np.ascontiguousarray(nu)
        if nu.ndim != 3 or min(nu.shape) < 2:
            raise ValueError(f"nu must be a nodal field [Nx, Ny, Nz] with at least 2 nodes per axis, got {nu.shape}")
        self.shape = nu.shape
        self.dtype = np.dtype(dtype)
        self.h = float(h) if h is not None else 1.0 / (nu.shape[2] - 1)
        nx, ny, nz = nu.shape
        self._sy, self._sx = nz, ny * nz
        self._ext = nz + 1                       # a chunk's nodes reach this far past its last element row
        self._base = (nx - 1) * ny * nz          # element base indices (x planes 0..Nx-2, y/z padding included)
        rows = max(1, min(chunk_elements // nz, (nx - 1) * ny))
        self._chunks = [(a, min(a + rows * nz, self._base)) for a in range(0, self._base, rows * nz)]
        self._threads = max(1, min(threads or default_threads(), len(self._chunks)))
        self._plan = self._thread_plan()
        self._scale = self.h / 8.0              # detJ / h^2 = (h/2)^3 / h^2
        self._nu = nu.ravel()
        self._workspaces = [_Workspace(rows * nz + self._ext, self.dtype) for _ in range(self._threads)]
        self._weights = None
        if store_weights:
            weights = np.empty((12, self._base), self.dtype)

            def store(a, b, ws):
                weights[:, a:b] = self._chunk_weights(a, b, ws)

            self._run(store, exclusive=False)
            self._weights = weights
            self._nu = None  # not needed any more

    @property
    def weights_nbytes(self) -> int:
        """Memory of the stored weights (0 when they are computed on the fly)."""
        return self._weights.nbytes if self._weights is not None else 0

    @property
    def workspace_nbytes(self) -> int:
        """Memory of the per-thread chunk buffers allocated so far."""
        return sum(sum(b.nbytes for b in ws._buffers.values()) for ws in self._workspaces)

    def _thread_plan(self):
        """Splits the chunks into one contiguous run per thread, deferring the chunks whose output windows reach
        into the next run (about one x plane per boundary) to a serial pass after the threads join."""
        n, t = len(self._chunks), self._threads
        bounds = [round(i * n / t) for i in range(t + 1)]
        runs, deferred = [], []
        for i in range(t):
            run = self._chunks[bounds[i]:bounds[i + 1]]
            if i + 1 < t:
                limit = self._chunks[bounds[i + 1]][0]
                deferred += [c for c in run if c[1] + self._sx + self._ext > limit]
                run = [c for c in run if c[1] + self._sx + self._ext <= limit]
            runs.append(run)
        return runs, deferred

    def _run(self, fn, exclusive: bool = True) -> None:
        """fn(a, b, workspace) for every chunk; exclusive=True keeps chunks with overlapping outputs apart."""
        runs, deferred = self._plan if exclusive else ([self._chunks[i::self._threads]
                                                         for i in range(self._threads)], [])

        def work(index):
            for a, b in runs[index]:
                fn(a, b, self._workspaces[index])

        if self._threads == 1:
            work(0)
        else:
            for future in [_executor(self._threads).submit(work, i) for i in range(self._threads)]:
                future.result()
        for a, b in deferred:
            fn(a, b, self._workspaces[0])

    def _windows(self, flat: np.ndarray, a: int, n: int, ws: _Workspace, name: str):
        """The chunk's two node windows flat[a : a+n] and flat[a+Nx.. : ...] in the work dtype, zero past the end."""
        out = []
        for start, tag in ((a, "0"), (a + self._sx, "1")):
            if flat.dtype == self.dtype and start + n <= flat.size:
                out.append(flat[start:start + n])
                continue
            buf = ws(name + tag, n)
            inside = max(0, min(n, flat.size - start))
            buf[:inside] = flat[start:start + inside]
            buf[inside:] = 0
            out.append(buf)
        return out

    def _lines(self, v0, v1, n_elem: int, ws: _Workspace, combine, name: str = "line") -> list:
        """The 12 Gauss-line arrays of one chunk, index 4 d + 2 j + k (d the direction, j, k the Gauss abscissae
        along the other two axes in order): combine = np.subtract gives the differences of u along d,
        np.add the pair-sums of nu along d, each interpolated at the Gauss points of the other two axes."""
        sy, n = self._sy, n_elem
        nw = n + self._ext
        out = [ws(f"{name}{i}", n) for i in range(12)]
        pair, tmp = ws("pair", nw), ws("tmp", nw)
        combine(v1, v0, out=pair)  # hi - lo, or hi + lo
        x0, x1 = ws("x0", nw), ws("x1", nw)
        _interp(v0, v1, _G, x0, x1, tmp)
        # d = x: the pair along x, interpolated along y (rows, stride Nz) then z (stride 1).
        a0, a1 = ws("a0", n + 1), ws("a1", n + 1)
        _interp(pair[:n + 1], pair[sy:sy + n + 1], _G, a0, a1, tmp)
        for j, a in enumerate((a0, a1)):
            _interp(a[:n], a[1:n + 1], _G, out[2 * j], out[2 * j + 1], tmp)
        for j, xj in enumerate((x0, x1)):
            # d = y: pair along y, then z.  d = z: pair along z, then y.
            py = ws("py", n + 1)
            combine(xj[sy:sy + n + 1], xj[:n + 1], out=py)
            _interp(py[:n], py[1:n + 1], _G, out[4 + 2 * j], out[5 + 2 * j], tmp)
            pz = ws("pz", n + sy)
            combine(xj[1:n + sy + 1], xj[:n + sy], out=pz)
            _interp(pz[:n], pz[sy:sy + n], _G, out[8 + 2 * j], out[9 + 2 * j], tmp)
        return out

    def _scatter(self, lines: list, n_elem: int, ws: _Workspace, g: float, sign: int):
        """Adjoint of _lines (differences for sign -1, pair-sums for +1, interpolation weights g): the chunk's
        contributions to its two node windows (lo at the element rows, hi one x plane further)."""
        sy, n = self._sy, n_elem
        tmp = ws("tmp", n + self._ext)
        b0, b1 = ws("b0", n + 1), ws("b1", n + 1)
        for j, b in enumerate((b0, b1)):  # d = x: adjoint of the z, then the y interpolation
            _interp_t(lines[2 * j], lines[2 * j + 1], g, b, 1, tmp, fresh=True)
        bx = ws("bx", n + self._ext)
        _interp_t(b0, b1, g, bx, sy, tmp, fresh=True)
        acc = []
        for j in range(2):  # d = y and d = z at the x abscissa j
            aj = ws(f"acc{j}", n + self._ext)
            by = ws("by", n + 1)
            _interp_t(lines[4 + 2 * j], lines[5 + 2 * j], g, by, 1, tmp, fresh=True)
            _pair_t(by, aj, sy, sign, fresh=True)
            bz = ws("bz", n + sy)
            _interp_t(lines[8 + 2 * j], lines[9 + 2 * j], g, bz, sy, tmp, fresh=True)
            _pair_t(bz, aj, 1, sign, fresh=False)
            acc.append(aj)
        lo, hi = ws("lo", n + self._ext), ws("hi", n + self._ext)
        np.subtract(acc[1], acc[0], out=tmp)  # adjoint of the x interpolation, into two separate windows
        tmp *= g
        np.add(acc[0], tmp, out=lo)
        np.subtract(acc[1], tmp, out=hi)
        hi += bx
        if sign < 0:
            lo -= bx
        else:
            lo += bx
        return lo, hi

    def _zero_padding(self, arrays, a: int, n_elem: int) -> None:
        """Zeroes the padding entries (y = Ny-1 or z = Nz-1) of chunk arrays that start at base index a."""
        ny, nz = self.shape[1], self.shape[2]
        first_row = (ny - 1 - a // nz) % ny
        for arr in arrays:
            rows = arr[:n_elem].reshape(-1, nz)
            rows[:, nz - 1] = 0
            rows[first_row::ny] = 0

    def _chunk_weights(self, a: int, b: int, ws: _Workspace) -> list:
        """The 12 weight arrays of elements [a, b) from nu, computed in the work dtype."""
        n = b - a
        nu0, nu1 = self._windows(self._nu, a, n + self._ext, ws, "nu")
        weights = self._lines(nu0, nu1, n, ws, np.add, name="weight")
        for w in weights:
            w *= self._scale
        self._zero_padding(weights, a, n)
        return weights

    def _add(self, flat_out, a: int, lo, hi, alpha: float) -> None:
        for start, part in ((a, lo), (a + self._sx, hi)):
            m = max(0, min(part.size, flat_out.size - start))  # beyond the array: padding rows, zero
            if alpha == 1.0:
                flat_out[start:start + m] += part[:m]
            elif alpha == -1.0:
                flat_out[start:start + m] -= part[:m]
            else:
                part *= alpha
                flat_out[start:start + m] += part[:m]

    def apply(self, u: np.ndarray, out: np.ndarray | None = None, alpha: float = 1.0,
              accumulate: bool = False) -> np.ndarray:
        """out = alpha K u, or out += alpha K u with accumulate=True.

        Args:
          u: nodal field of the operator's shape (any float dtype; converted chunk by chunk).
          out: C-contiguous array of the operator's shape and dtype (allocated when None).
        """
        if u.shape != self.shape:
            raise ValueError(f"u must have the shape of nu {self.shape}, got {u.shape}")
        if out is None:
            out = np.zeros(self.shape, self.dtype)
        elif not accumulate:
            out.fill(0)
        flat_u, flat_out = np.ascontiguousarray(u).ravel(), out.reshape(-1)
        if not np.shares_memory(flat_out, out):
            raise ValueError("out must be C-contiguous")

        def chunk(a, b, ws):
            n = b - a
            u0, u1 = self._windows(flat_u, a, n + self._ext, ws, "u")
            weights = self._weights[:, a:b] if self._weights is not None else self._chunk_weights(a, b, ws)
            lines = self._lines(u0, u1, n, ws, np.subtract)
            for line, w in zip(lines, weights):
                line *= w
            lo, hi = self._scatter(lines, n, ws, _G, -1)
            self._add(flat_out, a, lo, hi, alpha)

        self._run(chunk)
        return out

    def diagonal(self) -> np.ndarray:
        """diag(K), [Nx, Ny, Nz] in the work dtype: sum over elements and Gauss lines of W (d g / d u_node)^2."""
        out = np.zeros(self.shape, self.dtype)
        flat_out = out.reshape(-1)

        def chunk(a, b, ws):
            n = b - a
            weights = self._weights[:, a:b] if self._weights is not None else self._chunk_weights(a, b, ws)
            lines = [ws(f"line{i}", n) for i in range(12)]
            for line, w in zip(lines, weights):
                np.multiply(w, _SQUARED_SCALE ** 2, out=line)  # two interpolation axes per direction
            lo, hi = self._scatter(lines, n, ws, _G_SQUARED, +1)
            self._add(flat_out, a, lo, hi, 1.0)

        self._run(chunk)
        return out


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
    """The coarsest grid: the assembled free block (reference.stiffness) factorized once."""

    def __init__(self, nu: np.ndarray, dtype=np.float32):
        from poisson_tf import reference

        self.n = n = nu.shape[0]
        k = reference.stiffness(nu)
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
_INTERPRETER_BYTES = 0.15 * 1024 ** 3  # python, numpy, scipy, pyamg loaded (measured resident size)


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
    """Solves the problem of reference.solve by CG preconditioned with the float32 geometric V-cycle.

    Stops at ||b - K u|| <= rtol ||b|| over the free nodes (the assembled solver's norm), checked on the true
    float64 residual, or earlier when stop(u) returns True.

    Args:
      nu, rtol, x0, f, maxiter: as reference.solve (validated there: use reference.solve(method="gmg")).
      stop: called with the current iterate u [N, N, N] (read-only) after each iteration; True ends the solve
        (record.stopped). Its own time is excluded from the record's seconds.
      threads: for the operator's chunk loops (default: default_threads()).
      degree: Chebyshev degree of the smoother; coarsest: nodes per axis solved directly.

    Returns:
      (u [N, N, N] float64 with exact Dirichlet planes, reference.SolveRecord with method "gmg").

    Raises:
      RuntimeError: if the residual is not finite or rtol is not reached within maxiter iterations.
    """
    from poisson_tf import reference

    start = time.perf_counter()
    n = nu.shape[0]
    op = Stiffness(nu, dtype=np.float64, store_weights=_stores_float64_weights(n), threads=threads)
    u = reference.dirichlet_values(n)
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
        return u, reference.SolveRecord(n, iterations, relative, seconds, setup_seconds, initial, rtol, energy,
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
