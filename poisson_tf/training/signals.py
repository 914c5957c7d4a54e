"""Signals that end a training with a checkpoint (SLURM's time limit and preemption, a cloud VM's eviction, a ^C),
and the end of the horovodrun that started a rank. Framework-free: poisson-tf-train listens from its first line,
before TensorFlow loads, and training.callbacks.StopOnSignal acts on what was received."""
from __future__ import annotations

import os
import signal
import sys
import threading


#: The signals that end a training with a checkpoint: SLURM's time limit and preemption (TERM, and USR1 with
#: --signal), a cloud VM's eviction notice, a ^C.
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
#: What a rank reports when the horovodrun that started it ended (not a signal number: those are below 65).
LAUNCHER_ENDED = 100


def stop_reason(code: int) -> str:
    """The words for a stop code: a signal's name, or the end of the launcher."""
    return "the end of its launcher (horovodrun)" if code == LAUNCHER_ENDED else signal.Signals(code).name


class Interrupted(Exception):
    """Training stopped on a signal after its checkpoint was written: where (epoch, steps into it) and why."""

    def __init__(self, reason: str, epoch: int, steps_in_epoch: int):
        super().__init__(f"stopped by {reason} in epoch {epoch} after {steps_in_epoch} of its steps")
        self.reason, self.epoch, self.steps_in_epoch = reason, epoch, steps_in_epoch


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def horovodrun_pid() -> int | None:
    """The pid of the horovodrun that started this rank through mpirun, or None.

    horovodrun execs `/bin/sh -c "mpirun ..."`, and that shell neither passes a SIGTERM on to mpirun nor
    takes mpirun with it: the ranks would train on. So a rank watches it (SignalListener) and stops as if
    signalled when it ends. Found as the parent of this rank's parent when that is such a shell (Linux /proc)."""
    try:
        launcher = _parent(os.getppid())
        with open(f"/proc/{launcher}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    shell = len(args) >= 3 and os.path.basename(args[0]) in (b"sh", b"dash", b"bash") and args[1] == b"-c"
    return launcher if shell and args[2].lstrip().startswith(b"mpirun ") else None


class SignalListener:
    """While active (a context manager), STOP_SIGNALS set `received` (the first one's number) instead of ending
    the process; a second one gets the signal's default action (the last complete checkpoint is intact: every
    write is atomic). Under horovodrun with MPI it also sets LAUNCHER_ENDED when horovodrun ends (checked every
    `poll_seconds` by a daemon thread). Only the main thread may install handlers; elsewhere it listens to
    nothing."""

    def __init__(self, poll_seconds: float = 0.5):
        self.received = 0
        self.poll_seconds = poll_seconds
        self._previous = {}
        self._watching = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._handle)
        launcher = horovodrun_pid()
        if launcher is not None:
            self._watching = threading.Event()
            threading.Thread(target=self._watch, args=(launcher, self._watching), daemon=True,
                             name="poisson_tf-launcher-watch").start()
        return self

    def _watch(self, launcher: int, active) -> None:
        mpirun = os.getppid()
        while not active.wait(self.poll_seconds):
            try:
                alive = _parent(mpirun) == launcher
            except (OSError, ValueError, IndexError):
                alive = False
            if not alive:
                if not self.received:
                    self.received = LAUNCHER_ENDED
                    print(f"poisson-tf-train: horovodrun (pid {launcher}) ended: stopping after the current step, "
                          "with a checkpoint", file=sys.stderr, flush=True)
                return

    def _handle(self, number, frame):
        if not self.received:
            self.received = int(number)
            print(f"poisson-tf-train: {stop_reason(number)} received: stopping after the current step, with a "
                  "checkpoint", file=sys.stderr, flush=True)
        else:  # a second signal: now
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
        if self._watching is not None:
            self._watching.set()
            self._watching = None
        return False
