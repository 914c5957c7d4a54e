"""Keras callbacks of the training loop: the broadcast of rank 0's state, cycle position, validation, TensorBoard,
checkpoints."""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from poisson_tf import distributed, inference, scoring
from poisson_tf.cycles import EpochPlan
from poisson_tf.training.signals import Interrupted, SignalListener, stop_reason


class BroadcastCallback(keras.callbacks.Callback):
    """At the start of fit, copies rank 0's network weights and optimizer state to every worker, then gives
    every worker its own dropout stream (seed_per_rank)."""

    def __init__(self):
        super().__init__()
        self._done = False

    def on_train_begin(self, logs=None):
        if self._done:  # a second fit of the same run (an epoch resumed within it): the workers are in step
            return
        network = getattr(self.model, "network", self.model)
        distributed.broadcast_model(network, self.model.optimizer)
        distributed.seed_per_rank(network)  # Horovod: identical weights, different dropout masks
        self._done = True


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

    A thin view of scoring.evaluate (samples split over workers and gathered, so every worker returns the
    same numbers): the mean metrics per resolution, {N: {metric: value}}.
    """

    def __init__(self, network, family, coeffs, resolutions, store, batch_size: int = 2):
        self.network, self.family, self.coeffs = network, family, np.asarray(coeffs)
        self.resolutions, self.store, self.batch_size = list(resolutions), store, batch_size
        self.examples = {}  # resolution -> (nu, u, u_ref) of validation sample 0, on the chief

    def run(self) -> dict:
        report = scoring.evaluate(lambda nu: inference.predict(self.network, nu, self.batch_size), self.family,
                                  self.coeffs, self.resolutions, self.store, self.batch_size, baseline=False)
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
    metrics, mid-plane slices of nu, u, u_ref and ``|error|``; the run's hyperparameters.

    Per-step values are kept in Python during an epoch and written at its end by one compiled function:
    five eager summary ops per step cost ~6 ms, which made a 16^3 step 1.4x slower (benchmarks/).
    """

    STEP_SCALARS = ("energy", "resolution", "level", "learning_rate", "voxels_per_second")

    def __init__(self, log_dir: str, plan: EpochPlan, hparams: dict, validator: Validator | None = None):
        super().__init__()
        self.enabled = distributed.is_chief()
        self.log_dir, self.plan = log_dir, plan
        self.batch_sizes = plan.epoch_batch_sizes()
        self.hparams, self.validator = hparams, validator
        self.levels = plan.epoch_levels()
        self._writer = None
        self._epoch = 0
        self._t0 = None
        self._first_step = 0
        self._steps_per_call = 1
        self._rows = []  # (step, energy, resolution, level, seconds) of this epoch's batches

    def on_train_begin(self, logs=None):
        if not self.enabled:
            return
        # One call may run several steps (steps_per_execution): a batch end then stands for the last of them.
        self._steps_per_call = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        from tensorboard.plugins.hparams import api as hp

        self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            hp.hparams({k: v for k, v in self.hparams.items() if isinstance(v, (bool, int, float, str))})

        from tensorboard.plugins.scalar import metadata

        scalar = metadata.create_summary_metadata(display_name=None, description=None)

        @tf.function
        def write_steps(steps, values):
            with self._writer.as_default():
                for i in tf.range(tf.shape(steps)[0]):
                    for j, name in enumerate(self.STEP_SCALARS):
                        # summary.write, not summary.scalar: that would prefix the loop's name scope ("while/").
                        tf.summary.write(f"train/{name}", values[i, j], step=steps[i], metadata=scalar)

        self._write_steps = write_steps

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._rows = []
        if self.enabled:
            self._first_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if not self.enabled or not logs:
            return
        # batch is the last step of the call, the time is that of its steps_per_execution steps.
        self._rows.append((self._first_step + batch + 1, float(logs.get("batch_loss", logs["loss"])),
                           int(logs.get("resolution", 0)), self.levels[self._epoch],
                           (time.perf_counter() - self._t0) / self._steps_per_call))

    def _flush_steps(self):
        if not self._rows:
            return
        steps = np.array([r[0] for r in self._rows], np.int64)
        schedule = getattr(self.model.optimizer, "_learning_rate", None)
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            # update s (1-based) used the rate at iteration count s - 1, the count before it
            lr = np.asarray(schedule(tf.constant(steps - 1)), np.float64) * np.ones(len(steps))
        else:
            lr = np.full(len(steps), float(np.asarray(self.model.optimizer.learning_rate)))
        batch = self.batch_sizes[self._epoch]
        values = np.array([(energy, n, level, lr[i], batch * n ** 3 / max(seconds, 1e-9))
                           for i, (_, energy, n, level, seconds) in enumerate(self._rows)], np.float32)
        self._write_steps(tf.constant(steps), tf.constant(values))
        self._rows = []

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled or not logs:
            return
        self._flush_steps()
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
    """Saves network, optimizer and cycle position (atomic; written by the chief): at the end of every visit
    and of training, and after any epoch that ends `every_seconds` or more after the last save (0: every
    epoch). A checkpoint of a small model costs ~70 ms, which every-epoch saving added to 0.3 s epochs at 16^3;
    a crash loses at most `every_seconds` of training."""

    def __init__(self, checkpointer, network, plan: EpochPlan, every_seconds: float = 0.0):
        super().__init__()
        self.checkpointer, self.network, self.plan = checkpointer, network, plan
        self.every_seconds = every_seconds
        self._last_save = time.monotonic()
        self._pending = None  # the state of the last epoch trained, when it is not saved yet

    def on_epoch_end(self, epoch, logs=None):
        visit = self.plan.visit_of_epoch()[epoch]
        self._pending = {"epoch": epoch, "visit": visit, "visit_end": self.plan.is_visit_end(epoch),
                         "step": int(self.model.optimizer.iterations.numpy()),
                         "energy": float(logs["loss"]) if logs and "loss" in logs else None}
        # Every worker reaches the same decision except by the clock; only the chief writes, so that is harmless.
        if (self._pending["visit_end"] or epoch == self.plan.num_epochs - 1
                or time.monotonic() - self._last_save >= self.every_seconds):
            self._save()

    def on_train_end(self, logs=None):
        if self._pending is not None:  # stopped early (stop_after_epochs): keep where it stopped
            self._save()

    def _save(self):
        self.checkpointer.save(self.network, self.model.optimizer, self._pending)
        self._last_save, self._pending = time.monotonic(), None

    def save_now(self) -> None:
        """Saves the last epoch trained unless it is saved already (a stop at an epoch's end)."""
        if self._pending is not None:
            self._save()

    def save_within_epoch(self, epoch: int, steps_in_epoch: int) -> None:
        """Saves the state after steps_in_epoch steps of epoch (a stop within it): "epoch" stays the last
        complete one, and "partial" says where a resume continues (training.data's start_step)."""
        self._pending = {"epoch": epoch - 1, "visit": self.plan.visit_of_epoch()[epoch],
                         "partial": {"epoch": epoch, "steps": int(steps_in_epoch)},
                         "step": int(self.model.optimizer.iterations.numpy()), "energy": None}
        self._save()


