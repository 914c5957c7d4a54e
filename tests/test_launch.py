"""Launch scripts: a `# Usage:` line, and the exact command their dry-run mode prints."""
import os
import shlex
import subprocess

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
