"""The Q1 stiffness applied matrix-free from nodal nu (Stiffness: 12 Gauss-line weight arrays, chunked loops on a
few threads), shared by the geometric multigrid solver and the metrics (docs/design.rst s.4)."""
from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from poisson_tf import q1

_G = q1.GAUSS_POINTS_1D[0]  # the lower Gauss abscissa on [0, 1]; the upper one is 1 - _G
# diag(K) uses squared interpolation weights: (1-g)^2 a + g^2 b = 2/3 ((1 - g') a + g' b) with g' = g^2 / (2/3).
_SQUARED_SCALE = (1.0 - _G) ** 2 + _G ** 2
_G_SQUARED = _G ** 2 / _SQUARED_SCALE

CHUNK_ELEMENTS = 1 << 15     # elements per chunk: ~20 chunk-sized buffers of this stay in a 32 MiB L3 per thread


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
    """The Q1 stiffness K of nodal nu (docs/design.rst s.4), applied without assembling it.

    K u equals solvers.stiffness(nu) @ u (all nodes, no boundary conditions), to round-off.

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
