"""For the fault tests: running the command lines as a user does, seeing what they changed on disk, damaging files."""
import hashlib
import os
import subprocess
import sys


def run_cli(module: str, *args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m poisson_tf.<module> args...` (PYTHONPATH inherited), its output captured as text."""
    return subprocess.run([sys.executable, "-m", f"poisson_tf.{module}", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=None if env is None else dict(os.environ, **env))


def digest_tree(root, skip: str = "") -> dict:
    """relative path -> sha256 of every file below root (but names starting with `skip`, when given): equal
    before and after means nothing changed."""
    out = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if skip and name.startswith(skip):
                continue
            try:
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
            except FileNotFoundError:  # gone since os.walk listed it
                pass
    return out


def error_lines(stderr: str, command: str) -> list:
    """The `<command>: error: ...` lines of a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith(f"{command}: error: ")]


def flip_byte(path, dataset: str) -> None:
    """Flips one byte inside the stored values of an HDF5 dataset (bit rot), leaving the file readable."""
    import h5py

    with h5py.File(path, "r") as f:
        offset, size = f[dataset].id.get_offset(), f[dataset].id.get_storage_size()
    with open(path, "r+b") as f:
        f.seek(offset + size // 2)
        byte = f.read(1)
        f.seek(offset + size // 2)
        f.write(bytes([byte[0] ^ 0x5A]))


def saved_epoch(model_dir) -> int:
    """The epoch of model_dir's newest checkpoint (-1 before the first)."""
    import re

    import h5py

    from poisson_tf.training import checkpoint

    try:
        with h5py.File(os.path.join(model_dir, checkpoint.CHECKPOINT_FILE), "r") as f:
            return int(re.search(r'"epoch": (\d+)', f.attrs["state"]).group(1))
    except (OSError, KeyError):  # not written yet
        return -1
