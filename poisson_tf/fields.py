"""Diffusivity families nu(x, y, z; w) of docs/design.rst s.3 and s.10, in numpy and TensorFlow: the
Karhunen-Loeve family (kl), the log-normal random field with separable exponential covariance (grf) and the
two-phase medium thresholded from it (twophase); `Family` is one of them with its parameters."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings

import numpy as np
from scipy import optimize

DEFAULT_ETA = 0.5
DEFAULT_NUM_TERMS = 4
DEFAULT_COEFF_BOUND = 3.0
SAMPLING_METHODS = ("uniform", "sobol")
FAMILIES = ("kl", "grf", "twophase")
#: Each family's correlation length and number of terms when none is given (docs/design.rst s.10).
FAMILY_DEFAULTS = {"kl": {"eta": DEFAULT_ETA, "num_terms": DEFAULT_NUM_TERMS},
                   "grf": {"eta": 0.1, "num_terms": 1024}, "twophase": {"eta": 0.1, "num_terms": 1024}}
MAX_NUM_TERMS = 8192  # KL roots or random-field triples: more is a different problem than this package solves
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


# --- The log-normal random field (grf) and the two-phase medium (twophase), docs/design.rst s.10 ------------------

def mode_norms(num_modes: int, eta: float) -> np.ndarray:
    """||phi_i||_{L2(0, 1)} of the first num_modes modes phi_i(t) = eta a_i cos(a_i t) + sin(a_i t), exactly:
    ||phi||^2 = eta^2 a^2 (1/2 + sin 2a / 4a) + (1/2 - sin 2a / 4a) + eta sin^2 a."""
    a = kl_roots(num_modes, eta)
    s2 = np.sin(2.0 * a) / (4.0 * a)
    return np.sqrt(eta ** 2 * a ** 2 * (0.5 + s2) + (0.5 - s2) + eta * np.sin(a) ** 2)


@functools.lru_cache(maxsize=16)
def _grf_terms(num_terms: int, eta: float) -> tuple:
    """(triples [m, 3] of 1D mode indices, their eigenvalue products [m]) of the m triples with the largest
    lambda_i lambda_j lambda_k, largest first; ties (permutations) broken by the indices, so the set is exact."""
    modes = 8
    while True:
        _, lam = kl_eigenpairs(modes, eta)
        i, j, k = np.meshgrid(np.arange(modes), np.arange(modes), np.arange(modes), indexing="ij")
        i, j, k = i.ravel(), j.ravel(), k.ravel()
        ordered = np.sort(np.stack([lam[i], lam[j], lam[k]]), axis=0)  # a permutation gives the same bits
        product = ordered[0] * ordered[1] * ordered[2]
        order = np.lexsort((k, j, i, -product))[:num_terms]
        # every triple with an index >= modes has a product <= lambda_1^2 lambda_modes: below the m-th one?
        if len(order) == num_terms and lam[0] ** 2 * lam[-1] < product[order[-1]]:
            triples = np.stack([i[order], j[order], k[order]], axis=1)
            return triples, product[order]
        modes *= 2


def grf_modes(resolution: int, num_terms: int, eta: float):
    """The separable factors of the grf's log nu at N nodes: (triples [m, 3], scale [m] = sqrt(lambda products),
    psi [K, N] the normalized 1D modes psi_i = phi_i / ||phi_i|| of the K modes the triples use)."""
    resolution = check_resolution(resolution)
    triples, product = _grf_terms(int(num_terms), check_eta(eta))
    used = int(triples.max()) + 1
    phi, _ = kl_modes(resolution, used, eta)
    return triples, np.sqrt(product), phi / mode_norms(used, eta)[:, None]


def _grf_log_nu(coeffs: np.ndarray, resolution: int, eta: float, sigma: float) -> np.ndarray:
    """log nu [B, N, N, N] float64 of the grf for coefficients [B, m]: the weights scattered into a [K, K, K]
    tensor, then one contraction per axis (cost K^3 N + K^2 N^2 + K N^3, not m N^3)."""
    triples, scale, psi = grf_modes(resolution, coeffs.shape[-1], eta)
    used = psi.shape[0]
    out = np.empty((len(coeffs), resolution, resolution, resolution))
    for b, xi in enumerate(coeffs):
        c = np.zeros((used, used, used))
        np.add.at(c, (triples[:, 0], triples[:, 1], triples[:, 2]), sigma * scale * xi)
        t = np.tensordot(c, psi, axes=(2, 0))                   # [i, j, z]
        t = np.einsum("ijz,jy->iyz", t, psi, optimize=True)     # [i, y, z]
        out[b] = np.tensordot(psi, t, axes=(0, 0))              # [x, y, z]
    return out


def _grf_log_nu_tf(coeffs, resolution: int, eta: float, sigma: float, num_terms: int):
    """TensorFlow twin of _grf_log_nu (float32), for tf.data maps: coeffs [B, m] -> [B, N, N, N]."""
    import tensorflow as tf

    triples, scale, psi = grf_modes(resolution, num_terms, eta)
    used = psi.shape[0]
    coeffs = tf.convert_to_tensor(coeffs, tf.float32)
    batch = tf.shape(coeffs)[0]
    weights = coeffs * tf.constant(sigma * scale, tf.float32)  # [B, m]
    b = tf.repeat(tf.range(batch), num_terms)
    index = tf.concat([b[:, None], tf.tile(tf.constant(triples, tf.int32), [batch, 1])], axis=1)
    c = tf.scatter_nd(index, tf.reshape(weights, [-1]), tf.stack([batch, used, used, used]))
    psi = tf.constant(psi, tf.float32)
    t = tf.einsum("bijk,kz->bijz", c, psi)
    t = tf.einsum("bijz,jy->biyz", t, psi)
    return tf.einsum("biyz,ix->bxyz", t, psi)


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of diffusivity fields and its parameters: what a sample's coefficients w mean (docs/design.rst
    s.3, s.10). One value replaces the (coefficients, eta) pair everywhere a field is made, cached or recorded.

    kind "kl": nu = exp(sum_i w_i lambda_i^(3/2) phi_i(x) phi_i(y) phi_i(z)), w uniform in [-3, 3]^m.
    kind "grf": log nu = sigma sum_t w_t sqrt(lambda_i lambda_j lambda_k) psi_i(x) psi_j(y) psi_k(z) over the
    m triples t = (i, j, k) with the largest eigenvalue products, w standard normal: the log-normal field of
    covariance ``sigma^2 exp(-(|dx| + |dy| + |dz|) / eta)``.
    kind "twophase": nu = contrast where the grf's log nu > threshold, else 1.
    Build one with `Family.of(kind, ...)`, which fills in the kind's defaults (FAMILY_DEFAULTS).
    """

    kind: str = "kl"
    eta: float = DEFAULT_ETA
    num_terms: int = DEFAULT_NUM_TERMS
    sigma: float = 1.0
    contrast: float = 100.0
    threshold: float = 0.0

    def __post_init__(self):
        if self.kind not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.kind!r}")
        check_eta(self.eta)
        if isinstance(self.num_terms, bool) or int(self.num_terms) != self.num_terms or \
                not 1 <= self.num_terms <= MAX_NUM_TERMS:
            raise ValueError(f"num_terms must be an integer in 1..{MAX_NUM_TERMS}, got {self.num_terms!r}")
        for name, ok, valid in (("sigma", 0 < self.sigma < math.inf, "finite and > 0"),
                                ("contrast", 0 < self.contrast < math.inf and self.contrast != 1,
                                 "finite, > 0 and not 1 (the two phases differ)"),
                                ("threshold", math.isfinite(self.threshold), "finite")):
            if not ok:
                raise ValueError(f"{name} must be {valid}, got {getattr(self, name)!r}")
        object.__setattr__(self, "num_terms", int(self.num_terms))
        object.__setattr__(self, "eta", float(self.eta))

    @classmethod
    def of(cls, kind: str = "kl", eta: float | None = None, num_terms: int | None = None, **params) -> "Family":
        """The family `kind` with the given parameters and the kind's defaults for the others."""
        if kind not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {kind!r}")
        defaults = FAMILY_DEFAULTS[kind]
        return cls(kind, defaults["eta"] if eta is None else eta,
                   defaults["num_terms"] if num_terms is None else num_terms, **params)

    def params(self) -> dict:
        """The parameters that define the family (those its kind uses), JSON-ready."""
        out = {"kind": self.kind, "eta": self.eta, "num_terms": self.num_terms}
        if self.kind != "kl":
            out["sigma"] = self.sigma
        if self.kind == "twophase":
            out.update(contrast=self.contrast, threshold=self.threshold)
        return out

    def describe(self) -> str:
        """One line for tables and cards, e.g. 'twophase (eta 0.1, 1024 terms, sigma 1, contrast 100, threshold 0)'."""
        rest = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{v} terms" if k == "num_terms" else f"{k} {v}"
                         for k, v in self.params().items() if k != "kind")
        return f"{self.kind} ({rest})"

    def key(self) -> bytes:
        """The family's part of a reference-cache key: for kl the bytes of eta alone (the key the cache has
        always used, so existing entries stay valid), else its parameters."""
        if self.kind == "kl":
            return np.float64(self.eta).tobytes()
        return json.dumps(self.params(), sort_keys=True).encode()

    def to_json(self) -> str:
        return json.dumps(self.params(), sort_keys=True)

    @classmethod
    def from_params(cls, params: dict) -> "Family":
        """The family of params() (ValueError naming what is wrong)."""
        if not isinstance(params, dict) or set(params) - {"kind", "eta", "num_terms", "sigma", "contrast",
                                                         "threshold"} or "kind" not in params:
            raise ValueError(f"not a diffusivity family: {params!r} (expected kind, eta, num_terms and the kind's "
                             "parameters)")
        return cls.of(**params)

    def check_coeffs(self, coeffs) -> np.ndarray:
        """coeffs as float64 [m] or [B, m], checked finite and with this family's number of terms."""
        coeffs = _check_coeffs(coeffs)
        if coeffs.shape[-1] != self.num_terms:
            raise ValueError(f"the {self.kind} family has {self.num_terms} terms, got coefficients of shape "
                             f"{coeffs.shape}")
        return coeffs

    def diffusivity(self, coeffs, resolution: int, dtype=np.float64) -> np.ndarray:
        """nu at the N^3 grid nodes: [N, N, N] for coeffs [m], [B, N, N, N] for [B, m]."""
        coeffs = self.check_coeffs(coeffs)
        if self.kind == "kl":
            return kl_diffusivity(coeffs, resolution, self.eta, dtype)
        log_nu = _grf_log_nu(coeffs.reshape(-1, self.num_terms), check_resolution(resolution), self.eta, self.sigma)
        if self.kind == "twophase":
            nu = np.where(log_nu > self.threshold, self.contrast, 1.0).astype(dtype)
        else:
            with np.errstate(over="ignore"):
                nu = np.exp(log_nu).astype(dtype)
            if not np.all(np.isfinite(nu)):
                raise ValueError(f"grf coefficients give a nu that overflows {np.dtype(dtype).name}: they are meant "
                                 "to be standard normal")
        return nu[0] if coeffs.ndim == 1 else nu

    def diffusivity_tf(self, coeffs, resolution: int):
        """TensorFlow twin of diffusivity (float32), usable inside tf.data `map`: coeffs [B, m] -> [B, N, N, N]
        (or [m] -> [N, N, N])."""
        import tensorflow as tf

        if self.kind == "kl":
            return kl_diffusivity_tf(coeffs, resolution, self.eta, self.num_terms)
        coeffs = tf.convert_to_tensor(coeffs, tf.float32)
        single = coeffs.shape.rank == 1
        log_nu = _grf_log_nu_tf(coeffs[None] if single else coeffs, resolution, self.eta, self.sigma,
                                self.num_terms)
        nu = tf.where(log_nu > self.threshold, tf.constant(self.contrast, tf.float32), 1.0) \
            if self.kind == "twophase" else tf.exp(log_nu)
        return nu[0] if single else nu

    def sample(self, num_samples: int, method: str = "sobol", seed: int = 0, skip: int = 0) -> np.ndarray:
        """Seeded coefficient vectors [num_samples, m]: for kl uniform in [-3, 3]^m, for grf and twophase standard
        normal. method "sobol": a scrambled Sobol sequence (the normal ones through the inverse normal CDF);
        "uniform": i.i.d. pseudo-random draws. skip: leading points to pass over (disjoint sets, one sequence)."""
        if self.kind == "kl":
            return sample_coeffs(num_samples, self.num_terms, method, seed, skip=skip)
        if method not in SAMPLING_METHODS:
            raise ValueError(f"sampling method must be one of {SAMPLING_METHODS}, got {method!r}")
        if int(num_samples) != num_samples or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
        if method == "uniform":
            return np.random.default_rng(seed).standard_normal((skip + num_samples, self.num_terms))[skip:]
        from scipy import special

        unit = sample_coeffs(num_samples, self.num_terms, "sobol", seed, bound=0.5, skip=skip) + 0.5  # in [0, 1]
        return special.ndtri(np.clip(unit, 1e-12, 1.0 - 1e-12))
