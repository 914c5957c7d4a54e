"""Karhunen-Loeve diffusivity family nu(x, y, z; w) of docs/design.rst s.3, in numpy and TensorFlow."""
from __future__ import annotations

import functools
import warnings

import numpy as np
from scipy import optimize

DEFAULT_ETA = 0.5
DEFAULT_NUM_TERMS = 4
DEFAULT_COEFF_BOUND = 3.0
SAMPLING_METHODS = ("uniform", "sobol")
#: What the package accepts as nu: float32 holds it, and squared (as norms square it) float64 still does.
DIFFUSIVITY_RANGE = (1e-30, 1e30)


def check_resolution(resolution) -> int:
    """Returns resolution as an int, or raises ValueError unless it is an integer >= 2 (nodes per axis)."""
    if isinstance(resolution, bool) or not float(resolution).is_integer() or int(resolution) < 2:
        raise ValueError(f"resolution must be an integer number of nodes per axis >= 2, got {resolution!r}")
    return int(resolution)


def check_eta(eta) -> float:
    """Returns eta as a float, or raises ValueError unless it is a finite positive correlation length."""
    eta = float(eta)
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta (the correlation length) must be a finite positive number, got {eta!r}")
    return eta


def is_real(array) -> bool:
    """True when array holds real numbers (integer or floating point: not bool, complex, strings or objects)."""
    dtype = np.asarray(array).dtype
    return dtype.kind in "fiu" or dtype.name == "bfloat16"  # bfloat16: TensorFlow's 16-bit floats in numpy


def check_diffusivity(nu: np.ndarray, name: str = "nu") -> np.ndarray:
    """Raises ValueError unless nu holds real numbers, each finite, positive and in DIFFUSIVITY_RANGE; returns
    nu unchanged.

    Complex values are refused, not cast: dropping an imaginary part would silently solve another problem.
    Values outside DIFFUSIVITY_RANGE are refused too: the network computes in float32, and the solver's
    arithmetic squares them.
    """
    nu = np.asarray(nu)
    if not is_real(nu):
        raise ValueError(f"{name} must hold real numbers, got dtype {nu.dtype}"
                         + (" (complex: the diffusivity is real)" if np.issubdtype(nu.dtype, np.complexfloating)
                            else ""))
    for bad, rule in ((~np.isfinite(nu) | (nu <= 0), "be finite and positive everywhere"),
                      ((nu < DIFFUSIVITY_RANGE[0]) | (nu > DIFFUSIVITY_RANGE[1]),
                       f"lie within [{DIFFUSIVITY_RANGE[0]:g}, {DIFFUSIVITY_RANGE[1]:g}] (u does not change when "
                       "nu is multiplied by a constant: rescale it)")):
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} must {rule}, but {name}{list(index)} = {nu[index]!r} ({int(bad.sum())} bad "
                             f"values of {nu.size})")
    return nu


@functools.lru_cache(maxsize=64)
def _kl_roots_cached(num_terms: int, eta: float) -> tuple:
    def f(a):
        return (eta ** 2 * a ** 2 - 1.0) * np.sin(a) - 2.0 * eta * a * np.cos(a)

    # cot(a) = (eta^2 a^2 - 1) / (2 eta a) has its right side increasing and cot decreasing on each
    # ((i-1) pi, i pi), so there is exactly one root per interval; f(i pi) = -2 eta i pi (-1)^i != 0.
    roots = []
    for i in range(1, num_terms + 1):
        lo = (i - 1) * np.pi if i > 1 else min(1e-6, 1e-3 / (1.0 + eta))  # f ~ -(1 + 2 eta) a near 0
        roots.append(optimize.brentq(f, lo, i * np.pi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))
    return tuple(roots)


def kl_roots(num_terms: int = DEFAULT_NUM_TERMS, eta: float = DEFAULT_ETA) -> np.ndarray:
    """The first positive roots a_i of (eta^2 a^2 - 1) sin(a) = 2 eta a cos(a), by bracketed root finding.

    Args:
      num_terms: how many roots m (>= 1).
      eta: correlation length (> 0).

    Returns:
      float64 array [m], increasing; root i lies in ((i-1) pi, i pi).
    """
    if isinstance(num_terms, bool) or int(num_terms) != num_terms or num_terms < 1:
        raise ValueError(f"num_terms must be a positive integer, got {num_terms!r}")
    return np.array(_kl_roots_cached(int(num_terms), check_eta(eta)))


def kl_eigenpairs(num_terms: int = DEFAULT_NUM_TERMS, eta: float = DEFAULT_ETA):
    """Returns (roots a_i, eigenvalues lambda_i = 2 eta / (1 + (eta a_i)^2)), each [m] float64."""
    roots = kl_roots(num_terms, eta)
    return roots, 2.0 * eta / (1.0 + (eta * roots) ** 2)


def kl_modes(resolution: int, num_terms: int = DEFAULT_NUM_TERMS, eta: float = DEFAULT_ETA):
    """1D modes phi_i(t) = eta a_i cos(a_i t) + sin(a_i t) on t = linspace(0, 1, N) and scales lambda_i^(3/2).

    Returns:
      (phi [m, N] float64, scale [m] float64); log nu = sum_i w_i scale_i phi_i(x) phi_i(y) phi_i(z).
    """
    resolution = check_resolution(resolution)
    roots, lambdas = kl_eigenpairs(num_terms, eta)
    t = np.linspace(0.0, 1.0, resolution)
    phi = eta * roots[:, None] * np.cos(roots[:, None] * t) + np.sin(roots[:, None] * t)
    return phi, lambdas ** 1.5


