"""Where a trained solver's error sits, and how it falls with training time and model size (issue 15).

Usage: python benchmarks/error_analysis.py --model_dir pretrained --resolution 64 --name kl_small
          [--samples held-out.h5] [--num_samples 16] [--plot benchmarks/results/error_<name>_<N>.png]
       python benchmarks/error_analysis.py --training_plot benchmarks/results/error_training.png

Per held-out field (the model_dir's val_samples.h5, a shipped solver's held-out set) against the cached
reference: rel_l2, the error of the effective conductance 2J (= energy_gap, since J(u) >= J(u_ref)) and of the
reaction flux through x = 0, the field's contrast max(nu) / min(nu) and its KL coefficients. Over all fields:
the error of every x = const plane (where along the flow it sits: the inlet x = 0 and outlet x = 1 are exact),
and the mean |u - u_ref| in deciles of log nu and of |grad log nu| (low or high diffusivity, smooth or steep
regions), each relative to the field's mean |u - u_ref|. u = 1 - x is scored beside the network throughout.
One JSON line per (model, N) goes to benchmarks/results/error_analysis.jsonl, and a PNG (six panels).

--training_plot draws rel_l2 against training time from benchmarks/results/cycles.jsonl (every curve at a 64^3 or
128^3 finest level, labelled with depth and parameter count) and from every evaluation record's trained runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

DECILES = 10


def _decile_profile(values: np.ndarray, error: np.ndarray) -> list:
    """Mean of error in each decile of values (both [N, N, N]), relative to error's mean."""
    edges = np.quantile(values, np.linspace(0, 1, DECILES + 1))
    index = np.clip(np.searchsorted(edges, values.ravel(), side="right") - 1, 0, DECILES - 1)
    sums = np.bincount(index, weights=error.ravel(), minlength=DECILES)
    counts = np.maximum(np.bincount(index, minlength=DECILES), 1)
    return list(sums / counts / max(float(error.mean()), 1e-300))


def plane_errors(u: np.ndarray, u_ref: np.ndarray) -> np.ndarray:
    """Error of every x = const plane, ||d_i|| sqrt(N) / ||u_ref||: their root mean square is rel_l2."""
    d = (u - u_ref).reshape(len(u), -1)
    return np.sqrt(len(u) * (d ** 2).sum(axis=1)) / np.linalg.norm(u_ref)


def field_analysis(u: np.ndarray, u_ref: np.ndarray, nu: np.ndarray) -> dict:
    """Plane errors and decile profiles of one field ([N, N, N] each)."""
    log_nu = np.log(nu)
    h = 1.0 / (len(nu) - 1)
    steepness = np.sqrt(sum(g ** 2 for g in np.gradient(log_nu, h)))
    error = np.abs(u - u_ref)
    return {"planes": plane_errors(u, u_ref), "by_log_nu": _decile_profile(log_nu, error),
            "by_grad_log_nu": _decile_profile(steepness, error)}


def analyse(model_dir: str, resolution: int, samples_path: str, num_samples: int, cache: str) -> dict:
    from poisson_tf import distributed, inference, metrics, modeldir, pretrained, scoring, solvers
    from poisson_tf.training import data

    model_dir = pretrained.resolve_model_dir(model_dir)
    cfg = modeldir.load_config(model_dir)
    cfg.model.check_resolution(resolution)
    samples = data.SampleSet.load(samples_path or os.path.join(model_dir, "val_samples.h5"),
                                  num_terms=cfg.data.num_terms)
    coeffs = samples.coeffs[:num_samples or None]
    distributed.init(intra_op_threads=0, inter_op_threads=0)
    model = inference.load_solver(model_dir)
    store = solvers.ReferenceStore(cache or cfg.run.reference_cache)
    rows, model_parts, base_parts = [], [], []
    for i, c in enumerate(coeffs):
        nu, u_ref = store.get(samples.family, c, resolution)
        u = np.asarray(inference.predict(model, nu[None]), np.float64)[0]
        base = scoring.linear_baseline(nu[None])[0]
        m, b = (per_sample[0] for per_sample in metrics.compare_fields([u[None], base[None]], u_ref[None], nu[None]))
        model_parts.append(field_analysis(u, u_ref, nu))
        base_parts.append(field_analysis(base, u_ref, nu))
        rows.append({"sample": i, "coeffs": [float(x) for x in c], "contrast": float(nu.max() / nu.min()),
                     "rel_l2": m["rel_l2"], "conductance_error": m["energy_gap"], "flux_error": m["flux_error"],
                     "baseline_rel_l2": b["rel_l2"], "baseline_conductance_error": b["energy_gap"]})

    def over_fields(parts: list) -> dict:
        """Plane errors as the root mean square over the fields (so their rms is that of rel_l2), deciles as means."""
        planes = np.array([p["planes"] for p in parts])
        return {"plane_error": np.sqrt((planes ** 2).mean(axis=0)),
                "by_log_nu": np.mean([p["by_log_nu"] for p in parts], axis=0),
                "by_grad_log_nu": np.mean([p["by_grad_log_nu"] for p in parts], axis=0)}

    network, baseline = over_fields(model_parts), over_fields(base_parts)
    return {"model_dir": os.path.abspath(model_dir), "resolution": resolution, "num_samples": len(rows),
            "trained_resolutions": cfg.plan().resolutions, "depth": cfg.model.depth,
            "params": int(model.count_params()), "per_sample": rows,
            **{key: {"model": [float(x) for x in network[key]], "baseline": [float(x) for x in baseline[key]]}
               for key in network}}


