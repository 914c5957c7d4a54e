"""Atomic file writing (temp file, fsync, rename): every file the package writes appears whole or not at all.

Also the checks that go with it: whether an output path can be written (before any compute), and the
leftover temporary files of writers that were killed mid-write (named so they can be recognized and removed).
"""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import tempfile
import time
from typing import Iterator

#: The temporary name of a write to <dir>/<name>: <dir>/.<name>.<8 random characters>.tmp[<suffix>].
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")

#: Fault injection for the fault tests only (tests/test_faults.py), e.g. "checkpoint.h5:sleep=3:2" sleeps 3 s
#: in the 2nd write of checkpoint.h5 once its temporary file is written (before the rename), and
#: "checkpoint.h5:enospc" makes every write of it fail as a full disk would; the name may be a glob pattern
#: ("ref_N16_*.h5:sleep=2": a reference solution's cache write). Unset in normal use.
FAULT_VARIABLE = "POISSON_TF_TEST_FAULT"
_writes = {}  # fault target (a name or pattern) -> writes of matching files in this process ("nth write")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """This process's umask, read without changing it where Linux allows (os.umask sets it as it reads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _inject_fault(path: str) -> None:
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec:
        return
    target, action, *nth = spec.split(":")
    if not fnmatch.fnmatchcase(os.path.basename(path), target):
        return
    _writes[target] = _writes.get(target, 0) + 1  # the n-th write of a file the pattern names
    if nth and int(nth[0]) != _writes[target]:
        return
    if action.startswith("sleep="):
        time.sleep(float(action.partition("=")[2]))
    elif action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected by " + FAULT_VARIABLE + ")", path)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp", keep_previous: str | None = None) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    The temporary file is flushed to disk before the rename and the directory after it, so a crash mid-write
    (or a power cut right after) leaves the previous file intact, never a truncated one. On failure the
    temporary file is removed; a writer killed mid-write leaves it, under a name remove_temp_files recognizes.
    The file gets the mode a newly created file gets (0666 minus the umask), as with open(path, "w").

    Args:
      path: the final file.
      suffix: ending of the temporary name (e.g. ".keras" for writers that insist on an extension).
      keep_previous: if given, the file `path` held until now becomes this path first (a rotation that keeps
        the previous version). It is hard-linked there, so `path` exists at every moment of the rotation: a
        reader, or a process killed between the two steps, always finds a complete file at `path`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp" + ("" if suffix == ".tmp" else suffix), dir=directory)
    os.close(fd)
    try:
        try:
            yield tmp
        except OSError as e:  # a write that failed (a full disk): named by the file it was to replace
            if e.errno is None or e.filename not in (None, tmp):
                raise
            raise OSError(e.errno, f"{e.strerror} (nothing written; the previous file, if any, is intact)",
                          path) from e
        _inject_fault(path)  # tests only: between the write and the rename, the window a crash must survive
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: a shared model_dir must stay readable
        _fsync(tmp)
        if keep_previous is not None and os.path.exists(path):
            try:  # a second name for the current file, then moved onto keep_previous: `path` stays in place
                os.link(path, tmp + ".prev")
                os.replace(tmp + ".prev", keep_previous)
            except OSError:  # a file system without hard links: rename (path is absent until the next line)
                os.replace(path, keep_previous)
        os.replace(tmp, path)
        _fsync(directory)  # the renames themselves survive a crash only once the directory is on disk
    finally:
        for leftover in (tmp, tmp + ".prev"):
            if os.path.exists(leftover):
                os.remove(leftover)


