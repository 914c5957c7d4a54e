"""Resolution-agnostic 3D convolutional encoder-decoder (U-Net) solvers nu -> u (Keras 3)."""
from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from poisson_tf import fem, hardware
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
        if n is not None and (n % self.multiple or n < 2):
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


def resample_axis(x, size, axis: int):
    """Trilinear resampling's 1D factor: x's nodes at linspace(0, 1, n) along `axis` -> `size` nodes at
    linspace(0, 1, size), by linear interpolation (n, size >= 2). The weights come from integer arithmetic, so
    size == n is the identity and the end nodes are copied exactly."""
    n = tf.shape(x)[axis]
    steps = tf.range(size) * (n - 1)  # node i of the output sits at steps[i] / (size - 1) nodes of the input
    lower = tf.minimum(steps // (size - 1), n - 2)
    frac = tf.cast(steps - lower * (size - 1), x.dtype) / tf.cast(size - 1, x.dtype)
    shape = [1] * len(x.shape)
    shape[axis] = -1
    frac = tf.reshape(frac, shape)
    return tf.gather(x, lower, axis=axis) * (1 - frac) + tf.gather(x, lower + 1, axis=axis) * frac


@keras.saving.register_keras_serializable(package="poisson_tf")
class Resample3D(keras.layers.Layer):
    """[B, N, N, N, C] nodal fields -> [B, M, M, M, C] by trilinear interpolation between the node grids
    linspace(0, 1, N) and linspace(0, 1, M) (the same unit cube), separably per axis.

    Called on one tensor, M = `size`; called on [x, like], M is like's N (`size` 0): how a network that runs at
    a working resolution returns u at its input's resolution.
    """

    def __init__(self, size: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, inputs):
        x, size = (inputs, self.size) if self.size else (inputs[0], tf.shape(inputs[1])[1])
        for axis in (1, 2, 3):
            x = resample_axis(x, size, axis)
        return x

    def compute_output_shape(self, input_shape):
        shape = input_shape if self.size else input_shape[0]
        like = (self.size,) * 3 if self.size else tuple(input_shape[1][1:4])
        return (shape[0],) + like + (shape[-1],)

    def get_config(self):
        return dict(super().get_config(), size=self.size)


@functools.lru_cache(maxsize=1)
def explicit_padding() -> bool:
    """Whether this process computes 'same' convolutions as zero padding + a 'valid' convolution: the CPU's
    choice (hardware.conv_padding), on CPU only (a GPU's convolutions pad themselves at no cost)."""
    return hardware.conv_padding() == "explicit" and not tf.config.list_physical_devices("GPU")


def _same_pads(x, kernel_size, strides) -> list:
    """[[before, after]] per axis of [B, N, N, N, C] that TensorFlow's 'same' padding adds (static where x's
    shape is): total max((ceil(N / s) - 1) s + k - N, 0), the smaller half before."""
    pads = [[0, 0]]
    for axis, (k, s) in enumerate(zip(kernel_size, strides), start=1):
        n = x.shape[axis]
        if s == 1:
            total = k - 1
        elif n is not None:
            total = max((-(-n // s) - 1) * s + k - n, 0)
        else:
            n = tf.shape(x)[axis]
            total = tf.maximum((-(-n // s) - 1) * s + k - n, 0)
        pads.append([total // 2, total - total // 2])
    return pads + [[0, 0]]


def conv3d_same(x, kernel, strides=(1, 1, 1)):
    """tf.nn.conv3d(x, kernel, strides, "SAME"), computed on the kernel that is fast on this CPU
    (explicit_padding): the same function, padded explicitly or by the convolution itself."""
    strides = [1, *strides, 1]
    if not explicit_padding():
        return tf.nn.conv3d(x, kernel, strides, padding="SAME")
    return tf.nn.conv3d(tf.pad(x, _same_pads(x, kernel.shape[:3], strides[1:4])), kernel, strides, padding="VALID")


@keras.saving.register_keras_serializable(package="poisson_tf")
class Conv3D(keras.layers.Conv3D):
    """keras.layers.Conv3D (the same configuration, weights and function) whose 'same' padding is computed by
    conv3d_same, so that its weight gradient runs on oneDNN's direct kernel on every ISA. Named like Keras'
    layer, so that its variables keep their paths ("conv3d_3/kernel") in checkpoints."""

    def convolution_op(self, inputs, kernel):
        if self.padding != "same" or self.groups != 1 or max(self.dilation_rate) != 1 \
                or self.data_format != "channels_last":
            return super().convolution_op(inputs, kernel)
        return conv3d_same(inputs, kernel, self.strides)


@keras.saving.register_keras_serializable(package="poisson_tf")
class Conv3DTranspose(keras.layers.Conv3DTranspose):
    """keras.layers.Conv3DTranspose (the same configuration, weights and function) that computes its 'same'
    output as the 'valid' transposed convolution cropped (where explicit_padding): oneDNN's weight gradient of
    the unpadded form takes its direct kernel on AVX2. Named like Keras' layer (variable paths unchanged)."""

    def call(self, inputs):
        if not explicit_padding() or self.padding != "same" or self.output_padding is not None \
                or max(self.dilation_rate) != 1 or self.data_format != "channels_last":
            return super().call(inputs)
        kernel = self.kernel  # [k, k, k, filters, C_in]
        shape = tf.shape(inputs)
        sizes = [shape[axis] * s for axis, s in enumerate(self.strides, start=1)]
        full = [(shape[axis] - 1) * s + k for axis, (k, s) in enumerate(zip(self.kernel_size, self.strides), start=1)]
        y = tf.nn.conv3d_transpose(inputs, kernel, tf.stack([shape[0], *full, self.filters]),
                                   [1, *self.strides, 1], padding="VALID")
        # 'same' keeps N s outputs of the (N - 1) s + k: those after max(k - s, 0) // 2 (TensorFlow's rule). A
        # tf.slice, not y[...]: the gradient of a strided slice (StridedSliceGrad) cost more than this layer's
        # convolution (benchmarks/results/profile.jsonl).
        begin = [0] + [max(k - s, 0) // 2 for k, s in zip(self.kernel_size, self.strides)] + [0]
        y = tf.slice(y, begin, [-1, *sizes, -1])
        if self.use_bias:
            y = y + tf.cast(self.bias, y.dtype)
        return self.activation(y) if self.activation is not None else y


def _upsample_taps(kernel_size: int) -> np.ndarray:
    """[2 parities, K, k] 0/1 table: tap t of a 'same' conv after 2x nearest upsampling, at fine index
    2m + p, reads coarse index m + a with a = floor((p + t) / 2); rows are a = -R..R (K = 2R + 1)."""
    before = (kernel_size - 1) // 2  # Keras/TF 'same' padding: the extra tap of an even kernel goes after
    taps = np.arange(-before, kernel_size - before)
    offsets = np.array([(p + taps) // 2 for p in (0, 1)])
    radius = int(np.abs(offsets).max())
    table = np.zeros((2, 2 * radius + 1, kernel_size), np.float32)
    for p in (0, 1):
        table[p, offsets[p] + radius, np.arange(kernel_size)] = 1.0
    return table


def depth_to_space_3d(x, block: int = 2):
    """[B, M, M, M, b^3 C] -> [B, bM, bM, bM, C]; channel ((p b + q) b + r) C + c goes to offset (p, q, r)."""
    shape = tf.shape(x)
    channels = x.shape[-1] // block ** 3
    x = tf.reshape(x, [shape[0], shape[1], shape[2], shape[3], block, block, block, channels])
    x = tf.transpose(x, [0, 1, 4, 2, 5, 3, 6, 7])
    return tf.reshape(x, [shape[0], block * shape[1], block * shape[2], block * shape[3], channels])


@keras.saving.register_keras_serializable(package="poisson_tf")
class UpsampleConv3D(keras.layers.Layer):
    """2x nearest-neighbour upsampling followed by a 'same' Conv3D, computed at the coarse resolution.

    The same function and weights (kernel [k, k, k, C_in, filters], bias) as UpSampling3D(2) + Conv3D, but
    evaluated as a sub-pixel convolution: each of the 8 output parities is a conv over the coarse grid whose
    kernel sums the fine taps that land on the same coarse voxel, all 8 in one conv with 8 * filters outputs,
    then depth_to_space_3d. A 1-output head at full resolution becomes an 8-output conv at half resolution:
    oneDNN's weight gradient for a 1-channel output ran at ~1 GFLOP/s on AVX2 (benchmarks/bench_profile.py).
    """

    def __init__(self, filters: int, kernel_size: int = 3, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.use_bias = int(filters), bool(use_bias)
        self.kernel_size = (int(kernel_size),) * 3
        self.strides = (1, 1, 1)
        taps = _upsample_taps(int(kernel_size))
        # [(a b c p q r), (i j k)]: coarse tap (a, b, c) of parity (p, q, r) sums fine taps (i, j, k) of the kernel.
        self._coarse_taps = np.einsum("pai,qbj,rck->abcpqrijk", taps, taps, taps).reshape(
            taps.shape[1] ** 3 * 8, int(kernel_size) ** 3)

    def build(self, input_shape):
        k = self.kernel_size[0]
        self.kernel = self.add_weight(name="kernel", shape=(k, k, k, input_shape[-1], self.filters),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") \
            if self.use_bias else None

    def call(self, x):
        kernel = tf.cast(self.kernel, x.dtype)
        k, c_in = self.kernel_size[0], kernel.shape[3]
        size = round((self._coarse_taps.shape[0] // 8) ** (1 / 3))
        # [K, K, K, C_in, (p, q, r, filters)]: the coarse kernel of every output parity, one small matmul
        # (an einsum of the four factors ran as a slow _MklEinsum every step, benchmarks/results/profile.jsonl).
        coarse = tf.matmul(tf.constant(self._coarse_taps, x.dtype), tf.reshape(kernel, [k ** 3, c_in * self.filters]))
        coarse = tf.reshape(coarse, [size, size, size, 8, c_in, self.filters])
        coarse = tf.reshape(tf.transpose(coarse, [0, 1, 2, 4, 3, 5]), [size, size, size, c_in, 8 * self.filters])
        y = conv3d_same(x, coarse)
        if self.bias is not None:
            y = y + tf.tile(tf.cast(self.bias, x.dtype), [8])
        return depth_to_space_3d(y)

    def compute_output_shape(self, input_shape):
        return tuple(None if d is None else 2 * d for d in input_shape[:4]) + (self.filters,)

    def get_config(self):
        return dict(super().get_config(), filters=self.filters, kernel_size=self.kernel_size[0],
                    use_bias=self.use_bias)


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


def _conv(cfg: ModelConfig, filters: int, strides: int = 1, transpose: bool = False, in_channels: int = 0):
    kind = Conv3DTranspose if transpose else Conv3D
    # A conv on the 1-channel input stays float32 under a mixed policy: AMX tiles need many input channels, and
    # in bfloat16 the first layer's weight gradient was the largest op of the step (benchmarks/bench_profile.py
    # --precision bfloat16; docs/performance.rst). Under a float32 policy nothing changes.
    dtype = "float32" if in_channels == 1 else None
    # A normalization right after the conv removes any bias, so it is left out.
    return kind(filters, cfg.kernel_size, strides=strides, padding="same", use_bias=cfg.normalization == "none",
                dtype=dtype)


def build_model(cfg: ModelConfig | str = "small", name: str = "poisson_unet") -> keras.Model:
    """A fully convolutional U-Net nu -> u for every N divisible by 2**depth (or, with a working resolution W,
    a U-Net at W between trilinear resamplings nu -> W and u -> N, for every N >= 2).

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
    x = DiffusivityFeatures(cfg.input_features, cfg.log_nu_scale, 2 ** cfg.input_depth, name="features",
                            dtype="float32")(nu)
    if cfg.working_resolution:
        x = Resample3D(cfg.working_resolution, name="to_working_resolution", dtype="float32")(x)
    skips = []
    for level in range(cfg.depth):
        filters = cfg.filters(level)
        dropout = cfg.dropout if level >= cfg.depth - cfg.dropout_levels else 0.0
        if cfg.downsampling == "conv":
            x = _block(x, _conv(cfg, filters, strides=2, in_channels=x.shape[-1]), cfg, cfg.encoder_activation,
                       dropout)
        else:
            x = _block(x, _conv(cfg, filters, in_channels=x.shape[-1]), cfg, cfg.encoder_activation, dropout)
            x = keras.layers.AveragePooling3D(2)(x)
        for _ in range(cfg.extra_convs):
            x = _block(x, _conv(cfg, filters), cfg, cfg.encoder_activation)
        skips.append(x)
    for level in reversed(range(cfg.depth - 1)):
        filters = cfg.filters(level)
        if cfg.upsampling == "transpose":
            x = _block(x, _conv(cfg, filters, strides=2, transpose=True), cfg, cfg.decoder_activation)
        else:
            x = _block(x, UpsampleConv3D(filters, cfg.kernel_size, use_bias=cfg.normalization == "none"), cfg,
                       cfg.decoder_activation)
        x = keras.layers.Concatenate()([x, skips[level]])
        for _ in range(cfg.extra_convs):
            x = _block(x, _conv(cfg, filters), cfg, cfg.decoder_activation)
    x = UpsampleConv3D(1, cfg.head_kernel_size, name="head")(x)  # 2x nearest upsampling + conv to u's logit
    if cfg.output_prior == "linear":
        x = LinearPrior(name="linear_prior", dtype="float32")(x)
    u = keras.layers.Activation("sigmoid", dtype="float32")(x)
    if cfg.working_resolution:  # exact planes at W too: they enter the interpolation next to the planes at N
        u = DirichletPlanes(name="dirichlet_working", dtype="float32")(u)
        u = Resample3D(name="to_input_resolution", dtype="float32")([u, nu])
    return keras.Model(nu, DirichletPlanes(name="dirichlet", dtype="float32")(u), name=name)


def resolution_multiple(model: keras.Model) -> int:
    """The N every input of a built network must be a multiple of (2**depth; 1 for a network with a working
    resolution), read from its feature layer."""
    return int(model.get_layer("features").multiple)


def working_resolution(model: keras.Model) -> int:
    """The N a built network's U-Net runs at whatever the input's (its to_working_resolution layer), or 0."""
    try:
        return int(model.get_layer("to_working_resolution").size)
    except ValueError:  # no such layer: fully convolutional
        return 0


def flops_per_voxel(model: keras.Model, probe: int | None = None) -> float:
    """FLOPs of one forward pass per input voxel, counted from the convolution layers.

    A Conv3D costs 2 k^3 C_in C_out FLOPs (multiply + add) per output voxel, a Conv3DTranspose the same per
    input voxel, an UpsampleConv3D the same per output voxel as the UpSampling3D + Conv3D it computes (the
    nominal count, not its sub-pixel form's zero taps), plus one add per output value for a bias. Every layer's size scales with N^3, so the count is
    the same at every resolution; it is evaluated at `probe` (default 2 * 2^depth). A network with a working
    resolution W runs its convolutions at W whatever the input: its count is per voxel at W (probe unused). Normalization, activation
    and the energy loss are left out (a few FLOPs per value). Training costs about 3x this (forward +
    two backward products).
    """
    import math

    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv3D, keras.layers.Conv3DTranspose, UpsampleConv3D))]
    n = working_resolution(model) or probe or 2 * resolution_multiple(model)
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
