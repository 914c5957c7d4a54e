"""Solvers shipped inside the package: where they are, their fingerprint check, and loading one.

A shipped solver is a directory poisson_tf/pretrained/<name>/ holding what inference needs from a model_dir
(model.keras, config.json), a held-out sample set (val_samples.h5, the default of poisson-tf-evaluate), a
MODEL_CARD.md and fingerprint.json: the sha256 of model.keras and config.json and the architecture (the
ModelConfig fields and the parameter count). Every load of a directory holding a fingerprint.json is checked
against it (inference.check_model_dir and inference.load_solver), so weights that changed after shipping, or
weights of another architecture, are refused whichever way they are loaded.

On the command lines, --model_dir=pretrained (the default solver) or pretrained:<name> names a shipped solver
(resolve_model_dir); a local directory of that name is ./pretrained. Framework-free: importing this module loads
neither TensorFlow nor Keras, so `import poisson_tf; poisson_tf.pretrained_dir()` stays light.
"""
from __future__ import annotations

import hashlib
import json
import os

from poisson_tf import config, inference

#: The directory holding the shipped solvers, one subdirectory each.
ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_NAME = "kl_small"
#: How the command lines name a shipped solver: `pretrained` (DEFAULT_NAME) or `pretrained:<name>`.
SPEC_PREFIX = "pretrained"
FINGERPRINT_FILE = "fingerprint.json"
CARD_FILE = "MODEL_CARD.md"
SAMPLES_FILE = "val_samples.h5"  # the name poisson-tf-evaluate reads by default (rundir.SAMPLE_FILES[1])
#: The files that make a shipped solver (setup.py ships these), and those fingerprint.json records a sha256 of.
FILES = (inference.MODEL_FILE, config.CONFIG_FILE, SAMPLES_FILE, CARD_FILE, FINGERPRINT_FILE)
HASHED_FILES = (inference.MODEL_FILE, config.CONFIG_FILE)
FORMAT_VERSION = 1


def names(root: str = ROOT) -> list:
    """The names of the solvers shipped in root (subdirectories holding a fingerprint.json), sorted."""
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if os.path.isfile(os.path.join(root, n, FINGERPRINT_FILE)))


def pretrained_dir(name: str = DEFAULT_NAME, root: str = ROOT) -> str:
    """The directory of the shipped solver `name`.

    Raises:
      ValueError: no solver of that name is shipped (the message lists those that are).
    """
    shipped = names(root)
    if name not in shipped:
        listed = ", ".join(shipped) if shipped else "none (this installation ships no pretrained solver)"
        raise ValueError(f"no pretrained solver named {name!r} in {root}; shipped: {listed} (name one as "
                         f"{SPEC_PREFIX}:<name>, or {SPEC_PREFIX} alone for {DEFAULT_NAME!r})")
    return os.path.join(root, name)


def shipped_name(model_dir: str) -> str | None:
    """The solver name a command-line value refers to ('pretrained' -> DEFAULT_NAME, 'pretrained:<name>' ->
    name), or None for an ordinary model_dir."""
    if model_dir == SPEC_PREFIX:
        return DEFAULT_NAME
    if model_dir.startswith(SPEC_PREFIX + ":"):
        return model_dir[len(SPEC_PREFIX) + 1:]
    return None


def resolve_model_dir(model_dir: str) -> str:
    """The one reading of --model_dir / --warm_start: 'pretrained[:name]' is the shipped solver's directory,
    anything else the model_dir it names.

    Raises:
      ValueError: 'pretrained:<name>' with a name that is not shipped.
    """
    name = shipped_name(model_dir)
    return model_dir if name is None else pretrained_dir(name)


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
    return {"format_version": FORMAT_VERSION,
            "sha256": {name: file_sha256(os.path.join(directory, name)) for name in HASHED_FILES},
            "architecture": architecture(config.TrainConfig.load(directory), num_params)}


def read_fingerprint(directory: str) -> dict:
    """directory's fingerprint.json; ValueError when it is unreadable or not one."""
    path = os.path.join(directory, FINGERPRINT_FILE)
    try:
        with open(path) as f:
            recorded = json.load(f)
        if (recorded["format_version"] != FORMAT_VERSION or set(recorded["sha256"]) != set(HASHED_FILES)
                or not {"preset", "model", "num_params"} <= set(recorded["architecture"])):
            raise ValueError("unexpected contents")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"cannot verify the solver in {directory}: {path} is unreadable or not a poisson_tf "
                         f"fingerprint (format {FORMAT_VERSION}): {type(e).__name__}: {e}") from None
    return recorded


