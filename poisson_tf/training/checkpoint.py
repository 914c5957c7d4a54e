"""Atomic training checkpoints: network and optimizer variables, cycle position, config fingerprint, checksum.

The last two checkpoints are kept (checkpoint.h5 and checkpoint.previous.h5). Restoring verifies the
checksum and that every value is finite, and falls back to the previous checkpoint when the newest one is
unreadable or corrupt. Importing this module loads no framework; reading a checkpoint needs only h5py.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

from poisson_tf import config, files
from poisson_tf.modeldir import CHECKPOINT_FILE, CHECKPOINT_FILES, MODEL_FILE, PREVIOUS_CHECKPOINT_FILE
FORMAT_VERSION = 2
_GROUPS = ("network", "optimizer")


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be trusted (unreadable, checksum mismatch, non-finite values)."""


def _digest(groups: dict, state: str, fingerprint: str) -> str:
    """sha256 over every variable (group, path, dtype, shape, bytes), the state and the fingerprint."""
    h = hashlib.sha256()
    for group in _GROUPS:
        for path, value in groups[group]:
            value = np.ascontiguousarray(value)
            h.update(f"{group}/{path}/{value.dtype.str}/{value.shape}".encode())
            h.update(value.tobytes())
    h.update(state.encode())
    h.update(fingerprint.encode())
    return h.hexdigest()


def _incompatibility(path: str, saved: dict, current: dict) -> str:
    flags = {o.path: o.flag for o in config.options()}
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    shown = "; ".join(f"--{flags.get(k, k)}={saved.get(k)!r} there, {current.get(k)!r} now" for k in diff)
    return (f"checkpoint {path} was written with other settings ({shown}): resuming it with these would not "
            f"continue the same training; drop those flags to resume with the saved settings, or start a new run "
            f"with --overwrite or another --model_dir")


def check_threads(model_dir: str, state: dict, threads: int) -> None:
    """Refuses to resume a --deterministic run with another intra-op thread count than its checkpoint records:
    TensorFlow's CPU kernels split their reductions by it, so the resumed run would not reproduce the
    uninterrupted one (on a tiny run 18 of 21 variables differed between 1 and 2 threads).

    Raises:
      ValueError: naming the model_dir, both thread counts and the flag that restores reproduction.
    """
    recorded = state.get("threads")
    if recorded is not None and int(recorded) != int(threads):
        raise ValueError(f"--model_dir {model_dir!r} holds a --deterministic run trained with {recorded} "
                         f"TensorFlow threads per worker, this launch has {threads}: its weights depend on the "
                         f"thread count, so this resume would not reproduce the run; give --threads={recorded}")


def stored_values(model_dir: str) -> dict:
    """Every value a finished run stored: the newest checkpoint's network and optimizer variables and the
    weights in model.keras, {name: array} (to compare two runs bit for bit: the fault tests, bench_preemption)."""
    import io
    import zipfile

    import h5py

    out = {}
    with h5py.File(os.path.join(model_dir, CHECKPOINT_FILE), "r") as f:
        for group in _GROUPS:
            out.update({f"checkpoint/{group}/{k}": f[group][k][()] for k in f[group]})
    with zipfile.ZipFile(os.path.join(model_dir, MODEL_FILE)) as archive:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
            f.visititems(lambda name, item: out.__setitem__(f"model/{name}", item[()])
                         if isinstance(item, h5py.Dataset) else None)
    return out


