"""Using a trained solver: load it from an opened model_dir, check inputs, predict fields, export a SavedModel."""
from __future__ import annotations

import numpy as np

from poisson_tf import config, fields, modeldir


def load_solver(model_dir: str | modeldir.ModelDir):
    """The trained Keras solver of a model_dir (model.keras), loaded in Keras' safe mode; a shipped solver only
    after its fingerprint check (files when the model_dir is opened, the network's architecture here).

    Args:
      model_dir: a modeldir.ModelDir (opened and verified once by the caller) or a path, opened here.

    Raises:
      ValueError: when model_dir does not exist, holds no trained model, its model.keras is damaged, or it
        does not match its fingerprint.
    """
    opened = model_dir if isinstance(model_dir, modeldir.ModelDir) else modeldir.open_model_dir(model_dir)
    import keras

    from poisson_tf import models

    try:
        model = keras.saving.load_model(opened.model_path, compile=False, safe_mode=True)
    except Exception as e:  # Keras reports a damaged archive in many ways (ValueError, OSError, KeyError, ...)
        raise ValueError(f"cannot load {opened.model_path}: {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]}") from None
    opened.check_network(model.count_params(), models.resolution_multiple(model), models.working_resolution(model))
    return model


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
    from poisson_tf import models

    batch = check_input(nu, models.resolution_multiple(model).bit_length() - 1)
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
