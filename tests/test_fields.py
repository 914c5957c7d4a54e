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
