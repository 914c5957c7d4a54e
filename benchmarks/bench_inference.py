"""The network against the reference solver at matched accuracy: seconds per field for the network's compiled
forward pass, for the solver to reach the network's rel_l2 (CG stopped there, set-up included), and to reach
rtol 1e-10; and the warm start (the network's prediction as CG's initial guess) at rtol 1e-8.

Usage: python benchmarks/bench_inference.py [--model_dir runs/demo] [--resolutions 32,64,128,256] [--samples 3]
The solver is solvers.solve's default (assembled AMG below 48^3, matrix-free GMG from 48^3). rel_l2 is against
the 1e-10 solution.
Timing: the network is timed after a warm-up call (tracing), --repeats calls per field: network_seconds is
their median and network_seconds_times every call's seconds (per_sample rows; at the top level one list per
sample, in per_sample's order, while network_seconds there is the mean of the samples' medians). Each solver
time is a single run, deliberately ("solver_repeats": 1: a 1e-10 solve takes about a minute at 256^3): every
resolution starts with an untimed warm-up solve of the first field to rtol 1e-2 (assembly or hierarchy set-up
and a few CG iterations, "solver_warmup": 1), so that no timed solve is the process's first at that size.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", default="runs/demo")
    parser.add_argument("--resolutions", default="32,64,128,256")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import numpy as np
    import tensorflow as tf

    from poisson_tf import fields, inference
    from poisson_tf.training import data
    from poisson_tf import solvers

    model = inference.load_solver(args.model_dir)
    forward = tf.function(lambda nu: model(nu, training=False), reduce_retracing=True)
    coeffs = data.SampleSet.load(os.path.join(args.model_dir, "val_samples.h5")).coeffs[:args.samples]
    records = []
    for n in map(int, args.resolutions.split(",")):
        solvers.solve(fields.kl_diffusivity(coeffs[0], n), rtol=1e-2)  # the solver's warm-up, untimed
        rows = []
        for c in coeffs:
            nu = fields.kl_diffusivity(c, n)
            batch = tf.constant(nu[None, ..., None], tf.float32)
            network = _common.timing(lambda: forward(batch).numpy(), repeats=args.repeats, warmup=1)
            u = forward(batch).numpy()[0, ..., 0].astype(np.float64)
            u_ref, tight = solvers.solve(nu, rtol=1e-10)
            norm = np.linalg.norm(u_ref)
            error = float(np.linalg.norm(u - u_ref) / norm)
            _, matched = solvers.solve(nu, rtol=1e-10, stop=lambda v: np.linalg.norm(v - u_ref) <= error * norm)
            _, cold = solvers.solve(nu, rtol=1e-8)
            _, warm = solvers.solve(nu, rtol=1e-8, x0=u)
            rows.append({"network_seconds": network["median"], "network_seconds_times": network["times"],
                         "network_rel_l2": error,
                         "solver_method": tight.method, "solver_seconds_1e10": tight.seconds,
                         "solver_iterations_1e10": tight.iterations, "solver_seconds_matched": matched.seconds,
                         "solver_iterations_matched": matched.iterations,
                         "cold_seconds_1e8": cold.seconds, "cold_iterations_1e8": cold.iterations,
                         "warm_seconds_1e8": warm.seconds, "warm_iterations_1e8": warm.iterations})
        row = {"resolution": n, "samples": len(rows), "per_sample": rows,
               **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]
                  if k not in ("solver_method", "network_seconds_times")},
               "network_seconds_times": [r["network_seconds_times"] for r in rows],
               "repeats": args.repeats, "warmup": 1, "solver_repeats": 1, "solver_warmup": 1,
               "solver_method": rows[0]["solver_method"]}
        row["speedup_matched"] = row["solver_seconds_matched"] / row["network_seconds"]
        row["speedup_1e10"] = row["solver_seconds_1e10"] / row["network_seconds"]
        row["warm_seconds_saved_1e8"] = row["cold_seconds_1e8"] - row["warm_seconds_1e8"] - row["network_seconds"]
        records.append(row)
        print(f"N={n:4d}: network {row['network_seconds']:.3f} s (rel_l2 {row['network_rel_l2']:.2%}); "
              f"{row['solver_method']}-CG to that error {row['solver_seconds_matched']:.2f} s "
              f"({row['solver_iterations_matched']:.1f} it, {row['speedup_matched']:.0f}x the network), to 1e-10 "
              f"{row['solver_seconds_1e10']:.2f} s; warm start at 1e-8: {row['warm_iterations_1e8']:.1f} instead of "
              f"{row['cold_iterations_1e8']:.1f} iterations, {row['warm_seconds_1e8']:.2f} + "
              f"{row['network_seconds']:.2f} s instead of {row['cold_seconds_1e8']:.2f} s")
    print(_common.write("inference", records, vars(args)))


if __name__ == "__main__":
    main()
