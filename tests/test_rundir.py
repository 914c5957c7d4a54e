"""model_dir protection (a new run, --overwrite, --resume=auto, the lock) and the file helpers it relies on."""
import os
import stat

import pytest

from poisson_tf import files, modeldir
from poisson_tf.training import rundir


def make_run(path, *names):
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        (path / name).mkdir() if name in modeldir.RUN_DIRS else (path / name).write_text(name)
    return str(path)


def test_resume_and_overwrite_are_read_one_way(tmp_path):
    new = str(tmp_path / "new")
    assert rundir.decide(new, "false", False) == (False, False)
    assert rundir.decide(new, "auto", False) == (False, False)
    assert rundir.decide(new, "true", False) == (True, False)  # then: "holds no config.json"
    run = make_run(tmp_path / "run", "config.json", "train_samples.h5", "logs")
    with pytest.raises(ValueError, match=r"is not empty \(it holds config.json, logs, train_samples.h5\); a new run "
                                         r"would overwrite it: give --resume .*, --overwrite"):
        rundir.decide(run, "false", False)
    assert rundir.decide(run, "false", True) == (False, True)
    assert rundir.decide(run, "auto", False) == (False, True)  # it never saved a checkpoint: nothing to lose
    make_run(tmp_path / "run", "checkpoint.previous.h5")
    assert rundir.decide(run, "auto", False) == (True, False)
    assert rundir.decide(run, "auto", True) == (False, True)  # an explicit --overwrite beats auto
    with pytest.raises(ValueError, match="--resume and --overwrite contradict each other"):
        rundir.decide(run, "true", True)
    with pytest.raises(ValueError, match="--resume must be one of"):
        rundir.decide(run, "yes", False)
    model_only = make_run(tmp_path / "model_only", "model.keras", "config.json")
    with pytest.raises(ValueError, match="holds a trained model.keras but no checkpoint"):
        rundir.decide(model_only, "auto", False)
    with pytest.raises(ValueError, match="is a file, not a directory"):
        rundir.decide(os.path.join(model_only, "model.keras"), "auto", False)
    leftovers = make_run(tmp_path / "leftovers", ".lock", ".config.json.abcd_123.tmp")
    assert rundir.decide(leftovers, "false", False) == (False, False)  # a lock and dead writes are not a run


def test_one_training_holds_a_model_dir_at_a_time(tmp_path):
    lock = rundir.Lock(str(tmp_path))
    with pytest.raises(ValueError, match=rf"in use by another training .*\(the last training there: pid "
                                         rf"{os.getpid()} on "):
        rundir.Lock(str(tmp_path))
    with pytest.raises(ValueError, match="in use by another training"):
        rundir.check_unlocked(str(tmp_path))
    lock.release()
    rundir.check_unlocked(str(tmp_path))
    rundir.Lock(str(tmp_path)).release()


def test_claim_removes_the_previous_run_and_dead_writes_but_nothing_else(tmp_path):
    run = make_run(tmp_path / "run", *modeldir.RUN_FILES, *modeldir.RUN_DIRS, "notes.txt", ".checkpoint.h5.abcd1234.tmp",
                   ".notes.txt.abcd1234.tmp")
    with pytest.raises(ValueError, match="is not empty"):
        rundir.claim(run, resume=False, clear=False)
    rundir.claim(run, resume=True, clear=False).release()  # resuming keeps the run, drops the dead write
    assert ".checkpoint.h5.abcd1234.tmp" not in os.listdir(run) and "checkpoint.h5" in os.listdir(run)
    rundir.claim(run, resume=False, clear=True).release()
    assert sorted(os.listdir(run)) == [".lock", ".notes.txt.abcd1234.tmp", "notes.txt"]


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        previous = os.umask(umask)
        try:
            path = files.write_json(str(tmp_path / f"{umask:o}.json"), {})
        finally:
            os.umask(previous)
        assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_temporary_files_of_killed_writes_are_recognized_and_removed(tmp_path):
    for suffix in (".tmp", ".keras"):
        with files.atomic_path(str(tmp_path / f"model{suffix}"), suffix=suffix) as tmp:
            assert files.is_temp_file(tmp) and files.is_temp_file(tmp, targets=(f"model{suffix}",))
    dead = [".a.json.abcd1234.tmp", ".m.keras.k3j_2x9q.tmp.keras", ".b.json.abcd1234.tmp"]
    kept = ["a.json", "notes.tmp", ".a.json.tmp", ".a.json.abcd1234.tmpx"]
    for name in dead + kept:
        (tmp_path / name).write_text("x")
    assert files.remove_temp_files(str(tmp_path), targets=("a.json", "m.keras")) == sorted(dead[:2])
    os.utime(tmp_path / dead[2], (0, 0))
    assert files.remove_temp_files(str(tmp_path), older_than=3600) == [dead[2]]
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["model.tmp", "model.keras"])


def test_output_paths_are_checked_before_anything_is_computed(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert files.check_writable(str(tmp_path / "new" / "deeper" / "u.h5")) == str(tmp_path / "new" / "deeper" / "u.h5")
    for path, message in ((tmp_path, "is a directory"), (tmp_path / "afile" / "u.h5", "'.*afile' is a file"),
                          ("/proc/u.h5", "'/proc' is not writable"), ("", "path is empty")):
        with pytest.raises(ValueError, match=message):
            files.check_writable(str(path), "--output")
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # nothing made, no probe left


def test_a_reader_and_a_training_of_one_model_dir_exclude_each_other(tmp_path):
    from poisson_tf import modeldir

    (tmp_path / "model.keras").write_bytes(b"a model")
    with modeldir.reading(str(tmp_path), "evaluate"), modeldir.reading(str(tmp_path), "predict with"):
        # readers share it; a training (a new run, --overwrite, a resume) cannot start while they read
        with pytest.raises(ValueError, match="in use by another training or by a poisson-tf-evaluate or -predict"):
            rundir.Lock(str(tmp_path))
    lock = rundir.Lock(str(tmp_path))  # the readers are done
    with pytest.raises(ValueError, match=r"is in use by a training \(pid \d+ .*\): its files change while it "
                                         r"runs; evaluate it when the training has finished"):
        with modeldir.reading(str(tmp_path), "evaluate"):
            pass
    lock.release()
    shipped = tmp_path / "shipped"  # a shipped solver gets no lock file (its files are fixed)
    shipped.mkdir()
    (shipped / "model.keras").write_bytes(b"a model")
    (shipped / modeldir.FINGERPRINT_FILE).write_text("{}")
    with modeldir.reading(str(shipped), "evaluate"):
        pass
    assert sorted(os.listdir(shipped)) == ["fingerprint.json", "model.keras"]
