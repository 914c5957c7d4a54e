"""Training/validation sample sets and the tf.data pipelines: per resolution, and the whole multigrid cycle."""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from poisson_tf import fields, files

DEFAULT_CACHE_BUDGET_BYTES = 2 * 1024 ** 3


@dataclasses.dataclass(frozen=True)
class SampleSet:
    """KL coefficient vectors [num_samples, num_terms] and how they were drawn."""

    coeffs: np.ndarray
    eta: float
    method: str
    seed: int
    role: str = "train"

    @property
    def num_samples(self) -> int:
        return int(self.coeffs.shape[0])

    @property
    def num_terms(self) -> int:
        return int(self.coeffs.shape[1])

    def save(self, path: str) -> str:
        """Writes the set to HDF5 (dataset `coeffs`, attributes eta, num_terms, method, seed, role); atomic."""
        with files.write_hdf5(path) as f:
            f.create_dataset("coeffs", data=self.coeffs)
            f.attrs.update(eta=self.eta, num_terms=self.num_terms, method=self.method, seed=self.seed,
                           role=self.role)
        return path

    @classmethod
    def load(cls, path: str, eta: float | None = None, num_terms: int | None = None) -> "SampleSet":
        """Reads a set written by save(); checks it against the expected eta and num_terms when given.

        Raises:
          ValueError: unreadable or corrupt file, or a set drawn for another eta / number of KL terms.
        """
        import h5py

        try:
            with h5py.File(path, "r") as f:
                coeffs = np.asarray(f["coeffs"][()], np.float64)
                attrs = {k: f.attrs[k] for k in ("eta", "num_terms", "method", "seed", "role")}
        except (OSError, KeyError) as e:
            raise ValueError(f"cannot read sample set {path!r} (expected HDF5 with dataset `coeffs` and "
                             f"attributes eta, num_terms, method, seed, role): {e}") from None
        if coeffs.ndim != 2 or coeffs.shape[1] != attrs["num_terms"] or not np.all(np.isfinite(coeffs)):
            raise ValueError(f"sample set {path!r} is corrupt: coeffs {coeffs.shape} with num_terms "
                             f"{attrs['num_terms']} (finite [num_samples, num_terms] expected)")
        if eta is not None and not np.isclose(attrs["eta"], eta, rtol=1e-12):
            raise ValueError(f"sample set {path!r} was drawn for eta={attrs['eta']}, but this run uses eta={eta}")
        if num_terms is not None and attrs["num_terms"] != num_terms:
            raise ValueError(f"sample set {path!r} has {attrs['num_terms']} KL terms, but this run uses "
                             f"{num_terms}")
        return cls(coeffs, float(attrs["eta"]), str(attrs["method"]), int(attrs["seed"]), str(attrs["role"]))


def make_sample_sets(num_train: int, num_val: int, num_terms: int = fields.DEFAULT_NUM_TERMS,
                     eta: float = fields.DEFAULT_ETA, method: str = "sobol", seed: int = 0):
    """Disjoint training and validation sets: consecutive, non-overlapping stretches of one seeded sequence."""
    every = fields.sample_coeffs(num_train + num_val, num_terms, method, seed)
    return (SampleSet(every[:num_train], eta, method, seed, "train"),
            SampleSet(every[num_train:], eta, method, seed, "validation"))


