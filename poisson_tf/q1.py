"""Trilinear (Q1) hexahedron tables shared by the TensorFlow loss and the sparse reference (docs/design.rst s.4).

Local node a = 4*i + 2*j + k for the element corner (i, j, k) in {0, 1}^3 (C order, matching a 2x2x2
convolution kernel); Gauss point q is numbered the same way over the points (1 -+ 1/sqrt(3)) / 2.
"""
import numpy as np

#: Gauss-Legendre points of the 2-point rule, mapped from [-1, 1] to the unit interval [0, 1].
GAUSS_POINTS_1D = (0.5 - 0.5 / np.sqrt(3.0), 0.5 + 0.5 / np.sqrt(3.0))
NUM_NODES = 8
NUM_POINTS = 8


def _corners() -> np.ndarray:
    """[8, 3] array of (i, j, k) for a = 4i + 2j + k."""
    return np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)])


def _basis_1d(corner: int, s: float) -> float:
    return s if corner == 1 else 1.0 - s


def _dbasis_1d(corner: int) -> float:
    return 1.0 if corner == 1 else -1.0


def shape_values() -> np.ndarray:
    """N_a at Gauss point q, [8 nodes, 8 points]; each column sums to 1."""
    nodes = _corners()
    points = np.array(GAUSS_POINTS_1D)[_corners()]
    return np.array([[np.prod([_basis_1d(n[d], p[d]) for d in range(3)]) for p in points] for n in nodes])


def shape_gradients() -> np.ndarray:
    """dN_a/ds_d at Gauss point q in unit-element coordinates, [3 dims, 8 nodes, 8 points].

    Physical gradients are these divided by the element size h.
    """
    nodes = _corners()
    points = np.array(GAUSS_POINTS_1D)[_corners()]
    out = np.empty((3, NUM_NODES, NUM_POINTS))
    for d in range(3):
        for a, n in enumerate(nodes):
            for q, p in enumerate(points):
                factors = [_dbasis_1d(n[e]) if e == d else _basis_1d(n[e], p[e]) for e in range(3)]
                out[d, a, q] = np.prod(factors)
    return out


def jacobian_determinant(h: float) -> float:
    """det J of the map from the reference cube [-1, 1]^3 to an element of size h: (h/2)^3.

    With Gauss weights 1, sum_q detJ = h^3, the element volume.
    """
    return (0.5 * h) ** 3


def directional_tables() -> tuple:
    """The factorized Q1 energy's tables, each [8 nodes, 12]: column 4 d + 2 p + r belongs to direction d and
    the Gauss abscissae (p, r) of the other two axes (in increasing axis order).

    On a trilinear element du/dx does not depend on x, so at the 2x2x2 Gauss points it takes only 4 values
    (one per Gauss line along x), and ``sum_q nu_q |grad u_q|^2 = sum_d sum_lines W_d (du/ds_d)^2`` with
    W_d = the sum of nu over the 2 points of the line.

    Returns:
      (gradient, weight). gradient gives du/ds_d on each line, i.e. the difference along d interpolated across;
      weight is the interpolation across alone, so that nodal nu -> W_d, since the two 1D shape values sum to 1
      over the two Gauss points.
    """
    gradient = np.zeros((NUM_NODES, 12))
    weight = np.zeros((NUM_NODES, 12))
    lines = [(p, r) for p in (0, 1) for r in (0, 1)]
    for d in range(3):
        across = [e for e in range(3) if e != d]
        for line, (p, r) in enumerate(lines):
            for a, corner in enumerate(_corners()):
                interp = (_basis_1d(corner[across[0]], GAUSS_POINTS_1D[p])
                          * _basis_1d(corner[across[1]], GAUSS_POINTS_1D[r]))
                gradient[a, 4 * d + line] = _dbasis_1d(corner[d]) * interp
                weight[a, 4 * d + line] = interp
    return gradient, weight

