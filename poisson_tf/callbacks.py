"""Keras callbacks of the multigrid trainer: cycle position, validation, TensorBoard, checkpoints."""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from poisson_tf import distributed, evaluation, inference
from poisson_tf.multigrid import EpochPlan


class MultigridCallback(keras.callbacks.Callback):
    """Executes an EpochPlan alongside fit: checks every epoch trained the planned resolution, publishes
    `resolution`, `level` and `visit` into the logs, and records the sequence actually trained.

    The data switch itself is compiled into the pipeline from the same plan (data.multigrid_dataset), so
    every worker switches at the same step by construction.
    """

    def __init__(self, plan: EpochPlan):
        super().__init__()
        self.plan = plan
        self.resolutions = plan.epoch_resolutions()
        self.levels = plan.epoch_levels()
        self.visits = plan.visit_of_epoch()
        self.recorded = []  # (epoch, resolution actually trained)
        self._seen = set()

    def on_epoch_begin(self, epoch, logs=None):
        self._seen = set()

    def on_train_batch_end(self, batch, logs=None):
        if logs and "resolution" in logs:
            self._seen.add(int(logs["resolution"]))
        if logs and "batch_loss" in logs and not np.isfinite(float(logs["batch_loss"])):
            raise RuntimeError(f"training diverged at batch {batch}: the energy is {float(logs['batch_loss'])}; "
                               "lower --learning_rate, add --warmup_steps, or use --precision=float32")

    def on_epoch_end(self, epoch, logs=None):
        expected = self.resolutions[epoch]
        if self._seen and self._seen != {expected}:
            raise RuntimeError(f"epoch {epoch} trained at resolutions {sorted(self._seen)}, the cycle plans "
                               f"{expected}: the pipeline and the schedule disagree")
        self.recorded.append((epoch, next(iter(self._seen), expected)))
        if logs is not None:
            logs.update(resolution=expected, level=self.levels[epoch], visit=self.visits[epoch])


def log_keys(results: dict) -> dict:
    """Validation results {N: {metric: value}} as the log and TensorBoard keys eval/res{N}/{metric}."""
    return {f"eval/res{n}/{name}": value for n, means in results.items() for name, value in means.items()}


class Validator:
    """Metrics of the network on validation samples against cached reference solutions, at given resolutions.

    A thin view of evaluation.evaluate (samples split over workers and gathered, so every worker returns the
    same numbers): the mean metrics per resolution, {N: {metric: value}}.
    """

    def __init__(self, network, coeffs, eta: float, resolutions, store, batch_size: int = 2):
        self.network, self.coeffs, self.eta = network, np.asarray(coeffs), eta
        self.resolutions, self.store, self.batch_size = list(resolutions), store, batch_size
        self.examples = {}  # resolution -> (nu, u, u_ref) of validation sample 0, on the chief

    def run(self) -> dict:
        report = evaluation.evaluate(lambda nu: inference.predict(self.network, nu, self.batch_size), self.coeffs,
                                     self.eta, self.resolutions, self.store, self.batch_size, baseline=False)
        self.examples = report["examples"]
        return {n: r["model"] for n, r in report["resolutions"].items()}


class ValidationCallback(keras.callbacks.Callback):
    """Validates at the end of every `every`-th visit and of training; adds eval/res{N}/... to the logs."""

    def __init__(self, validator: Validator, plan: EpochPlan, every: int = 1):
        super().__init__()
        self.validator, self.plan, self.every = validator, plan, max(1, every)
        self.visits = plan.visit_of_epoch()
        self.history = []  # (epoch, {resolution: {metric: value}})

    def on_epoch_end(self, epoch, logs=None):
        last = epoch == self.plan.num_epochs - 1
        if not (last or (self.plan.is_visit_end(epoch) and (self.visits[epoch] + 1) % self.every == 0)):
            return
        results = self.validator.run()
        keys = log_keys(results)
        bad = sorted(k for k, v in keys.items() if not np.isfinite(v))
        if bad:
            raise RuntimeError(f"validation after epoch {epoch} is not finite ({', '.join(bad)}): the weights "
                               "diverged; lower --learning_rate, add --warmup_steps, or use --precision=float32")
        self.history.append((epoch, results))
        if logs is not None:
            logs.update(keys)


