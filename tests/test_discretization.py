"""The Q1 discretization in 3D against numbers derived by hand, not against its own twin.

Both implementations are checked: the TensorFlow energy (fem.energy and its hand-written gradient K u) and the
sparse assembly (solvers.stiffness / solvers.energy / solvers.solve). Every field varies along y and z
too, so a wrong y or z gradient table, or a Gauss-point ordering that differs between the nu (value) and the
gradient tables, changes the numbers.
"""
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import fem, solvers


def grid(n):
    t = np.linspace(0.0, 1.0, n)
    return np.meshgrid(t, t, t, indexing="ij")


def batch(a):
    return tf.constant(np.asarray(a)[None, ..., None], tf.float32)


def fem_gradient(u, nu):
    """dJ/du of the TF energy (f = 0), i.e. K u, as an [N, N, N] array."""
    ut = tf.Variable(batch(u))
    with tf.GradientTape() as tape:
        j = tf.reduce_sum(fem.energy(ut, batch(nu)))
    return tape.gradient(j, ut).numpy()[0, ..., 0]


# Trilinear u, nu and f are interpolated exactly, and nu |grad u|^2 and f u are at most cubic in each
# variable, which 2-point Gauss integrates exactly: J_h = J = 1/2 int nu |grad u|^2 - int f u at every N.
# By hand, with int x^a y^b z^c = 1 / ((a+1)(b+1)(c+1)) over the unit cube:
#   u = xy,  nu = 1 + y:   1/2 int (1 + y)(y^2 + x^2) = 1/2 (1/3 + 1/6 + 1/3 + 1/4) = 13/24
#   u = yz,  nu = 1 + 2x:  1/2 int (1 + 2x) * int (z^2 + y^2) = 1/2 * 2 * 2/3 = 2/3
#   u = xyz, nu = 1 + x + 2y + 3z: the three directions weigh differently,
#     int nu y^2 z^2 = 1/9 + 1/18 + 2/12 + 3/12 = 7/12,  int nu x^2 z^2 = 1/9 + 1/12 + 2/18 + 3/12 = 5/9,
#     int nu x^2 y^2 = 1/9 + 1/12 + 2/12 + 3/18 = 19/36;  J = 1/2 (7/12 + 5/9 + 19/36) = 5/6
#   ... with f = 1 + 2y:  int f u = 1/8 + 2/12 = 7/24, so J = 5/6 - 7/24 = 13/24
EXACT = {
    "u=xy nu=1+y": (lambda x, y, z: x * y, lambda x, y, z: 1 + y, None, 13 / 24),
    "u=yz nu=1+2x": (lambda x, y, z: y * z, lambda x, y, z: 1 + 2 * x, None, 2 / 3),
    "u=xyz nu=1+x+2y+3z": (lambda x, y, z: x * y * z, lambda x, y, z: 1 + x + 2 * y + 3 * z, None, 5 / 6),
    "u=xyz nu=1+x+2y+3z f=1+2y": (lambda x, y, z: x * y * z, lambda x, y, z: 1 + x + 2 * y + 3 * z,
                                  lambda x, y, z: 1 + 2 * y, 13 / 24),
}


@pytest.mark.parametrize("n", [3, 6])
@pytest.mark.parametrize("case", sorted(EXACT))
def test_energy_of_trilinear_fields_is_the_exact_integral(case, n):
    u_of, nu_of, f_of, expected = EXACT[case]
    x, y, z = grid(n)
    u, nu, f = u_of(x, y, z), nu_of(x, y, z), None if f_of is None else f_of(x, y, z)
    assert fem.energy(batch(u), batch(nu), None if f is None else batch(f)).numpy()[0] == pytest.approx(
        expected, rel=1e-6)
    assert solvers.energy(u, nu, f) == pytest.approx(expected, rel=1e-12)


def test_one_element_energy_is_the_exact_integral():
    x, y, z = grid(2)
    assert solvers.energy(x * y, 1 + y) == pytest.approx(13 / 24, rel=1e-12)


@pytest.mark.parametrize("n", [3, 6])
def test_stiffness_is_the_bilinear_form_of_the_exact_integral(n):
    # v^T K u = int nu grad u . grad v for trilinear u, v, nu (exact as above). u = xyz, v = xy, nu = 1 + x + 2y + 3z:
    #   int nu (y^2 z + x^2 z) = (1/6 + 1/12 + 2/8 + 3/9) + (1/6 + 1/8 + 2/12 + 3/9) = 5/6 + 19/24 = 13/8,
    # and u^T K u = 2 J = 5/3. The TF energy's gradient is K u, so <dJ/du, v> gives the same numbers.
    x, y, z = grid(n)
    u, v, nu = x * y * z, x * y, 1 + x + 2 * y + 3 * z
    k = solvers.stiffness(nu)
    assert v.ravel() @ (k @ u.ravel()) == pytest.approx(13 / 8, rel=1e-12)
    assert u.ravel() @ (k @ u.ravel()) == pytest.approx(5 / 3, rel=1e-12)
    ku = fem_gradient(u, nu)
    assert float(np.sum(ku * v)) == pytest.approx(13 / 8, rel=1e-6)
    assert float(np.sum(ku * u)) == pytest.approx(5 / 3, rel=1e-6)


