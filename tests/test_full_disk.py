"""A really full file system (a small tmpfs in a private mount namespace, not the fault suite's injected error):
predict, evaluate and train end with one `poisson-tf-X: error:` line naming the file and the full disk, no
traceback and no crash (HDF5 writing straight to a full disk crashed predict at exit), and every earlier file
intact with no temporary file left.

Needs `unshare -m` and tmpfs mounts (root, or a user namespace); skipped where the machine forbids them.
"""
import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from fault_helpers import error_lines
from poisson_tf import training
from train_helpers import config_flags, tiny_config

def _can_mount() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _can_mount(), reason="no private tmpfs mounts here")]

# Mounts a tmpfs of 4 MiB at $1, copies the files of $2 into it, fills it to $3 KiB free, runs the rest, and
# lists what the mount holds afterwards (sha256 and name) into $1.after beside it: the mount ends with the shell.
SCRIPT = r"""
set -u
D=$1; SEED=$2; FREE=$3; shift 3
mount -t tmpfs -o size=4m tmpfs "$D"
cp -a "$SEED"/. "$D"/
avail=$(df -k --output=avail "$D" | tail -1)
[ "$avail" -gt "$FREE" ] && dd if=/dev/zero of="$D/.filler" bs=1k count=$((avail - FREE)) status=none
"$@"; code=$?
(cd "$D" && find . -type f ! -name .filler -exec sha256sum {} + | sort -k2) > "$D.after"
exit $code
"""


def digests(directory) -> str:
    lines = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  ./{os.path.relpath(path, directory)}")
    return "\n".join(sorted(lines, key=lambda line: line.split("  ", 1)[1]))


def on_full_disk(tmp_path, seed, free_kb: int, module: str, *args):
    """Runs `python -m poisson_tf.<module> args` with {d} in args the full tmpfs; returns (result, the
    sha256 listing of what the tmpfs held afterwards)."""
    mount = tmp_path / "full"
    mount.mkdir()
    command = [sys.executable, "-m", f"poisson_tf.{module}", *[a.format(d=mount) for a in args]]
    result = subprocess.run(["unshare", "-m", "bash", "-c", SCRIPT, "full_disk", str(mount), str(seed), str(free_kb),
                             *command], capture_output=True, text=True, timeout=600)
    return result, (tmp_path / "full.after").read_text().strip()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    w = tmp_path_factory.mktemp("trained")
    training.train(tiny_config(w / "run", w / "refs", cycle__cycle="single", cycle__levels=(8,)))
    return w


def check_refused(result, command: str, *paths: str):
    """Exit 1, no traceback, one error line naming one of paths and the full disk."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-3000:]
    errors = error_lines(result.stderr, command)
    assert len(errors) == 1 and any(f"{p}: No space left on device" in errors[0] for p in paths), \
        result.stderr[-3000:]


def test_predict_on_a_full_disk_names_the_output_and_keeps_the_previous_pair(tmp_path, trained):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "out.h5").write_bytes(b"a previous result")
    (seed / "out.xdmf").write_text("its sidecar")
    # 4 fields at 64^3: MiBs of output, 200 KiB free (enough for the early writability probe)
    result, after = on_full_disk(tmp_path, seed, 200, "predict", f"--model_dir={trained / 'run'}", "--draw=4",
                                 "--resolution=64", "--output={d}/out.h5")
    check_refused(result, "poisson-tf-predict", str(tmp_path / "full" / "out.h5"))
    assert after == digests(seed)  # the previous .h5 and .xdmf, byte for byte, and no temporary file


def test_evaluate_on_a_full_disk_keeps_the_previous_report_and_figure(tmp_path, trained):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "report.json").write_text('{"a": "previous report"}')
    (seed / "report.png").write_bytes(b"its figure")
    result, after = on_full_disk(tmp_path, seed, 16, "evaluate", f"--model_dir={trained / 'run'}",
                                 "--resolutions=8", f"--reference_cache={trained / 'refs'}",
                                 "--report={d}/report.json")
    check_refused(result, "poisson-tf-evaluate", str(tmp_path / "full" / "report.json"),
                  str(tmp_path / "full" / "report.png"))
    assert after == digests(seed)


@pytest.mark.parametrize("free_kb", [30, 90])
def test_train_on_a_full_disk_ends_with_one_line_and_no_broken_file(tmp_path, trained, free_kb):
    seed = tmp_path / "seed"
    seed.mkdir()
    # the tiny run's files: config and samples ~20 KiB, a checkpoint ~40 KiB (two kept), the model ~60 KiB
    cfg = tiny_config("{d}/run", trained / "refs", cycle__cycle="single", cycle__levels=(16,),
                      cycle__epochs_per_visit=(20,), run__checkpoint_seconds=0)
    result, after = on_full_disk(tmp_path, seed, free_kb, "train", *config_flags(cfg))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-3000:]
    errors = error_lines(result.stderr, "poisson-tf-train")
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr[-3000:]
    assert ".tmp" not in after, after  # no temporary file of a failed write left
    print(errors[0], after, sep="\n")
