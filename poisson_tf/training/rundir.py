"""A training run's model_dir: whether a run may start or resume there, its lock, what killed writers left.

Never clobber a run: a new run goes only into an empty (or new) model_dir, unless --overwrite removes the
previous run's files first; --resume continues the run there, --resume=auto does when it has a checkpoint and
starts one otherwise. One training at a time holds model_dir's lock. Framework-free: poisson-tf-train decides
before TensorFlow loads, and the trainer's chief claims the directory before it writes anything.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import sys
import time

from poisson_tf import files, modeldir
from poisson_tf.modeldir import CHECKPOINT_FILES, LOCK_FILE, MODEL_FILE, RUN_DIRS, RUN_FILES

RESUME_MODES = ("false", "true", "auto")


def contents(model_dir: str) -> list:
    """What model_dir holds besides its lock and temporary files of killed writes ([] when it does not exist)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(n for n in os.listdir(model_dir) if n != LOCK_FILE and not files.is_temp_file(n))


def _check_directory(model_dir: str) -> None:
    if not model_dir:
        raise ValueError("--model_dir is empty; give the directory of the run")
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir {model_dir!r} is a file, not a directory; give a directory for the run")


def decide(model_dir: str, resume: str, overwrite: bool) -> tuple:
    """The one reading of --resume and --overwrite for a model_dir, without writing anything.

    Args:
      resume: "true" (continue the run there), "false" (a new run) or "auto" (continue when there is a
        checkpoint, else a new run: for preemptible VMs and SLURM --requeue, the same command every time).
      overwrite: a new run may replace the previous run's files.

    Returns:
      (resume: bool, clear: bool) - whether to continue the run, and whether a new run removes the previous
      run's files first (--overwrite, or --resume=auto on a run that never saved a checkpoint).

    Raises:
      ValueError: model_dir is a file; a new run into a non-empty model_dir without --overwrite;
        --resume=true with --overwrite; --resume=auto on a trained model without checkpoint.
    """
    if resume not in RESUME_MODES:
        raise ValueError(f"--resume must be one of {RESUME_MODES} (--resume alone means true), got {resume!r}")
    _check_directory(model_dir)
    if resume == "true":
        if overwrite:
            raise ValueError("--resume and --overwrite contradict each other: --resume continues the run in "
                             f"{model_dir!r}, --overwrite replaces it; give one of them")
        return True, False
    present = contents(model_dir)
    if resume == "auto" and not overwrite:
        if any(name in present for name in CHECKPOINT_FILES):
            return True, False
        if MODEL_FILE in present:
            raise ValueError(f"--resume=auto: {model_dir!r} holds a trained {MODEL_FILE} but no checkpoint "
                             f"to continue from; use another --model_dir, or --overwrite to replace that model")
        return False, bool(present)  # a run that never saved a checkpoint has nothing to lose
    if present and not overwrite:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise ValueError(f"--model_dir {model_dir!r} is not empty (it holds {shown}); a new run would overwrite "
                         "it: give --resume to continue that run, --overwrite to replace it, or another --model_dir")
    return False, overwrite


class Lock:
    """An exclusive lock on model_dir (fcntl.flock of model_dir/.lock), held by the chief for a whole run, so that
    a second training in the same model_dir fails at once instead of mixing its files in. The kernel releases
    it when the process ends, however it ends."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, LOCK_FILE)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ValueError(_in_use(model_dir, self.path)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(self._fd)
                raise
            print(f"warning: the file system of {model_dir} does not support locks ({e.strerror}); nothing stops "
                  "a second training in this model_dir", file=sys.stderr, flush=True)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _in_use(model_dir: str, lock_path: str) -> str:
    return (f"--model_dir {model_dir!r} is in use by another training or by a poisson-tf-evaluate or -predict "
            f"reading it (the last training there: {modeldir.lock_holder(lock_path)}); wait for it to finish, or "
            "use another --model_dir")


def check_unlocked(model_dir: str) -> None:
    """Raises ValueError when another training holds model_dir's lock (a read-only early check)."""
    path = os.path.join(model_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file yet, or not readable: the claim will tell
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(_in_use(model_dir, path)) from None
    except OSError:
        pass
    finally:
        os.close(fd)


def claim(model_dir: str, resume: bool, clear: bool) -> Lock:
    """Makes model_dir, takes its lock, removes what killed writers left, and for a new run checks it is empty or,
    with clear, removes the previous run's files (RUN_FILES, RUN_DIRS; nothing else). The chief's part.

    Returns:
      the Lock (release it when the run ends).

    Raises:
      ValueError: as decide(), or the lock is held by another training.
    """
    _check_directory(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    lock = Lock(model_dir)
    try:
        files.remove_temp_files(model_dir, targets=RUN_FILES)
        if not resume:
            decide(model_dir, "false", clear)  # under the lock now
            if clear:
                for name in RUN_FILES:
                    path = os.path.join(model_dir, name)
                    if os.path.isfile(path):
                        os.remove(path)
                for name in RUN_DIRS:
                    shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
    except BaseException:
        lock.release()
        raise
    return lock