class StopOnSignal(keras.callbacks.Callback):
    """Ends training cleanly when a STOP_SIGNALS signal reached any worker (the listener's code, agreed by one
    scalar allreduce after every call of the train function): the chief writes a checkpoint of exactly the steps
    done (checkpoint_cb.save_within_epoch, or at an epoch's end the epoch's own), then every worker raises
    Interrupted. Last in the callback list: an epoch's end is seen after its validation and checkpoint."""

    def __init__(self, listener: SignalListener, checkpoint_cb: CheckpointCallback, end_epoch: int,
                 first_epoch: int = 0, steps_done: int = 0):
        super().__init__()
        self.listener, self.checkpoint_cb, self.end_epoch = listener, checkpoint_cb, end_epoch
        self.first_epoch, self.steps_done = first_epoch, steps_done  # a fit that resumes within first_epoch
        self._epoch, self._offset = first_epoch, steps_done

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._offset = epoch, (self.steps_done if epoch == self.first_epoch else 0)

    def _stop_requested(self) -> str | None:
        code = distributed.largest(self.listener.received)  # Horovod: every worker decides alike
        return stop_reason(code) if code else None

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.params.get("steps"):
            return  # an epoch's last step: on_epoch_end acts, after the epoch's validation and checkpoint
        reason = self._stop_requested()
        if reason is not None:
            steps = self._offset + batch + 1
            distributed.on_chief(self.checkpoint_cb.save_within_epoch, self._epoch, steps)
            distributed.barrier()  # Horovod: no worker leaves before the chief's checkpoint is on disk
            raise Interrupted(reason, self._epoch, steps)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.end_epoch:
            return  # the last epoch of this launch: it ends by itself
        reason = self._stop_requested()
        if reason is not None:
            distributed.on_chief(self.checkpoint_cb.save_now)
            distributed.barrier()
            raise Interrupted(reason, epoch + 1, 0)
