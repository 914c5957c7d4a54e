"""The training loop: a configured run from its model_dir claim to its saved model (the step it fits is step.py).

_train reads as its steps: build the data, build the model, restore, build the callbacks (their order is
written where the list is built), fit, save.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import keras
import tensorflow as tf

from poisson_tf import config, distributed, files, hardware, memory, modeldir, models, solvers
from poisson_tf.training import callbacks, checkpoint, data, rundir, signals
from poisson_tf.training.step import EnergyTrainer


@keras.saving.register_keras_serializable(package="poisson_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate at every step: base x linear warmup (from base/warmup_steps to base over warmup_steps
    steps) x the factor of the visit the step belongs to (segments: (first step, factor), from the plan) x an
    optional cosine decay to zero over total_steps ("cosine") or over every visit ("cosine_per_visit", a warm
    restart at each level switch). A function of the step counter alone, so a resumed run continues it exactly."""

    def __init__(self, base: float, warmup_steps: int = 0, segments=(), total_steps: int = 0,
                 decay: str = "constant"):
        self.base, self.warmup_steps = float(base), int(warmup_steps)
        self.segments = [(int(first), float(factor)) for first, factor in segments]
        self.total_steps, self.decay = int(total_steps), decay

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = tf.constant(self.base, tf.float32)
        if self.warmup_steps > 0:
            rate *= tf.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
        firsts = [first for first, _ in self.segments] or [0]  # the first step of every visit
        # the step's visit (step may be a vector: TensorBoard evaluates an epoch's steps at once)
        visit = tf.reduce_sum(tf.cast(step[..., None] >= tf.constant(firsts[1:], tf.float32), tf.int32), axis=-1)
        if self.segments:
            rate *= tf.gather(tf.constant([factor for _, factor in self.segments], tf.float32), visit)
        if self.decay == "cosine" and self.total_steps > 0:
            done = tf.minimum(step / float(self.total_steps), 1.0)
            rate *= 0.5 * (1.0 + tf.cos(3.141592653589793 * done))
        elif self.decay == "cosine_per_visit" and self.total_steps > 0:  # a warm restart at every visit
            first = tf.gather(tf.constant(firsts, tf.float32), visit)
            last = tf.gather(tf.constant(firsts[1:] + [self.total_steps], tf.float32), visit)
            done = tf.minimum((step - first) / tf.maximum(last - first, 1.0), 1.0)
            rate *= 0.5 * (1.0 + tf.cos(3.141592653589793 * done))
        return rate

    def get_config(self):
        return {"base": self.base, "warmup_steps": self.warmup_steps, "segments": self.segments,
                "total_steps": self.total_steps, "decay": self.decay}


_CPU_PRECISION_ERRORS = {
    "bfloat16": "--precision=bfloat16 needs a CPU with native bfloat16 (avx512_bf16 or AMX, oneDNN not capped "
                "below them by ONEDNN_MAX_CPU_ISA), and this one has {isa}: TensorFlow sends bfloat16 ops to oneDNN "
                "only with AVX-512, and elsewhere runs them on Eigen, many times slower and with gradients that "
                "blew up after a few steps (benchmarks/results/precision.jsonl); use --precision=float32 here, bfloat16 on AMX / avx512_bf16 CPUs and GPUs",
    "float16": "--precision=float16 is meant for GPUs: on CPU TensorFlow runs float16 convolutions without oneDNN, "
               "many times slower than float32; use --precision=float32 on CPU",
}


def _cpu_precision_refusal(precision: str) -> str:
    """Why `precision` cannot train on this CPU, or "" when it can (float32 always; bfloat16 where native)."""
    if precision == "float32" or (precision == "bfloat16" and hardware.native_bfloat16()):
        return ""
    isa = hardware.onednn_isa_class() + (" (capped by ONEDNN_MAX_CPU_ISA)" if os.environ.get(
        hardware.MAX_ISA_VARIABLE) else "") + ", flags " + " ".join(hardware.cpu_info()["isa_flags"])
    return _CPU_PRECISION_ERRORS[precision].format(isa=isa)


