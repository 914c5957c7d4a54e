"""Q1 finite-element energy of docs/design.rst s.4 in TensorFlow: the data-free training loss."""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from poisson_tf import q1


@functools.lru_cache(maxsize=None)
def _kernel_table(kind: str) -> np.ndarray:
    """conv3d kernel [2, 2, 2, 1, channels] (node a = 4i + 2j + k): "value" (Gauss-point values, 8 channels),
    "line_gradient" and "line_weight" (the factorized energy's 12 channels, q1.directional_tables).
    numpy, so importing creates no TF state."""
    if kind == "value":
        table = q1.shape_values()
    else:
        table = q1.directional_tables()[0 if kind == "line_gradient" else 1]
    return table.reshape(2, 2, 2, 1, -1).astype(np.float32)


def _conv(field: tf.Tensor, kind: str) -> tf.Tensor:
    return tf.nn.conv3d(field, tf.constant(_kernel_table(kind)), strides=[1, 1, 1, 1, 1], padding="VALID")


@functools.lru_cache(maxsize=None)
def _adjoint_table(kind: str) -> np.ndarray:
    """_kernel_table(kind) mirrored in space with its channels swapped: [2, 2, 2, channels, 1]."""
    return np.ascontiguousarray(_kernel_table(kind)[::-1, ::-1, ::-1].transpose(0, 1, 2, 4, 3))


def _conv_adjoint(values: tf.Tensor, kind: str) -> tf.Tensor:
    """The adjoint of _conv: per-element values [B, E, E, E, C] summed back onto the nodes [B, E+1, E+1, E+1, 1].

    A 'valid' convolution of the zero-padded values with the mirrored kernel, which is the transposed
    convolution; as a forward convolution oneDNN runs it faster on AVX2 and AVX-512 than the transposed one
    (the node sums of 12 channels are the energy's most expensive op, benchmarks/results/profile.jsonl)."""
    padded = tf.pad(values, [[0, 0], [1, 1], [1, 1], [1, 1], [0, 0]])
    return tf.nn.conv3d(padded, tf.constant(_adjoint_table(kind)), strides=[1, 1, 1, 1, 1], padding="VALID")


def gauss_values(field: tf.Tensor) -> tf.Tensor:
    """Trilinear interpolation of nodal values to the 8 Gauss points of each element.

    Args:
      field: float32 [B, N, N, N, 1].

    Returns:
      [B, N-1, N-1, N-1, 8].
    """
    return _conv(field, "value")


@tf.custom_gradient
def _stiffness_energy(u: tf.Tensor, nu: tf.Tensor) -> tf.Tensor:
    """1/2 u^T K(nu) u per sample, float32 [B], in the factorized form of q1.directional_tables.

    Per element and direction d the derivative takes 4 values G (one per Gauss line along d) and nu enters as
    the line sums W, so u^T K u = detJ / h^2 sum W G^2 = (h / 8) sum W G^2: 12 channels where the plain form
    needs 24 gradient and 8 nu channels. K u, the gradient, is the adjoint conv of (h/8) W G; the forward pass
    computes it and takes J = 1/2 u . K u, a 1-channel sum, so the backward pass only scales K u (dJ/dnu, the
    adjoint conv of (h/16) G^2, is pruned from graphs that do not use it).
    """
    h = 1.0 / tf.cast(tf.shape(u)[1] - 1, tf.float32)
    scale = h / 16.0  # detJ / (2 h^2), detJ = (h/2)^3: Gauss weights 1, unit-element derivatives divided by h
    g = _conv(u, "line_gradient")
    ku = _conv_adjoint(_conv(nu, "line_weight") * g, "line_gradient") * (2.0 * scale)  # K u
    energy_ = 0.5 * tf.reduce_sum(u * ku, axis=[1, 2, 3, 4])

    def grad(upstream):
        per_sample = tf.reshape(upstream, [-1, 1, 1, 1, 1])
        dnu = _conv_adjoint(tf.square(g), "line_weight") * (scale * per_sample)
        return ku * per_sample, dnu

    return energy_, grad


def _check_field(name: str, x: tf.Tensor) -> None:
    shape = x.shape
    if shape.rank != 5 or shape[-1] != 1:
        raise ValueError(f"{name} must have shape [batch, N, N, N, 1], got {shape}")
    spatial = [d for d in shape[1:4] if d is not None]
    if len(set(spatial)) > 1:
        raise ValueError(f"{name} must be a cube [batch, N, N, N, 1], got {shape}")
    if spatial and spatial[0] < 2:
        raise ValueError(f"{name} needs at least N = 2 nodes per axis, got {shape}")