def summary(result: dict) -> dict:
    """The numbers a reader wants first: mean, worst, the share of the error in the first and last tenth of x."""
    rows = result["per_sample"]
    planes = np.array(result["plane_error"]["model"]) ** 2
    tenth = max(1, len(planes) // 10)
    worst = max(rows, key=lambda r: r["rel_l2"])
    corr = float(np.corrcoef(np.log([r["contrast"] for r in rows]), [r["rel_l2"] for r in rows])[0, 1]) \
        if len(rows) > 2 else None
    return {"rel_l2": float(np.mean([r["rel_l2"] for r in rows])), "rel_l2_worst": worst["rel_l2"],
            "worst_sample": worst["sample"], "worst_contrast": worst["contrast"],
            "conductance_error": float(np.mean([r["conductance_error"] for r in rows])),
            "conductance_error_worst": float(max(r["conductance_error"] for r in rows)),
            "flux_error": float(np.mean([r["flux_error"] for r in rows])),
            "share_inlet_tenth": float(planes[:tenth].sum() / planes.sum()),
            "share_outlet_tenth": float(planes[-tenth:].sum() / planes.sum()),
            "steepest_decile_error_ratio": result["by_grad_log_nu"]["model"][-1],
            "highest_nu_decile_error_ratio": result["by_log_nu"]["model"][-1],
            "lowest_nu_decile_error_ratio": result["by_log_nu"]["model"][0],
            "corr_rel_l2_log_contrast": corr}


def plot(result: dict, name: str, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from poisson_tf import files

    rows, n = result["per_sample"], result["resolution"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax = axes[0, 0]
    x = np.linspace(0, 1, n)
    ax.semilogy(x, result["plane_error"]["model"], label="network")
    ax.semilogy(x, result["plane_error"]["baseline"], "--", label="u = 1 - x")
    ax.set(title=f"error of each x-plane (rms = rel_l2), N={n}", xlabel="x (inlet u = 1 at x = 0)",
           ylabel="||u - u_ref||_plane sqrt(N) / ||u_ref||")
    ax.legend()
    ax = axes[0, 1]
    centres = (np.arange(DECILES) + 0.5) / DECILES
    for key, label in (("by_log_nu", "decile of log nu"), ("by_grad_log_nu", "decile of |grad log nu|")):
        ax.plot(centres, result[key]["model"], "o-", label=f"network, {label}")
        ax.plot(centres, result[key]["baseline"], "x--", alpha=0.5, label=f"u = 1 - x, {label}")
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set(title="where |u - u_ref| sits (1 = the field's mean)", xlabel="decile (low -> high)",
           ylabel="mean |u - u_ref| in the decile / mean")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    contrast = [r["contrast"] for r in rows]
    ax.loglog(contrast, [r["rel_l2"] for r in rows], "o", label="network")
    ax.loglog(contrast, [r["baseline_rel_l2"] for r in rows], "x", label="u = 1 - x")
    ax.set(title="rel_l2 per held-out field vs its contrast", xlabel="max nu / min nu", ylabel="rel_l2")
    ax.legend()
    ax = axes[1, 0]
    w = np.array([r["coeffs"] for r in rows])
    for i in range(w.shape[1]):
        ax.plot(w[:, i], [r["rel_l2"] for r in rows], "o", alpha=0.7, label=f"w_{i + 1}")
    ax.set(title="rel_l2 vs each KL coefficient (w_1 = largest mode)", xlabel="w_i", ylabel="rel_l2")
    ax.legend()
    ax = axes[1, 1]
    order = np.argsort([r["rel_l2"] for r in rows])
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [rows[k]["conductance_error"] for k in order], 0.4, label="2J (conductance)")
    ax.bar(pos + 0.2, [rows[k]["flux_error"] for k in order], 0.4, label="reaction flux at x = 0")
    ax.set_yscale("log")
    ax.set_xticks(pos, [rows[k]["sample"] for k in order], fontsize=7)
    ax.set(title="relative error of 2J and of the inlet flux per field", xlabel="sample (by rel_l2)",
           ylabel="relative error")
    ax.legend()
    ax = axes[1, 2]
    ax.plot(pos, [rows[k]["rel_l2"] for k in order], "o-", label="network")
    ax.plot(pos, [rows[k]["baseline_rel_l2"] for k in order], "x--", label="u = 1 - x")
    ax.set_xticks(pos, [rows[k]["sample"] for k in order], fontsize=7)
    ax.set(title="rel_l2 per field", xlabel="sample (by rel_l2)", ylabel="rel_l2")
    ax.set_yscale("log")
    ax.legend()
    fig.suptitle(f"{name}: {result['num_samples']} held-out fields at {n}^3 (trained at "
                 f"{','.join(map(str, result['trained_resolutions']))}; depth {result['depth']}, "
                 f"{result['params']:,} parameters)")
    fig.tight_layout()
    files.save_png(fig, path, dpi=70)
    plt.close(fig)
    return path


def training_plot(path: str) -> str:
    """rel_l2 at the finest level against training seconds: the cycles benchmark's curves, by depth and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from poisson_tf import files

    with open(os.path.join(_common.RESULTS, "cycles.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    from poisson_tf import config, models

    sizes = {}

    def params(model: dict) -> int:  # the parameter count of a recorded model configuration
        key = json.dumps(model, sort_keys=True)
        if key not in sizes:
            sizes[key] = models.build_model(config.ModelConfig(**model)).count_params()
        return sizes[key]

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), squeeze=False)
    for ax, finest in zip(axes[0], (64, 128)):
        for r in records:
            curve = [p for p in r.get("curve", []) if p.get("resolution") == finest]
            if not curve or max(r["config"]["cycle"]["levels"]) != finest:
                continue
            model = r["config"]["model"]
            label = f"{r['schedule']}, depth {model['depth']} ({params(model) / 1e3:.0f}k), seed {r['seed']}, " \
                    f"batch {r['config']['optim']['global_batch_size']}"
            ax.semilogy([p["train_seconds"] for p in curve], [p["rel_l2"] for p in curve], "o-", ms=3, label=label)
        ax.set(title=f"validation rel_l2 at {finest}^3 vs training time (AVX2, 2 cores)",
               xlabel="training seconds", ylabel="rel_l2")
        ax.legend(fontsize=6)
    fig.tight_layout()
    files.save_png(fig, path, dpi=70)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", default="", help="a run, or pretrained[:name]")
    parser.add_argument("--name", default="", help="the model's name in records and the figure")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--samples", default="", help="HDF5 sample set (default: the model_dir's val_samples.h5)")
    parser.add_argument("--num_samples", type=int, default=0, help="the first this many samples (0: all)")
    parser.add_argument("--reference_cache", default="")
    parser.add_argument("--plot", default="", help="PNG path (default benchmarks/results/error_<name>_<N>.png)")
    parser.add_argument("--training_plot", default="", help="draw the training-time figure to this PNG and stop")
    args = parser.parse_args()
    if args.training_plot:
        print("wrote", training_plot(args.training_plot))
        return
    if not args.model_dir or not args.name:
        parser.error("--model_dir and --name are required (or --training_plot)")
    if args.num_samples < 0:
        parser.error(f"--num_samples must be >= 0 (0: all), got {args.num_samples}")
    result = analyse(args.model_dir, args.resolution, args.samples, args.num_samples, args.reference_cache)
    result.update(model=args.name, summary=summary(result))
    path = _common.write("error_analysis", [result], vars(args))
    figure = plot(result, args.name, args.plot or os.path.join(_common.RESULTS,
                                                                 f"error_{args.name}_{args.resolution}.png"))
    print(json.dumps(result["summary"], indent=1))
    print("wrote", path, "and", figure)


if __name__ == "__main__":
    main()
