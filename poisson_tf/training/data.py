"""Training/validation sample sets and the tf.data pipelines: per resolution, and the whole multigrid cycle."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow as tf

from poisson_tf import fields, files, hardware

DEFAULT_CACHE_BUDGET_BYTES = 2 * 1024 ** 3
#: Batches each pipeline prepares ahead of the step that takes them.
PREFETCH_BATCHES = 2


def _fixed_tuning(ds: tf.data.Dataset) -> tf.data.Dataset:
    """ds with tf.data's autotuning off (parallelism and prefetch are set explicitly here instead).

    Its model thread sleeps for growing intervals while training runs, and destroying the iterator at the end of
    fit waits for it to wake: on a rank with one core that grew by about a second per epoch trained (the
    demo's fit, docs/performance.rst "tf.data's autotuning off")."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


@dataclasses.dataclass(frozen=True)
class SampleSet:
    """Coefficient vectors [num_samples, num_terms] of a diffusivity family, and how they were drawn."""

    coeffs: np.ndarray
    family: fields.Family
    method: str
    seed: int
    role: str = "train"

    @property
    def num_samples(self) -> int:
        return int(self.coeffs.shape[0])

    @property
    def num_terms(self) -> int:
        return int(self.coeffs.shape[1])

    @property
    def eta(self) -> float:
        return self.family.eta

    def save(self, path: str) -> str:
        """Writes the set to HDF5 (dataset `coeffs`, attributes family (JSON), eta, num_terms, method, seed,
        role); atomic."""
        with files.write_hdf5(path) as f:
            f.create_dataset("coeffs", data=self.coeffs)
            f.attrs.update(family=self.family.to_json(), eta=self.family.eta, num_terms=self.num_terms,
                           method=self.method, seed=self.seed, role=self.role)
        return path

    @classmethod
    def load(cls, path: str, family: fields.Family | None = None, num_terms: int | None = None) -> "SampleSet":
        """Reads a set written by save(); checks it against the expected family (or only its number of terms)
        when given. A set written before families were recorded is of the kl family with its eta.

        Raises:
          ValueError: unreadable or corrupt file, or a set drawn for another family or number of terms.
        """
        import h5py

        try:
            with h5py.File(path, "r") as f:
                coeffs = np.asarray(f["coeffs"][()], np.float64)
                attrs = {k: f.attrs[k] for k in ("eta", "num_terms", "method", "seed", "role")}
                recorded = f.attrs.get("family")
        except (OSError, KeyError) as e:
            raise ValueError(f"cannot read sample set {path!r} (expected HDF5 with dataset `coeffs` and "
                             f"attributes eta, num_terms, method, seed, role): {e}") from None
        if coeffs.ndim != 2 or coeffs.shape[1] != attrs["num_terms"] or not np.all(np.isfinite(coeffs)):
            raise ValueError(f"sample set {path!r} is corrupt: coeffs {coeffs.shape} with num_terms "
                             f"{attrs['num_terms']} (finite [num_samples, num_terms] expected)")
        try:
            drawn = fields.Family.from_params(json.loads(recorded)) if recorded is not None else \
                fields.Family.of("kl", float(attrs["eta"]), int(attrs["num_terms"]))
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"sample set {path!r} records no valid diffusivity family: {e}") from None
        if family is not None and drawn != family:
            raise ValueError(f"sample set {path!r} was drawn for the family {drawn.describe()}, but this run uses "
                             f"{family.describe()}")
        if num_terms is not None and attrs["num_terms"] != num_terms:
            raise ValueError(f"sample set {path!r} has {attrs['num_terms']} terms, but this run uses {num_terms}")
        return cls(coeffs, drawn, str(attrs["method"]), int(attrs["seed"]), str(attrs["role"]))


def make_sample_sets(num_train: int, num_val: int, family: fields.Family | None = None, method: str = "sobol",
                     seed: int = 0):
    """Disjoint training and validation sets: consecutive, non-overlapping stretches of one seeded sequence."""
    family = family or fields.Family()
    every = family.sample(num_train + num_val, method, seed)
    return (SampleSet(every[:num_train], family, method, seed, "train"),
            SampleSet(every[num_train:], family, method, seed, "validation"))


def global_batches(num_samples: int, global_batch_size: int, seed: int, epoch, shuffle: bool = True):
    """The global batches of one epoch, [steps, global_batch] sample indices (a tf int32 tensor).

    One permutation of all samples per epoch, keyed by (seed, epoch) alone, cut into whole global batches: the
    same batches for any number of workers (docs/design.rst s.8); the few samples past the last whole batch change
    from epoch to epoch, so every sample is trained.
    """
    order = tf.range(num_samples)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(
            order, seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))
    steps = num_samples // global_batch_size
    return tf.reshape(order[:steps * global_batch_size], [steps, global_batch_size])


def cache_bytes(num_samples: int, resolution: int) -> int:
    """Memory that caching the nu fields of a level takes on every worker (float32): any worker may draw any
    sample, so each caches them all."""
    return num_samples * resolution ** 3 * 4


def _fields_tf(coeffs, resolution: int, family: fields.Family, source_resolution: int | None, coarse_nu: str):
    """nu [b, N, N, N, 1] for coeffs [b, m]: the family's field at N, or at source_resolution averaged over blocks
    (coarse_nu "restrict": arithmetic means, "harmonic": harmonic means)."""
    if not source_resolution or source_resolution == resolution:
        return family.diffusivity_tf(coeffs, resolution)[..., None]
    factor = source_resolution // resolution
    fine = family.diffusivity_tf(coeffs, source_resolution)[..., None]
    if coarse_nu == "harmonic":  # the effective conductivity of layers in series, the lower bound of a block's
        return 1.0 / tf.nn.avg_pool3d(1.0 / fine, ksize=factor, strides=factor, padding="VALID")
    return tf.nn.avg_pool3d(fine, ksize=factor, strides=factor, padding="VALID")