def _check_coeffs(coeffs) -> np.ndarray:
    coeffs = np.asarray(coeffs, dtype=np.float64)
    if coeffs.ndim not in (1, 2) or coeffs.shape[-1] < 1:
        raise ValueError(f"coeffs must have shape [m] or [batch, m] with m >= 1, got shape {coeffs.shape}")
    if not np.all(np.isfinite(coeffs)):
        raise ValueError(f"coeffs must be finite, got {coeffs}")
    return coeffs


def kl_diffusivity(coeffs, resolution: int, eta: float = DEFAULT_ETA, dtype=np.float64) -> np.ndarray:
    """nu = exp(sum_i w_i lambda_i^(3/2) phi_i(x) phi_i(y) phi_i(z)) at the N^3 grid nodes (docs/design.rst s.3).

    Vectorized through the separable products: one outer product per KL term.

    Args:
      coeffs: w, shape [m] or [B, m].
      resolution: N, nodes per axis (>= 2).
      eta: correlation length.
      dtype: output dtype (float64 by default; the exponent is always summed in float64).

    Returns:
      [N, N, N] for coeffs [m], [B, N, N, N] for coeffs [B, m], axis order (x, y, z).
    """
    coeffs = _check_coeffs(coeffs)
    batch = coeffs.reshape(-1, coeffs.shape[-1])
    phi, scale = kl_modes(resolution, batch.shape[-1], eta)
    n = phi.shape[1]
    out = np.empty((batch.shape[0], n, n, n), dtype=dtype)
    # Separable: log nu[x, y, z] = sum_i (w_i s_i phi_i(x) phi_i(y)) phi_i(z), one [N^2, m] x [m, N] matmul.
    xy = phi[:, :, None] * phi[:, None, :]
    for b, w in enumerate(batch):
        log_nu = ((w * scale)[:, None, None] * xy).reshape(len(phi), -1).T @ phi
        with np.errstate(over="ignore"):
            out[b] = np.exp(log_nu, out=log_nu).reshape(n, n, n)
        if not np.all(np.isfinite(out[b])):
            raise ValueError(f"KL coefficients {list(w)} give a nu that overflows {np.dtype(dtype).name}: they are "
                             f"meant to be of order 1 (training draws them from [-{DEFAULT_COEFF_BOUND:g}, "
                             f"{DEFAULT_COEFF_BOUND:g}])")
    return out[0] if coeffs.ndim == 1 else out


def kl_diffusivity_tf(coeffs, resolution: int, eta: float = DEFAULT_ETA, num_terms: int | None = None):
    """TensorFlow twin of kl_diffusivity, usable inside tf.data `map` (float32).

    Args:
      coeffs: float tensor [m] or [B, m]; m must be static (or given as num_terms).
      resolution: N (a Python int: the modes are constants of the graph).
      eta: correlation length.
      num_terms: m when the static shape does not carry it.

    Returns:
      float32 tensor [N, N, N] or [B, N, N, N].
    """
    import tensorflow as tf

    coeffs = tf.convert_to_tensor(coeffs, tf.float32)
    m = num_terms or coeffs.shape[-1]
    if m is None:
        raise ValueError("kl_diffusivity_tf needs the number of KL terms: give coeffs a static last dimension "
                         "or pass num_terms")
    phi, scale = kl_modes(resolution, int(m), eta)
    phi = tf.constant(phi, tf.float32)
    weighted = coeffs * tf.constant(scale, tf.float32)
    log_nu = tf.einsum("...i,ix,iy,iz->...xyz", weighted, phi, phi, phi)
    return tf.exp(log_nu)


def sample_coeffs(num_samples: int, num_terms: int = DEFAULT_NUM_TERMS, method: str = "uniform",
                  seed: int = 0, bound: float = DEFAULT_COEFF_BOUND, skip: int = 0) -> np.ndarray:
    """Seeded KL coefficient vectors w in [-bound, bound]^m.

    Args:
      num_samples: how many vectors.
      num_terms: m.
      method: "uniform" (i.i.d.) or "sobol" (scrambled Sobol sequence, scipy.stats.qmc).
      seed: RNG seed; the same seed gives the same vectors.
      bound: half-width of the box (3 by docs/design.rst).
      skip: for "sobol", how many leading points of the sequence to skip (so that disjoint sets can be
        drawn from one sequence); for "uniform", how many vectors to draw and discard first.

    Returns:
      float64 array [num_samples, m].
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(f"sampling method must be one of {SAMPLING_METHODS}, got {method!r}")
    if int(num_samples) != num_samples or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
    if not np.isfinite(bound) or bound <= 0:
        raise ValueError(f"bound must be a finite positive number, got {bound!r}")
    kl_roots(num_terms)  # validates num_terms
    if method == "sobol":
        from scipy.stats import qmc  # here: importing scipy.stats costs every command line ~1 s at start

        sampler = qmc.Sobol(d=num_terms, scramble=True, seed=seed)
        with warnings.catch_warnings():  # balance properties need powers of 2; any count is still valid
            warnings.simplefilter("ignore", UserWarning)
            if skip:
                sampler.fast_forward(skip)
            unit = sampler.random(num_samples)
    else:
        unit = np.random.default_rng(seed).uniform(size=(skip + num_samples, num_terms))[skip:]
    return bound * (2.0 * unit - 1.0)
