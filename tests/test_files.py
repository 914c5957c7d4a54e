"""Atomic file writing: a write appears whole or not at all, and leaves no temporary file behind."""
import json
import os

import pytest

from poisson_tf import files


def test_write_json_replaces_the_file_whole(tmp_path):
    path = str(tmp_path / "sub" / "report.json")
    assert files.write_json(path, {"a": [1, 2]}, indent=2) == path  # the directory is made on the way
    files.write_json(path, {"b": 3})
    with open(path) as f:
        assert json.load(f) == {"b": 3}
    assert os.listdir(tmp_path / "sub") == ["report.json"]


def test_a_failed_write_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    path = str(tmp_path / "keep.json")
    files.write_json(path, {"version": 1})
    with pytest.raises(TypeError):
        files.write_json(path, {"version": object()})  # not serializable: fails mid-write
    with open(path) as f:
        assert json.load(f) == {"version": 1}
    assert os.listdir(tmp_path) == ["keep.json"]


def test_a_rotation_keeps_the_previous_version_and_the_file_is_never_absent(tmp_path, monkeypatch):
    path, previous = str(tmp_path / "state.txt"), str(tmp_path / "state.previous.txt")
    files.write_text(path, "one")
    seen = []
    real_replace = os.replace

    def replace(src, dst):  # every rename of the rotation: the file must be there before and after it
        seen.append(os.path.exists(path))
        real_replace(src, dst)
        seen.append(os.path.exists(path))

    monkeypatch.setattr(os, "replace", replace)
    with files.atomic_path(path, keep_previous=previous) as tmp:
        with open(tmp, "w") as f:
            f.write("two")
    assert seen and all(seen)
    with open(path) as f, open(previous) as g:
        assert (f.read(), g.read()) == ("two", "one")
    assert sorted(os.listdir(tmp_path)) == ["state.previous.txt", "state.txt"]


def test_remove_dead_writes_removes_the_temporary_files_of_those_outputs_only(tmp_path):
    out, other = tmp_path / "out.h5", tmp_path / "other.h5"
    for name in (".out.h5.abcd1234.tmp.h5", ".out.xdmf.abcd1234.tmp.xdmf", ".other.h5.abcd1234.tmp.h5", "out.h5"):
        (tmp_path / name).write_text("x")
    removed = files.remove_dead_writes(str(out), str(tmp_path / "out.xdmf"))
    assert sorted(os.path.basename(p) for p in removed) == [".out.h5.abcd1234.tmp.h5", ".out.xdmf.abcd1234.tmp.xdmf"]
    assert sorted(os.listdir(tmp_path)) == [".other.h5.abcd1234.tmp.h5", "out.h5"]
    assert other.exists() is False


def test_atomic_paths_replace_a_pair_only_when_both_are_written(tmp_path, monkeypatch):
    a, b = tmp_path / "report.json", tmp_path / "report.png"
    a.write_text("old report")
    b.write_text("old figure")
    monkeypatch.setenv(files.FAULT_VARIABLE, "report.png:enospc")
    with pytest.raises(OSError, match="No space left"):
        with files.atomic_paths(str(a), str(b)) as (ta, tb):
            open(ta, "w").write("new report")
            open(tb, "w").write("new figure")
    assert (a.read_text(), b.read_text()) == ("old report", "old figure")
    assert sorted(os.listdir(tmp_path)) == ["report.json", "report.png"]
    monkeypatch.delenv(files.FAULT_VARIABLE)
    with files.atomic_paths(str(a), str(b)) as (ta, tb):
        open(ta, "w").write("new report")
        open(tb, "w").write("new figure")
    assert (a.read_text(), b.read_text()) == ("new report", "new figure")