class Checkpointer:
    """Writes (chief only, by construction) and restores the checkpoints of one model_dir.

    Every write goes to a temporary file that replaces checkpoint.h5 after the previous checkpoint.h5 was
    renamed to checkpoint.previous.h5, so an interrupted write corrupts neither. Network variables include
    Keras' seed-generator states (dropout RNG).
    """

    def __init__(self, model_dir: str, fingerprint: dict, threads: int | None = None):
        self.model_dir = model_dir
        self.threads = threads  # a --deterministic run's intra-op threads per worker: its results depend on them
        self.path = os.path.join(model_dir, CHECKPOINT_FILE)
        self.previous_path = os.path.join(model_dir, PREVIOUS_CHECKPOINT_FILE)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # tuples -> lists, as stored

    def exists(self) -> bool:
        return any(os.path.exists(os.path.join(self.model_dir, name)) for name in CHECKPOINT_FILES)

    def save(self, network, optimizer, state: dict) -> None:
        """Writes the checkpoint on the chief; a no-op on other workers."""
        from poisson_tf import distributed

        if self.threads is not None:
            state = {**state, "threads": int(self.threads)}
        distributed.on_chief(self._write, network, optimizer, state)

    def _write(self, network, optimizer, state: dict) -> None:
        groups = {group: [(v.path, np.asarray(v.numpy())) for v in variables]
                  for group, variables in (("network", network.variables), ("optimizer", optimizer.variables))}
        state_json, fingerprint_json = json.dumps(state), json.dumps(self.fingerprint, sort_keys=True)
        with files.write_hdf5(self.path, keep_previous=self.previous_path) as f:
            for group in _GROUPS:
                g = f.create_group(group)
                for i, (path, value) in enumerate(groups[group]):
                    g.create_dataset(f"{i:05d}", data=value).attrs["path"] = path
            f.attrs["state"] = state_json
            f.attrs["fingerprint"] = fingerprint_json
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["sha256"] = _digest(groups, state_json, fingerprint_json)

    def _read(self, path: str):
        """({group: [(variable path, value)]}, state) of one checkpoint file, verified.

        Raises:
          CorruptCheckpoint: unreadable, a checksum that does not match, or a value that is not finite.
          ValueError: a checkpoint of another format or of other settings (falling back would not help).
        """
        import h5py

        try:
            with h5py.File(path, "r") as f:
                version = f.attrs["format_version"]
                if version != FORMAT_VERSION:
                    raise ValueError(f"checkpoint {path} has format {version}, this poisson_tf reads format "
                                     f"{FORMAT_VERSION}; start a new run with --overwrite or another --model_dir")
                state_json, fingerprint_json = str(f.attrs["state"]), str(f.attrs["fingerprint"])
                groups = {group: [(str(f[group][k].attrs["path"]), f[group][k][()]) for k in sorted(f[group])]
                          for group in _GROUPS}
                checksum = str(f.attrs["sha256"])
        except (OSError, KeyError, TypeError, AttributeError) as e:
            raise CorruptCheckpoint(f"{os.path.basename(path)} is unreadable ({type(e).__name__}: {e})") from None
        if _digest(groups, state_json, fingerprint_json) != checksum:
            raise CorruptCheckpoint(f"{os.path.basename(path)} does not match its checksum (damaged on disk)")
        for group in _GROUPS:
            for name, value in groups[group]:
                if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                    raise CorruptCheckpoint(f"{os.path.basename(path)} holds non-finite values in {group} variable "
                                            f"{name}")
        # A setting added after the checkpoint was written ran at its default then (e.g. data.family = kl).
        saved = {**config.TrainConfig().fingerprint(), **json.loads(fingerprint_json)}
        if saved != self.fingerprint:
            raise ValueError(_incompatibility(path, saved, self.fingerprint))
        return groups, json.loads(state_json)

    def load(self):
        """The newest checkpoint that verifies, falling back to the previous one.

        Returns:
          ({group: [(variable path, value)]}, state); state["restored_from"] names the file used and, after a
          fall-back, state["fallback_reason"] says why the newest was not.

        Raises:
          ValueError: no checkpoint, none that verifies, or one written with other settings.
        """
        reasons = []
        for name in CHECKPOINT_FILES:
            path = os.path.join(self.model_dir, name)
            if not os.path.exists(path):
                continue
            try:
                groups, state = self._read(path)
            except CorruptCheckpoint as e:
                reasons.append(str(e))
                continue
            state["restored_from"] = name
            if reasons:
                state["fallback_reason"] = "; ".join(reasons)
            return groups, state
        if not reasons:
            raise ValueError(f"cannot resume: no checkpoint in {self.model_dir} (it holds {CHECKPOINT_FILE} once "
                             "an epoch has been saved)")
        raise ValueError(f"cannot resume from {self.model_dir}: {'; '.join(reasons)}; no intact checkpoint is "
                         "left, start a new run with --overwrite")

    def restore(self, network, optimizer) -> dict:
        """Loads the newest intact checkpoint into network and optimizer (building its slots); returns its state
        (see load) and says on stderr when it fell back to the previous checkpoint.

        Raises:
          ValueError: no intact checkpoint, one written with other settings, or one of another model.
        """
        groups, state = self.load()
        if not optimizer.built:
            optimizer.build(network.trainable_variables)
        for group, variables in (("network", network.variables), ("optimizer", optimizer.variables)):
            stored = groups[group]
            if len(stored) != len(variables):
                raise ValueError(f"checkpoint {state['restored_from']} holds {len(stored)} {group} variables, this "
                                 f"model has {len(variables)}")
            for (path, value), v in zip(stored, variables):
                if tuple(value.shape) != tuple(v.shape):
                    raise ValueError(f"checkpoint variable {path} has shape {value.shape}, the model's {v.path} has "
                                     f"{tuple(v.shape)}")
                v.assign(value)
        if "fallback_reason" in state:
            print(f"warning: {state['fallback_reason']}; resumed from {state['restored_from']} (epoch "
                  f"{state['epoch']}) instead", file=sys.stderr, flush=True)
        return state
