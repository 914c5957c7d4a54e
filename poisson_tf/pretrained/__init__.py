"""Solvers shipped inside the package: where they are, how the command lines name them, and loading one.

A shipped solver is a directory poisson_tf/pretrained/<name>/ holding modeldir.SHIPPED_FILES: what inference
needs from a model_dir (model.keras, config.json), a held-out sample set (val_samples.h5, the default of
poisson-tf-evaluate), a MODEL_CARD.md and fingerprint.json, which modeldir.open_model_dir checks on every load.

On the command lines, --model_dir=pretrained (the default solver) or pretrained:<name> names a shipped solver
(resolve_model_dir); a local directory of that name is ./pretrained. Framework-free: importing this module loads
neither TensorFlow nor Keras, so `import poisson_tf; poisson_tf.pretrained_dir()` stays light.
"""
from __future__ import annotations

import os

from poisson_tf import modeldir

#: The directory holding the shipped solvers, one subdirectory each.
ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_NAME = "kl_small"
#: How the command lines name a shipped solver: `pretrained` (DEFAULT_NAME) or `pretrained:<name>`.
SPEC_PREFIX = "pretrained"


def names(root: str = ROOT) -> list:
    """The names of the solvers shipped in root (subdirectories holding a fingerprint.json), sorted."""
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if modeldir.has_fingerprint(os.path.join(root, n)))


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


def load_pretrained(name: str = DEFAULT_NAME):
    """The shipped Keras solver `name`, after its fingerprint check (loaded in Keras' safe mode, not compiled).

    u = model(nu[..., None]) for nu [B, N, N, N] with N a resolution it takes (config.json's model section); or
    inference.predict(model, nu).

    Raises:
      ValueError: no such solver (the message lists the shipped ones), or weights, configuration or
        architecture that do not match its fingerprint.json.
    """
    from poisson_tf import inference

    return inference.load_solver(pretrained_dir(name))
