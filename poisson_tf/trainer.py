"""The multigrid training loop: energy loss, Horovod data parallelism, checkpoints, validation, TensorBoard."""
from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf

from poisson_tf import callbacks, checkpoint, config, data, distributed, fem, files, models


def energy_loss(network, nu, training):
    """Per-sample FEM energy J of the network's prediction: the data-free loss (DESIGN.md s.4)."""
    return fem.energy(network(nu, training=training), nu)


class EnergyTrainer(distributed.DataParallelTrainer):
    """DataParallelTrainer on the FEM energy that also reports the resolution of every batch."""

    def __init__(self, network, **kwargs):
        super().__init__(network, energy_loss, **kwargs)

    def train_step(self, nu):
        logs = super().train_step(nu)
        logs["resolution"] = tf.shape(nu)[1]
        return logs


@keras.saving.register_keras_serializable(package="poisson_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from base/warmup_steps to base over warmup_steps steps, then constant."""

    def __init__(self, base: float, warmup_steps: int = 0):
        self.base, self.warmup_steps = float(base), int(warmup_steps)

    def __call__(self, step):
        if self.warmup_steps <= 0:
            return tf.constant(self.base, tf.float32)
        ramp = tf.cast(step + 1, tf.float32) / float(self.warmup_steps)
        return self.base * tf.minimum(1.0, ramp)

    def get_config(self):
        return {"base": self.base, "warmup_steps": self.warmup_steps}


def reference_store(cfg: config.TrainConfig) -> data.ReferenceStore:
    directory = cfg.run.reference_cache or os.path.join(
        os.environ.get("POISSON_TF_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "poisson_tf")),
        "references")
    return data.ReferenceStore(directory)


_CPU_PRECISION_ERRORS = {
    "bfloat16": "--precision=bfloat16 is refused on CPU: TensorFlow 2.18's oneDNN bfloat16 Conv3D gradients come "
                "out corrupted on this stack (measured: gradients ~1e35 after a few steps, then NaN weights), and "
                "with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0) training is ~20x slower; use --precision=float32 on CPU "
                "and bfloat16 on GPUs",
    "float16": "--precision=float16 is meant for GPUs: on CPU TensorFlow runs float16 convolutions without oneDNN, "
               "measured ~25x slower than float32; use --precision=float32 on CPU",
}


def check_runtime(cfg: config.TrainConfig) -> None:
    """What the configuration (validated when built) cannot check alone: the workers and the device.

    Raises:
      ValueError: a global batch the workers cannot split evenly, or 16-bit precision on a CPU.
    """
    distributed.split_batch(cfg.optim.global_batch_size)
    if (cfg.optim.precision != "float32" and not tf.config.list_physical_devices("GPU")
            and os.environ.get("POISSON_TF_ALLOW_CPU_MIXED_PRECISION") != "1"):
        raise ValueError(_CPU_PRECISION_ERRORS[cfg.optim.precision]
                         + " (POISSON_TF_ALLOW_CPU_MIXED_PRECISION=1 overrides this check)")


def train(cfg: config.TrainConfig, resume: bool = False, stop_after_epochs: int | None = None,
          extra_callbacks=()) -> dict:
    """Runs (or resumes) the configured multigrid training; see _train. Restores Keras' global dtype policy."""
    previous = keras.mixed_precision.dtype_policy()
    try:
        return _train(cfg, resume, stop_after_epochs, extra_callbacks)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _train(cfg: config.TrainConfig, resume: bool, stop_after_epochs: int | None, extra_callbacks) -> dict:
    """Runs (or resumes) the configured multigrid training; returns a summary (same on every worker).

    Args:
      cfg: the run configuration (saved to cfg.run.model_dir by the chief).
      resume: continue from model_dir's checkpoint at the exact epoch and visit.
      stop_after_epochs: stop once this many epochs of the plan are done (an interruption, for tests).
      extra_callbacks: more Keras callbacks, run after the package's own.
    """
    distributed.init(intra_op_threads=cfg.run.threads, inter_op_threads=0 if cfg.run.threads == 0 else 1)
    plan = cfg.cycle.plan()
    check_runtime(cfg)
    if cfg.run.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.run.seed)
    model_dir = cfg.run.model_dir
    if distributed.is_chief():
        os.makedirs(model_dir, exist_ok=True)
        cfg.save(model_dir)
    train_set, val_set = data.make_sample_sets(cfg.data.num_train, cfg.data.num_val, cfg.data.num_terms,
                                               cfg.data.eta, cfg.data.sampling, cfg.data.seed)
    if distributed.is_chief():
        train_set.save(os.path.join(model_dir, "train_samples.h5"))
        val_set.save(os.path.join(model_dir, "val_samples.h5"))

    keras.mixed_precision.set_dtype_policy(config.PRECISIONS[cfg.optim.precision])  # process-wide, set every run
    network = models.build_model(cfg.model)
    lr = cfg.optim.learning_rate * (distributed.size() if cfg.optim.scale_lr_by_workers else 1)
    trainer = EnergyTrainer(network)
    optimizer = keras.optimizers.Adam(WarmupSchedule(lr, cfg.optim.warmup_steps))
    if cfg.optim.precision == "float16":  # float16 gradients underflow without dynamic loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer)
    checkpointer = checkpoint.Checkpointer(model_dir, cfg.fingerprint())
    start_epoch = 0
    if resume:
        start_epoch = _restore_on_chief(checkpointer, network, trainer.optimizer)["epoch"] + 1
    end_epoch = plan.num_epochs if stop_after_epochs is None else min(plan.num_epochs, stop_after_epochs)

    validator = callbacks.Validator(network, val_set.coeffs, cfg.data.eta,
                                    cfg.run.val_resolutions or plan.resolutions, reference_store(cfg))
    cycle_cb = callbacks.MultigridCallback(plan)
    validation_cb = callbacks.ValidationCallback(validator, plan, cfg.run.validate_every)
    hparams = {"preset": cfg.preset, "cycle": cfg.cycle.cycle, "precision": cfg.optim.precision,
               "levels": str(plan.resolutions), "global_batch_size": cfg.optim.global_batch_size, "learning_rate": lr, "workers": distributed.size(),
               "num_train": cfg.data.num_train, **{f"model_{k}": v for k, v in dataclasses.asdict(cfg.model).items()}}
    cbs = [distributed.BroadcastCallback(), cycle_cb, validation_cb,
           callbacks.TensorBoardLogger(os.path.join(model_dir, "logs"), plan, cfg.optim.global_batch_size,
                                       hparams, validator),
           callbacks.CheckpointCallback(checkpointer, network, plan), *extra_callbacks]
    summary = {"start_epoch": start_epoch, "end_epoch": end_epoch, "workers": distributed.size()}
    if start_epoch < end_epoch:
        dataset, steps = data.multigrid_dataset(
            plan, train_set.coeffs, cfg.optim.global_batch_size, cfg.data.eta, cfg.run.seed, distributed.rank(),
            distributed.size(), start_epoch, cfg.data.cache_budget_mb * 1024 ** 2)
        history = trainer.fit(dataset, epochs=end_epoch, initial_epoch=start_epoch, steps_per_epoch=steps,
                              shuffle=False, verbose=cfg.run.verbose if distributed.is_chief() else 0, callbacks=cbs)
        summary["history"] = {k: [float(x) for x in v] for k, v in history.history.items()}
    summary["trained_resolutions"] = [r for _, r in cycle_cb.recorded]
    summary["validation"] = validation_cb.history[-1][1] if validation_cb.history else {}
    if distributed.is_chief() and end_epoch == plan.num_epochs:
        files.save_keras(network, os.path.join(model_dir, "model.keras"))
        files.write_json(os.path.join(model_dir, "train_summary.json"), summary, indent=2)
    return summary


def _restore_on_chief(checkpointer, network, optimizer) -> dict:
    """Restores the checkpoint on rank 0 only (workers need no shared file system: BroadcastCallback copies
    the weights and optimizer state); every worker gets the saved state, or the same clear error."""
    outcome = None
    if distributed.is_chief():
        try:
            outcome = ("ok", checkpointer.restore(network, optimizer))
        except ValueError as e:
            outcome = ("error", str(e))
    outcome = distributed.broadcast_object(outcome)  # Horovod: one decision for all workers
    if outcome[0] == "error":
        raise ValueError(outcome[1])
    return outcome[1]


def final_rel_l2(summary: dict) -> dict:
    """{resolution: validation rel_l2} from a train() summary."""
    out = {}
    for key, value in summary.get("validation", {}).items():
        if key.endswith("/rel_l2"):
            out[int(key.split("/")[1][3:])] = value
    return out


