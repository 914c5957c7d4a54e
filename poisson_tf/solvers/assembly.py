"""The Q1 discretization assembled sparse (docs/design.rst s.4): stiffness K(nu) by its 27 stencil diagonals, the
mass matrix, the energy J in numpy, and the Dirichlet data."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from poisson_tf import q1
from poisson_tf.fields import check_diffusivity

_VALUES = q1.shape_values()        # [a, q]
_GRADIENTS = q1.shape_gradients()  # [d, a, q]
_CORNERS = np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)])
# Per Gauss point q: sum_d dN_a/ds_d dN_b/ds_d, [q, a, b]; stiffness = nu_q (detJ / h^2) times this.
_GRAD_PRODUCTS = np.einsum("daq,dbq->qab", _GRADIENTS, _GRADIENTS)
_VALUE_PRODUCTS = np.einsum("aq,bq->qab", _VALUES, _VALUES)


def check_nodal(nu: np.ndarray, name: str = "nu") -> np.ndarray:
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
    nu = check_diffusivity(check_nodal(nu)).astype(np.float64)
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
    u = check_nodal(u, "u").astype(np.float64).ravel()
    value = 0.5 * u @ (stiffness(nu) @ u)
    if f is not None:
        value -= u @ (mass(round(len(u) ** (1 / 3))) @ np.asarray(f, np.float64).ravel())
    return float(value)


def dirichlet_values(resolution: int) -> np.ndarray:
    """[N, N, N] array that is 1 on x = 0, 0 elsewhere (the boundary data; interior entries unused)."""
    g = np.zeros((resolution,) * 3)
    g[0] = 1.0
    return g
