"""Using a trained solver: load it from a model_dir, predict fields, evaluate against the reference, export."""
from __future__ import annotations

import os
import time

import numpy as np

from poisson_tf import distributed, fields, files, metrics

MODEL_FILE = "model.keras"


def load_solver(model_dir: str):
    """The trained Keras solver of a model_dir (model.keras).

    Raises:
      ValueError: when model_dir does not exist or holds no trained model.
    """
    import keras

    from poisson_tf import models  # noqa: F401  (registers the custom layers)

    path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isdir(model_dir):
        raise ValueError(f"model_dir {model_dir!r} does not exist")
    if not os.path.exists(path):
        raise ValueError(f"model_dir {model_dir!r} holds no trained model ({MODEL_FILE}); train one with "
                         f"poisson-tf-train --model_dir={model_dir} (a run writes it when its cycle completes)")
    return keras.saving.load_model(path, compile=False)


def resolution_multiple(model) -> int:
    """The N every input must be a multiple of (2**depth), read from the model's feature layer."""
    return int(model.get_layer("features").multiple)


def check_input(model, nu: np.ndarray) -> np.ndarray:
    """nu [N,N,N] or [B,N,N,N], finite, positive and of a resolution the model takes; returns [B,N,N,N]."""
    nu = np.asarray(nu)
    if nu.ndim not in (3, 4) or len(set(nu.shape[-3:])) != 1:
        raise ValueError(f"nu must have shape [N, N, N] or [B, N, N, N], got {nu.shape}")
    fields.check_diffusivity(nu)
    from poisson_tf.models import check_resolution

    multiple = resolution_multiple(model)
    check_resolution(nu.shape[-1], multiple.bit_length() - 1)
    return nu.reshape((-1,) + nu.shape[-3:])


def predict(model, nu: np.ndarray, batch_size: int = 1, progress: bool = False) -> np.ndarray:
    """u for each nu, [B, N, N, N] float32 (exact Dirichlet planes), in batches of batch_size."""
    import tensorflow as tf

    batch = check_input(model, nu)
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


def linear_baseline(nu: np.ndarray) -> np.ndarray:
    """The trivial guess u = 1 - x for each field (exact for constant nu)."""
    n = nu.shape[-1]
    return np.broadcast_to(np.linspace(1.0, 0.0, n)[:, None, None], nu.shape).astype(np.float64)


def evaluate(predict_fn, coeffs: np.ndarray, eta: float, resolutions, store, batch_size: int = 1,
             trained_resolutions=(), baseline: bool = True) -> dict:
    """Per-sample and mean metrics of predict_fn against the cached reference, next to u = 1 - x.

    Samples are split over workers and gathered, so every worker returns the whole report.

    Args:
      predict_fn: nu [b, N, N, N] -> u [b, N, N, N].
      coeffs: KL coefficients [S, m] of the evaluation samples.
      resolutions: where to evaluate; those above max(trained_resolutions) are marked zero_shot.
      store: a data.ReferenceStore.
      baseline: also score u = 1 - x (constant over a training run, so validation leaves it out).

    Returns:
      {"resolutions": {N: {"model": means, "baseline": means, "inference_seconds_per_field", "zero_shot",
      "per_sample": [...]}}} and, on the chief, "examples" {N: (nu, u, u_ref)} of sample 0 for figures.
    """
    coeffs = np.asarray(coeffs)
    mine = list(range(distributed.rank(), len(coeffs), distributed.size()))
    report, examples = {}, {}
    for n in resolutions:
        rows, seconds = [], 0.0
        for i in range(0, len(mine), batch_size):
            idx = mine[i:i + batch_size]
            nu, u_ref = store.get_many(coeffs[idx], eta, n)
            start = time.perf_counter()
            u = np.asarray(predict_fn(nu), np.float64)
            seconds += time.perf_counter() - start
            model_m = metrics.field_metrics(u, u_ref, nu)
            base_m = metrics.field_metrics(linear_baseline(nu), u_ref, nu) if baseline else [{}] * len(idx)
            for j, sample in enumerate(idx):
                rows.append(dict(sample=int(sample), **model_m[j], **{f"baseline_{k}": v for k, v in base_m[j].items()}))
            if i == 0 and distributed.is_chief():
                examples[n] = (nu[0], u[0], u_ref[0])
        parts = distributed.allgather_object((rows, seconds))  # Horovod: every worker gets every sample
        gathered = sorted((r for part in parts for r in part[0]), key=lambda r: r["sample"])
        total_seconds = sum(part[1] for part in parts)
        report[int(n)] = {
            "model": metrics.mean_metrics([{k: r[k] for k in metrics.METRIC_NAMES} for r in gathered]),
            "baseline": metrics.mean_metrics([{k: r[f"baseline_{k}"] for k in metrics.METRIC_NAMES} for r in gathered])
            if baseline else {},
            "inference_seconds_per_field": total_seconds / max(1, len(gathered)),
            "zero_shot": bool(trained_resolutions) and n > max(trained_resolutions),
            "num_samples": len(gathered),
            "per_sample": gathered,
        }
    return {"resolutions": report, "examples": examples}


def format_table(report: dict) -> str:
    """A readable table: one row per resolution, model next to the u = 1 - x baseline."""
    head = f"{'N':>5} {'samples':>7} {'rel_l2':>9} {'(1-x)':>9} {'max_abs':>9} {'(1-x)':>9} {'energy_gap':>11} " \
           f"{'(1-x)':>9} {'flux_err':>9} {'(1-x)':>9} {'s/field':>8}"
    lines = [head, "-" * len(head)]
    for n, r in sorted(report["resolutions"].items()):
        m, b = r["model"], r["baseline"]
        lines.append(f"{n:>5} {r['num_samples']:>7} {m['rel_l2']:>9.3%} {b['rel_l2']:>9.3%} {m['max_abs']:>9.4f} "
                     f"{b['max_abs']:>9.4f} {m['energy_gap']:>11.3e} {b['energy_gap']:>9.3e} "
                     f"{m['flux_error']:>9.3%} {b['flux_error']:>9.3%} {r['inference_seconds_per_field']:>8.3f}"
                     + ("  zero-shot" if r["zero_shot"] else ""))
    return "\n".join(lines)


def save_figure(examples: dict, path: str) -> str:
    """PNG of mid-plane (z = 1/2) slices of nu, u, u_ref and |u - u_ref| per resolution, with colorbars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(examples)
    fig, axes = plt.subplots(len(rows), 4, figsize=(14, 3.2 * len(rows)), squeeze=False)
    for r, n in enumerate(rows):
        nu, u, u_ref = examples[n]
        k = n // 2
        panels = [("nu", nu[:, :, k], "viridis"), ("u (network)", u[:, :, k], "coolwarm"),
                  ("u_ref (AMG)", u_ref[:, :, k], "coolwarm"), ("|u - u_ref|", np.abs(u - u_ref)[:, :, k], "magma")]
        for c, (title, plane, cmap) in enumerate(panels):
            ax = axes[r, c]
            image = ax.imshow(plane.T, origin="lower", extent=(0, 1, 0, 1), cmap=cmap)
            ax.set_title(f"{title}, N={n}, z=1/2")
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    files.save_png(fig, path, dpi=80)
    plt.close(fig)
    return path


def export_savedmodel(model, path: str) -> str:
    """Writes a TensorFlow SavedModel (endpoint `serve`, input nu [B, N, N, N, 1] of any valid N)."""
    model.export(path, format="tf_saved_model", verbose=False)
    return path