def _slice_image(volume: np.ndarray) -> np.ndarray:
    """Mid-plane z slice scaled to [0, 1] as a [1, N, N, 1] image (x down, y across)."""
    plane = volume[:, :, volume.shape[2] // 2]
    lo, hi = float(plane.min()), float(plane.max())
    return ((plane - lo) / (hi - lo if hi > lo else 1.0))[None, :, :, None].astype(np.float32)


class TensorBoardLogger(keras.callbacks.Callback):
    """Chief-only TensorBoard: per-step energy, resolution, level, learning rate and voxels/s; validation
    metrics, mid-plane slices of nu, u, u_ref and |error|; the run's hyperparameters."""

    def __init__(self, log_dir: str, plan: EpochPlan, global_batch_size: int, hparams: dict,
                 validator: Validator | None = None):
        super().__init__()
        self.enabled = distributed.is_chief()
        self.log_dir, self.plan, self.global_batch_size = log_dir, plan, global_batch_size
        self.hparams, self.validator = hparams, validator
        self.levels = plan.epoch_levels()
        self._writer = None
        self._epoch = 0
        self._t0 = None

    def on_train_begin(self, logs=None):
        if not self.enabled:
            return
        from tensorboard.plugins.hparams import api as hp

        self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            hp.hparams({k: v for k, v in self.hparams.items() if isinstance(v, (bool, int, float, str))})

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if not self.enabled or not logs:
            return
        seconds = time.perf_counter() - self._t0
        n = int(logs.get("resolution", 0))
        step = int(self.model.optimizer.iterations.numpy())
        lr = self.model.optimizer.learning_rate
        with self._writer.as_default(step=step):
            tf.summary.scalar("train/energy", float(logs.get("batch_loss", logs["loss"])))
            tf.summary.scalar("train/resolution", n)
            tf.summary.scalar("train/level", self.levels[self._epoch])
            tf.summary.scalar("train/learning_rate", float(np.asarray(lr)))
            tf.summary.scalar("train/voxels_per_second", self.global_batch_size * n ** 3 / max(seconds, 1e-9))

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled or not logs:
            return
        step = int(self.model.optimizer.iterations.numpy())
        with self._writer.as_default(step=step):
            tf.summary.scalar("epoch/energy", float(logs["loss"]))
            for key, value in logs.items():
                if key.startswith("eval/"):
                    tf.summary.scalar(key, value)
            if self.validator is not None and any(k.startswith("eval/") for k in logs):
                for n, (nu, u, u_ref) in self.validator.examples.items():
                    for name, volume in (("nu", nu), ("u", u), ("u_ref", u_ref), ("abs_error", np.abs(u - u_ref))):
                        tf.summary.image(f"eval/res{n}/{name}", _slice_image(volume))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class CheckpointCallback(keras.callbacks.Callback):
    """Saves network, optimizer and cycle position after every epoch (atomic; written by the chief)."""

    def __init__(self, checkpointer, network, plan: EpochPlan):
        super().__init__()
        self.checkpointer, self.network, self.plan = checkpointer, network, plan

    def on_epoch_end(self, epoch, logs=None):
        visit = self.plan.visit_of_epoch()[epoch]
        state = {"epoch": epoch, "visit": visit, "visit_end": self.plan.is_visit_end(epoch),
                 "step": int(self.model.optimizer.iterations.numpy()),
                 "energy": float(logs["loss"]) if logs and "loss" in logs else None}
        self.checkpointer.save(self.network, self.model.optimizer, state)
