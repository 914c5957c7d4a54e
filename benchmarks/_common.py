"""Shared by the benchmark scripts: machine and version record, JSON-lines output, peak memory of a child,
repeated timing.

Record conventions (issue 16): a timed field holds the median of its repeats and "<field>_times" beside it
holds every repeat's seconds in call order; "repeats" and "warmup" say how many calls were timed and how many
untimed calls came first. A benchmark that deliberately times a single run says so ("repeats": 1).
Every record's "machine" names the CPU (cpu_model, isa_class, isa_flags) and the oneDNN settings.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

import poisson_tf  # noqa: F401  (before TensorFlow: the package's oneDNN choice applies to every benchmark)
from poisson_tf import hardware

RESULTS = os.environ.get("POISSON_TF_BENCH_RESULTS",
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))


def machine() -> dict:
    """Where and with what a number was measured."""
    info = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    for module in ("numpy", "scipy", "pyamg", "tensorflow", "keras", "horovod"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a missing package is recorded as such
            info[module] = None
    # The CPU class decides which oneDNN kernels run: every number names it (the results tables show its class).
    info.update(hardware.cpu_info(), onednn=hardware.onednn_enabled(),
                onednn_max_isa=os.environ.get("ONEDNN_MAX_CPU_ISA", ""))
    return info


def write(name: str, records: list, settings: dict) -> str:
    """Appends one JSON line per record (with machine and settings) to benchmarks/results/<name>.jsonl."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.jsonl")
    env = machine()
    with open(path, "a") as f:
        for record in records:
            f.write(json.dumps({"benchmark": name, **record, "settings": settings, "machine": env}) + "\n")
    return path


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def run_child(script: str, *args: str) -> dict:
    """Runs `python script args` in a fresh process (so its peak memory is its own); returns its last JSON line."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def timing(fn, repeats: int = 5, warmup: int = 1) -> dict:
    """Every repeat's wall time of fn(), after `warmup` untimed calls (tracing, caches, first-call costs).

    Returns {"median": s, "times": [s, ...] in call order, "repeats": repeats, "warmup": warmup}. Records store
    the median under their field (e.g. "step_seconds") and the times beside it ("step_seconds_times").
    The median, not the best: these 2 vCPUs vary by 1.5x from call to call (a 4096^2 matmul measured
    160-270 GFLOP/s in one minute), and a best-of-n overstates what a run gets.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": median(times), "times": times, "repeats": repeats, "warmup": warmup}


def step_clock(warmup: int):
    """A Keras callback timing fit's steps in the steady state: clock.times() are the seconds from one step's end
    to the next's (data, step and callbacks: all a step of fit costs) for every step after the first `warmup`
    (>= 1) steps, whose start-up (tracing, first-step compile, dataset warm-up, fit's own set-up) is excluded."""
    if warmup < 1:
        raise ValueError(f"step_clock needs warmup >= 1 (the first step's end starts the clock), got {warmup}")
    import keras  # here, not at the top: a script may set oneDNN's environment before TensorFlow starts

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

        def times(self) -> list:
            ends = self.ends[warmup - 1:]
            return [b - a for a, b in zip(ends, ends[1:])]

    return StepClock()


def median(times: list) -> float:
    """The median as the benchmarks have always taken it: the upper middle of the sorted times."""
    return sorted(times)[len(times) // 2]


def timed(fn, repeats: int = 5, warmup: int = 1) -> float:
    """The median of timing(fn, repeats, warmup) alone (records should store timing's times too)."""
    return timing(fn, repeats, warmup)["median"]