def _check_same_shape(name: str, x: tf.Tensor, ref: tf.Tensor) -> None:
    _check_field(name, x)
    if x.shape.is_fully_defined() and ref.shape.is_fully_defined() and x.shape != ref.shape:
        raise ValueError(f"{name} has shape {x.shape} but u has shape {ref.shape}; they must match")


def energy(u, nu, f=None) -> tf.Tensor:
    """Discrete energy ``J(u) = sum_e sum_q detJ [1/2 nu_q |grad u_q|^2 - f_q u_q]`` per sample.

    J is the true integral (Gauss weights 1, detJ = (h/2)^3), so it is resolution-stable; with f = 0 and
    u the discrete minimizer, 2 J equals the flux through x = 0 (docs/design.rst s.4).

    Args:
      u: [B, N, N, N, 1] nodal solution, float32, bfloat16 or float16.
      nu: [B, N, N, N, 1] nodal diffusivity (> 0), same shape.
      f: optional [B, N, N, N, 1] nodal source.

    Returns:
      float32 [B].

    Raises:
      ValueError: for a wrong rank or shape, mismatched shapes, N < 2, or (when executing eagerly) a nu
        that is not finite and positive everywhere.
    """
    u = tf.convert_to_tensor(u)
    nu = tf.convert_to_tensor(nu)
    _check_field("u", u)
    _check_same_shape("nu", nu, u)
    if tf.executing_eagerly():
        from poisson_tf.fields import check_diffusivity

        check_diffusivity(nu.numpy())
    # Low-precision inputs are accepted; products and the sum over ~N^3 terms are carried out in float32.
    u = tf.cast(u, tf.float32)
    nu = tf.cast(nu, tf.float32)
    j = _stiffness_energy(u, nu)
    if f is not None:
        f = tf.convert_to_tensor(f)
        _check_same_shape("f", f, u)
        det_j = (0.5 / tf.cast(tf.shape(u)[1] - 1, tf.float32)) ** 3
        j -= det_j * tf.reduce_sum(gauss_values(tf.cast(f, tf.float32)) * gauss_values(u), axis=[1, 2, 3, 4])
    return j


def dirichlet_masks(resolution, dtype=tf.float32):
    """(interior, boundary_value) [1, N, 1, 1, 1] masks along x: interior 0 on x = 0, 1; value 1 at x = 0."""
    index = tf.range(resolution)
    interior = tf.cast((index > 0) & (index < resolution - 1), dtype)
    value = tf.cast(tf.equal(index, 0), dtype)
    return tf.reshape(interior, [1, -1, 1, 1, 1]), tf.reshape(value, [1, -1, 1, 1, 1])


def apply_dirichlet(u) -> tf.Tensor:
    """Imposes the exact Dirichlet planes: u = 1 on x = 0 (index 0), u = 0 on x = 1 (index N-1).

    Args:
      u: [B, N, N, N, C] (any float dtype); the other faces are left alone (natural Neumann).

    Returns:
      u with its first x plane set to 1 and its last to 0, same shape and dtype.
    """
    u = tf.convert_to_tensor(u)
    interior, value = dirichlet_masks(tf.shape(u)[1], u.dtype)
    return u * interior + value


def linear_guess(resolution: int, batch_size: int = 1) -> tf.Tensor:
    """The trivial guess u = 1 - x (exact for constant nu), [B, N, N, N, 1] float32."""
    x = tf.linspace(1.0, 0.0, resolution)
    return tf.broadcast_to(tf.reshape(x, [1, -1, 1, 1, 1]), [batch_size, resolution, resolution, resolution, 1])


def boundary_flux(u, nu) -> tf.Tensor:
    """Flux through x = 0 as the reaction of the discrete operator: sum over the x = 0 nodes of (K u)_i.

    dJ/du = K u (f = 0), so the reaction is one gradient. For the discrete solution it equals 2 J(u), the
    effective diffusivity; for an approximate u it is the flux a user would measure at the inlet.

    Returns:
      float32 [B].
    """
    u = tf.cast(tf.convert_to_tensor(u), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(u)
        j = tf.reduce_sum(energy(u, nu))
    return tf.reduce_sum(tape.gradient(j, u)[:, 0], axis=[1, 2, 3])
