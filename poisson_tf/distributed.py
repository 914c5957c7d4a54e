"""Horovod adapter for Keras 3: the only module that imports horovod; size() == 1 when not launched.

horovod.tensorflow.keras does not work with Keras 3 (its DistributedOptimizer silently skips averaging),
so this module uses Horovod's core TensorFlow ops on the underlying tf.Variables (docs/performance.rst, "Horovod
on Keras 3"). It holds the collectives and the chief helpers; the data-parallel train step that uses them is
training/step.py.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

# The command lines ask launched() before they import TensorFlow, so it lives in the framework-free hardware module.
from poisson_tf.hardware import launched

try:  # Horovod is optional: a laptop user can train and predict single-process before building it.
    import horovod.tensorflow as hvd
except ImportError:  # pragma: no cover - depends on the environment
    hvd = None

_state = {"initialized": False, "horovod": False}
# Rank r adds r times this (odd, about 2^31.3) to every Keras seed: the workers' dropout streams stay far apart.
_SEED_STRIDE = 0x9E3779B9


def init(intra_op_threads: int | None = None, inter_op_threads: int | None = None) -> None:
    """Initializes Horovod when launched (and available), gives each rank its own cores, sets CPU threads,
    pins one GPU per local rank.

    Safe to call more than once. Without a launcher, or without Horovod installed, the process runs alone
    (size() == 1) and nothing here needs MPI.

    Several ranks on one host share it without fighting over cores (benchmarks/results/scaling.jsonl): OpenMPI yields
    instead of busy-polling while a rank waits (OMPI_MCA_mpi_yield_when_idle=1, unless set; with it Horovod
    negotiates every 0.1 ms, HOROVOD_CYCLE_TIME), and ranks the launcher left unbound took disjoint slices of
    the host's cores when poisson_tf was imported (hardware.bind_local_rank).

    Args:
      intra_op_threads / inter_op_threads: TensorFlow CPU thread pools per process (None keeps TF's
        default, 0 means this rank's share of the host's cores); on CPU nodes ranks x threads <= cores.

    Raises:
      RuntimeError: when launched by an MPI/Horovod launcher but Horovod is not installed.
    """
    if _state["initialized"]:
        return
    from poisson_tf import hardware

    hardware.check_onednn()
    if launched():
        if hvd is None:
            raise RuntimeError("this process was started by a parallel launcher but Horovod is not installed; "
                               "run scripts/setup.sh (it builds Horovod 0.28.1 with MPI and Gloo)")
        # Horovod: MPI reads this in hvd.init(); a waiting rank then yields its core to the computing one.
        os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        if "HOROVOD_GLOO_RENDEZVOUS_ADDR" not in os.environ:
            # Horovod: negotiate every 0.1 ms instead of 1 ms; with MPI yielding this cut a 16^3 step (two
            # allreduces) from 18 to 15 ms on 2 cores. Gloo does not yield, and polled that often it was slower.
            os.environ.setdefault("HOROVOD_CYCLE_TIME", "0.1")
        hvd.init()  # Horovod: join the ring
        _state["horovod"] = True
    share = len(hardware.usable_cpus())  # this rank's cores (hardware.bind_local_rank gave it its slice)
    try:
        if intra_op_threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads or share)
        if inter_op_threads is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads or min(2, share))
    except RuntimeError:  # TensorFlow already ran an op in this process: its thread pools are fixed
        warnings.warn("distributed.init() came after TensorFlow started; thread settings not applied", stacklevel=2)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:  # Horovod: one GPU per process, chosen by local rank
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[local_rank() % len(gpus)], "GPU")
    _state["initialized"] = True


def _active() -> bool:
    return _state["horovod"] and hvd.size() > 1


def rank() -> int:
    """This worker's global rank (0 when single-process)."""
    return hvd.rank() if _state["horovod"] else 0


def size() -> int:
    """Number of workers (1 when single-process)."""
    return hvd.size() if _state["horovod"] else 1


