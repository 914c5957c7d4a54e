"""Resolution-agnostic 3D convolutional encoder-decoder (U-Net) solvers nu -> u (Keras 3)."""
from __future__ import annotations

import keras
import tensorflow as tf

from poisson_tf import fem
# The architecture's configuration, its presets and the resolution rule live in the framework-free config module.
from poisson_tf.config import PRESETS, ModelConfig, check_resolution, preset, valid_resolutions  # noqa: F401


@keras.saving.register_keras_serializable(package="poisson_tf")
class DiffusivityFeatures(keras.layers.Layer):
    """nu [B,N,N,N,1] -> network input; checks that N is a multiple of `multiple`.

    "log_nu": (log nu - its per-sample mean) / scale. u is invariant to nu -> c nu, and so is this feature;
    log nu spans about +-7 where nu spans 1e-3..1e3, so the scale brings it near unit size.
    "nu": nu unchanged.
    """

    def __init__(self, mode: str = "log_nu", scale: float = 2.0, multiple: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.mode, self.scale, self.multiple = mode, float(scale), int(multiple)

    def call(self, nu):
        n = nu.shape[1]
        if n is not None and n % self.multiple:
            check_resolution(n, self.multiple.bit_length() - 1)
        if self.mode == "nu":
            return nu
        log_nu = tf.math.log(nu)
        return (log_nu - tf.reduce_mean(log_nu, axis=[1, 2, 3, 4], keepdims=True)) / self.scale

    def get_config(self):
        return dict(super().get_config(), mode=self.mode, scale=self.scale, multiple=self.multiple)


@keras.saving.register_keras_serializable(package="poisson_tf")
class LinearPrior(keras.layers.Layer):
    """Adds logit(1 - x) to the head's logits, so that an untrained network predicts u = 1 - x (the exact
    solution for constant nu, within ~13% of the KL-family solutions) and training learns the correction."""

    def call(self, logits):
        n = tf.shape(logits)[1]
        t = tf.clip_by_value(tf.linspace(0.0, 1.0, n), 1e-4, 1.0 - 1e-4)  # the end planes are Dirichlet anyway
        prior = tf.math.log((1.0 - t) / t)
        return logits + tf.cast(tf.reshape(prior, [1, -1, 1, 1, 1]), logits.dtype)


@keras.saving.register_keras_serializable(package="poisson_tf")
class DirichletPlanes(keras.layers.Layer):
    """Sets u = 1 on x = 0 and u = 0 on x = 1 exactly (fem.apply_dirichlet), inside the model."""

    def call(self, u):
        return fem.apply_dirichlet(u)


def _normalization(kind: str, channels: int):
    if kind == "batch":
        return keras.layers.BatchNormalization()
    if kind == "instance":  # per sample and channel, non-affine
        return keras.layers.GroupNormalization(groups=-1, center=False, scale=False)
    if kind == "group":
        return keras.layers.GroupNormalization(groups=next(g for g in (8, 4, 2, 1) if channels % g == 0))
    if kind == "layer":  # over all voxels and channels of a sample, batch independent
        return keras.layers.GroupNormalization(groups=1)
    return None


def _activation(kind: str):
    return keras.layers.LeakyReLU(negative_slope=0.2) if kind == "leaky_relu" else keras.layers.Activation(kind)


def _block(x, layer, cfg: ModelConfig, activation: str, dropout: float = 0.0):
    """layer -> normalization -> activation -> dropout."""
    x = layer(x)
    norm = _normalization(cfg.normalization, x.shape[-1])
    if norm is not None:
        x = norm(x)
    x = _activation(activation)(x)
    return keras.layers.Dropout(dropout)(x) if dropout else x


def _conv(cfg: ModelConfig, filters: int, strides: int = 1, transpose: bool = False):
    kind = keras.layers.Conv3DTranspose if transpose else keras.layers.Conv3D
    # A normalization right after the conv removes any bias, so it is left out.
    return kind(filters, cfg.kernel_size, strides=strides, padding="same", use_bias=cfg.normalization == "none")


def build_model(cfg: ModelConfig | str = "small", name: str = "poisson_unet") -> keras.Model:
    """A fully convolutional U-Net nu -> u for every N divisible by 2**depth.

    Encoder: `depth` stride-2 steps (strided conv, or conv + 2x average pooling), each followed by
    `extra_convs` same-resolution conv blocks; decoder: `depth - 1` 2x steps (transposed conv, or upsampling +
    conv) with concatenated skips, then 2x nearest upsampling and a conv to one channel; optionally plus the
    logit of the linear prior 1 - x; sigmoid (the maximum principle keeps 0 <= u <= 1) and the exact
    Dirichlet planes.

    Args:
      cfg: a ModelConfig or a preset name ("small", "tiny", "reference").
      name: Keras model name.

    Returns:
      keras.Model with input [B, None, None, None, 1] (nu) and output of the same shape (u).
    """
    cfg = preset(cfg) if isinstance(cfg, str) else cfg
    nu = keras.Input(shape=(None, None, None, 1), name="nu")
    # Features, prior, sigmoid and the Dirichlet planes stay float32 under a mixed-precision policy: only the
    # convolutions run in bfloat16/float16, and u keeps 24-bit resolution.
    x = DiffusivityFeatures(cfg.input_features, cfg.log_nu_scale, cfg.multiple, name="features", dtype="float32")(nu)
    skips = []
    for level in range(cfg.depth):
        filters = cfg.filters(level)
        dropout = cfg.dropout if level >= cfg.depth - cfg.dropout_levels else 0.0
        if cfg.downsampling == "conv":
            x = _block(x, _conv(cfg, filters, strides=2), cfg, cfg.encoder_activation, dropout)
        else:
            x = _block(x, _conv(cfg, filters), cfg, cfg.encoder_activation, dropout)
            x = keras.layers.AveragePooling3D(2)(x)
        for _ in range(cfg.extra_convs):
            x = _block(x, _conv(cfg, filters), cfg, cfg.encoder_activation)
        skips.append(x)
    for level in reversed(range(cfg.depth - 1)):
        filters = cfg.filters(level)
        if cfg.upsampling == "transpose":
            x = _block(x, _conv(cfg, filters, strides=2, transpose=True), cfg, cfg.decoder_activation)
        else:
            x = _block(keras.layers.UpSampling3D(2)(x), _conv(cfg, filters), cfg, cfg.decoder_activation)
        x = keras.layers.Concatenate()([x, skips[level]])
        for _ in range(cfg.extra_convs):
            x = _block(x, _conv(cfg, filters), cfg, cfg.decoder_activation)
    x = keras.layers.UpSampling3D(2)(x)
    x = keras.layers.Conv3D(1, cfg.head_kernel_size, padding="same", name="head")(x)
    if cfg.output_prior == "linear":
        x = LinearPrior(name="linear_prior", dtype="float32")(x)
    u = keras.layers.Activation("sigmoid", dtype="float32")(x)
    return keras.Model(nu, DirichletPlanes(name="dirichlet", dtype="float32")(u), name=name)


def flops_per_voxel(model: keras.Model, probe: int | None = None) -> float:
    """FLOPs of one forward pass per input voxel, counted from the convolution layers.

    A Conv3D costs 2 k^3 C_in C_out FLOPs (multiply + add) per output voxel, a Conv3DTranspose the same per
    input voxel, plus one add per output value for a bias. Every layer's size scales with N^3, so the count is
    the same at every resolution; it is evaluated at `probe` (default 2 * 2^depth). Normalization, activation
    and the energy loss are left out (a few FLOPs per value). Training costs about 3x this (forward +
    two backward products).
    """
    import math

    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv3D, keras.layers.Conv3DTranspose))]
    n = probe or 2 * model.get_layer("features").multiple
    outputs = keras.Model(model.inputs, [layer.output for layer in convs])(tf.ones([1, n, n, n, 1]))
    total = 0.0
    for layer, out in zip(convs, outputs if isinstance(outputs, (list, tuple)) else [outputs]):
        out_voxels = math.prod(out.shape[1:4])
        c_in, c_out = layer.input.shape[-1], layer.filters
        positions = out_voxels / math.prod(layer.strides) if isinstance(layer, keras.layers.Conv3DTranspose) \
            else out_voxels
        total += 2.0 * math.prod(layer.kernel_size) * c_in * c_out * positions
        if layer.use_bias:
            total += out_voxels * c_out
    return total / n ** 3
