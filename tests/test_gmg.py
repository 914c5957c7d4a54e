"""The matrix-free geometric multigrid reference solver (poisson_tf.solvers.gmg) and the dispatch of solvers.solve."""
import numpy as np
import pytest

from poisson_tf import fields, metrics
from poisson_tf.solvers import gmg
from poisson_tf import solvers
from test_reference import layered, series_solution

HIGH_CONTRAST = [[3, -3, 3, -3], [-3, 3, -3, 3]]  # the corners of w in [-3, 3]^4: nu spans 1e5 and more


def sobol(num, seed=0):
    return list(fields.sample_coeffs(num, seed=seed, method="sobol"))


def kl(coeffs, n):
    return fields.kl_diffusivity(coeffs, n)


@pytest.mark.parametrize("n, chunk, threads", [(3, 1 << 15, 1), (9, 7, 2), (17, 50, 2), (24, 1 << 15, 2)])
@pytest.mark.parametrize("store", [False, True])
def test_operator_and_diagonal_equal_the_assembled_matrix(n, chunk, threads, store):
    nu = kl(HIGH_CONTRAST[0], n)
    k = solvers.stiffness(nu)
    u = np.random.default_rng(n).normal(size=nu.shape)
    op = gmg.Stiffness(nu, store_weights=store, threads=threads, chunk_elements=chunk)
    expected = (k @ u.ravel()).reshape(u.shape)
    np.testing.assert_allclose(op.apply(u), expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(op.diagonal().ravel(), k.diagonal(), rtol=1e-12)
    out = np.ones_like(u)
    op.apply(u, out, alpha=-1.0, accumulate=True)  # the residual update of CG and the smoother
    np.testing.assert_allclose(out, 1.0 - expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_float32_operator_and_the_two_plane_dirichlet_response():
    nu = kl(sobol(1)[0], 12)
    k = solvers.stiffness(nu)
    u = np.random.default_rng(0).normal(size=nu.shape)
    expected = (k @ u.ravel()).reshape(u.shape)
    got = gmg.Stiffness(nu, dtype=np.float32, store_weights=True).apply(u.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    g = solvers.dirichlet_values(12)
    np.testing.assert_allclose(gmg._dirichlet_response(nu, None), (k @ g.ravel()).reshape(g.shape)[1], rtol=1e-12)


def test_assembly_is_symmetric_and_matches_at_two_nodes_per_axis():
    nu = kl(sobol(1)[0], 2)  # two stencil offsets share a diagonal at N = 2
    k = solvers.stiffness(nu)
    u = np.random.default_rng(2).normal(size=nu.shape)
    assert abs(k - k.T).max() == 0
    np.testing.assert_allclose(k @ u.ravel(), gmg.Stiffness(nu).apply(u).ravel(), atol=1e-14)


def test_mass_and_transfers():
    f = np.random.default_rng(3).normal(size=(7, 7, 7))
    np.testing.assert_allclose(gmg.mass_apply(f).ravel(), solvers.mass(7) @ f.ravel(), rtol=1e-12)
    p = gmg.linear_map(5, 9)  # coarse 5 -> fine 9: nested, every other fine node is a coarse node
    np.testing.assert_allclose(p @ np.linspace(0, 1, 5), np.linspace(0, 1, 9), atol=1e-15)  # exact for linears
    assert np.allclose(p.sum(axis=1), 1)
    p = gmg.linear_map(32, 64)  # not nested (63 fine elements)
    np.testing.assert_allclose(p @ np.linspace(0, 1, 32) ** 1, np.linspace(0, 1, 64), atol=1e-14)
    rng = np.random.default_rng(4)
    c, x = rng.normal(size=(32, 32, 32)), rng.normal(size=(64, 64, 64))
    fine = gmg.tensor_apply(p, c)
    coarse = gmg.tensor_apply(p.T.tocsr(), x)  # R = P^T
    assert np.vdot(x, fine) == pytest.approx(np.vdot(coarse, c), rel=1e-12)


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_v_cycle_is_symmetric_positive_definite(dtype, tolerance):
    nu = kl(HIGH_CONTRAST[0], 40)
    m = gmg.VCycle(nu, coarsest=9, dtype=dtype)
    assert m.resolutions == [40, 20, 10, 5]
    rng = np.random.default_rng(5)
    x, y = (gmg._zero_dirichlet(rng.normal(size=nu.shape)) for _ in range(2))
    mx, my = m(x, np.zeros_like(x)), m(y, np.zeros_like(y))
    assert np.vdot(y, mx) == pytest.approx(np.vdot(x, my), rel=tolerance)
    assert np.vdot(x, mx) > 0 and np.vdot(y, my) > 0
    assert np.all(mx[0] == 0) and np.all(mx[-1] == 0)  # Dirichlet planes stay eliminated


@pytest.mark.parametrize("n", [32, 64])
def test_agrees_with_the_assembled_amg_solver_at_high_contrast(n):
    for coeffs in HIGH_CONTRAST[:1] + sobol(1):
        nu = kl(coeffs, n)
        u_amg, amg = solvers.solve(nu, method="amg")
        u_gmg, rec = solvers.solve(nu, method="gmg")
        assert rec.method == "gmg" and amg.method == "amg"
        assert rec.relative_residual <= 1e-10 and not rec.stopped
        assert np.linalg.norm(u_gmg - u_amg) / np.linalg.norm(u_amg) <= 1e-8
        assert rec.energy == pytest.approx(amg.energy, rel=1e-9)
        assert np.all(u_gmg[0] == 1) and np.all(u_gmg[-1] == 0)


@pytest.mark.parametrize("n", [32, 33])  # 31 elements per axis (coarse grids not nested) and 32 (nested)
def test_layered_nu_is_exact_series_conductance(n):
    nu = layered(lambda x: np.exp(3.0 * np.sin(5 * x)), n)  # contrast e^6 ~ 400 across the layers
    u, record = solvers.solve(nu, method="gmg")
    expected, current = series_solution(nu[:, 0, 0])
    np.testing.assert_allclose(u, np.broadcast_to(expected[:, None, None], u.shape), atol=1e-9)
    assert 2 * record.energy == pytest.approx(current, rel=1e-9)  # 2J = flux


def test_iterations_do_not_grow_with_resolution():
    iterations = {n: [solvers.solve(kl(c, n), method="gmg")[1].iterations for c in HIGH_CONTRAST + sobol(2)]
                  for n in (24, 32, 64)}
    assert max(iterations[64]) <= 12, iterations
    assert max(iterations[64]) - min(iterations[32]) <= 3, iterations


def test_source_energy_and_warm_start():
    nu = kl(sobol(1, seed=3)[0], 20)
    f = np.random.default_rng(6).normal(size=nu.shape)
    u, record = gmg.solve(nu, f=f, coarsest=9)
    u_amg, _ = solvers.solve(nu, f=f, method="amg")
    assert np.linalg.norm(u - u_amg) / np.linalg.norm(u_amg) <= 1e-8
    assert record.energy == pytest.approx(solvers.energy(u, nu, f), rel=1e-10)
    cold = gmg.solve(nu, coarsest=9)[1]
    u_ref = gmg.solve(nu, rtol=1e-12, coarsest=9)[0]
    warm = gmg.solve(nu, x0=u_ref + 1e-6, coarsest=9)[1]
    assert warm.iterations < cold.iterations and warm.initial_relative_residual < 1e-3


@pytest.mark.parametrize("method", ["amg", "gmg"])
def test_stop_ends_cg_at_a_target_error(method):
    nu = kl(sobol(1, seed=4)[0], 24)
    u_ref, full = solvers.solve(nu, rtol=1e-12, method=method)
    seen = []

    def reached(u):
        seen.append(np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref))
        return seen[-1] <= 1e-3

    u, record = solvers.solve(nu, rtol=1e-12, method=method, stop=reached)
    assert record.stopped and record.iterations == len(seen) < full.iterations
    assert seen[-1] <= 1e-3 < seen[0]
    assert np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref) == pytest.approx(seen[-1])
    assert record.relative_residual > 1e-12


def test_dispatch_picks_the_method_by_size_and_rejects_unknown_ones():
    small, large = solvers.AUTO_GMG_RESOLUTION - 1, solvers.AUTO_GMG_RESOLUTION
    assert solvers.solve(kl(sobol(1)[0], small))[1].method == "amg"
    assert solvers.solve(kl(sobol(1)[0], large))[1].method == "gmg"
    assert solvers.solve(kl(sobol(1)[0], 9), method="gmg")[1].method == "gmg"
    assert solvers.solve(kl(sobol(1)[0], 2), method="gmg")[1].iterations == 0  # no free nodes
    with pytest.raises(ValueError, match="method must be one of"):
        solvers.solve(kl(sobol(1)[0], 9), method="multigrid")
    with pytest.raises(ValueError, match="x0 must be finite"):
        solvers.solve(kl(sobol(1)[0], 9), method="gmg", x0=np.full((9, 9, 9), np.nan))


def test_failures_are_errors_not_results(monkeypatch):
    nu = kl(HIGH_CONTRAST[0], 30)
    with pytest.raises(RuntimeError, match="did not reach rtol"):
        solvers.solve(nu, method="gmg", maxiter=2)

    def broken(self, r, out):
        out[...] = np.nan
        return out

    monkeypatch.setattr(gmg.VCycle, "__call__", broken)
    with pytest.raises(RuntimeError, match="non-finite"):
        solvers.solve(nu, method="gmg")


def test_metrics_energy_and_flux_are_float64_exact():
    nu = kl(sobol(1, seed=5)[0], 11)
    u_ref, record = solvers.solve(nu, rtol=1e-12)
    u = u_ref.copy()
    u[1:-1] += 0.01 * np.random.default_rng(7).normal(size=u[1:-1].shape)
    k = solvers.stiffness(nu)
    j_u, flux_u = metrics.energy_and_flux(gmg.Stiffness(nu), u.astype(np.float32))
    u32 = u.astype(np.float32).astype(np.float64).ravel()
    assert j_u == pytest.approx(0.5 * u32 @ (k @ u32), rel=1e-12)
    assert flux_u == pytest.approx((k @ u32).reshape(nu.shape)[0].sum(), rel=1e-12)
    m = metrics.field_metrics(u[None, ..., None], u_ref[None, ..., None], nu[None, ..., None])[0]
    gap = 0.5 * (u - u_ref).ravel() @ (k @ (u - u_ref).ravel()) / record.energy
    assert m["energy_gap"] == pytest.approx(gap, rel=1e-6)


def test_memory_estimate_matches_the_hierarchy():
    nu = kl(sobol(1)[0], 48)
    estimate = gmg.memory_estimate(48)
    cycle = gmg.VCycle(nu)
    cycle(gmg._zero_dirichlet(np.ones(nu.shape)), np.zeros(nu.shape))  # allocates the chunk buffers
    held = cycle.nbytes()
    assert held["levels"] == estimate["levels"]  # weights and vectors: exact
    assert held["coarsest"] <= estimate["coarsest"] and held["workspaces"] <= estimate["workspaces"]
    assert estimate["operator_weights"] == 12 * 8 * 47 * 48 ** 2 and estimate["cg_vectors"] == 40 * 48 ** 3
    assert estimate["total"] == sum(v for k, v in estimate.items() if k != "total")


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("POISSON_TF_GMG_THREADS", "1")
    assert gmg.default_threads() == 1
    monkeypatch.setenv("POISSON_TF_GMG_THREADS", "two")
    with pytest.raises(ValueError, match="POISSON_TF_GMG_THREADS"):
        gmg.default_threads()
    monkeypatch.delenv("POISSON_TF_GMG_THREADS")
    assert 1 <= gmg.default_threads() <= 2
