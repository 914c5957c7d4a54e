"""Value checks shared by the configuration, the models, the data and the command lines: each refusal is one
sentence naming the value and what would be valid. Framework-free."""
from __future__ import annotations

MAX_THREADS = 1024  # TensorFlow aborts the process on a negative thread count; more than this is no CPU node
MAX_SEED = 2 ** 32 - 1  # numpy's seeds (keras.utils.set_random_seed) stop here


def require(ok: bool, name: str, value, valid: str) -> None:
    """Raises ValueError('<name> must be <valid>, got <value>') unless ok: the one form of a refused value
    (also for the command lines' own flags, named '--flag')."""
    if not ok:
        raise ValueError(f"{name} must be {valid}, got {value!r}")


def check_threads(threads: int) -> int:
    """Raises ValueError unless threads is a TensorFlow thread count: 0 (automatic) to MAX_THREADS."""
    require(not isinstance(threads, bool) and isinstance(threads, int) and 0 <= threads <= MAX_THREADS,
             "threads", threads, f"an integer from 0 (automatic: the cores of this worker) to {MAX_THREADS}")
    return threads


def check_seed(name: str, seed: int) -> None:
    require(not isinstance(seed, bool) and isinstance(seed, int) and 0 <= seed <= MAX_SEED, name, seed,
             f"an integer from 0 to {MAX_SEED}")


def valid_resolutions(depth: int, up_to: int = 512) -> list:
    """Resolutions N <= up_to that a network of this depth accepts (multiples of 2**depth)."""
    step = 2 ** depth
    return list(range(step, up_to + 1, step))


def check_resolution(resolution: int, depth: int) -> int:
    """Raises ValueError unless resolution is a multiple of 2**depth and >= 2 (depth 0: any N >= 2, a network
    with a working resolution)."""
    step = 2 ** depth
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < max(step, 2) or \
            resolution % step:
        if not depth:
            raise ValueError(f"resolution {resolution!r}: N must be an integer number of nodes per axis >= 2")
        shown = ", ".join(map(str, valid_resolutions(depth, 8 * step)))
        raise ValueError(f"resolution {resolution!r} cannot pass a depth-{depth} U-Net: N must be a multiple "
                         f"of 2^{depth} = {step} ({shown}, ...)")
    return int(resolution)
