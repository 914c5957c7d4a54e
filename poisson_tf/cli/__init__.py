"""What the four command lines (cli/train.py, evaluate.py, predict.py, solve.py) share: one-line errors, flag checks, and whether a parallel launcher started us.

Framework-free, so that a command line checks its flags and inputs before TensorFlow loads (seconds, not tens
of seconds). Every error a user can cause ends the command with `poisson-tf-X: error: <one sentence>`, exit
code 1 and no traceback. Under a parallel launcher a failing rank leaves with os._exit, so that no rank waits in
a collective for it: the launcher (mpirun, horovodrun, srun --kill-on-bad-exit) then ends the others.
"""
from __future__ import annotations

import os
import sys
import traceback

from absl import app, flags

from poisson_tf.hardware import launched

#: The exit code of a training that a signal (SIGTERM, SIGINT, SIGUSR1) stopped after writing its checkpoint:
#: EX_TEMPFAIL, "try again" - the same command with --resume=auto continues the run.
EXIT_INTERRUPTED = 75
#: Errors a user can cause (bad flags or files, a full disk, a diverged run): one line, no traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)


def _rank() -> int:
    distributed = sys.modules.get("poisson_tf.distributed")  # imported (with TensorFlow) once a run is parallel
    return distributed.rank() if distributed is not None else 0


def describe(error: BaseException) -> str:
    """One line for a user error: an OSError as '<file>: <reason>', a MemoryError as 'out of memory'."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        text = f"{error.filename}: {error.strerror}"
    elif isinstance(error, MemoryError):
        text = f"out of memory{': ' + str(error) if str(error) else ''}; use a smaller resolution or batch"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def leave(code: int) -> None:
    """Ends the process with code (under a launcher at once, skipping exit handlers that could wait for ranks)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if launched():
        os._exit(code)  # Horovod: skip exit handlers that could wait for ranks that are still running
    sys.exit(code)


def run(name: str, main) -> None:
    """app.run(main) with the package's error convention (see the module docstring).

    A user error (USER_ERRORS, or a flag absl cannot parse) prints `<name>: error: <one line>` and exits 1; a
    ValueError is printed by the chief only, since every rank reaches the same one (checks and broadcast
    decisions). Anything else is a bug: its traceback is printed, and under a launcher the rank still leaves
    at once.
    """
    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            print(f"{name}: error: {describe(e)} (--helpfull lists the flags)", file=sys.stderr)
            leave(1)

    def guarded(argv):
        try:
            return main(argv)
        except USER_ERRORS as e:
            if _rank() == 0 or not isinstance(e, ValueError):
                print(f"{name}: error: {describe(e)}", file=sys.stderr)
            leave(1)
        except KeyboardInterrupt:
            leave(130)
        except Exception:
            traceback.print_exc()
            leave(1)

    app.run(guarded, flags_parser=parse)


def define_family_flags(what: str, family_default: str | None = "kl") -> None:
    """--family, --eta, --num_terms, --sigma, --contrast, --threshold, --draw and --draw_seed of a command line
    that makes fields of a diffusivity family (`what` says which: 'fields of --coeffs and --draw', ...)."""
    from poisson_tf import fields

    flags.DEFINE_enum("family", family_default, list(fields.FAMILIES), f"Diffusivity family of {what}.")
    flags.DEFINE_float("eta", None, "Correlation length (default: the family's: kl 0.5, grf and twophase 0.1).")
    flags.DEFINE_integer("num_terms", None, "Terms of the family (default: the family's: kl 4, grf and twophase "
                         "1024).")
    flags.DEFINE_float("sigma", 1.0, "Standard deviation of the grf's log nu (grf, twophase).")
    flags.DEFINE_float("contrast", 100.0, "nu of the phase where the grf's log nu > --threshold (twophase).")
    flags.DEFINE_float("threshold", 0.0, "Level of the grf's log nu between the phases (twophase).")
    flags.DEFINE_integer("draw", None, "Draw this many fields of --family (i.i.d. draws, seed --draw_seed).")
    flags.DEFINE_integer("draw_seed", 0, "Seed of the fields --draw draws.")


def family_from_flags(num_terms: int | None = None, default=None):
    """The fields.Family the flags of define_family_flags name; num_terms stands in for --num_terms when that was
    not given; `default` is the family when --family was not given either (None: the flag's default)."""
    from poisson_tf import fields

    f = flags.FLAGS
    if default is not None and not f["family"].present:
        return default
    return fields.Family.of(f.family, f.eta, f.num_terms if f.num_terms is not None else num_terms,
                            sigma=f.sigma, contrast=f.contrast, threshold=f.threshold)


def define_memory_flags() -> None:
    """--memory_limit and --force: what the command's peak-memory estimate (poisson_tf.memory) is checked against,
    and how to go ahead anyway."""
    flags.DEFINE_float("memory_limit", None, "GiB this command may use (default: the smaller of the memory cgroup's "
                       "limit, e.g. SLURM --mem, and MemAvailable); a request whose estimated peak exceeds it is "
                       "refused before any compute.")
    flags.DEFINE_bool("force", False, "Go ahead although the estimated peak memory exceeds what is available.")


def check_memory(command: str, resolution: int, parts: dict, framework: bool = True) -> int:
    """poisson_tf.memory.check with the flags of define_memory_flags; returns the estimate."""
    from poisson_tf import memory

    f = flags.FLAGS
    return memory.check(command, resolution, parts, f.memory_limit, f.force, framework)