def check_runtime(cfg: config.TrainConfig) -> None:
    """What the configuration (validated when built) cannot check alone: the workers and the device.

    Raises:
      ValueError: a global batch the workers cannot split evenly, gradient shards they cannot share evenly,
        batch normalization on several workers, or
        16-bit precision on a CPU that does not run it natively (bfloat16 needs avx512_bf16 or AMX).
    """
    for visit in cfg.plan().visits:  # every level's batch, not only the finest
        distributed.split_batch(visit.global_batch_size)
    shards = cfg.optim.gradient_shards
    if shards and shards % distributed.size():
        raise ValueError(f"--gradient_shards={shards} must be a multiple of the number of workers "
                         f"({distributed.size()}): every worker computes the same number of shards; launch a "
                         f"divisor of {shards} workers, or give --gradient_shards a multiple of {distributed.size()}")
    if cfg.model.normalization == "batch" and distributed.size() > 1:
        # Keras' BatchNormalization would normalize each worker's share of the global batch with its own
        # statistics, and keep its own moving averages: the training would depend on the number of workers.
        raise ValueError(f"--normalization=batch is refused on {distributed.size()} workers: batch statistics "
                         "would be per worker and never synchronized, so the result would depend on the number "
                         "of workers; use --normalization=group, instance, layer or none, or train on one worker")
    refusal = _cpu_precision_refusal(cfg.optim.precision)
    if (refusal and not tf.config.list_physical_devices("GPU")
            and os.environ.get("POISSON_TF_ALLOW_CPU_MIXED_PRECISION") != "1"):
        raise ValueError(refusal + " (POISSON_TF_ALLOW_CPU_MIXED_PRECISION=1 overrides this check)")


