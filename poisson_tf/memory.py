"""Memory before compute: what a command will need (peak estimates from array sizes and the network's
configuration) against what this process may use (a cgroup limit, MemAvailable, or --memory_limit), so that a
request that cannot fit is refused in a second with the numbers instead of being OOM-killed without a word.

Framework-free: the command lines check before TensorFlow loads. The estimates are checked against measured
peaks by benchmarks/bench_memory.py (benchmarks/results/memory.jsonl).
"""
from __future__ import annotations

import os

from poisson_tf.config.schema import ModelConfig

GIB = 1024 ** 3
#: Resident size of Python with TensorFlow, Keras and the package loaded, before any field (benchmarks/bench_memory.py).
FRAMEWORK_BYTES = int(0.55 * GIB)
#: A training step keeps the forward activations for the backward pass and adds their gradients and oneDNN's
#: workspaces: this many times the forward pass's activations (the ratio measured by bench_memory.py).
TRAINING_FACTOR = 2.5
_UNLIMITED = 1 << 60


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return None if text in ("", "max") else int(text)


def _cgroup_room() -> int | None:
    """Bytes the process's memory cgroup still allows (limit - usage), v2 or v1; None without a limit."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = [line.strip().split(":", 2) for line in f if line.strip()]
    except OSError:
        return None
    for _, controllers, path in lines:
        if controllers == "":  # cgroup v2
            base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
            limit, usage = _read_int(os.path.join(base, "memory.max")), _read_int(os.path.join(base, "memory.current"))
        elif "memory" in controllers.split(","):  # cgroup v1
            base = os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"))
            limit = _read_int(os.path.join(base, "memory.limit_in_bytes"))
            usage = _read_int(os.path.join(base, "memory.usage_in_bytes"))
        else:
            continue
        if limit is not None and limit < _UNLIMITED:
            return max(0, limit - (usage or 0))
    return None


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available(limit_gib: float | None = None) -> tuple:
    """(bytes, where the number comes from): --memory_limit when given, else the smaller of the memory cgroup's
    room (SLURM --mem, a container) and MemAvailable; (None, "unknown") where neither can be read."""
    if limit_gib is not None:
        if not 0 < limit_gib < float("inf"):
            raise ValueError(f"--memory_limit must be a positive number of GiB, got {limit_gib!r}")
        return int(limit_gib * GIB), "--memory_limit"
    found = [(room, "the memory cgroup's limit") for room in [_cgroup_room()] if room is not None]
    found += [(room, "MemAvailable") for room in [_mem_available()] if room is not None]
    return min(found) if found else (None, "unknown")


def _unet_floats_per_voxel(cfg: ModelConfig) -> float:
    """Floats per voxel of the U-Net's input that its layer outputs hold, summed over the layers (inference keeps
    about all of them alive at once: the skips until the decoder, each block's layer and activation outputs):
    the walk of models.build_model (tests check the count against a built network)."""
    per_block = 2 + (cfg.normalization != "none")  # layer, [normalization], activation
    total = 2.0  # nu and its log-feature
    for level in range(cfg.depth):  # encoder: blocks at n / 2^(level+1) (a pooled level's conv at n / 2^level)
        f, voxels = cfg.filters(level), 1.0 / 8.0 ** (level + 1)
        first = per_block + (cfg.dropout > 0 and level >= cfg.depth - cfg.dropout_levels)
        total += f * (first * 8.0 + 1.0 if cfg.downsampling == "pool" else first) * voxels
        total += f * per_block * cfg.extra_convs * voxels
    for level in reversed(range(cfg.depth - 1)):  # decoder: the 2x block, the concatenated skip, extra convs
        f, voxels = cfg.filters(level), 1.0 / 8.0 ** (level + 1)
        total += f * voxels * (per_block + 2 + per_block * cfg.extra_convs)
    return total + 3.0 + (cfg.output_prior == "linear")  # head, [prior], sigmoid and planes at n


def network_bytes(cfg: ModelConfig, resolution: int, batch: int, training: bool = False) -> int:
    """Activation bytes of one forward pass (float32) of a batch at N = resolution; a training step's with
    training=True (TRAINING_FACTOR times). A network with a working resolution W runs its U-Net at W and holds
    the resampled input and output at N (about 6 floats per voxel)."""
    n = cfg.working_resolution or resolution
    floats = _unet_floats_per_voxel(cfg) * n ** 3 + (6.0 * resolution ** 3 if cfg.working_resolution else 0.0)
    return int(4 * batch * floats * (TRAINING_FACTOR if training else 1.0))


def check(command: str, resolution: int, parts: dict, limit_gib: float | None = None, force: bool = False,
          framework: bool = True) -> int:
    """Raises ValueError naming the resolution, the estimate (by part) and the memory available when the parts
    (bytes each) and, with framework, TensorFlow's own do not fit; returns the estimate. force skips the refusal."""
    framework_bytes = FRAMEWORK_BYTES if framework else 0
    total = framework_bytes + sum(parts.values())
    room, source = available(limit_gib)
    if force or room is None or total <= room:
        return total
    shown = ", ".join(f"{name} {value / GIB:.1f}" for name, value in
                      [*parts.items(), ("framework", framework_bytes)] if value >= 0.05 * GIB)
    raise ValueError(f"{command} at N = {resolution} needs about {total / GIB:.1f} GiB ({shown}), but {room / GIB:.1f} GiB are available ({source}); use a smaller "
                     "resolution or batch, or --force to try anyway (--memory_limit sets the limit to check against)")


