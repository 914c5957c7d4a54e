"""A model_dir: the one home of its file names, of saving and loading its configuration, and of opening and
verifying it once (ModelDir).

A model_dir holds what poisson-tf-train writes (config.json, checkpoints, the sample sets, model.keras,
train_summary.json, logs/, eval/); a shipped solver (poisson_tf/pretrained/<name>/) holds the files inference needs
plus MODEL_CARD.md and fingerprint.json: the sha256 of model.keras and config.json and the architecture (the
preset, every ModelConfig field, the parameter count). Every model_dir with a fingerprint.json is checked against
it when it is opened, so weights that changed after shipping, or weights of another architecture, are refused
whichever way they are loaded. Framework-free: the command lines open and check a model_dir before TensorFlow
loads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import zipfile
import zlib

from poisson_tf import config, files

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "train_summary.json"
TRAIN_SAMPLES_FILE = "train_samples.h5"
VAL_SAMPLES_FILE = "val_samples.h5"  # also a shipped solver's held-out set: poisson-tf-evaluate's default
SAMPLE_FILES = (TRAIN_SAMPLES_FILE, VAL_SAMPLES_FILE)
CHECKPOINT_FILE = "checkpoint.h5"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.previous.h5"
CHECKPOINT_FILES = (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE)  # newest first
LOCK_FILE = ".lock"
LOGS_DIR = "logs"  # TensorBoard
EVAL_DIR = "eval"  # poisson-tf-evaluate's report and figure
REPORT_FILE = "report.json"
FINGERPRINT_FILE = "fingerprint.json"
CARD_FILE = "MODEL_CARD.md"
#: What a training run writes into its model_dir, newest results first (what --overwrite removes, in order).
RUN_FILES = (MODEL_FILE, SUMMARY_FILE, *CHECKPOINT_FILES, CONFIG_FILE, *SAMPLE_FILES)
RUN_DIRS = (LOGS_DIR, EVAL_DIR)
#: The files that make a shipped solver (setup.py ships these), and those fingerprint.json records a sha256 of.
SHIPPED_FILES = (MODEL_FILE, CONFIG_FILE, VAL_SAMPLES_FILE, CARD_FILE, FINGERPRINT_FILE)
HASHED_FILES = (MODEL_FILE, CONFIG_FILE)
FINGERPRINT_FORMAT = 1


def save_config(cfg: config.TrainConfig, model_dir: str) -> str:
    """Writes cfg to model_dir/config.json (atomically); returns the path."""
    return files.write_json(os.path.join(model_dir, CONFIG_FILE), cfg.to_dict(), indent=2, sort_keys=True)


def load_config(model_dir: str) -> config.TrainConfig:
    """The configuration saved in model_dir; ValueError when there is none or it is not one."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{model_dir!r} holds no {CONFIG_FILE}: not a poisson_tf model_dir")
    try:
        with open(path) as f:
            return config.TrainConfig.from_dict(json.load(f))
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a valid poisson_tf configuration ({type(e).__name__}: {e}); it was "
                         f"damaged or not written by poisson-tf-train") from None


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def architecture(cfg: config.TrainConfig, num_params: int) -> dict:
    """The architecture fingerprint: the preset, every ModelConfig field and the parameter count."""
    return {"preset": cfg.preset, "model": cfg.to_dict()["model"], "num_params": int(num_params)}


def fingerprint(directory: str, num_params: int) -> dict:
    """What fingerprint.json records for the solver in directory (its model.keras and config.json, and the
    network's parameter count, counted by the caller from the loaded model)."""
    return {"format_version": FINGERPRINT_FORMAT,
            "sha256": {name: file_sha256(os.path.join(directory, name)) for name in HASHED_FILES},
            "architecture": architecture(load_config(directory), num_params)}


def has_fingerprint(model_dir: str) -> bool:
    """Whether model_dir is a shipped solver (holds a fingerprint.json), whose loads are verified."""
    return os.path.isfile(os.path.join(model_dir, FINGERPRINT_FILE))


