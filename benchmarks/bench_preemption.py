"""SIGTERM at random moments of a tiny training, then --resume=auto: the issue-28 target.

One run is stopped `--stops` times at random moments (each launch waits for its first new checkpoint, so the
signal falls in a training that is running, then a uniform delay of up to --max_delay seconds: inside a step,
a validation or a checkpoint write), each launch resumed from the last; then it runs to its end. For every
stop it records the exit code, whether every process was gone and a new checkpoint on disk within 10 s, and
where the checkpoint says the run stood; at the end, whether the final weights (checkpoint and model.keras)
equal those of the same run uninterrupted, bit for bit (--deterministic).

  python benchmarks/bench_preemption.py                       # single process, 20 stops
  python benchmarks/bench_preemption.py --launcher=horovodrun # horovodrun -np 2, the signal to horovodrun
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

import _common
from poisson_tf.training import checkpoint

TRAIN = [sys.executable, "-m", "poisson_tf.train"]
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")


def run_flags(model_dir: str, refs: str, epochs_per_visit: int) -> list:
    return ["--preset=tiny", "--num_train=8", "--num_val=2", "--levels=8,16", "--cycle=v",
            f"--epochs_per_visit={epochs_per_visit}", "--global_batch_size=2", "--learning_rate=1e-3",
            "--lr_decay=constant", "--deterministic", "--checkpoint_seconds=0", "--threads=1", "--verbose=0",
            f"--model_dir={model_dir}", f"--reference_cache={refs}"]


def state(model_dir: str) -> dict:
    try:
        with h5py.File(os.path.join(model_dir, "checkpoint.h5"), "r") as f:
            return json.loads(f.attrs["state"])
    except (OSError, KeyError):
        return {}


def alive(model_dir: str) -> bool:
    import psutil

    for p in psutil.process_iter(["cmdline", "status"]):
        if model_dir in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", choices=("none", "horovodrun"), default="none")
    parser.add_argument("--stops", type=int, default=20)
    parser.add_argument("--max_delay", type=float, default=2.0)
    parser.add_argument("--epochs_per_visit", type=int, default=250, help="3 visits of this many 4-step epochs")
    parser.add_argument("--seed", type=int, default=28)
    args = parser.parse_args()
    launcher = [HOROVODRUN, "-np", "2", "-H", "localhost:2"] if args.launcher == "horovodrun" else []
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="bench_preemption_")
    refs, full, run = (os.path.join(work, name) for name in ("refs", "full", "run"))
    try:
        start = time.perf_counter()
        done = subprocess.run(launcher + TRAIN + run_flags(full, refs, args.epochs_per_visit), capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        uninterrupted_s = time.perf_counter() - start
        stops = []
        for index in range(args.stops):
            before = state(run)
            log = open(os.path.join(work, f"stop{index}.log"), "w")
            process = subprocess.Popen(launcher + TRAIN + run_flags(run, refs, args.epochs_per_visit)
                                       + ["--resume=auto"], stdout=log, stderr=subprocess.STDOUT)
            while state(run) == before and process.poll() is None:  # training is under way
                time.sleep(0.02)
            if process.poll() is not None:
                raise SystemExit(f"launch {index} ended (exit {process.returncode}) before its first checkpoint: "
                                 "make --epochs_per_visit larger")
            delay = rng.uniform(0, args.max_delay)
            time.sleep(delay)
            at = state(run)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
            while alive(run) and time.monotonic() - sent < 60:
                time.sleep(0.05)
            gone_s = time.monotonic() - sent
            log.close()
            text = open(os.path.join(work, f"stop{index}.log")).read()
            after = state(run)
            stops.append({"delay_s": round(delay, 3), "exit_code": code, "gone_s": round(gone_s, 2),
                          "new_checkpoint": after != at, "within_10s": gone_s < 10 and after != at,
                          "message": "holds every step trained" in text, "traceback": "Traceback" in text,
                          "epoch": after.get("epoch"), "partial": after.get("partial")})
            print(json.dumps(stops[-1]), flush=True)
        done = subprocess.run(launcher + TRAIN + run_flags(run, refs, args.epochs_per_visit) + ["--resume=auto"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        a, b = checkpoint.stored_values(full), checkpoint.stored_values(run)
        different = sorted(name for name in a if name not in b or not np.array_equal(a[name], b[name]))
        record = {"launcher": " ".join(os.path.basename(x) for x in launcher) or "single process",
                  "stops": len(stops), "within_10s": sum(s["within_10s"] for s in stops),
                  "exit_75": sum(s["exit_code"] == 75 for s in stops),
                  "messages": sum(s["message"] for s in stops), "tracebacks": sum(s["traceback"] for s in stops),
                  "stops_within_an_epoch": sum(s["partial"] is not None for s in stops),
                  "max_gone_s": max(s["gone_s"] for s in stops), "bitwise_equal": not different,
                  "different_variables": different[:10], "uninterrupted_s": round(uninterrupted_s, 1),
                  "per_stop": stops}
        print(_common.write("preemption", [record], vars(args)))
        print(json.dumps({k: v for k, v in record.items() if k != "per_stop"}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