def train(cfg: config.TrainConfig, resume: bool = False, stop_after_epochs: int | None = None,
          extra_callbacks=(), overwrite: bool = False, memory_limit: float | None = None, force: bool = False,
          listener: signals.SignalListener | None = None) -> dict:
    """Runs (or resumes) the configured multigrid training; see _train. Restores Keras' global dtype policy.

    Before anything is allocated the run's estimated peak (memory.training_parts) is checked against the memory
    this process may use (memory.available; memory_limit in GiB replaces it), and refused when it does not fit,
    unless force. listener: an active signals.SignalListener that has listened since before this call
    (poisson-tf-train's, from its first line); by default one listens while the epochs are trained."""
    if stop_after_epochs is not None:
        config.require(stop_after_epochs >= 1, "stop_after_epochs", stop_after_epochs, ">= 1 (epochs of the cycle)")
    previous = keras.mixed_precision.dtype_policy()
    try:
        with contextlib.ExitStack() as stack:
            listener = listener or stack.enter_context(signals.SignalListener())
            return _train(cfg, resume, stop_after_epochs, extra_callbacks, overwrite, memory_limit, force, listener)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _train(cfg: config.TrainConfig, resume: bool, stop_after_epochs: int | None, extra_callbacks,
           overwrite: bool, memory_limit: float | None, force: bool, listener: signals.SignalListener) -> dict:
    """Runs (or resumes) the configured multigrid training; returns a summary (the same on every worker but
    fit_seconds, the wall time of this launch's fit on this worker; machine: hardware.cpu_info()).

    Nothing is written before the run is known to be valid: the chief claims model_dir (rundir.claim: its lock,
    and a new run only into an empty model_dir, or one whose previous run `overwrite` removes), and a resumed
    run restores its checkpoint, before the configuration and the sample sets are saved.

    Args:
      cfg: the run configuration (saved to cfg.run.model_dir by the chief).
      resume: continue from model_dir's checkpoint at the exact epoch and visit.
      stop_after_epochs: stop once this many epochs of the plan are done (an interruption, for tests).
      extra_callbacks: more Keras callbacks, run after the package's own.
      overwrite: a new run replaces the previous run's files in model_dir.
    """
    distributed.init(intra_op_threads=cfg.run.threads, inter_op_threads=0 if cfg.run.threads == 0 else 1)
    plan = cfg.plan()
    check_runtime(cfg)
    memory.check("poisson-tf-train", plan.resolutions[-1], memory.training_parts(cfg, distributed.size()),
                 memory_limit, force)
    lock = distributed.chief_decides(rundir.claim, cfg.run.model_dir, resume, overwrite, share=False)
    try:
        return _run(cfg, plan, resume, stop_after_epochs, extra_callbacks, listener)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: config.TrainConfig, plan, resume: bool, stop_after_epochs: int | None, extra_callbacks,
         listener: signals.SignalListener) -> dict:
    """_train's steps once the chief holds model_dir: data, model, restore, save inputs, callbacks, fit, results."""
    if cfg.run.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.run.seed)
    train_set, val_set = data.make_sample_sets(cfg.num_train_samples, cfg.data.num_val, cfg.data.field_family(),
                                               cfg.data.sampling, cfg.data.seed)
    network, energy_trainer = _build_model(cfg)
    threads = tf.config.threading.get_intra_op_parallelism_threads()  # --threads resolved (0: this rank's share)
    checkpointer = checkpoint.Checkpointer(cfg.run.model_dir, cfg.fingerprint(),
                                           threads if cfg.run.deterministic else None)
    start_epoch, steps_done = 0, 0
    if resume:  # Horovod: rank 0 restores (workers need no shared file system), BroadcastCallback copies the state
        state = distributed.chief_decides(checkpointer.restore, network, energy_trainer.optimizer)
        if cfg.run.deterministic:  # every worker has the chief's state: all refuse alike
            checkpoint.check_threads(cfg.run.model_dir, state, threads)
        start_epoch = state["epoch"] + 1
        steps_done = state.get("partial", {}).get("steps", 0)  # a checkpoint written within start_epoch
    end_epoch = plan.num_epochs if stop_after_epochs is None else min(plan.num_epochs, stop_after_epochs)
    # A signal since the launch began (TensorFlow loading, the set-up above): every worker decides alike.
    stopped_early = distributed.largest(listener.received) if start_epoch < end_epoch else 0
    if not stopped_early:
        distributed.on_chief(_save_inputs, cfg, train_set, val_set)  # only now: a refused resume changed nothing
    cycle_cb, validation_cb, cbs = _build_callbacks(cfg, plan, network, val_set, checkpointer, extra_callbacks,
                                                    listener, end_epoch, start_epoch, steps_done)

    summary = {"start_epoch": start_epoch, "end_epoch": end_epoch, "workers": distributed.size(),
               "machine": hardware.cpu_info()}
    if stopped_early:  # nothing trained since the checkpoint, if any: nothing saved, no file changed
        summary["interrupted"] = {"reason": signals.stop_reason(stopped_early), "epoch": start_epoch,
                                  "steps_in_epoch": steps_done, "before_first_step": True}
    elif start_epoch < end_epoch:
        start = time.perf_counter()
        try:
            summary["history"] = _fit(cfg, plan, energy_trainer, train_set, start_epoch, steps_done, end_epoch, cbs)
        except signals.Interrupted as stop:  # the checkpoint is written: a resume continues from it
            summary["interrupted"] = {"reason": stop.reason, "epoch": stop.epoch,
                                      "steps_in_epoch": stop.steps_in_epoch}
        summary["fit_seconds"] = time.perf_counter() - start  # this launch's epochs, validation included
    results = validation_cb.history[-1][1] if validation_cb.history else {}  # {resolution: {metric: value}}
    summary.update(trained_resolutions=[r for _, r in cycle_cb.recorded], validation=callbacks.log_keys(results),
                   validation_by_resolution=results)
    if start_epoch < end_epoch and end_epoch == plan.num_epochs and "interrupted" not in summary:
        distributed.on_chief(_save_results, cfg.run.model_dir, network, summary)  # resuming a finished run: not
    return summary


def _save_inputs(cfg: config.TrainConfig, train_set: data.SampleSet, val_set: data.SampleSet) -> None:
    """The chief's record of what the run trains on (config.json and the sample sets); and it removes what
    killed writes left in the reference cache (old temporary files only: other runs may be writing there)."""
    modeldir.save_config(cfg, cfg.run.model_dir)
    train_set.save(os.path.join(cfg.run.model_dir, modeldir.TRAIN_SAMPLES_FILE))
    val_set.save(os.path.join(cfg.run.model_dir, modeldir.VAL_SAMPLES_FILE))
    files.remove_temp_files(solvers.ReferenceStore(cfg.run.reference_cache).directory, older_than=3600)


def _build_model(cfg: config.TrainConfig):
    """The network in the configured precision and the compiled data-parallel trainer that updates it."""
    keras.mixed_precision.set_dtype_policy(config.PRECISIONS[cfg.optim.precision])  # process-wide, set every run
    network = models.build_model(cfg.model)
    plan = cfg.plan()
    optimizer = keras.optimizers.Adam(WarmupSchedule(cfg.optim.learning_rate, cfg.optim.warmup_steps, plan.lr_segments(),
                                                     plan.num_steps, cfg.optim.lr_decay))
    if cfg.optim.precision == "float16":  # float16 gradients underflow without dynamic loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    energy_trainer = EnergyTrainer(network, cfg.optim.gradient_shards)
    energy_trainer.compile(optimizer=optimizer, steps_per_execution=cfg.run.steps_per_execution)
    return network, energy_trainer