def read_fingerprint(directory: str) -> dict:
    """directory's fingerprint.json; ValueError when it is unreadable or not one."""
    path = os.path.join(directory, FINGERPRINT_FILE)
    try:
        with open(path) as f:
            recorded = json.load(f)
        if (recorded["format_version"] != FINGERPRINT_FORMAT or set(recorded["sha256"]) != set(HASHED_FILES)
                or not {"preset", "model", "num_params"} <= set(recorded["architecture"])):
            raise ValueError("unexpected contents")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"cannot verify the solver in {directory}: {path} is unreadable or not a poisson_tf "
                         f"fingerprint (format {FINGERPRINT_FORMAT}): {type(e).__name__}: {e}") from None
    return recorded


def _differences(recorded: dict, actual: dict, prefix: str = "") -> list:
    return [f"{prefix}{k} is {actual.get(k)!r}, the fingerprint records {recorded.get(k)!r}"
            for k in sorted(set(recorded) | set(actual)) if recorded.get(k) != actual.get(k)]


def _check_archive(path: str) -> None:
    """Raises ValueError unless path is a whole .keras archive (a zip with its config and weights)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names, damaged = set(archive.namelist()), archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as e:
        raise ValueError(f"{path} is damaged (not a .keras archive: {e})") from None
    if damaged is not None or not {"config.json", "model.weights.h5"} <= names:
        raise ValueError(f"{path} is damaged ({'a bad member ' + damaged if damaged else 'members missing'}); "
                         "train again or restore it from a copy")


def _check_shipped_files(directory: str, recorded: dict) -> config.TrainConfig:
    """Checks model.keras and config.json of a shipped solver against its fingerprint (each file read once);
    returns the configuration.

    Raises:
      ValueError: one sentence naming the file and what differs: model.keras whose sha256 changed, a
        config.json whose architecture (preset, ModelConfig fields) or bytes changed.
    """
    where = os.path.join(directory, FINGERPRINT_FILE)
    model_path = os.path.join(directory, MODEL_FILE)
    digest = file_sha256(model_path)
    if digest != recorded["sha256"][MODEL_FILE]:
        raise ValueError(f"refusing {model_path}: its sha256 is {digest}, but {where} records "
                         f"{recorded['sha256'][MODEL_FILE]}; the weights changed after they were shipped "
                         "(reinstall poisson_tf, or ship them again with scripts/ship_pretrained.py)")
    config_path = os.path.join(directory, CONFIG_FILE)
    arch = recorded["architecture"]
    try:
        with open(config_path, "rb") as f:
            raw = f.read()
        cfg = config.TrainConfig.from_dict(json.loads(raw))
    except FileNotFoundError:
        raise ValueError(f"refusing the solver in {directory}: it holds no {CONFIG_FILE}") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise ValueError(f"refusing {config_path}: {e}") from None
    differ = (_differences({"preset": arch["preset"]}, {"preset": cfg.preset})
              + _differences(arch["model"], cfg.to_dict()["model"], "model."))
    if differ:
        raise ValueError(f"refusing the solver in {directory}: the architecture in {config_path} differs from the "
                         f"one {where} records ({'; '.join(differ)})")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != recorded["sha256"][CONFIG_FILE]:
        raise ValueError(f"refusing {config_path}: its sha256 is {digest}, but {where} records "
                         f"{recorded['sha256'][CONFIG_FILE]}; the configuration changed after it was shipped "
                         "(reinstall poisson_tf, or ship it again with scripts/ship_pretrained.py)")
    return cfg


@dataclasses.dataclass(frozen=True)
class ModelDir:
    """An opened, verified model_dir holding a trained solver: its configuration and (for a shipped solver) its
    fingerprint, each read once, passed on to whatever loads the network (inference.load_solver)."""

    path: str
    config: config.TrainConfig
    fingerprint: dict | None = None  # fingerprint.json of a shipped solver, None for a training run's model_dir

    @property
    def model_path(self) -> str:
        return os.path.join(self.path, MODEL_FILE)

    def file(self, name: str) -> str:
        """The path of one of the model_dir's files (a name of this module, e.g. VAL_SAMPLES_FILE)."""
        return os.path.join(self.path, name)

    def check_network(self, num_params: int, resolution_multiple: int, working_resolution: int) -> None:
        """Checks a loaded network (its parameter count, the resolution multiple its feature layer enforces and the
        working resolution its U-Net runs at) against the fingerprint's architecture; nothing to check without one.

        Raises:
          ValueError: naming model.keras and what differs.
        """
        if self.fingerprint is None:
            return
        arch = self.fingerprint["architecture"]
        working = arch["model"].get("working_resolution", 0)
        expected = {"num_params": arch["num_params"], "working resolution": working,
                    "resolution multiple": 1 if working else 2 ** arch["model"]["depth"]}
        actual = {"num_params": int(num_params), "resolution multiple": int(resolution_multiple),
                  "working resolution": int(working_resolution)}
        differ = _differences(expected, actual)
        if differ:
            raise ValueError(f"refusing {self.model_path}: the network it holds is not the architecture "
                             f"{os.path.join(self.path, FINGERPRINT_FILE)} records ({'; '.join(differ)})")


