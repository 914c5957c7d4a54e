"""Atomic training checkpoints: network and optimizer variables, cycle position, config fingerprint."""
from __future__ import annotations

import json
import os

import numpy as np

from poisson_tf import distributed, files

CHECKPOINT_FILE = "checkpoint.h5"
FORMAT_VERSION = 1


class Checkpointer:
    """Writes (chief only, by construction) and restores one checkpoint file in model_dir.

    Every write goes to a temporary file renamed over the previous checkpoint, so an interrupted write
    never corrupts it. Network variables include Keras' seed-generator states (dropout RNG).
    """

    def __init__(self, model_dir: str, fingerprint: dict):
        self.path = os.path.join(model_dir, CHECKPOINT_FILE)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # tuples -> lists, as stored

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def save(self, network, optimizer, state: dict) -> None:
        """Writes the checkpoint on the chief; a no-op on other workers."""
        distributed.on_chief(self._write, network, optimizer, state)

    def _write(self, network, optimizer, state: dict) -> None:
        with files.write_hdf5(self.path) as f:
            for group, variables in (("network", network.variables), ("optimizer", optimizer.variables)):
                g = f.create_group(group)
                for i, v in enumerate(variables):
                    d = g.create_dataset(f"{i:05d}", data=np.asarray(v.numpy()))
                    d.attrs["path"] = v.path
            f.attrs["state"] = json.dumps(state)
            f.attrs["fingerprint"] = json.dumps(self.fingerprint, sort_keys=True)
            f.attrs["format_version"] = FORMAT_VERSION

    def restore(self, network, optimizer) -> dict:
        """Loads the checkpoint into network and optimizer (building its slots), returns the saved state.

        Raises:
          ValueError: no checkpoint, an unreadable one, or one written by an incompatible configuration.
        """
        import h5py

        if not self.exists():
            raise ValueError(f"cannot resume: no checkpoint at {self.path}")
        try:
            with h5py.File(self.path, "r") as f:
                saved = json.loads(f.attrs["fingerprint"])
                if saved != self.fingerprint:
                    diff = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
                    raise ValueError(f"checkpoint {self.path} was written by an incompatible configuration "
                                     f"(differs in {diff}: saved {[saved.get(k) for k in diff]}, this run "
                                     f"{[self.fingerprint.get(k) for k in diff]}); use another --model_dir or "
                                     f"the saved settings")
                if not optimizer.built:
                    optimizer.build(network.trainable_variables)
                for group, variables in (("network", network.variables), ("optimizer", optimizer.variables)):
                    stored = f[group]
                    if len(stored) != len(variables):
                        raise ValueError(f"checkpoint {self.path} holds {len(stored)} {group} variables, this "
                                         f"model has {len(variables)}")
                    for i, v in enumerate(variables):
                        value = stored[f"{i:05d}"][()]
                        if tuple(value.shape) != tuple(v.shape):
                            raise ValueError(f"checkpoint variable {stored[f'{i:05d}'].attrs['path']} has shape "
                                             f"{value.shape}, the model's {v.path} has {tuple(v.shape)}")
                        v.assign(value)
                return json.loads(f.attrs["state"])
        except (OSError, KeyError) as e:
            raise ValueError(f"cannot read checkpoint {self.path}: {e}") from None
