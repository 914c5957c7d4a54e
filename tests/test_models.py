"""The resolution-agnostic U-Net solvers."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import fields, models


def nu_batch(n, batch=1, seed=0):
    return tf.constant(fields.kl_diffusivity(fields.sample_coeffs(batch, seed=seed), n)[..., None], tf.float32)


@pytest.mark.parametrize("name, resolutions", [("tiny", (16, 32, 64)), ("small", (16, 32, 64)),
                                               ("reference", (32, 64))])
def test_one_set_of_weights_at_every_resolution(name, resolutions):
    model = models.build_model(name)
    for n in resolutions:
        u = model(nu_batch(n, batch=2), training=False).numpy()
        assert u.shape == (2, n, n, n, 1)
        assert np.abs(u[0, 1:-1] - u[1, 1:-1]).max() > 1e-4  # the prediction depends on nu


@pytest.mark.parametrize("prior, interior", [("linear", lambda x: 1 - x), ("none", lambda x: np.full_like(x, 0.5))])
def test_a_head_without_correction_predicts_the_prior(prior, interior):
    # With the head's weights zero the network adds no correction: the linear prior gives u = 1 - x exactly
    # (exact for constant nu), no prior gives sigmoid(0) = 1/2 between the Dirichlet planes u = 1, 0.
    model = models.build_model(dataclasses.replace(models.preset("tiny"), output_prior=prior))
    head = model.get_layer("head")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    for n in (8, 16):
        x = np.linspace(0.0, 1.0, n)
        expected = np.concatenate([[1.0], interior(x[1:-1]), [0.0]])
        u = model(nu_batch(n, batch=2), training=False).numpy()
        np.testing.assert_allclose(u, np.broadcast_to(expected[None, :, None, None, None], u.shape), rtol=0, atol=1e-6)


def test_reference_preset_parameter_count():
    model = models.build_model("reference")
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 4_163_425
    assert not model.non_trainable_weights  # non-affine instance norm: no statistics, no parameters


@pytest.mark.parametrize("option", [
    dict(downsampling="pool"), dict(upsampling="upsample"), dict(normalization="batch"),
    dict(normalization="group"), dict(normalization="layer"), dict(normalization="none"),
    dict(encoder_activation="gelu", decoder_activation="silu"), dict(dropout=0.3),
    dict(input_features="nu"), dict(growth=1.5, kernel_size=2),
])
def test_every_option_changes_the_network(option):
    # Built from one seed, a network that ignored the option would have the same weights and outputs as the preset.
    nu = nu_batch(8, batch=2)

    def built(cfg):
        keras.utils.set_random_seed(0)
        model = models.build_model(cfg)
        return [tuple(w.shape) for w in model.weights], model(nu, training=True).numpy()

    tiny = models.preset("tiny")
    (base_shapes, base_u), (again_shapes, again_u) = built(tiny), built(tiny)
    assert again_shapes == base_shapes and np.array_equal(again_u, base_u)  # the comparison's premise
    shapes, u = built(dataclasses.replace(tiny, **option))
    assert u.shape == (2, 8, 8, 8, 1)
    assert shapes != base_shapes or np.abs(u - base_u).max() > 1e-4


def test_log_features_make_u_invariant_to_scaling_nu():
    model = models.build_model("tiny")
    nu = nu_batch(16)
    np.testing.assert_allclose(model(nu).numpy(), model(7.5 * nu).numpy(), atol=1e-5)


@pytest.mark.parametrize("n", [12, 20, 33])
def test_resolution_not_divisible_gets_a_clear_error(n):
    model = models.build_model("small")
    depth = models.preset("small").depth
    with pytest.raises(ValueError, match=rf"resolution {n} cannot pass a depth-{depth} U-Net: N must be a multiple"):
        model(tf.ones([1, n, n, n, 1]))


def test_bad_configuration_gets_a_clear_error():
    with pytest.raises(ValueError, match="normalization must be one of"):
        models.ModelConfig(normalization="weight")
    with pytest.raises(ValueError, match="unknown model preset 'huge'; valid presets"):
        models.preset("huge")
    assert models.valid_resolutions(3, 64) == [8, 16, 24, 32, 40, 48, 56, 64]


def test_save_and_load_round_trip(tmp_path):
    model = models.build_model("tiny")
    nu = nu_batch(16, seed=3)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(nu).numpy(), model(nu).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 2"):
        loaded(tf.ones([1, 10, 10, 10, 1]))


def test_flops_per_voxel_counts_convolutions():
    inputs = keras.Input((None, None, None, 1))
    x = models.DiffusivityFeatures(multiple=2, name="features")(inputs)
    x = keras.layers.Conv3D(4, 3, strides=2, padding="same", use_bias=False)(x)   # at N/2: 2*27*1*4 / 8
    x = keras.layers.Conv3DTranspose(2, 2, strides=2, padding="same")(x)          # per input voxel (N/2)^3
    model = keras.Model(inputs, x)
    expected = 2 * 27 * 4 / 8 + (2 * 8 * 4 * 2) / 8 + 2  # + bias adds per output value at N
    assert models.flops_per_voxel(model) == pytest.approx(expected)
    assert models.flops_per_voxel(model, probe=8) == pytest.approx(expected)
    assert models.flops_per_voxel(models.build_model("small")) > models.flops_per_voxel(models.build_model("tiny"))


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("c_in, c_out", [(3, 1), (4, 5)])
def test_upsample_conv_equals_upsampling_then_conv(kernel_size, c_in, c_out):
    # The sub-pixel form must be the same function and gradient as UpSampling3D(2) + Conv3D('same').
    x = tf.random.normal([2, 4, 6, 3, c_in], seed=kernel_size)
    layer = models.UpsampleConv3D(c_out, kernel_size)
    layer.build(x.shape)
    plain = keras.layers.Conv3D(c_out, kernel_size, padding="same")
    plain.build((None, None, None, None, c_in))
    plain.set_weights([layer.kernel.numpy(), np.random.default_rng(1).normal(size=c_out).astype(np.float32)])
    layer.bias.assign(plain.bias)
    dy = tf.random.normal([2, 8, 12, 6, c_out], seed=7)
    grads = []
    for fn, weights in ((layer, layer.trainable_variables), (lambda v: plain(keras.layers.UpSampling3D(2)(v)),
                                                              plain.trainable_variables)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * dy)
        grads.append([y] + tape.gradient(loss, [x] + list(weights)))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


def test_depth_to_space_places_parities():
    x = tf.reshape(tf.range(2 * 8 * 3, dtype=tf.float32), [1, 1, 2, 1, 24])  # 8 parities x 3 channels
    y = models.depth_to_space_3d(x).numpy()
    assert y.shape == (1, 2, 4, 2, 3)
    for p, q, r in np.ndindex(2, 2, 2):
        parity = (p * 2 + q) * 2 + r
        np.testing.assert_array_equal(y[0, p, 2 + q, r], x.numpy()[0, 0, 1, 0, parity * 3:(parity + 1) * 3])


def test_resampling_reproduces_trilinear_fields_exactly():
    # Trilinear interpolation is exact for a + bx + cy + dz + exy (multilinear) fields, in both directions; the
    # same size is the identity and the end planes are copied.
    def field(n):
        t = np.linspace(0.0, 1.0, n)
        x, y, z = np.meshgrid(t, t, t, indexing="ij")
        return (0.3 + 2 * x - y + 0.5 * z + 1.5 * x * y * z)[None, ..., None].astype(np.float32)

    for n, m in [(17, 40), (40, 17), (32, 32), (2, 9), (9, 2)]:
        out = models.Resample3D(m)(tf.constant(field(n))).numpy()
        np.testing.assert_allclose(out, field(m), rtol=0, atol=2e-6)
    same = field(32)
    assert np.array_equal(models.Resample3D(32)(tf.constant(same)).numpy(), same)
    like = models.Resample3D()([tf.constant(field(9)), tf.ones([1, 21, 21, 21, 1])])
    np.testing.assert_allclose(like.numpy(), field(21), rtol=0, atol=2e-6)


def test_a_working_resolution_runs_the_unet_there_for_any_input_resolution():
    tiny = models.preset("tiny")
    keras.utils.set_random_seed(0)
    plain = models.build_model(tiny)
    working = models.build_model(dataclasses.replace(tiny, working_resolution=16))
    working.set_weights(plain.get_weights())  # the resamplings carry no weights
    nu = nu_batch(16, batch=2)
    np.testing.assert_allclose(working(nu).numpy(), plain(nu).numpy(), rtol=0, atol=1e-6)  # at W: the U-Net
    for n in (7, 20, 33):  # any N, not only multiples of 2^depth
        assert working(nu_batch(n)).shape == (1, n, n, n, 1)
    # With the head's weights zero the U-Net predicts 1 - x at W with exact planes there, and the interpolation
    # reproduces 1 - x at every N: planes left at the prior's clipped 1 - 1e-4 and 1e-4 at W would show
    # next to the faces.
    head = working.get_layer("head")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    for n in (7, 20, 33):
        x = np.linspace(0.0, 1.0, n)
        u = working(nu_batch(n, batch=2)).numpy()
        np.testing.assert_allclose(u, np.broadcast_to((1 - x)[None, :, None, None, None], u.shape), rtol=0, atol=1e-6)
    assert models.ModelConfig(depth=3, working_resolution=24).check_resolution(5) == 5
    with pytest.raises(ValueError, match=r"working_resolution must be 0 \(off\) or a multiple of 2\^depth = 8"):
        models.ModelConfig(depth=3, working_resolution=20)
    with pytest.raises(ValueError, match="resolution 1: N must be an integer number of nodes per axis >= 2"):
        models.ModelConfig(depth=3, working_resolution=24).check_resolution(1)


def test_a_working_resolution_under_mixed_precision_keeps_float32_fields():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build_model(dataclasses.replace(models.preset("tiny"), working_resolution=8))
        u = model(nu_batch(11)).numpy()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert u.dtype == np.float32 and u.shape == (1, 11, 11, 11, 1) and np.all(np.isfinite(u))
    assert np.all(u[:, 0] == 1.0) and np.all(u[:, -1] == 0.0)


def test_a_working_resolution_survives_save_and_safe_load(tmp_path):
    model = models.build_model(dataclasses.replace(models.preset("tiny"), working_resolution=8))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    nu = nu_batch(13, seed=2)
    np.testing.assert_allclose(loaded(nu).numpy(), model(nu).numpy(), atol=1e-6)


def forward_and_gradients(model, nu):
    """u, and the gradients of sum(u * w) with respect to every weight, for a fixed random w (no dropout)."""
    w = tf.random.stateless_normal(nu.shape, seed=[1, 2])
    with tf.GradientTape() as tape:
        u = model(nu, training=False)
        loss = tf.reduce_sum(u * w)
    return [u] + tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("name, n", [("small", 32), ("reference", 32),
                                     ("tiny", 12)])  # 12: the stride-2 convs see an odd 3 at the bottom
def test_explicit_and_implicit_padding_are_the_same_network(name, n, monkeypatch):
    # Every conv kind of the presets (3^3 and 4^3, stride 1 and 2, transposed, the head's sub-pixel conv): the
    # explicitly padded form (the fast one on AVX2) must compute the same function and gradients.
    keras.utils.set_random_seed(0)
    model = models.build_model(name)
    nu = nu_batch(n, batch=2)
    results = {}
    for explicit in (False, True):
        monkeypatch.setattr(models, "explicit_padding", lambda explicit=explicit: explicit)
        results[explicit] = forward_and_gradients(model, nu)
    for ours, theirs in zip(results[True], results[False]):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-5 * np.abs(theirs).max() + 1e-7)


def test_a_model_saved_with_one_padding_loads_and_predicts_the_same_with_the_other(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "explicit_padding", lambda: True)
    model = models.build_model("small")
    nu = nu_batch(16, seed=4)
    saved = model(nu).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    monkeypatch.setattr(models, "explicit_padding", lambda: False)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(nu).numpy(), saved, rtol=0, atol=1e-6)
    # Keras' own layer classes' names, so the variables keep the paths earlier checkpoints recorded.
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    assert any(v.path.startswith("conv3d_transpose") for v in model.weights)
    assert sum(isinstance(layer, models.Conv3D) for layer in loaded.layers) == sum(
        isinstance(layer, keras.layers.Conv3D) for layer in loaded.layers) > 0


def test_same_padding_matches_tensorflow_for_odd_and_even_sizes():
    for n, k, s in [(8, 3, 2), (9, 3, 2), (8, 4, 2), (9, 4, 2), (7, 3, 1), (6, 2, 1), (5, 5, 3)]:
        x = tf.random.normal([1, n, n + 1, n + 2, 2], seed=n)
        kernel = tf.random.normal([k, k, k, 2, 3], seed=k)
        expected = tf.nn.conv3d(x, kernel, [1, s, s, s, 1], "SAME")
        pads = models._same_pads(x, (k,) * 3, (s,) * 3)
        padded = tf.nn.conv3d(tf.pad(x, pads), kernel, [1, s, s, s, 1], "VALID")
        np.testing.assert_allclose(padded.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