def build_dataset(coeffs: np.ndarray, resolution: int, global_batch_size: int, family: fields.Family | None = None,
                  seed: int = 0, rank: int = 0, size: int = 1, start_step: int = 0, shuffle: bool = True,
                  cache_budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES, source_resolution: int | None = None,
                  coarse_nu: str = "restrict"):
    """An endless tf.data pipeline of nu batches [global_batch / size, N, N, N, 1] at one resolution.

    Epoch e is the global batches of global_batches(seed, e); this worker takes its slice (rank) of every one,
    so the sequence of global batches does not depend on the number of workers, and a resumed run
    (start_step: steps already trained at this level) sees the batches it would have seen. nu is generated in
    TensorFlow inside a parallel `map`, or once and kept in memory when all samples fit in cache_budget_bytes;
    with source_resolution (a multiple of N by a power of 2) it is that field averaged over blocks
    (coarse_nu "restrict" or "harmonic") instead of the field sampled at N. family: fields.Family() (kl) by
    default.

    Returns:
      (dataset, steps_per_epoch).

    Raises:
      ValueError: a global batch the workers cannot split, or fewer samples than one global batch.
    """
    resolution = fields.check_resolution(resolution)
    if global_batch_size % size:
        raise ValueError(f"global batch size {global_batch_size} must be divisible by the {size} workers")
    num_samples = len(coeffs)
    steps = num_samples // global_batch_size
    if steps == 0:
        raise ValueError(f"{num_samples} samples cannot fill one global batch of {global_batch_size}")
    per_worker = global_batch_size // size
    every = tf.constant(np.asarray(coeffs), tf.float32)
    family = family or fields.Family()
    cached = None
    if cache_bytes(num_samples, resolution) <= cache_budget_bytes:
        cached = tf.concat([_fields_tf(every[i:i + 8], resolution, family, source_resolution, coarse_nu)
                            for i in range(0, num_samples, 8)], axis=0)

    def one_epoch(epoch):
        batches = global_batches(num_samples, global_batch_size, seed, epoch, shuffle)
        mine = tf.reshape(batches[:, rank * per_worker:(rank + 1) * per_worker], [-1])  # Horovod: my slice
        ds = tf.data.Dataset.from_tensor_slices(mine)
        if cached is not None:
            ds = ds.map(lambda i: tf.gather(cached, i))
        else:
            ds = ds.map(lambda i: _fields_tf(tf.gather(every, i)[None], resolution, family, source_resolution,
                                             coarse_nu)[0],
                        num_parallel_calls=len(hardware.usable_cpus()), deterministic=True)
        return ds.batch(per_worker, drop_remainder=True)

    ds = tf.data.Dataset.range(start_step // steps, np.iinfo(np.int64).max).flat_map(one_epoch)
    return _fixed_tuning(ds.skip(start_step % steps).prefetch(PREFETCH_BATCHES)), steps


def multigrid_dataset(plan, coeffs: np.ndarray, family: fields.Family | None = None, seed: int = 0, rank: int = 0,
                      size: int = 1, start_epoch: int = 0, cache_budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES,
                      coarse_nu: str = "sample", start_step: int = 0):
    """The whole cycle as one pipeline: every step draws its batch from the level the plan gives its epoch.

    One endless pipeline per level (build_dataset, with the level's batch and its first num_samples samples); a
    per-step choice sequence built from the plan selects among them (tf.data choose_from_datasets), so the
    switch happens at the same step on every worker and a resumed run continues each level's stream at the
    step it had reached.

    Args:
      plan: a compiled cycles.EpochPlan (config.TrainConfig.plan()).
      coeffs: the training samples, at least as many as any level uses.
      start_epoch: the first epoch of the plan to produce (0, or the epoch after a checkpoint).
      start_step: steps of start_epoch already trained (a checkpoint written within an epoch): the pipeline
        begins with the next one.
      cache_budget_bytes: shared by the levels, finest first.
      family: the diffusivity family of the coefficients (fields.Family() by default).
      coarse_nu: "sample" (the family's field at each level's nodes), or "restrict" / "harmonic" (the finest
        level's field averaged arithmetically / harmonically over blocks).

    Returns:
      (dataset of [level batch / size, N, N, N, 1] with N and the batch varying by epoch, steps_per_epoch).
    """
    # Keyed by resolution: a plan may visit only some of the configured levels (e.g. `single`).
    resolutions = plan.resolutions
    datasets, budget = [], cache_budget_bytes
    for index, resolution in reversed(list(enumerate(resolutions))):
        level = plan.level(resolution)
        source = resolutions[-1] if coarse_nu != "sample" else None
        ds, _ = build_dataset(coeffs[:level.num_samples], resolution, level.global_batch_size, family, seed + index,
                              rank, size, plan.steps_at(resolution, start_epoch)
                              + (start_step if plan.epoch_resolutions()[start_epoch] == resolution else 0),
                              cache_budget_bytes=budget,
                              source_resolution=source, coarse_nu=coarse_nu)
        need = cache_bytes(level.num_samples, resolution)
        if need <= budget:  # the same test build_dataset made: this level was cached
            budget -= need
        datasets.insert(0, ds)
    per_epoch = plan.epoch_resolutions()[start_epoch:]
    choices = np.repeat(np.array([resolutions.index(r) for r in per_epoch], np.int64), plan.steps_per_epoch)
    choice = tf.data.Dataset.from_tensor_slices(choices[start_step:])
    ds = tf.data.Dataset.choose_from_datasets(datasets, choice, stop_on_empty_dataset=True)
    return _fixed_tuning(ds), plan.steps_per_epoch