def open_model_dir(model_dir: str) -> ModelDir:
    """Opens model_dir after every check that needs no framework: it exists and holds a model.keras that is a
    whole .keras archive and a valid config.json, and a shipped solver's files match its fingerprint.json
    (model.keras hashed once, config.json read once).

    Raises:
      ValueError: naming what is missing, damaged or changed.
    """
    path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isdir(model_dir):
        raise ValueError(f"model_dir {model_dir!r} does not exist" if not os.path.exists(model_dir) else
                         f"model_dir {model_dir!r} is a file, not a directory")
    if not os.path.isfile(path):
        raise ValueError(f"model_dir {model_dir!r} holds no trained model ({MODEL_FILE}); train one with "
                         f"poisson-tf-train --model_dir={model_dir} (a run writes it when its cycle completes)")
    recorded = None
    if has_fingerprint(model_dir):  # first: a changed shipped file is named as such, not as damage
        recorded = read_fingerprint(model_dir)
        cfg = _check_shipped_files(model_dir, recorded)
    else:
        cfg = load_config(model_dir)
    _check_archive(path)
    return ModelDir(model_dir, cfg, recorded)


@contextlib.contextmanager
def reading(model_dir: str, command: str):
    """Holds a shared lock on model_dir's LOCK_FILE while `command` reads the model (and, for evaluate, writes
    its report there): a training holds that lock exclusively for its whole run (training.rundir.Lock), so a
    reader and a new run (--overwrite, --resume) in one model_dir never mix: a report never sits beside a model
    it was not computed from. Several readers may share it. Where the lock file cannot be made (a read-only
    model_dir) no training can start either: nothing to lock.

    Raises:
      ValueError: when a training holds the lock, naming the model_dir and the holder.
    """
    path = os.path.join(model_dir, LOCK_FILE)
    fd = None
    # made beside a model a training could replace (not in a shipped solver, whose files fingerprint.json fixes)
    make = os.path.isfile(os.path.join(model_dir, MODEL_FILE)) and not has_fingerprint(model_dir)
    for flags_ in (os.O_RDONLY, os.O_RDWR | os.O_CREAT) if make else (os.O_RDONLY,):
        try:
            fd = os.open(path, flags_, 0o666)
            break
        except OSError:
            continue
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"--model_dir {model_dir!r} is in use by a training ({lock_holder(path)}): its "
                                 f"files change while it runs; {command} it when the training has finished, or a "
                                 "copy of the model_dir") from None
            except OSError:  # a file system without locks: nothing to hold
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def lock_holder(path: str) -> str:
    """What the last training to lock `path` wrote there (pid, host, since when), or "another process"."""
    try:
        with open(path) as f:
            return f.read().strip() or "another process"
    except OSError:
        return "another process"