def prediction_parts(cfg: ModelConfig, resolution: int, num_fields: int, batch: int, input_bytes: int = 8) -> dict:
    """Bytes by part of predicting num_fields fields at N in batches of `batch` (poisson-tf-predict): nu as read
    or made (input_bytes per value), u, one batch through the network, and the writing: nu's float32 copy and
    the HDF5 file's image, built in memory (files.hdf5_in_memory; at most the uncompressed nu and u). They add
    up: the network's memory is not returned before the file is written (bench_memory measured the sum)."""
    voxels = resolution ** 3
    return {"nu": num_fields * voxels * input_bytes, "u": num_fields * voxels * 4,
            "network": network_bytes(cfg, resolution, batch) + batch * voxels * 4,
            "written copy and file image": num_fields * voxels * (4 + 8)}


def solve_parts(resolution: int, num_fields: int, method: str = "auto") -> dict:
    """Bytes by part of solving num_fields fields at N one after the other (poisson-tf-solve): the fields (float64),
    and the larger of the two phases that follow them: one solve's working memory (solvers.gmg.memory_estimate,
    or the assembled AMG's matrices) beside the solutions found before it, and the solutions stacked and written
    (float64 twice, float32 copies of nu and u, and the file's image in memory: at most those copies)."""
    from poisson_tf.solvers import dispatch, gmg

    field = resolution ** 3 * 8
    if method == "gmg" or (method == "auto" and resolution >= dispatch.AUTO_GMG_RESOLUTION):
        parts = gmg.memory_estimate(resolution)
        solver = parts["total"] - parts["nu"]
    else:  # the stiffness (27 diagonals: value and column index), its free block and the AMG hierarchy
        solver = 4 * 27 * field // 8 * 12
    solving = solver + (num_fields - 1) * field
    # the stacked solutions, the float32 copies of nu and u, and the HDF5 file's image (built in memory)
    writing = num_fields * (2 * field + field + field)
    return {"fields": num_fields * field, "solver" if solving >= writing else "solutions": max(solving, writing)}


def evaluation_parts(cfg: ModelConfig, resolution: int, batch: int) -> dict:
    """Bytes by part at the largest resolution of an evaluation (poisson-tf-evaluate, training's validation):
    the larger of its two phases, the reference solves (one at a time, before the network runs) and a batch of
    predictions beside its references (nu and u_ref float64, u)."""
    solve = solve_parts(resolution, 1)
    voxels = resolution ** 3
    predict = {"fields and references": batch * voxels * (8 + 8 + 8),
               "network": network_bytes(cfg, resolution, batch) + batch * voxels * 4}
    return solve if sum(solve.values()) > sum(predict.values()) else predict


def training_parts(cfg, workers: int = 1) -> dict:
    """Bytes by part of a training run on one of `workers` ranks (cfg a config.TrainConfig): the cached fields of
    every level (up to the cache budget), and the larger of its finest training step (the largest
    network_bytes(training=True) over the levels, at the per-worker batch) and its validation
    (evaluation_parts at the largest validation resolution, batch 2)."""
    plan = cfg.plan()
    cached, budget = 0, cfg.data.cache_budget_mb * 1024 ** 2
    for n in reversed(plan.resolutions):  # the finest first, as training.data fills the budget
        need = plan.level(n).num_samples * n ** 3 * 4
        if need <= budget - cached:
            cached += need
    step = max(network_bytes(cfg.model, n, max(1, plan.level(n).global_batch_size // workers), training=True)
               for n in plan.resolutions)
    validation = sum(evaluation_parts(cfg.model, max(cfg.run.val_resolutions or plan.resolutions), 2).values())
    return {"cached fields": cached, "training step" if step >= validation else "validation": max(step, validation)}
