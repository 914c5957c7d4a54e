"""The TensorFlow FEM energy (DESIGN.md section 4) against the sparse assembly it must equal."""
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import fem, fields, solvers


def batch(x):
    return tf.constant(np.asarray(x)[None, ..., None], tf.float32)


def random_problem(n, seed):
    rng = np.random.default_rng(seed)
    nu = fields.kl_diffusivity(rng.uniform(-3, 3, 4), n)
    u = rng.uniform(0, 1, (n, n, n))
    return u, nu


@pytest.mark.parametrize("n", [2, 5, 16])
def test_linear_profile_energy_is_half_nu(n):
    nu = 3.7
    u = fem.linear_guess(n, batch_size=2)
    j = fem.energy(u, nu * tf.ones_like(u)).numpy()
    np.testing.assert_allclose(j, [nu / 2, nu / 2], rtol=1e-5)  # float32 sum of ~N^3 terms


@pytest.mark.parametrize("n, seed", [(4, 0), (9, 1), (12, 2)])
def test_energy_equals_half_u_k_u(n, seed):
    u, nu = random_problem(n, seed)
    expected = 0.5 * u.ravel() @ (solvers.stiffness(nu) @ u.ravel())
    assert fem.energy(batch(u), batch(nu)).numpy()[0] == pytest.approx(expected, rel=2e-5)
    assert solvers.energy(u, nu) == pytest.approx(expected, rel=1e-13)


def test_energy_with_source_matches_mass_matrix():
    u, nu = random_problem(7, 3)
    f = np.random.default_rng(4).normal(size=(7, 7, 7))
    expected = solvers.energy(u, nu, f)
    assert fem.energy(batch(u), batch(nu), batch(f)).numpy()[0] == pytest.approx(expected, rel=2e-5)
    assert solvers.mass(7).sum() == pytest.approx(1.0, rel=1e-13)  # integral of 1 over the cube


def test_energy_gradient_is_stiffness_times_u():
    u, nu = random_problem(8, 5)
    ut = tf.Variable(batch(u))
    with tf.GradientTape() as tape:
        j = tf.reduce_sum(fem.energy(ut, batch(nu)))
    grad = tape.gradient(j, ut).numpy()[0, ..., 0]
    ku = (solvers.stiffness(nu) @ u.ravel()).reshape(u.shape)
    np.testing.assert_allclose(grad, ku, rtol=1e-4, atol=1e-5 * np.abs(ku).max())


def test_energy_is_per_sample():
    u1, nu1 = random_problem(6, 6)
    u2, nu2 = random_problem(6, 7)
    both = fem.energy(tf.constant(np.stack([u1, u2])[..., None], tf.float32),
                      tf.constant(np.stack([nu1, nu2])[..., None], tf.float32)).numpy()
    np.testing.assert_allclose(both, [solvers.energy(u1, nu1), solvers.energy(u2, nu2)], rtol=2e-5)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_inputs_accumulate_in_float32(dtype):
    u, nu = random_problem(10, 8)
    j = fem.energy(tf.cast(batch(u), dtype), tf.cast(batch(nu), dtype))
    assert j.dtype == tf.float32
    # The energy of the rounded inputs in float64: only float32 round-off may separate them (a 16-bit sum or
    # product would be off by ~1e-3 relative).
    rounded_u, rounded_nu = (tf.cast(tf.cast(x, dtype), tf.float64).numpy() for x in (u, nu))
    assert j.numpy()[0] == pytest.approx(solvers.energy(rounded_u, rounded_nu), rel=2e-5)


def test_apply_dirichlet_sets_exact_planes_only():
    u = tf.random.uniform([2, 6, 6, 6, 1], seed=1)
    out = fem.apply_dirichlet(u).numpy()
    assert np.all(out[:, 0] == 1.0) and np.all(out[:, -1] == 0.0)
    np.testing.assert_array_equal(out[:, 1:-1], u.numpy()[:, 1:-1])
    half = fem.apply_dirichlet(tf.cast(u, tf.bfloat16))
    assert half.dtype == tf.bfloat16 and np.all(half.numpy()[:, 0] == 1)


def test_energy_works_inside_tf_function_with_unknown_resolution():
    fn = tf.function(fem.energy, input_signature=[tf.TensorSpec([None, None, None, None, 1])] * 2)
    u = fem.linear_guess(9)
    assert fn(u, 2 * tf.ones_like(u)).numpy()[0] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("u_shape, nu_shape, nu_value, message", [
    ([1, 5, 5, 5], [1, 5, 5, 5], 1.0, r"u must have shape \[batch, N, N, N, 1\]"),
    ([1, 5, 5, 5, 2], [1, 5, 5, 5, 2], 1.0, r"u must have shape"),
    ([1, 5, 5, 4, 1], [1, 5, 5, 4, 1], 1.0, "must be a cube"),
    ([1, 1, 1, 1, 1], [1, 1, 1, 1, 1], 1.0, "at least N = 2"),
    ([1, 5, 5, 5, 1], [1, 6, 6, 6, 1], 1.0, "nu has shape .* but u has shape"),
    ([1, 5, 5, 5, 1], [1, 5, 5, 5, 1], -1.0, "must be finite and positive"),
    ([1, 5, 5, 5, 1], [1, 5, 5, 5, 1], np.nan, "must be finite and positive"),
])
def test_bad_input_gets_a_clear_error(u_shape, nu_shape, nu_value, message):
    with pytest.raises(ValueError, match=message):
        fem.energy(tf.zeros(u_shape), tf.fill(nu_shape, nu_value))


def test_reaction_flux_of_the_solution_is_twice_its_energy():
    nu = fields.kl_diffusivity(fields.sample_coeffs(1, seed=9)[0], 9)
    u, _ = solvers.solve(nu)
    flux = fem.boundary_flux(batch(u), batch(nu)).numpy()[0]
    assert flux == pytest.approx(2 * solvers.energy(u, nu), rel=1e-5)
    ku = solvers.stiffness(nu) @ u.ravel()
    assert flux == pytest.approx(ku.reshape(u.shape)[0].sum(), rel=1e-5)


def test_energy_gradient_in_nu_is_the_energy_of_the_direction():
    # J is linear in nu (K(nu) is), so <dJ/dnu, v> = 1/2 u^T K(v) u for any positive field v.
    u, nu = random_problem(7, 9)
    v = np.random.default_rng(10).uniform(0.5, 2.0, nu.shape)
    nut = tf.Variable(batch(nu))
    with tf.GradientTape() as tape:
        j = tf.reduce_sum(fem.energy(batch(u), nut))
    directional = float(tf.reduce_sum(tape.gradient(j, nut) * batch(v)))
    assert directional == pytest.approx(solvers.energy(u, v), rel=2e-5)