def shard(coeffs: np.ndarray, global_batch_size: int, rank: int = 0, size: int = 1) -> np.ndarray:
    """This worker's disjoint share of whole global batches: rows rank, rank + size, ... of the first
    floor(n / global_batch) * global_batch rows, so every worker runs the same number of steps."""
    if global_batch_size % size:
        raise ValueError(f"global batch size {global_batch_size} must be divisible by the {size} workers")
    usable = (len(coeffs) // global_batch_size) * global_batch_size
    if usable == 0:
        raise ValueError(f"{len(coeffs)} samples cannot fill one global batch of {global_batch_size}")
    return coeffs[:usable][rank::size]


def cache_bytes(coeffs: np.ndarray, resolution: int, global_batch_size: int, rank: int = 0, size: int = 1) -> int:
    """Memory that caching this worker's shard of nu fields at one resolution takes (float32)."""
    return len(shard(np.asarray(coeffs), global_batch_size, rank, size)) * resolution ** 3 * 4


def build_dataset(coeffs: np.ndarray, resolution: int, global_batch_size: int, eta: float = fields.DEFAULT_ETA,
                  seed: int = 0, rank: int = 0, size: int = 1, start_epoch: int = 0, shuffle: bool = True,
                  cache_budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES):
    """An endless tf.data pipeline of nu batches [global_batch / size, N, N, N, 1] at one resolution.

    Sharded by worker first; epoch e visits this worker's shard in the order of a stateless shuffle keyed by
    (seed, e), so two epochs differ, the same seed repeats, and a resumed run sees the same batches. nu is
    generated in TensorFlow inside a parallel `map`, or once and kept in memory when the shard fits in
    `cache_budget_bytes`.

    Returns:
      (dataset, steps_per_epoch).
    """
    resolution = fields.check_resolution(resolution)
    per_worker = global_batch_size // size
    local = tf.constant(shard(np.asarray(coeffs), global_batch_size, rank, size), tf.float32)
    num_local = int(local.shape[0])
    num_terms = int(local.shape[1])
    cached = None
    if cache_bytes(coeffs, resolution, global_batch_size, rank, size) <= cache_budget_bytes:
        cached = tf.concat([fields.kl_diffusivity_tf(local[i:i + 8], resolution, eta)
                            for i in range(0, num_local, 8)], axis=0)[..., None]

    def one_epoch(epoch):
        order = tf.range(num_local)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        ds = tf.data.Dataset.from_tensor_slices(order)
        if cached is not None:
            ds = ds.map(lambda i: tf.gather(cached, i))
        else:
            ds = ds.map(lambda i: fields.kl_diffusivity_tf(tf.gather(local, i), resolution, eta, num_terms)[..., None],
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(per_worker, drop_remainder=True)

    ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(one_epoch)
    return ds.prefetch(tf.data.AUTOTUNE), num_local // per_worker


def multigrid_dataset(plan, coeffs: np.ndarray, global_batch_size: int, eta: float = fields.DEFAULT_ETA,
                      seed: int = 0, rank: int = 0, size: int = 1, start_epoch: int = 0,
                      cache_budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES):
    """The whole cycle as one pipeline: every step draws its batch from the level the plan gives its epoch.

    One endless pipeline per level (build_dataset); a per-step choice sequence built from the plan selects
    among them (tf.data choose_from_datasets), so the switch happens at the same step on every worker and a
    resumed run continues each level's stream at the epoch it had reached.

    Args:
      plan: a multigrid.EpochPlan.
      start_epoch: the first epoch to produce (0, or the epoch after a checkpoint).
      cache_budget_bytes: shared by the levels, finest first.

    Returns:
      (dataset of [global_batch / size, N, N, N, 1] with N varying by epoch, steps_per_epoch).
    """
    # Keyed by resolution: a plan may visit only some of the configured levels (e.g. `single`).
    resolutions = plan.resolutions
    per_epoch = plan.epoch_resolutions()
    datasets, steps = [], None
    budget = cache_budget_bytes
    for index, resolution in reversed(list(enumerate(resolutions))):
        before = per_epoch[:start_epoch].count(resolution)  # epochs this level's stream already produced
        ds, steps = build_dataset(coeffs, resolution, global_batch_size, eta, seed + index, rank, size,
                                  start_epoch=before, cache_budget_bytes=budget)
        need = cache_bytes(coeffs, resolution, global_batch_size, rank, size)
        if need <= budget:  # the same test build_dataset made: this level was cached
            budget -= need
        datasets.insert(0, ds)
    choices = np.repeat(np.array([resolutions.index(r) for r in per_epoch[start_epoch:]], np.int64), steps)
    choice = tf.data.Dataset.from_tensor_slices(choices)
    return tf.data.Dataset.choose_from_datasets(datasets, choice, stop_on_empty_dataset=True), steps
