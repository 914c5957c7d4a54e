"""Multi-host runs on one machine: two hosts made of network namespaces (tests/netns_hosts.py), which mpirun
(plm_rsh_agent) and horovodrun --gloo reach through an ssh, as they reach cluster nodes; the second host has a
disk of its own (it sees none of the first host's run directories).

Under MPI and Gloo, 2 hosts x 1 rank and 2 hosts x 2 ranks (oversubscribed) train a tiny two-level cycle to the
weights of one process bit for bit (--gradient_shards=4 --deterministic, one thread per rank), bind their cores
by local rank, and resume with --resume=auto from the checkpoint that only the first host's disk holds; a rank
killed on the second host ends the job on both within 30 s. Slow: every rank loads TensorFlow.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fault_helpers import saved_epoch
from netns_hosts import Hosts
from poisson_tf.training import checkpoint
from train_helpers import config_flags, tiny_config

HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
WHY_NOT = Hosts.unavailable() or ("" if os.path.exists(HOROVODRUN) else "Horovod is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(WHY_NOT), reason=f"no hosts to make here: {WHY_NOT}")]
TRAIN = [sys.executable, "-m", "poisson_tf.train"]
SHARDS = 4  # the global batch's shards: one per rank of the largest job here


def flags(model_dir, refs, **overrides) -> list:
    """V(16, 8, 16), 2 epochs a visit, a global batch of 4 in 4 exact shards, a checkpoint every epoch."""
    settings = dict(cycle__epochs_per_visit=(2,), optim__global_batch_size=4, optim__gradient_shards=SHARDS,
                    run__deterministic=True, run__checkpoint_seconds=0)
    return config_flags(tiny_config(model_dir, refs, **{**settings, **overrides}))


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """The directory the second host sees empty: every run directory and reference cache lives in it."""
    return tmp_path_factory.mktemp("disk")


@pytest.fixture(scope="module")
def hosts(disk):
    with Hosts(private=[disk]) as made:
        yield made
    assert not any(name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
                   for name in made.namespaces), "a namespace outlived the tests"


@pytest.fixture(scope="module")
def single(disk):
    """The run of one process: the weights every multi-host run must reach."""
    run = disk / "single"
    result = subprocess.run(TRAIN + flags(run, disk / "refs"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return checkpoint.stored_values(run)


def run(hosts, launcher, per_host, argv, timeout=600) -> subprocess.CompletedProcess:
    command, env = hosts.launcher(launcher, per_host, argv)
    return subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, timeout=timeout)


PROBE = """import json, os, socket, sys
from poisson_tf import distributed, hardware
distributed.init()
print("PROBE " + json.dumps({"rank": distributed.rank(), "local_rank": distributed.local_rank(),
      "local_size": distributed.local_size(), "host": socket.gethostname(), "cpus": hardware.usable_cpus(),
      "sees_disk": bool(os.listdir(sys.argv[1]))}), flush=True)
"""


@pytest.mark.parametrize("launcher", ["mpi", "gloo"])
def test_ranks_know_their_host_bind_cores_by_local_rank_and_see_only_their_own_disk(hosts, disk, launcher):
    (disk / "on_the_first_host").write_text("")
    probe = os.path.join(hosts.bin, "probe.py")  # outside the private disk: every host reads it
    with open(probe, "w") as f:
        f.write(PROBE)
    result = run(hosts, launcher, 2, [sys.executable, probe, str(disk)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    seen = sorted((json.loads(line.split("PROBE ", 1)[1]) for line in result.stdout.splitlines() if "PROBE " in line),
                  key=lambda r: r["rank"])
    assert [r["rank"] for r in seen] == [0, 1, 2, 3], result.stdout
    cpus = sorted(os.sched_getaffinity(0))
    share = len(cpus) // 2
    for r in seen:
        assert r["host"] == hosts.names[r["rank"] // 2] and r["local_size"] == 2
        assert r["local_rank"] == r["rank"] % 2
        assert r["cpus"] == cpus[r["local_rank"] * share:(r["local_rank"] + 1) * share]  # its slice of the host
        assert r["sees_disk"] == (r["host"] == hosts.names[0])


def same_weights(a: dict, b: dict) -> list:
    """The stored values (network and optimizer) that differ between two runs: [] when bit for bit equal."""
    assert sorted(a) == sorted(b)
    return [name for name in a if not np.array_equal(a[name], b[name])]


@pytest.mark.parametrize("launcher, per_host", [("mpi", 1), ("mpi", 2), ("gloo", 1), ("gloo", 2)])
def test_two_hosts_train_to_the_weights_of_one_process_and_resume_from_the_first_hosts_disk(
        hosts, disk, single, launcher, per_host):
    model_dir = disk / f"{launcher}_{per_host}"
    args = TRAIN + flags(model_dir, disk / "refs")
    if per_host == 2:  # stopped after 3 of the 6 epochs, then resumed: only the first host holds the checkpoint
        first = run(hosts, launcher, per_host, args + ["--stop_after_epochs=3"])
        assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
        assert saved_epoch(model_dir) == 2
        args = args + ["--resume=auto"]
    result = run(hosts, launcher, per_host, args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert '"workers": ' + str(2 * per_host) in result.stdout
    assert same_weights(checkpoint.stored_values(model_dir), single) == []


def training_pids(hosts, host: int) -> list:
    """The training ranks on host `host` (python -m poisson_tf.train; not the shells that started them)."""
    out = []
    for pid in hosts.processes(host):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[1:3] == [b"-m", b"poisson_tf.train"]:
                    out.append(pid)
        except OSError:  # gone
            pass
    return out


@pytest.mark.parametrize("launcher", ["mpi", "gloo"])
def test_a_rank_killed_on_the_second_host_ends_the_job_on_both_within_30_s(hosts, disk, launcher):
    model_dir = disk / f"killed_{launcher}"
    command, env = hosts.launcher(launcher, 1, TRAIN + flags(model_dir, disk / "refs", cycle__epochs_per_visit=(40,)))
    with open(disk / f"killed_{launcher}.log", "w") as log:
        job = subprocess.Popen(command, env=env, cwd="/", stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while saved_epoch(model_dir) < 1:  # training on both hosts
        assert job.poll() is None and time.monotonic() < deadline, (disk / f"killed_{launcher}.log").read_text()
        time.sleep(0.1)
    victims = training_pids(hosts, 1)
    assert len(victims) == 1, victims
    os.kill(victims[0], signal.SIGKILL)
    killed = time.monotonic()
    while job.poll() is None or training_pids(hosts, 0) or training_pids(hosts, 1):
        assert time.monotonic() - killed < 30, "the job outlived its killed rank by 30 s"
        time.sleep(0.2)
    assert job.returncode != 0