def _build_callbacks(cfg: config.TrainConfig, plan, network, val_set, checkpointer, extra_callbacks, listener,
                     end_epoch: int, start_epoch: int = 0, steps_done: int = 0):
    """The callback list in the order it must run, and the cycle and validation callbacks (their records)."""
    validator = callbacks.Validator(network, val_set.family, val_set.coeffs,
                                    cfg.run.val_resolutions or plan.resolutions,
                                    solvers.ReferenceStore(cfg.run.reference_cache))
    cycle_cb = callbacks.MultigridCallback(plan)
    checkpoint_cb = callbacks.CheckpointCallback(checkpointer, network, plan, cfg.run.checkpoint_seconds)
    validation_cb = callbacks.ValidationCallback(validator, plan, cfg.run.validate_every)
    hparams = {"preset": cfg.preset, "cycle": cfg.cycle.cycle, "precision": cfg.optim.precision,
               "levels": str(plan.resolutions), "global_batch_size": cfg.optim.global_batch_size,
               "learning_rate": cfg.optim.learning_rate, "workers": distributed.size(), "num_train": cfg.data.num_train,
               "family": cfg.data.field_family().describe(),
               **{f"model_{k}": v for k, v in dataclasses.asdict(cfg.model).items()}}
    # Keras runs the callbacks in list order at every hook, and they share one `logs` dict per epoch:
    cbs = [
        # Horovod: broadcast first, so rank 0's weights and optimizer state are on every worker before any other
        # callback or the first step uses them.
        callbacks.BroadcastCallback(),
        # Cycle and validation publish resolution, level, visit and eval/res{N}/... into the epoch's logs ...
        cycle_cb,
        validation_cb,
        # ... before TensorBoard (chief only) reads those logs.
        callbacks.TensorBoardLogger(os.path.join(cfg.run.model_dir, modeldir.LOGS_DIR), plan, hparams, validator),
        # Checkpoint last: an epoch is saved only after it was checked against the plan and validated, so a
        # diverged run stops before it overwrites the last good checkpoint.
        checkpoint_cb,
        # After the checkpoint: a signal is acted on once the epoch's validation and checkpoint are done (or
        # within an epoch, after the current step), with a checkpoint of exactly the steps trained.
        callbacks.StopOnSignal(listener, checkpoint_cb, end_epoch, start_epoch, steps_done),
        *extra_callbacks,
    ]
    return cycle_cb, validation_cb, cbs


def _fit(cfg: config.TrainConfig, plan, energy_trainer, train_set, start_epoch: int, steps_done: int,
         end_epoch: int, cbs) -> dict:
    """Trains epochs [start_epoch, end_epoch) of the plan from one pipeline of the whole cycle, the first one
    without its steps_done steps (a checkpoint written within it); returns the history.

    Keras counts an epoch's steps from its start, so an epoch resumed within it is a fit of its remaining steps
    alone, followed by one fit of the whole epochs after it, each from its own pipeline."""
    history = {}
    for first, steps_skipped, last in ((start_epoch, steps_done, start_epoch + 1), (start_epoch + 1, 0, end_epoch)) \
            if steps_done else ((start_epoch, 0, end_epoch),):
        if first >= last:
            continue
        dataset, steps = data.multigrid_dataset(
            plan, train_set.coeffs, train_set.family, cfg.run.seed, distributed.rank(), distributed.size(), first,
            cfg.data.cache_budget_mb * 1024 ** 2, cfg.data.coarse_nu, start_step=steps_skipped)
        fitted = energy_trainer.fit(dataset, epochs=last, initial_epoch=first, steps_per_epoch=steps - steps_skipped,
                                    shuffle=False, verbose=cfg.run.verbose if distributed.is_chief() else 0,
                                    callbacks=cbs)
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(x) for x in values)
    return history


def _save_results(model_dir: str, network, summary: dict) -> None:
    files.save_keras(network, os.path.join(model_dir, modeldir.MODEL_FILE))
    files.write_json(os.path.join(model_dir, modeldir.SUMMARY_FILE), summary, indent=2)