def _differences(recorded: dict, actual: dict, prefix: str = "") -> list:
    return [f"{prefix}{k} is {actual.get(k)!r}, the fingerprint records {recorded.get(k)!r}"
            for k in sorted(set(recorded) | set(actual)) if recorded.get(k) != actual.get(k)]


def verify_files(directory: str) -> None:
    """Checks model.keras and config.json of a shipped solver against its fingerprint.json (no framework).

    Raises:
      ValueError: one sentence naming the file and what differs: model.keras whose sha256 changed, a
        config.json whose architecture (preset, ModelConfig fields) or bytes changed.
    """
    recorded = read_fingerprint(directory)
    where = os.path.join(directory, FINGERPRINT_FILE)
    model_path = os.path.join(directory, inference.MODEL_FILE)
    digest = file_sha256(model_path)
    if digest != recorded["sha256"][inference.MODEL_FILE]:
        raise ValueError(f"refusing {model_path}: its sha256 is {digest}, but {where} records "
                         f"{recorded['sha256'][inference.MODEL_FILE]}; the weights changed after they were shipped "
                         "(reinstall poisson_tf, or ship them again with scripts/ship_pretrained.py)")
    config_path = os.path.join(directory, config.CONFIG_FILE)
    arch = recorded["architecture"]
    try:
        cfg = config.TrainConfig.load(directory)
    except ValueError as e:  # a value the configuration refuses names no file
        raise ValueError(f"refusing {config_path}: {e}") from None
    differ = (_differences({"preset": arch["preset"]}, {"preset": cfg.preset})
              + _differences(arch["model"], cfg.to_dict()["model"], "model."))
    if differ:
        raise ValueError(f"refusing the solver in {directory}: the architecture in {config_path} differs from the "
                         f"one {where} records ({'; '.join(differ)})")
    digest = file_sha256(config_path)
    if digest != recorded["sha256"][config.CONFIG_FILE]:
        raise ValueError(f"refusing {config_path}: its sha256 is {digest}, but {where} records "
                         f"{recorded['sha256'][config.CONFIG_FILE]}; the configuration changed after it was shipped "
                         "(reinstall poisson_tf, or ship it again with scripts/ship_pretrained.py)")


def verify_model(model, directory: str) -> None:
    """Checks a loaded network against the architecture in directory's fingerprint.json: its parameter count
    the resolution multiple its feature layer enforces (2**depth; 1 with a working resolution) and the working
    resolution its U-Net runs at (0: the input's).

    Raises:
      ValueError: naming model.keras and what differs.
    """
    arch = read_fingerprint(directory)["architecture"]
    working = arch["model"].get("working_resolution", 0)
    actual = {"num_params": int(model.count_params()),
              "resolution multiple": inference.resolution_multiple(model),
              "working resolution": inference.working_resolution(model)}
    expected = {"num_params": arch["num_params"], "resolution multiple": 1 if working else 2 ** arch["model"]["depth"],
                "working resolution": working}
    differ = _differences(expected, actual)
    if differ:
        raise ValueError(f"refusing {os.path.join(directory, inference.MODEL_FILE)}: the network it holds is not "
                         f"the architecture {os.path.join(directory, FINGERPRINT_FILE)} records "
                         f"({'; '.join(differ)})")


def has_fingerprint(model_dir: str) -> bool:
    """Whether model_dir is a shipped solver (holds a fingerprint.json), whose loads are verified."""
    return os.path.isfile(os.path.join(model_dir, FINGERPRINT_FILE))


def load_pretrained(name: str = DEFAULT_NAME):
    """The shipped Keras solver `name`, after its fingerprint check (loaded in Keras' safe mode, not compiled).

    u = model(nu[..., None]) for nu [B, N, N, N] with N a resolution it takes (config.json's model section); or
    inference.predict(model, nu).

    Raises:
      ValueError: no such solver (the message lists the shipped ones), or weights, configuration or
        architecture that do not match its fingerprint.json.
    """
    return inference.load_solver(pretrained_dir(name))
