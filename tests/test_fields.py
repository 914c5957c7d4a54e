"""The KL diffusivity family of DESIGN.md section 3."""
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import fields

DESIGN_ROOTS = [1.720667178038759, 4.057515676220868, 6.851236918963457, 9.826360878869767]


def test_roots_match_design_values():
    np.testing.assert_allclose(fields.kl_roots(4, 0.5), DESIGN_ROOTS, rtol=0, atol=1e-12)


@pytest.mark.parametrize("eta", [0.05, 0.3, 1.0, 4.0])
def test_roots_solve_the_equation_one_per_interval(eta):
    roots = fields.kl_roots(6, eta)
    residual = (eta ** 2 * roots ** 2 - 1) * np.sin(roots) - 2 * eta * roots * np.cos(roots)
    assert np.max(np.abs(residual)) < 1e-9 * np.max(roots) ** 2
    intervals = np.floor(roots / np.pi)
    np.testing.assert_array_equal(intervals, np.arange(6))


def test_diffusivity_formula_at_one_point():
    w = np.array([0.7, -1.2, 2.0, 0.3])
    nu = fields.kl_diffusivity(w, 5)
    a = np.array(DESIGN_ROOTS)
    lam = 2 * 0.5 / (1 + (0.5 * a) ** 2)
    phi = lambda t: 0.5 * a * np.cos(a * t) + np.sin(a * t)  # noqa: E731
    x, y, z = 0.25, 0.75, 1.0
    expected = np.exp(np.sum(w * lam ** 1.5 * phi(x) * phi(y) * phi(z)))
    assert nu[1, 3, 4] == pytest.approx(expected, rel=1e-13)


def test_batch_equals_single_and_shapes():
    w = fields.sample_coeffs(3, seed=1)
    batch = fields.kl_diffusivity(w, 9)
    assert batch.shape == (3, 9, 9, 9)
    for b in range(3):
        np.testing.assert_allclose(batch[b], fields.kl_diffusivity(w[b], 9), rtol=1e-14)


def test_same_field_at_every_resolution():
    w = fields.sample_coeffs(1, seed=3)[0]
    coarse, fine = fields.kl_diffusivity(w, 17), fields.kl_diffusivity(w, 33)
    np.testing.assert_allclose(fine[::2, ::2, ::2], coarse, rtol=1e-12)  # nested grids: every coarse node
    a, b = fields.kl_diffusivity(w, 16), fields.kl_diffusivity(w, 32)  # N and 2N share the cube corners
    corners = np.ix_([0, -1], [0, -1], [0, -1])
    np.testing.assert_allclose(a[corners], b[corners], rtol=1e-12)


def test_symmetric_under_axis_swaps():
    nu = fields.kl_diffusivity(fields.sample_coeffs(1, seed=4)[0], 12)
    np.testing.assert_allclose(nu, nu.transpose(0, 2, 1), rtol=1e-12)
    np.testing.assert_allclose(nu, nu.transpose(2, 1, 0), rtol=1e-12)


def test_tensorflow_twin_agrees_with_numpy():
    w = fields.sample_coeffs(2, seed=5)
    expected = fields.kl_diffusivity(w, 16)
    got = fields.kl_diffusivity_tf(tf.constant(w, tf.float32), 16).numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-5)
    single = fields.kl_diffusivity_tf(w[0], 16).numpy()
    np.testing.assert_allclose(single, expected[0], rtol=2e-5)


def test_tensorflow_twin_inside_dataset_map():
    w = fields.sample_coeffs(4, seed=6).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(w).map(lambda c: fields.kl_diffusivity_tf(c, 8))
    got = np.stack(list(ds.as_numpy_iterator()))
    np.testing.assert_allclose(got, fields.kl_diffusivity(w, 8), rtol=2e-5)


