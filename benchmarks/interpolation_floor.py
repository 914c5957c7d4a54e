"""How much resolution a family of media needs: reference solutions at N = each of --sources interpolated
(trilinearly, by models.Resample3D, as a network with --working_resolution interpolates its exact-plane output)
to each finer one of --targets, against the reference solutions there, for every metric (metrics.field_metrics).

It is also the error a working resolution adds by itself: by the triangle inequality a network running at the
source resolution is at most its own error plus this floor from the finer reference; measured, the two combine
closer to their root sum of squares.

Usage: python benchmarks/interpolation_floor.py [--families kl,grf,twophase] [--sources 32,64,128]
          [--targets 128,256] [--num_samples 3] [--seed 7] [--model_dir RUN] [--reference_cache DIR]
          [--eta E] [--num_terms M] [--sigma S] [--contrast C] [--threshold T]
The fields are --num_samples i.i.d. draws (seed --seed) of each family with its defaults or the parameters given,
or, with --model_dir (pretrained[:name] or a run), that model_dir's sample set and family. One JSON line per
(family, source, target) goes to benchmarks/results/interpolation_floor.jsonl: every metric per field, the mean
and the worst; a target is used only when it is above the source (and equal, as the identity check, when it is).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def floor(family, coeffs: np.ndarray, source: int, target: int, store) -> list:
    """metrics.field_metrics per field: the source reference interpolated to target against the target one."""
    import tensorflow as tf

    from poisson_tf import metrics, models

    out = []
    for c in coeffs:
        _, u_source = store.get(family, c, source)
        nu, u_ref = store.get(family, c, target)
        u = models.Resample3D(target, dtype="float64")(tf.constant(u_source[None, ..., None])).numpy()[..., 0]
        (m,) = metrics.field_metrics(u, u_ref[None], nu[None])
        out.append(m)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default="kl,grf,twophase", help="families (fields.FAMILIES) to measure")
    parser.add_argument("--model_dir", default="", help="take the fields and family of this model_dir's sample set "
                                                        "(pretrained[:name] or a run) instead of drawing them")
    parser.add_argument("--sources", default="32,64,128", help="resolutions of the interpolated references")
    parser.add_argument("--targets", default="128,256", help="resolutions to interpolate to")
    parser.add_argument("--num_samples", type=int, default=3, help="fields per family (with --model_dir: 0 = all)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the drawn fields")
    for name, kind in (("eta", float), ("num_terms", int), ("sigma", float), ("contrast", float),
                       ("threshold", float)):
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"the families' {name} (default: each one's)")
    parser.add_argument("--reference_cache", default="", help="reference cache directory (default: the user's)")
    args = parser.parse_args()
    from poisson_tf import fields, modeldir, pretrained, solvers
    from poisson_tf.training import data

    sources = [fields.check_resolution(int(n)) for n in args.sources.split(",")]
    targets = [fields.check_resolution(int(n)) for n in args.targets.split(",")]
    store = solvers.ReferenceStore(args.reference_cache)
    if args.model_dir:
        model_dir = pretrained.resolve_model_dir(args.model_dir)
        samples = data.SampleSet.load(os.path.join(model_dir, modeldir.VAL_SAMPLES_FILE))
        cases = [(samples.family, samples.coeffs[:args.num_samples or None])]
    else:
        given = {k: getattr(args, k) for k in ("sigma", "contrast", "threshold") if getattr(args, k) is not None}
        cases = []
        for kind in args.families.split(","):
            family = fields.Family.of(kind, args.eta, args.num_terms,
                                      **(given if kind != "kl" else {}))
            cases.append((family, family.sample(args.num_samples, "uniform", args.seed)))
    records = []
    for family, coeffs in cases:
        for source in sources:
            for target in (t for t in targets if t >= source):
                per_field = floor(family, coeffs, source, target, store)
                record = {"family": family.params(), "source": source, "target": target,
                          "num_samples": len(coeffs), "per_sample": per_field}
                for key in per_field[0]:
                    values = np.array([f[key] for f in per_field])
                    record[key], record[f"{key}_worst"] = float(values.mean()), float(values.max())
                records.append(record)
                print(f"{family.describe()}: {source} -> {target}: rel_l2 {record['rel_l2']:.3%} (worst "
                      f"{record['rel_l2_worst']:.3%}), 2J error {record['energy_gap']:.3%}, energy norm "
                      f"{record['energy_norm_error']:.3%}, flux field {record['flux_field_error']:.3%}, inlet flux "
                      f"{record['flux_error']:.3%} over {len(coeffs)} fields", flush=True)
    path = _common.write("interpolation_floor", records, vars(args))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