def local_rank() -> int:
    """Rank among the workers on this host (selects the GPU)."""
    return hvd.local_rank() if _state["horovod"] else 0


def local_size() -> int:
    """Workers on this host."""
    return hvd.local_size() if _state["horovod"] else 1


def is_chief() -> bool:
    """True on the one worker that prints and writes files (rank 0)."""
    return rank() == 0


def on_chief(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the chief only: the one way the package writes files; None on other workers."""
    return fn(*args, **kwargs) if is_chief() else None


def chief_decides(fn, *args, share: bool = True):
    """``fn(*args)`` on the chief only, its outcome broadcast: every worker gets fn's result (or None off the chief
    when not share), or the same ValueError, so all workers continue or fail together. For decisions that read
    the chief's files (a saved config, a checkpoint): the other workers need no shared file system.
    """
    result, outcome = None, None
    if is_chief():
        try:
            result = fn(*args)
            outcome = ("ok", result if share else None)
        except ValueError as e:
            outcome = ("error", str(e))
    outcome = broadcast_object(outcome)  # Horovod: one decision for all workers
    if outcome[0] == "error":
        raise ValueError(outcome[1])
    return result if is_chief() else outcome[1]


def allreduce_gradients(grads: list) -> list:
    """Averages a list of gradient tensors over workers in one grouped allreduce (graph-safe).

    None entries (variables without gradient) stay None.
    """
    if not _active():
        return list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    # Horovod: one fused ring-allreduce for all gradients, averaged (not summed) across workers.
    reduced = hvd.grouped_allreduce([grads[i] for i in present], op=hvd.Average)
    out = list(grads)
    for i, g in zip(present, reduced):
        out[i] = g
    return out


def exact_mean(shard_grads: list, total_shards: int) -> list:
    """The mean of total_shards gradients, computed exactly (up to the final rounding) and so independent of how
    the shards are spread over the workers (graph-safe).

    shard_grads: this worker's shards, each a list of gradient tensors (one per variable, None where a variable
    has none), its share of total_shards in shard order. Each variable's gradients are scaled by one power of
    two (from the largest magnitude over every shard: an allreduce Max) into int64 with 61 - ceil(log2 S) bits
    above the largest value, summed as integers over the local shards and over the workers (an allreduce Sum:
    integer addition does not depend on the order), and scaled back. Compared with a float32 sum, values below
    2^-36 of a variable's largest one lose bits, none above (a float32 sum of S terms loses log2 S bits anywhere).
    """
    present = [i for i, g in enumerate(shard_grads[0]) if g is not None]
    if not present:
        return list(shard_grads[0])
    peaks = tf.stack([tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(tf.cast(shard[i], tf.float32)))
                                              for shard in shard_grads])) for i in present])
    if _active():
        peaks = hvd.allreduce(peaks, op=hvd.Max, name="poisson_tf_shard_peaks")  # Horovod: exact on every worker
    # m < 2^e with e the float32 exponent of m plus 1 (0 for m == 0: all its gradients are 0)
    exponents = tf.bitwise.bitwise_and(tf.bitwise.right_shift(tf.bitcast(peaks, tf.int32), 23), 0xFF) - 126
    shift = tf.cast(61 - max(0, (total_shards - 1).bit_length()) - exponents, tf.int64)  # |sum| < 2^61

    def power_of_two(k):  # 2^k as float64, exactly (the exponent field of an IEEE double)
        return tf.bitcast(tf.bitwise.left_shift(k + 1023, 52), tf.float64)

    sums = []
    for j, i in enumerate(present):
        scale = power_of_two(shift[j])
        sums.append(tf.add_n([tf.cast(tf.round(tf.cast(shard[i], tf.float64) * scale), tf.int64)
                              for shard in shard_grads]))
    if _active():
        sums = hvd.grouped_allreduce(sums, op=hvd.Sum)  # Horovod: integer sums, exact in any order
    out = list(shard_grads[0])
    for j, i in enumerate(present):
        mean = tf.cast(sums[j], tf.float64) * power_of_two(-shift[j]) / float(total_shards)
        mean = tf.where(tf.math.is_finite(peaks[j]), mean, tf.constant(float("nan"), tf.float64))  # diverged
        out[i] = tf.cast(mean, shard_grads[0][i].dtype)
    return out


def allreduce_mean(value):
    """Average of a scalar or tensor over workers (graph-safe); the value itself when single-process."""
    if not _active():
        return value
    return hvd.allreduce(value, op=hvd.Average)  # Horovod: metric averaging


def _tf_variables(variables) -> list:
    """Keras 3 Variables wrap tf.Variables; Horovod's broadcast needs the latter."""
    out = []
    for v in variables:
        inner = getattr(v, "value", v)
        out.append(inner if isinstance(inner, tf.Variable) else v)
    return out


