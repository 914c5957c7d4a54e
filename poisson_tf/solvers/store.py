"""The cache of reference solutions: one HDF5 file per (coefficients, eta, N), solved once by solvers.solve."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from poisson_tf import hdf5
from poisson_tf.solvers.dispatch import solve


def default_cache_dir() -> str:
    """Where reference solutions are cached unless a directory is given: $POISSON_TF_CACHE/references
    (default ~/.cache/poisson_tf/references), shared by training runs, evaluation and benchmarks."""
    root = os.environ.get("POISSON_TF_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "poisson_tf"))
    return os.path.join(root, "references")


class ReferenceStore:
    """Reference solutions by solve() (method "auto": the matrix-free gmg from N = 48, the assembled AMG below),
    computed once per (family, coefficients, N) and cached in HDF5 (rtol 1e-10).

    One file per sample and resolution, named by a hash of its key, written atomically: safe to share
    between runs and workers.
    """

    def __init__(self, directory: str = "", rtol: float = 1e-10):
        self.directory = directory or default_cache_dir()
        self.rtol = rtol

    def path(self, family, coeffs, resolution: int) -> str:
        """The cache file of one sample: named by a hash of its coefficients, its family (fields.Family.key: for
        kl the key the cache always had) and N."""
        key = np.asarray(coeffs, np.float64).tobytes() + family.key() + np.int64(resolution).tobytes()
        return os.path.join(self.directory, f"ref_N{resolution}_{hashlib.sha1(key).hexdigest()[:20]}.h5")

    def get(self, family, coeffs, resolution: int):
        """(nu, u_ref), each [N, N, N] float64, solving and caching on first use."""
        path = self.path(family, coeffs, resolution)
        if os.path.exists(path):
            try:
                data, attrs = hdf5.read_fields(path, ("nu", "u_ref"))
                if np.array_equal(attrs["coeffs"], np.asarray(coeffs, np.float64)) and \
                        hdf5.recorded_family(attrs, path) == family:
                    return data["nu"], data["u_ref"]
            except ValueError:
                pass  # unreadable cache entry: solve again and overwrite it
        nu = family.diffusivity(coeffs, resolution)
        u_ref, record = solve(nu, rtol=self.rtol)
        hdf5.write_fields(path, {"nu": nu, "u_ref": u_ref}, family=family, coeffs=np.asarray(coeffs, np.float64),
                          xdmf=False, attrs={"iterations": record.iterations, "method": record.method,
                                             "relative_residual": record.relative_residual})
        return nu, u_ref

    def ensure(self, family, coeffs, resolution: int) -> None:
        """Solves and caches the reference unless its file exists, without reading a cached one (get validates
        it when it is used)."""
        if not os.path.exists(self.path(family, coeffs, resolution)):
            self.get(family, coeffs, resolution)

    def get_many(self, family, coeffs: np.ndarray, resolution: int):
        """(nu, u_ref) stacked over samples, [B, N, N, N] each."""
        pairs = [self.get(family, c, resolution) for c in np.asarray(coeffs)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
