"""The AMG reference solver (DESIGN.md section 5): exact cases, convergence, minimality."""
import numpy as np
import pytest
from scipy import integrate

from poisson_tf import fields, solvers


def series_solution(nu_x):
    """Exact discrete solution for nu(x): 1D conductances c_i = mean(nu_i, nu_i+1) / h in series."""
    n = len(nu_x)
    h = 1.0 / (n - 1)
    resistance = h / (0.5 * (nu_x[:-1] + nu_x[1:]))
    current = 1.0 / resistance.sum()
    return 1.0 - current * np.concatenate([[0.0], np.cumsum(resistance)]), current


def layered(nu_of_x, n):
    x = np.linspace(0, 1, n)
    return np.broadcast_to(nu_of_x(x)[:, None, None], (n, n, n)).copy()


def test_constant_nu_gives_linear_solution():
    u, record = solvers.solve(np.full((9, 9, 9), 2.5))
    x = np.linspace(0, 1, 9)
    np.testing.assert_allclose(u, np.broadcast_to((1 - x)[:, None, None], u.shape), atol=1e-11)
    assert solvers.energy(u, np.full((9, 9, 9), 2.5)) == pytest.approx(1.25, rel=1e-10)
    assert record.relative_residual <= 1e-10


def test_layered_nu_is_exact_series_conductance():
    nu_of_x = lambda x: np.exp(2.0 * np.sin(5 * x))  # noqa: E731
    nu = layered(nu_of_x, 11)
    u, record = solvers.solve(nu)
    expected, current = series_solution(nu[:, 0, 0])
    np.testing.assert_allclose(u, np.broadcast_to(expected[:, None, None], u.shape), atol=1e-9)
    assert 2 * solvers.energy(u, nu) == pytest.approx(current, rel=1e-9)  # 2J = flux


def test_layered_solution_converges_at_second_order():
    nu_of_x = lambda x: 1.0 / (1.5 + np.sin(2 * np.pi * x))  # noqa: E731
    total = integrate.quad(lambda t: 1 / nu_of_x(t), 0, 1, epsabs=1e-14)[0]
    errors = []
    for n in (9, 17, 33):
        u, _ = solvers.solve(layered(nu_of_x, n))
        x = np.linspace(0, 1, n)
        exact = np.array([1 - integrate.quad(lambda t: 1 / nu_of_x(t), 0, xi, epsabs=1e-14)[0] / total
                          for xi in x])
        errors.append(np.max(np.abs(u[:, n // 2, n // 2] - exact)))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.8), (errors, rates)


def test_solution_minimizes_energy():
    nu = fields.kl_diffusivity(fields.sample_coeffs(1, seed=11)[0], 10)
    u, _ = solvers.solve(nu)
    j0 = solvers.energy(u, nu)
    rng = np.random.default_rng(0)
    for _ in range(5):
        du = np.zeros_like(u)
        du[1:-1] = 1e-3 * rng.normal(size=du[1:-1].shape)
        assert solvers.energy(u + du, nu) > j0


def test_kl_sample_reaches_tolerance_and_warm_start_saves_iterations():
    nu = fields.kl_diffusivity(fields.sample_coeffs(1, seed=12)[0], 17)
    u, cold = solvers.solve(nu, rtol=1e-10)
    assert cold.relative_residual <= 1e-10 and cold.iterations > 0
    assert np.all(u >= -1e-9) and np.all(u <= 1 + 1e-9)  # maximum principle
    u_warm, warm = solvers.solve(nu, rtol=1e-10, x0=u + 1e-6)
    assert warm.iterations < cold.iterations
    np.testing.assert_allclose(u_warm, u, atol=1e-8)


@pytest.mark.parametrize("call, message", [
    (lambda: solvers.solve(np.ones((5, 5))), r"shape \[N, N, N\]"),
    (lambda: solvers.solve(np.ones((5, 5, 4))), r"shape \[N, N, N\]"),
    (lambda: solvers.solve(np.ones((1, 1, 1))), "N >= 2"),
    (lambda: solvers.solve(-np.ones((5, 5, 5))), "finite and positive"),
    (lambda: solvers.solve(np.full((5, 5, 5), np.inf)), "finite and positive"),
    (lambda: solvers.solve(np.ones((5, 5, 5)), rtol=0), "rtol"),
    (lambda: solvers.solve(np.ones((5, 5, 5)), x0=np.ones((4, 4, 4))), "x0"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_solve_record_carries_the_energy_of_the_solution():
    nu = fields.kl_diffusivity(fields.sample_coeffs(1, seed=13)[0], 9)
    f = np.random.default_rng(1).normal(size=nu.shape)
    for source in (None, f):
        u, record = solvers.solve(nu, f=source)
        assert record.energy == pytest.approx(solvers.energy(u, nu, source), rel=1e-12)