def broadcast_variables(variables, root_rank: int = 0) -> None:
    """Overwrites every worker's variables with root_rank's (Keras 3 or tf.Variables)."""
    if _active():
        hvd.broadcast_variables(_tf_variables(variables), root_rank=root_rank)  # Horovod: initial state


def broadcast_model(model, optimizer=None, root_rank: int = 0) -> None:
    """Makes model weights (and optimizer state, building its slots first) identical on every worker.

    The optimizer's slot variables exist only once it is built; building them here lets the broadcast
    happen before the first step, so all workers start from one state.
    """
    broadcast_variables(model.variables, root_rank)
    if optimizer is not None:
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        broadcast_variables(optimizer.variables, root_rank)


def broadcast_object(obj, root_rank: int = 0):
    """Any picklable object from root_rank to every worker."""
    if not _active():
        return obj
    return hvd.broadcast_object(obj, root_rank=root_rank)


def allgather_object(obj) -> list:
    """A list of every worker's obj, in rank order."""
    if not _active():
        return [obj]
    return hvd.allgather_object(obj)


def average_metrics(logs: dict) -> dict:
    """Averages numeric log values over workers (one allreduce, keys in sorted order on every worker)."""
    keys = sorted(k for k, v in logs.items()
                  if not isinstance(v, (str, bytes, bool)) and np.ndim(v) == 0
                  and np.issubdtype(np.asarray(v).dtype, np.number))
    if not _active() or not keys:
        return dict(logs)
    values = hvd.allreduce(tf.constant([float(logs[k]) for k in keys], tf.float64), op=hvd.Average)
    out = dict(logs)
    out.update({k: float(v) for k, v in zip(keys, values.numpy())})
    return out


def largest(value: int) -> int:
    """The largest of the workers' values, on every worker (one scalar allreduce; value itself alone): e.g. a
    signal that reached any of them."""
    if not _active():
        return int(value)
    return int(hvd.allreduce(tf.constant(int(value), tf.int32), op=hvd.Max, name="poisson_tf_largest").numpy())


def barrier() -> None:
    """Waits for every worker."""
    if _active():
        hvd.allreduce(tf.constant(0.0), op=hvd.Sum, name="poisson_tf_barrier")


def split_batch(global_batch_size: int) -> int:
    """Per-worker batch for a fixed global batch; raises ValueError unless size() divides it."""
    workers = size()
    if global_batch_size < 1 or global_batch_size % workers:
        raise ValueError(f"global batch size {global_batch_size} must be a positive multiple of the number of "
                         f"workers ({workers}), e.g. {workers * max(1, global_batch_size // workers)}")
    return global_batch_size // workers


def seed_per_rank(model) -> None:
    """Gives each worker its own random stream (dropout masks) after a broadcast made all the same: rank r adds
    r * _SEED_STRIDE to the seed of every Keras SeedGenerator. Rank 0 keeps the single-process stream, and the
    chief's checkpoint (rank 0's state) restores every worker's stream, so a --deterministic resume still
    reproduces the uninterrupted run."""
    if rank() == 0:
        return
    for v in model.variables:
        if v.path.endswith("seed_generator_state"):
            state = np.array(v.numpy())
            state[0] = (int(state[0]) + rank() * _SEED_STRIDE) % 2 ** 31
            v.assign(state)