def stencil(h, centre, face, edge, corner):
    """[3, 3, 3] stencil by neighbour kind: the number of nonzero offsets (0 centre, 1 face, 2 edge, 3 corner)."""
    kinds = np.add.reduce(np.indices((3, 3, 3)) != 1)
    return np.choose(kinds, [centre * h, face * h, edge * h, corner * h])


def test_q1_stencil_at_unit_diffusivity():
    # The trilinear element matrix of -Laplace (exact with 2x2x2 Gauss) has diagonal h/3, 0 for the 3 nodes
    # across a face, -h/12 across a face diagonal and across the body diagonal. An interior node sums its 8
    # elements: 8h/3 at the centre, 0 to the 6 face neighbours, -h/6 to the 12 edge and -h/12 to the 8
    # corner neighbours (rows sum to zero).
    n = 5
    h = 1.0 / (n - 1)
    nu = np.ones((n, n, n))
    k = solvers.stiffness(nu)
    for node, expected in [((2, 2, 2), stencil(h, 8 / 3, 0, -1 / 6, -1 / 12)),
                           ((0, 0, 0), stencil(h, 1 / 3, 0, -1 / 12, -1 / 12)[1:, 1:, 1:])]:
        e = np.zeros((n, n, n))
        e[node] = 1.0
        window = tuple(slice(max(c - 1, 0), c + 2) for c in node)
        # the assembled float64 column to rounding; the float32 TF gradient to float32 rounding of the centre
        # value (a wrong table or Gauss ordering is off by ~h/12, 1e5 times more)
        for column, atol in (((k @ e.ravel()).reshape(e.shape), 1e-12), (fem_gradient(e, nu), 1e-6)):
            np.testing.assert_allclose(column[window], expected, rtol=0, atol=atol)
            column[window] = 0.0
            np.testing.assert_allclose(column, 0.0, atol=1e-6 * h)  # nothing beyond the nearest neighbours


# A manufactured solution varying in all three directions with the problem's boundary conditions:
# u = 1 - x + A sin(pi x) cos(pi y) cos(2 pi z) (u = 1, 0 on x = 0, 1; du/dn = 0 on the other faces), nu = exp(c . x),
# f = -div(nu grad u) = -nu (c . grad u + lap u), lap u = -6 pi^2 A sin(pi x) cos(pi y) cos(2 pi z).
A, C = 0.3, (0.5, -0.4, 0.3)


def manufactured(n):
    x, y, z = grid(n)
    s = np.sin(np.pi * x) * np.cos(np.pi * y) * np.cos(2 * np.pi * z)
    grad = (-1 + A * np.pi * np.cos(np.pi * x) * np.cos(np.pi * y) * np.cos(2 * np.pi * z),
            -A * np.pi * np.sin(np.pi * x) * np.sin(np.pi * y) * np.cos(2 * np.pi * z),
            -2 * A * np.pi * np.sin(np.pi * x) * np.cos(np.pi * y) * np.sin(2 * np.pi * z))
    nu = np.exp(C[0] * x + C[1] * y + C[2] * z)
    f = -nu * (sum(c * g for c, g in zip(C, grad)) - 6 * np.pi ** 2 * A * s)
    return 1 - x + A * s, nu, f


def rates(errors):
    return np.log2(np.array(errors[:-1]) / np.array(errors[1:]))


def test_reference_solution_converges_to_a_3d_manufactured_solution_at_second_order():
    errors = []
    for n in (9, 17, 33):
        u, nu, f = manufactured(n)
        u_h, _ = solvers.solve(nu, f=f)
        errors.append(np.abs(u_h - u).max())
    assert errors[-1] < 1e-3 and np.all(rates(errors) > 1.9), errors


def test_energy_gradient_is_consistent_with_the_pde_at_second_order():
    # dJ/du = K u - M f at the free nodes is the discrete residual of the exact solution's nodal values: per unit
    # volume (h^3) it vanishes at second order, so the TF energy discretizes -div(nu grad u) = f in every direction.
    residuals = []
    for n in (17, 33, 65):
        u, nu, f = manufactured(n)
        ut = tf.Variable(batch(u))
        with tf.GradientTape() as tape:
            j = tf.reduce_sum(fem.energy(ut, batch(nu), batch(f)))
        r = tape.gradient(j, ut).numpy()[0, 1:-1, ..., 0]  # the free nodes (x planes 1 .. N-2)
        residuals.append(np.sqrt(np.mean(r.astype(np.float64) ** 2)) * (n - 1) ** 3)
    assert residuals[-1] < 0.01 and np.all(rates(residuals) > 1.8), residuals