@pytest.mark.parametrize("method", ["uniform", "sobol"])
def test_sampling_is_seeded_and_bounded(method):
    a = fields.sample_coeffs(64, 4, method, seed=7)
    b = fields.sample_coeffs(64, 4, method, seed=7)
    c = fields.sample_coeffs(64, 4, method, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (64, 4) and np.all(np.abs(a) <= 3.0)
    assert np.all(np.abs(a.mean(axis=0)) < 0.6)  # centred (Sobol: much closer)


def test_skip_draws_the_continuation_of_the_sequence():
    for method in ("uniform", "sobol"):
        whole = fields.sample_coeffs(12, 4, method, seed=2)
        tail = fields.sample_coeffs(4, 4, method, seed=2, skip=8)
        np.testing.assert_allclose(tail, whole[8:], rtol=1e-15)


def test_sobol_fills_space_better_than_uniform():
    def discrepancy(points):
        from scipy.stats import qmc
        return qmc.discrepancy((points + 3) / 6)
    assert discrepancy(fields.sample_coeffs(256, 4, "sobol", seed=0)) < \
        discrepancy(fields.sample_coeffs(256, 4, "uniform", seed=0))


@pytest.mark.parametrize("call, message", [
    (lambda: fields.kl_diffusivity([1.0, 2.0], 1), "resolution must be an integer"),
    (lambda: fields.kl_diffusivity([1.0, 2.0], 8.5), "resolution must be an integer"),
    (lambda: fields.kl_diffusivity([1.0, np.nan], 8), "coeffs must be finite"),
    (lambda: fields.kl_diffusivity(np.ones((2, 2, 2)), 8), "coeffs must have shape"),
    (lambda: fields.kl_diffusivity([1.0], 8, eta=-0.5), "eta"),
    (lambda: fields.kl_roots(0), "num_terms"),
    (lambda: fields.sample_coeffs(4, method="halton"), "sampling method"),
    (lambda: fields.check_diffusivity(np.array([1.0, 0.0, 2.0])), r"nu\[1\] = "),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- Families (docs/design.rst s.10) ---------------------------------------------------------------------------

def test_mode_norms_are_the_l2_norms_of_the_modes():
    from scipy import integrate

    for eta in (0.1, 0.5):
        roots = fields.kl_roots(6, eta)
        numeric = [np.sqrt(integrate.quad(lambda t, a=a: (eta * a * np.cos(a * t) + np.sin(a * t)) ** 2, 0, 1,
                                          epsabs=1e-13)[0]) for a in roots]
        np.testing.assert_allclose(fields.mode_norms(6, eta), numeric, rtol=1e-10)


def test_grf_terms_are_the_triples_of_largest_eigenvalue_products():
    triples, products = fields._grf_terms(200, 0.1)
    _, lam = fields.kl_eigenpairs(40, 0.1)
    every = np.sort(np.einsum("i,j,k->ijk", lam, lam, lam).ravel())[::-1]
    np.testing.assert_allclose(products, every[:200], rtol=1e-12)
    np.testing.assert_allclose(products, lam[triples].prod(axis=1), rtol=1e-12)
    assert len({tuple(t) for t in triples}) == 200
    again, _ = fields._grf_terms.__wrapped__(200, 0.1)  # not the cached value: the same set, the same order
    np.testing.assert_array_equal(again, triples)


def test_grf_modes_are_the_eigenfunctions_of_the_exponential_kernel():
    # Mercer: sum_i lambda_i psi_i(s) psi_i(t) = exp(-|s - t| / eta) (the tail of the 1D sum is ~2 / (eta pi^2 K)).
    eta, t = 0.5, np.linspace(0, 1, 9)
    roots, lam = fields.kl_eigenpairs(2000, eta)
    phi, _ = fields.kl_modes(9, 2000, eta)
    psi = phi / fields.mode_norms(2000, eta)[:, None]
    np.testing.assert_allclose((lam[:, None] * psi).T @ psi, np.exp(-np.abs(t[:, None] - t) / eta), atol=2e-3)


def test_grf_field_has_sigma_squared_times_the_captured_eigenvalues_as_variance():
    # The psi are L2-normalized, so the domain average of the field's variance is sigma^2 times the sum of the
    # chosen eigenvalue products (sum_i lambda_i = 1, the kernel's trace, so at most sigma^2).
    eta, sigma = 0.2, 1.5
    triples, scale, psi = fields.grf_modes(4001, 300, eta)
    squares = np.trapezoid(psi ** 2, dx=1 / 4000, axis=1)
    np.testing.assert_allclose(squares, 1.0, rtol=1e-6)
    _, lam = fields.kl_eigenpairs(4000, eta)
    assert 0.5 < np.sum(scale ** 2) < 1.0 and np.sum(lam) == pytest.approx(1.0, abs=2e-3)
    # and at every node the draws' log nu has the variance sigma^2 sum_t lambda_t psi_i(x)^2 psi_j(y)^2 psi_k(z)^2
    family = fields.Family.of("grf", eta, 300, sigma=sigma)
    log_nu = np.log(family.diffusivity(family.sample(800, "uniform", seed=0), 5))
    triples, scale, psi = fields.grf_modes(5, 300, eta)
    expected = sigma ** 2 * np.einsum("t,tx,ty,tz->xyz", scale ** 2, psi[triples[:, 0]] ** 2,
                                      psi[triples[:, 1]] ** 2, psi[triples[:, 2]] ** 2)
    np.testing.assert_allclose(log_nu.var(axis=0), expected, rtol=0.2)  # 800 draws: ~5% sampling error


@pytest.mark.parametrize("kind", ["grf", "twophase"])
def test_the_tensorflow_field_is_the_numpy_field(kind):
    family = fields.Family.of(kind, num_terms=300)
    coeffs = family.sample(2, seed=3)
    nu = family.diffusivity(coeffs, 17)
    nu_tf = family.diffusivity_tf(coeffs, 17).numpy()
    assert nu.shape == nu_tf.shape == (2, 17, 17, 17)
    if kind == "grf":
        np.testing.assert_allclose(nu_tf, nu, rtol=2e-5)
    else:  # the two phases, the same at all but (float32) round-off nodes right at the threshold
        assert set(np.unique(nu)) == {1.0, 100.0} and np.mean(nu_tf == nu) > 0.999
        assert 0.3 < np.mean(nu > 1) < 0.7  # threshold 0: about equal fractions
    np.testing.assert_array_equal(family.diffusivity(coeffs[0], 17), nu[0])


def test_the_kl_family_is_the_kl_field_and_keeps_its_cache_key():
    family = fields.Family()
    coeffs = fields.sample_coeffs(3, seed=1)
    np.testing.assert_array_equal(family.diffusivity(coeffs, 9), fields.kl_diffusivity(coeffs, 9, 0.5))
    np.testing.assert_array_equal(family.sample(5, "sobol", 2), fields.sample_coeffs(5, 4, "sobol", 2))
    assert family.key() == np.float64(0.5).tobytes()  # reference caches written before families stay valid
    assert fields.Family.of("grf").key() != fields.Family.of("grf", sigma=2.0).key()


def test_family_defaults_parameters_and_round_trip():
    assert (fields.Family.of("grf").eta, fields.Family.of("grf").num_terms) == (0.1, 1024)
    assert (fields.Family.of("kl").eta, fields.Family.of("kl").num_terms) == (0.5, 4)
    twophase = fields.Family.of("twophase", contrast=1e4, threshold=0.5)
    assert twophase.params() == {"kind": "twophase", "eta": 0.1, "num_terms": 1024, "sigma": 1.0,
                                 "contrast": 1e4, "threshold": 0.5}
    assert fields.Family.from_params(twophase.params()) == twophase
    assert "sigma" not in fields.Family().params()
    assert twophase.describe() == "twophase (eta 0.1, 1024 terms, sigma 1, contrast 10000, threshold 0.5)"


def test_grf_samples_are_standard_normal_and_seeded():
    family = fields.Family.of("grf", num_terms=64)
    for method in ("sobol", "uniform"):
        w = family.sample(512, method, seed=4)
        assert w.shape == (512, 64) and abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.03
        np.testing.assert_array_equal(w, family.sample(512, method, seed=4))
        np.testing.assert_allclose(family.sample(12, method, seed=4, skip=500), w[500:], rtol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: fields.Family.of("gaussian"), r"family must be one of \('kl', 'grf', 'twophase'\)"),
    (lambda: fields.Family.of("grf", eta=0.0), "eta"),
    (lambda: fields.Family.of("grf", num_terms=0), "num_terms must be an integer in 1..8192"),
    (lambda: fields.Family.of("twophase", contrast=1.0), "contrast must be finite, > 0 and not 1"),
    (lambda: fields.Family.of("twophase", threshold=np.inf), "threshold must be finite"),
    (lambda: fields.Family.of("grf", sigma=-1.0), "sigma must be finite and > 0"),
    (lambda: fields.Family.of("grf", num_terms=8).diffusivity(np.ones(4), 8), "has 8 terms"),
    (lambda: fields.Family.from_params({"kind": "kl", "colour": 1}), "not a diffusivity family"),
])
def test_bad_family_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
