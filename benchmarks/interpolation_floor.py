"""The error a working resolution adds by itself: reference solutions at N = --source interpolated (trilinearly,
by models.Resample3D, as a network with --working_resolution interpolates its exact-plane output) to each of
--targets, against the reference solutions there. By the triangle inequality a network running at the source
resolution is at most its own error plus this floor from the finer reference; measured, the two combine
closer to their root sum of squares.

Usage: python benchmarks/interpolation_floor.py [--model_dir pretrained] [--source 32] [--targets 64,128]
          [--num_samples 0] [--reference_cache DIR]
The fields are the model_dir's sample set (val_samples.h5; the shipped solver's held-out set by default). One
JSON line per target resolution goes to benchmarks/results/interpolation_floor.jsonl: rel_l2 and the 2J error
(energy_gap) per field, their mean and worst.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def floor(coeffs: np.ndarray, eta: float, source: int, target: int, store) -> list:
    """[{rel_l2, energy_gap}] per field: the source reference interpolated to target against the target one."""
    import tensorflow as tf

    from poisson_tf import metrics, models

    out = []
    for c in coeffs:
        _, u_source = store.get(c, eta, source)
        nu, u_ref = store.get(c, eta, target)
        u = models.Resample3D(target, dtype="float64")(tf.constant(u_source[None, ..., None])).numpy()[..., 0]
        (m,) = metrics.field_metrics(u, u_ref[None], nu[None])  # the project's rel_l2 and energy_gap
        out.append({"rel_l2": m["rel_l2"], "energy_gap": m["energy_gap"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", default="pretrained", help="whose sample set (pretrained[:name] or a run)")
    parser.add_argument("--source", type=int, default=32, help="the working resolution")
    parser.add_argument("--targets", default="64,128", help="resolutions to interpolate to")
    parser.add_argument("--num_samples", type=int, default=0, help="first fields of the set (0: all)")
    parser.add_argument("--reference_cache", default="", help="reference cache directory (default: the user's)")
    args = parser.parse_args()
    from poisson_tf import fields, modeldir, pretrained, solvers
    from poisson_tf.training import data

    model_dir = pretrained.resolve_model_dir(args.model_dir)
    cfg = modeldir.load_config(model_dir)
    targets = [fields.check_resolution(int(n)) for n in args.targets.split(",")]
    fields.check_resolution(args.source)
    samples = data.SampleSet.load(os.path.join(model_dir, "val_samples.h5"), num_terms=cfg.data.num_terms)
    coeffs = samples.coeffs[:args.num_samples or None]
    store = solvers.ReferenceStore(args.reference_cache)
    records = []
    for target in targets:
        per_field = floor(coeffs, samples.eta, args.source, target, store)
        rel, gap = (np.array([f[k] for f in per_field]) for k in ("rel_l2", "energy_gap"))
        records.append({"source": args.source, "target": target, "num_samples": len(coeffs),
                        "rel_l2": float(rel.mean()), "rel_l2_worst": float(rel.max()),
                        "energy_gap": float(gap.mean()), "energy_gap_worst": float(gap.max()),
                        "per_sample": per_field})
        print(f"{args.source} -> {target}: rel_l2 {rel.mean():.3%} (worst {rel.max():.3%}), "
              f"2J error {gap.mean():.3%} (worst {gap.max():.3%}) over {len(coeffs)} fields")
    path = _common.write("interpolation_floor", records, vars(args) | {"model_dir": model_dir})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