@contextlib.contextmanager
def atomic_paths(*paths: str) -> Iterator[list]:
    """atomic_path for files that belong together (a report and its figure, fields and their XDMF): yields their
    temporary paths; they are renamed onto their paths (the last first, the first one last) only when the block
    wrote them all, so a failure (a full disk, a read-only file system) leaves every previous file as it was,
    never a new one beside an old one."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(path, suffix=os.path.splitext(path)[1] or ".tmp")) for path in paths]


def remove_dead_writes(*paths: str) -> list:
    """Removes the temporary files that killed writes of these files left beside them (a predict or evaluate
    SIGKILLed while writing its output); returns the paths removed. Call it where the writer is the only one."""
    removed = []
    for directory in sorted({os.path.dirname(os.path.abspath(p)) for p in paths}):
        names = {os.path.basename(p) for p in paths if os.path.dirname(os.path.abspath(p)) == directory}
        removed += [os.path.join(directory, name) for name in remove_temp_files(directory, targets=names)]
    return removed


def is_temp_file(name: str, targets=None) -> bool:
    """True when `name` is the temporary file of an atomic write (of one of `targets`, when given)."""
    match = _TEMP_NAME.match(os.path.basename(name))
    return bool(match) and (targets is None or match.group("target") in targets)


def remove_temp_files(directory: str, targets=None, older_than: float = 0.0) -> list:
    """Removes the temporary files that killed writers left in `directory` (not its subdirectories).

    Args:
      targets: only temporary files of writes to these file names (None: any).
      older_than: only files not modified for this many seconds (a directory shared with live writers).

    Returns:
      the names removed.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for name in sorted(names):
        path = os.path.join(directory, name)
        try:
            if is_temp_file(name, targets) and os.path.isfile(path) and now - os.path.getmtime(path) >= older_than:
                os.remove(path)
                removed.append(name)
        except FileNotFoundError:  # another process removed it first
            pass
    return removed


def check_writable(path: str, what: str = "output") -> str:
    """Raises ValueError unless a file can be written at `path` (checked before any compute).

    The path must not be a directory, and its nearest existing ancestor must be a directory in which a file
    can be created (tried for real: permission bits do not tell, e.g. for root or a read-only mount).
    Missing parent directories are fine (writes create them). Returns `path`.
    """
    if not path:
        raise ValueError(f"the {what} path is empty; give a file name")
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{what} {path!r} cannot be written: {parent!r} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{what} {path!r} cannot be written: {parent!r} is not writable ({e.strerror})") from None
    return path


def write_json(path: str, obj, **dump_kwargs) -> str:
    """Writes obj as JSON (json.dump keyword arguments, e.g. indent) atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, **dump_kwargs)
    return path


def write_text(path: str, text: str) -> str:
    """Writes a text file atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return path


def copy_file(source: str, path: str) -> str:
    """Copies source's bytes to path atomically; returns the path."""
    with atomic_path(path, suffix=os.path.splitext(path)[1] or ".tmp") as tmp:
        shutil.copyfile(source, tmp)
    return path


@contextlib.contextmanager
def write_hdf5(path: str, keep_previous: str | None = None):
    """An h5py.File open for writing whose content replaces `path` only when the block succeeds (see
    atomic_path for keep_previous), built in memory (hdf5_in_memory)."""
    with atomic_path(path, keep_previous=keep_previous) as tmp:
        with hdf5_in_memory(tmp) as f:
            yield f


@contextlib.contextmanager
def hdf5_in_memory(path: str):
    """An h5py.File built in memory (HDF5's core driver) whose image is written to `path` with one plain write
    when the block succeeds. HDF5 itself never meets a full disk: writing its file there, a full disk failed in
    HDF5's flush and crashed the interpreter at exit (segmentation fault); a plain write fails with ENOSPC, and
    the caller's atomic_path keeps the previous file. Costs the compressed file's size in memory, once."""
    import h5py

    f = h5py.File(os.path.abspath(path), "w", driver="core", backing_store=False)
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    try:
        with open(path, "wb") as out:
            out.write(image)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from e  # a write error names no file


def save_keras(model, path: str) -> str:
    """model.save(path) (.keras zip) atomically; returns the path."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def save_png(figure, path: str, **savefig_kwargs) -> str:
    """A matplotlib figure as PNG (figure.savefig keyword arguments, e.g. dpi) atomically; returns the path."""
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, **savefig_kwargs)
    return path
