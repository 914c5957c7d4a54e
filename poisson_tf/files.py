"""Atomic file writing (temp file, fsync, rename): every file the package writes appears whole or not at all."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp") -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    The temporary file is flushed to disk before the rename and the directory after it, so a crash mid-write
    (or a power cut right after) leaves the previous file intact, never a truncated one. On failure the
    temporary file is removed.

    Args:
      path: the final file.
      suffix: ending of the temporary name (e.g. ".keras" for writers that insist on an extension).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(directory)  # the rename itself survives a crash only once the directory is on disk
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


@contextlib.contextmanager
def write_hdf5(path: str):
    """An h5py.File open for writing whose content replaces `path` only when the block succeeds."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            yield f


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
