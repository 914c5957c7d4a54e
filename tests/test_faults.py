"""The fault suite: real `python -m poisson_tf.train` processes stopped by a full disk, SIGKILLed at a random
moment and inside a checkpoint write, then resumed, reach the weights of an uninterrupted run bit for bit
(--deterministic); under `horovodrun -np 2`, a killed rank or an error on the chief alone ends every process
within 30 s. Slow (each process loads TensorFlow); CI runs it with the rest.
"""
import glob
import os
import random
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from fault_helpers import digest_tree, error_lines, run_cli, saved_epoch
from poisson_tf import files
from poisson_tf.training import checkpoint
from train_helpers import config_flags, tiny_config

pytestmark = pytest.mark.slow
TRAIN = [sys.executable, "-m", "poisson_tf.train"]
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")


def flags(model_dir, refs, **overrides) -> list:
    """The tiny deterministic run: V(16, 8, 16) with 3 epochs a visit (9 epochs of 4 steps), a checkpoint every
    epoch."""
    settings = dict(cycle__epochs_per_visit=(3,), run__deterministic=True, run__checkpoint_seconds=0)
    return config_flags(tiny_config(model_dir, refs, **{**settings, **overrides}))


def start(args, log, env=None) -> subprocess.Popen:
    """Starts a process whose stdout and stderr go to the file `log` (a pipe nobody reads could block it)."""
    with open(log, "w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, **(env or {})))


def wait_for(condition, process, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the training ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


stored_values = checkpoint.stored_values


def test_killed_and_resumed_training_reaches_the_uninterrupted_weights_bit_for_bit(tmp_path):
    rng = random.Random(13)
    refs, run = tmp_path / "refs", tmp_path / "run"
    uninterrupted = start(TRAIN + flags(tmp_path / "full", refs), tmp_path / "full.log")  # alongside

    # A full disk at the 2nd checkpoint write: one clear error; the 1st checkpoint stays.
    result = run_cli("train", *flags(run, refs), "--resume=auto", env={files.FAULT_VARIABLE: "checkpoint.h5:enospc:2"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"checkpoint\.h5: No space left on device",
                     " ".join(error_lines(result.stderr, "poisson-tf-train"))), result.stderr[-3000:]
    assert saved_epoch(run) == 0

    # SIGKILL at a random moment of a random epoch.
    target, delay = rng.choice([2, 3]), rng.uniform(0.0, 0.3)
    process = start(TRAIN + flags(run, refs) + ["--resume=auto"], tmp_path / "random.log")
    wait_for(lambda: saved_epoch(run) >= target, process, f"epoch {target} was saved")
    time.sleep(delay)
    process.kill()
    process.wait()
    killed_at = saved_epoch(run)
    assert target <= killed_at < 8, f"killed after epoch {killed_at}"

    # SIGKILL inside a checkpoint write: its temporary file is written, the rename has not happened.
    pattern = os.path.join(run, ".checkpoint.h5.*.tmp")
    earlier = set(glob.glob(pattern))  # the random kill may have hit a write too
    process = start(TRAIN + flags(run, refs) + ["--resume=auto"], tmp_path / "in_write.log",
                    env={files.FAULT_VARIABLE: "checkpoint.h5:sleep=600:1"})
    wait_for(lambda: set(glob.glob(pattern)) - earlier, process, "a checkpoint write began")
    process.kill()
    process.wait()
    assert glob.glob(pattern) and saved_epoch(run) == killed_at

    # The same command once more: it resumes, removes the dead write's temporary file and finishes.
    result = run_cli("train", *flags(run, refs), "--resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'"start_epoch": {killed_at + 1}' in result.stdout and not glob.glob(pattern)

    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "full.log").read_text()[-3000:]
    full, resumed = stored_values(tmp_path / "full"), stored_values(run)
    assert sorted(full) == sorted(resumed) and len(full) > 10
    different = [name for name in full if not np.array_equal(full[name], resumed[name])]
    assert different == [], different


def rank_processes(launcher: subprocess.Popen) -> dict:
    """{rank: psutil.Process} of the training processes a launcher started."""
    import psutil

    out = {}
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            rank = child.environ().get("OMPI_COMM_WORLD_RANK", child.environ().get("HOROVOD_RANK"))
            if rank is not None and "poisson_tf.train" in " ".join(child.cmdline()):  # not mpirun itself
                out[int(rank)] = child
        except psutil.Error:  # gone, or not ours to read
            pass
    return out


@pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="Horovod is not installed")
@pytest.mark.parametrize("fault", ["SIGKILL of rank 1", "a full disk on the chief alone"])
def test_a_failing_rank_ends_every_process_of_a_parallel_training_within_30_s(tmp_path, fault):
    import psutil

    chief_fails = fault.startswith("a full disk")
    log = tmp_path / "horovodrun.log"
    launcher = start([HOROVODRUN, "-np", "2", "-H", "localhost:2"] + TRAIN + flags(tmp_path / "run", tmp_path / "refs"),
                     log, env={files.FAULT_VARIABLE: "config.json:enospc"} if chief_fails else {})
    ranks = {}

    def both_started():
        ranks.update(rank_processes(launcher))
        return len(ranks) == 2

    wait_for(both_started, launcher, "both ranks started")
    descendants = psutil.Process(launcher.pid).children(recursive=True)
    try:
        if chief_fails:  # the chief fails writing config.json, outside any collective; rank 1 goes on
            while ranks[0].is_running() and ranks[0].status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.05)
        else:
            wait_for(lambda: os.path.exists(tmp_path / "run" / "config.json"), launcher, "the run started")
            time.sleep(random.Random(7).uniform(0.0, 2.0))
            ranks[1].send_signal(signal.SIGKILL)
        began = time.monotonic()
        _, alive = psutil.wait_procs(descendants, timeout=30)
        code = launcher.wait(timeout=max(0.1, 30 - (time.monotonic() - began)))
        took = time.monotonic() - began
        assert not alive, f"still running 30 s after the {fault}: {alive}"
    finally:  # whatever happened, leave nothing running
        for process in descendants:
            if process.is_running():
                process.kill()
        if launcher.poll() is None:
            launcher.kill()
    output = log.read_text()
    assert code != 0
    if chief_fails:
        errors = re.findall(r"poisson-tf-train: error: .*", output)
        assert "Traceback" not in output and len(errors) == 1, output[-3000:]
        assert "config.json: No space left on device" in errors[0]
    print(f"{fault}: every process gone {took:.1f} s later")


def checkpoint_state(model_dir) -> dict:
    """The state of model_dir's newest checkpoint ({} before the first)."""
    import json

    try:
        with h5py.File(os.path.join(model_dir, checkpoint.CHECKPOINT_FILE), "r") as f:
            return json.loads(f.attrs["state"])
    except (OSError, KeyError):
        return {}


def training_processes(run) -> list:
    """The live processes whose command line names the run directory `run` (launchers and ranks)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if str(run) in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


STOPPED = (r"poisson-tf-train: stopped by (SIGTERM|the end of its launcher \(horovodrun\)) (in epoch \d+ after \d+ "
           r"of its steps|after epoch \d+); the checkpoint .* holds every step trained")


def stop(tmp_path, run_flags, run, name, when, launcher=(), send_to=None, env=None, expect_code=75) -> dict:
    """Starts the run of run_flags in `run` (--resume=auto), waits until `when(run)` holds, sends SIGTERM (to the
    started process, or to `send_to(process)`), and checks the exit code (expect_code; None: whatever a
    launcher that a signal killed returns), that every process is gone and a new checkpoint was written within
    10 s, and the message. Returns the checkpoint state the signal left."""
    before = checkpoint_state(run)
    process = start([*launcher, *TRAIN, *run_flags, "--resume=auto"], tmp_path / f"{name}.log", env=env)
    wait_for(lambda: when(run), process, f"{name}: the moment to stop")
    sent = time.monotonic()
    (send_to(process) if send_to else process).send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    while training_processes(run):  # a launcher may end before its ranks
        assert time.monotonic() - sent < 30, "training processes still running 30 s after the SIGTERM"
        time.sleep(0.1)
    took = time.monotonic() - sent
    output = (tmp_path / f"{name}.log").read_text()
    assert expect_code is None or code == expect_code, output[-3000:]
    assert re.search(STOPPED, output), output[-3000:]
    assert "Traceback" not in output
    state = checkpoint_state(run)
    assert state != before and took < 10, (state, took)
    return state


def test_sigterm_checkpoints_the_steps_done_and_the_resume_reaches_the_uninterrupted_weights(tmp_path):
    refs, run, fresh = tmp_path / "refs", tmp_path / "run", tmp_path / "fresh_refs"  # fresh: filled in a validation
    uninterrupted = start(TRAIN + flags(tmp_path / "full", refs), tmp_path / "full.log")
    rng = random.Random(28)
    states = []
    # At a random moment (within an epoch about half the time: bench_preemption; a stop within an epoch for
    # certain: tests/test_train.py), during a checkpoint write (2 s injected into it), during a validation (2 s
    # in the write of the reference solution it computes), and once this launch saved an epoch of its own (a
    # signal while TensorFlow still loads: the test after this one).
    for name, when, env, cache in (
            ("random", lambda d: saved_epoch(d) >= 1 and (time.sleep(rng.uniform(0, 0.3)) or True), None, refs),
            ("in a checkpoint write", lambda d: bool(glob.glob(os.path.join(d, ".checkpoint.h5.*.tmp"))),
             {files.FAULT_VARIABLE: "checkpoint.h5:sleep=2:1"}, refs),
            ("in a validation", lambda d: bool(glob.glob(os.path.join(fresh, ".ref_N*.tmp*"))),
             {files.FAULT_VARIABLE: "ref_N*.h5:sleep=2:1"}, fresh),
            ("another", lambda d: saved_epoch(d) > states[-1]["epoch"], None, refs)):
        states.append(stop(tmp_path, flags(run, cache), run, name, when, env=env))
    result = run_cli("train", *flags(run, refs), "--resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "full.log").read_text()[-3000:]
    full, resumed = stored_values(tmp_path / "full"), stored_values(run)
    different = [name for name in full if not np.array_equal(full[name], resumed[name])]
    assert sorted(full) == sorted(resumed) and different == [], different


def catches(pid: int, number: int) -> bool:
    """Whether process pid has a handler for signal `number` (the SigCgt mask in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        caught = int(next(line for line in f if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (number - 1) & 1)


def test_a_sigterm_while_tensorflow_loads_ends_the_launch_with_exit_75_and_changes_no_run_file(tmp_path):
    refs, run = tmp_path / "refs", tmp_path / "run"
    assert run_cli("train", *flags(run, refs), "--stop_after_epochs=2").returncode == 0
    before = digest_tree(run, skip=".lock")  # the lock records who holds model_dir: every launch rewrites it
    process = start([*TRAIN, *flags(run, refs), "--resume=auto"], tmp_path / "early.log")
    # the listener is installed on the first line of main, seconds before TensorFlow has loaded
    wait_for(lambda: catches(process.pid, signal.SIGTERM), process, "the signal handler")
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    output = (tmp_path / "early.log").read_text()
    assert code == 75 and "Traceback" not in output, output[-3000:]
    assert re.search(r"poisson-tf-train: stopped by SIGTERM before its first step: nothing was trained in this "
                     r"launch, and nothing to save: the same command with --resume=auto continues", output), output
    assert digest_tree(run, skip=".lock") == before  # no file written, none changed
    assert run_cli("train", *flags(run, refs), "--resume=auto").returncode == 0
    assert checkpoint_state(run)["epoch"] == 8  # the whole cycle (9 epochs) from where the first launch stopped


MPIRUN = ["env", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "mpirun", "-np", "2",
          "--oversubscribe", "--bind-to", "none", "-x", "PATH"]


@pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="Horovod is not installed")
@pytest.mark.parametrize("target", ["horovodrun", "mpirun", "rank 1 alone"])
def test_sigterm_to_the_launcher_or_one_rank_stops_every_rank_with_the_checkpoint(tmp_path, target):
    refs, run = tmp_path / "refs", tmp_path / "run"
    launcher = MPIRUN if target == "mpirun" else [HOROVODRUN, "-np", "2", "-H", "localhost:2"]
    long_run = flags(run, refs, cycle__epochs_per_visit=(40,))  # 120 epochs: the signal comes well within it
    # the same two ranks uninterrupted (two ranks average their halves' gradients: not one process's bits)
    uninterrupted = subprocess.run(launcher + TRAIN + flags(tmp_path / "full", refs, cycle__epochs_per_visit=(40,)),
                                   capture_output=True, text=True, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    # SIGTERM to horovodrun: the ranks see it end (signals.horovodrun_pid). To mpirun: it passes the signal
    # on (and exits 1 once the ranks exit 75). To rank 1 alone: rank 0 learns of it through the per-step
    # agreement. Every rank exits 75 after the chief's checkpoint.
    process_of = {"horovodrun": None, "mpirun": None, "rank 1 alone": lambda p: rank_processes(p)[1]}[target]
    state = stop(tmp_path, long_run, run, target.replace(" ", "_"), lambda d: saved_epoch(d) >= 2, launcher,
                 send_to=process_of, expect_code=None)
    assert state["epoch"] >= 2
    result = subprocess.run(launcher + TRAIN + long_run + ["--resume=auto"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    full, resumed = stored_values(tmp_path / "full"), stored_values(run)
    different = [name for name in full if not np.array_equal(full[name], resumed[name])]
    assert different == [], different


def test_a_deterministic_resume_with_another_thread_count_is_refused_by_name(tmp_path):
    refs, run = tmp_path / "refs", tmp_path / "run"
    result = run_cli("train", *flags(run, refs), "--stop_after_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_state(run)["threads"] == 1  # the thread count the weights depend on, recorded
    before = {name: (run / name).read_bytes() for name in ("checkpoint.h5", "config.json")}
    refused = run_cli("train", *flags(run, refs), "--resume=auto", "--threads=2")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    errors = error_lines(refused.stderr, "poisson-tf-train")
    assert len(errors) == 1 and re.search(r"holds a --deterministic run trained with 1 TensorFlow threads per "
                                          r"worker, this launch has 2: .* give --threads=1", errors[0]), errors
    assert {name: (run / name).read_bytes() for name in before} == before  # a refused resume changed nothing
    resumed = run_cli("train", *flags(run, refs), "--resume=auto", "--threads=1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
