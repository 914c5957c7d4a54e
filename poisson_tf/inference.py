"""Using a trained solver: load it from a model_dir, check inputs, predict fields, export a SavedModel."""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from poisson_tf import config, fields

MODEL_FILE = "model.keras"


def load_solver(model_dir: str):
    """The trained Keras solver of a model_dir (model.keras), loaded in Keras' safe mode; a shipped solver
    (a model_dir with a fingerprint.json) only after its fingerprint check.

    Raises:
      ValueError: when model_dir does not exist, holds no trained model, its model.keras is damaged, or it
        does not match its fingerprint.
    """
    path = check_model_dir(model_dir)
    import keras

    from poisson_tf import models, pretrained  # noqa: F401  (models registers the custom layers)

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras reports a damaged archive in many ways (ValueError, OSError, KeyError, ...)
        raise ValueError(f"cannot load {path}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    if pretrained.has_fingerprint(model_dir):
        pretrained.verify_model(model, model_dir)
    return model


def check_model_dir(model_dir: str) -> str:
    """Returns model_dir's model.keras path after the checks that need no framework: the directory exists and
    holds a model.keras that is a whole .keras archive (a zip with its config and weights), and a shipped
    solver's files match its fingerprint.json (pretrained.verify_files).

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
    from poisson_tf import pretrained

    if pretrained.has_fingerprint(model_dir):  # first: a changed shipped file is named as such, not as damage
        pretrained.verify_files(model_dir)
    try:
        with zipfile.ZipFile(path) as archive:
            names, damaged = set(archive.namelist()), archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as e:
        raise ValueError(f"{path} is damaged (not a .keras archive: {e})") from None
    if damaged is not None or not {"config.json", "model.weights.h5"} <= names:
        raise ValueError(f"{path} is damaged ({'a bad member ' + damaged if damaged else 'members missing'}); "
                         "train again or restore it from a copy")
    return path


def resolution_multiple(model) -> int:
    """The N every input must be a multiple of (2**depth; 1 for a network with a working resolution), read from
    the model's feature layer."""
    return int(model.get_layer("features").multiple)


def working_resolution(model) -> int:
    """The N the model's U-Net runs at whatever the input's (its to_working_resolution layer), or 0."""
    try:
        return int(model.get_layer("to_working_resolution").size)
    except ValueError:  # no such layer: fully convolutional
        return 0


def check_input(nu: np.ndarray, depth: int) -> np.ndarray:
    """nu [N,N,N] or [B,N,N,N], real, finite, positive and of a resolution a depth-`depth` U-Net takes (depth 0:
    any N >= 2); returns [B,N,N,N]."""
    nu = np.asarray(nu)
    if nu.ndim not in (3, 4) or len(set(nu.shape[-3:])) != 1:
        raise ValueError(f"nu must have shape [N, N, N] or [B, N, N, N], got {nu.shape}")
    fields.check_diffusivity(nu)
    config.check_resolution(nu.shape[-1], depth)
    return nu.reshape((-1,) + nu.shape[-3:])


def predict(model, nu: np.ndarray, batch_size: int = 1, progress: bool = False) -> np.ndarray:
    """u for each nu, [B, N, N, N] float32 (exact Dirichlet planes), in batches of batch_size."""
    import tensorflow as tf

    config.require(batch_size >= 1, "batch_size", batch_size, ">= 1")
    batch = check_input(nu, resolution_multiple(model).bit_length() - 1)
    bar = None
    if progress and len(batch) > batch_size:
        import keras

        bar = keras.utils.Progbar(len(batch), unit_name="field")
    out = np.empty(batch.shape, np.float32)
    for i in range(0, len(batch), batch_size):
        chunk = tf.constant(batch[i:i + batch_size, ..., None], tf.float32)
        out[i:i + batch_size] = model(chunk, training=False).numpy()[..., 0]
        if bar is not None:
            bar.update(min(i + batch_size, len(batch)))
    return out


def export_savedmodel(model, path: str) -> str:
    """Writes a TensorFlow SavedModel (endpoint `serve`, input nu [B, N, N, N, 1] of any valid N)."""
    model.export(path, format="tf_saved_model", verbose=False)
    return path
