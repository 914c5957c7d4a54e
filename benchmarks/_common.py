"""Shared by the benchmark scripts: machine and version record, JSON-lines output, peak memory of a child."""
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
    # The CPU class decides which oneDNN kernels run: every number names it (README tables show isa_class).
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


def timed(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() over repeats, after warmup calls (tracing, caches).

    The median, not the best: these 2 vCPUs vary by 1.5x from call to call (a 4096^2 matmul measured
    160-270 GFLOP/s in one minute), and a best-of-n overstates what a run gets.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]
