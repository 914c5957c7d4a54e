"""Launch scripts: a `# Usage:` line, and the exact command their dry-run mode prints."""
import os
import shlex
import subprocess
import time

import pytest

LAUNCH = os.path.join(os.path.dirname(__file__), "..", "launch")


def dry_run(script, *args, **env):
    result = subprocess.run(["bash", os.path.join(LAUNCH, script), *args], capture_output=True, text=True,
                            env=dict(os.environ, DRY_RUN="1", **env), timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def command(out):
    """The printed command (its last line) as the argument list a shell would run."""
    args = shlex.split(out.strip().splitlines()[-1])
    args[0] = os.path.basename(args[0])
    return [os.path.basename(a) if a.endswith("/bin/python") else a for a in args]


@pytest.mark.parametrize("script", sorted(os.listdir(LAUNCH)))
def test_every_script_starts_with_usage(script):
    with open(os.path.join(LAUNCH, script)) as f:
        head = f.read(400)
    assert "# Usage:" in head.splitlines()[1]


def test_local_composes_horovodrun_with_threads_per_worker():
    threads = max(1, os.cpu_count() // 2)
    assert command(dry_run("local.sh", "2", "--cycle=v", "--levels=16,32")) == [
        "horovodrun", "-np", "2", "-H", "localhost:2", "python", "-m", "poisson_tf.train", "--resume=auto",
        f"--threads={threads}",
        "--cycle=v", "--levels=16,32"]
    assert command(dry_run("local.sh", "2", GLOO="1"))[5] == "--gloo"


def test_cloud_gpu_uses_one_process_per_gpu_over_the_hostfile(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two ND A100 v4 VMs\nvm-0\nvm-1\n\n")
    out = dry_run("cloud_gpu.sh", str(hostfile), "8", "--preset=reference", "--global_batch_size=16")
    assert command(out) == ["horovodrun", "-np", "16", "-H", "vm-0:8,vm-1:8", "python", "-m", "poisson_tf.train",
                            "--resume=auto", "--preset=reference", "--global_batch_size=16"]
    assert "NCCL_SOCKET_IFNAME=eth0" in out and "NCCL_IB_PCI_RELAXED_ORDERING=1" in out


def test_slurm_composes_srun_pmix_or_mpirun():
    out = dry_run("slurm_cpu.sbatch", "--cycle=f", SLURM_JOB_NUM_NODES="4", SLURM_NTASKS_PER_NODE="8",
                  SLURM_CPUS_PER_TASK="16")
    assert command(out) == ["srun", "--mpi=pmix", "--kill-on-bad-exit=1", "--ntasks=32", "--ntasks-per-node=8",
                            "--cpus-per-task=16", "--cpu-bind=cores", "python", "-m", "poisson_tf.train",
                            "--resume=auto", "--threads=16", "--cycle=f"]
    assert command(dry_run("slurm_cpu.sbatch", LAUNCHER="mpirun"))[:7] == [
        "mpirun", "-np", "16", "--map-by", "ppr:8:node:PE=16", "--bind-to", "core"]


def test_cloud_gpu_on_an_azure_eviction_notice_sends_sigterm_to_horovodrun(tmp_path):
    # A stand-in horovodrun that records the SIGTERM it gets; Scheduled Events from a file (curl reads file://).
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "horovodrun").write_text(f"#!/usr/bin/env bash\ntrap 'echo TERM > {tmp_path}/got; exit 75' TERM\n"
                                        f"touch {tmp_path}/started\nfor i in $(seq 600); do sleep 0.1; done\n")
    (bin_dir / "horovodrun").chmod(0o755)
    events = tmp_path / "events.json"
    events.write_text('{"DocumentIncarnation": 1, "Events": []}')
    hostfile = tmp_path / "hosts"
    hostfile.write_text("vm-0\n")
    process = subprocess.Popen(["bash", os.path.join(LAUNCH, "cloud_gpu.sh"), str(hostfile), "1"],
                               stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, POISSON_TF_VENV=str(tmp_path / "venv"), AZURE_SPOT="1",
                                        AZURE_EVENTS_URL=f"file://{events}", AZURE_POLL_SECONDS="0.2"))
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        time.sleep(1)  # polled several times: no event, no signal
        assert process.poll() is None and not (tmp_path / "got").exists()
        events.write_text('{"DocumentIncarnation": 2, "Events": [{"EventId": "1", "EventType": "Preempt", '
                          '"ResourceType": "VirtualMachine", "Resources": ["vm-0"], "EventStatus": "Scheduled"}]}')
        assert process.wait(timeout=30) == 75
    finally:
        process.kill()
    assert (tmp_path / "got").read_text() == "TERM\n"
    assert "Azure eviction notice: SIGTERM to horovodrun" in process.stderr.read()
