"""Reference solves, assembled AMG-CG and matrix-free GMG-CG: iterations, seconds, peak memory, agreement.

Usage: python benchmarks/bench_reference.py [--resolutions 32,64,128,256,512] [--methods amg,gmg]
                                            [--samples sobol0,corner] [--rtol 1e-10]
POISSON_TF_GMG_THREADS=1 measures GMG on one core (default: 2 threads; the records carry the count).
Each (N, method, sample) runs in a fresh process, so its peak resident memory is its own. AMG runs only where
its assembled hierarchy fits (N <= AMG_MAX_RESOLUTION: 3.6 GiB at 128^3, ~29 GiB at 256^3); GMG runs at every N,
and where AMG ran too, records the relative difference of the two solutions. GMG records its analytic memory
estimate (gmg.memory_estimate) next to the measured peak.
Timing: each solve is a single run, deliberately ("repeats": 1 in the record: from 256^3 on one solve takes a
minute or more, and the fresh process's peak memory is the point); seconds and setup_seconds are the solver's
own (solvers.SolveRecord) and seconds_times holds that one run. It follows one untimed warm-up solve of the
same sample and method at min(N, WARMUP_RESOLUTION)^3 ("warmup": 1, "warmup_resolution"), so the timed solve
does not pay the process's first-call costs (lazy imports, thread pools) while its peak memory stays its own.
Targets (issue 12): 256^3 < 10 min and < 8 GiB; 512^3 < 60 min and < 20 GiB; iterations roughly independent of N
at contrast up to 1e3; 128^3 GMG at least 2x faster than AMG at rtol 1e-10.
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

AMG_MAX_RESOLUTION = 128
WARMUP_RESOLUTION = 32  # the untimed solve before the timed one (or at N, if smaller): GMG's V-cycle on two
#                        grids, AMG's set-up; its memory (< 0.1 GiB) is negligible next to the timed solve's
SAMPLES = {  # name -> KL coefficients w in [-3, 3]^4
    "sobol0": "sobol seed 0, first point",  # the sample of the earlier AMG-only records
    "sobol1": "sobol seed 0, second point",
    "corner": [3.0, -3.0, 3.0, -3.0],  # a corner of the box: the highest contrast of the family (~1e5)
}


def coefficients(sample: str):
    from poisson_tf import fields

    if sample.startswith("sobol"):
        return fields.sample_coeffs(int(sample[5:]) + 1, seed=0, method="sobol")[-1]
    return SAMPLES[sample]


def child(resolution: int, method: str, sample: str, rtol: float, solution_path: str) -> None:
    import numpy as np

    from poisson_tf import fields
    from poisson_tf.solvers import gmg
    from poisson_tf import solvers

    coeffs = coefficients(sample)
    nu = fields.kl_diffusivity(coeffs, resolution)
    contrast = float(nu.max() / nu.min())
    warmup_resolution = min(resolution, WARMUP_RESOLUTION)
    solvers.solve(fields.kl_diffusivity(coeffs, warmup_resolution), rtol=rtol, method=method)  # untimed
    u, record = solvers.solve(nu, rtol=rtol, method=method)
    out = dict(record.as_dict(), sample=sample, coeffs=[float(c) for c in coeffs], contrast=contrast,
               unknowns=(resolution - 2) * resolution ** 2)
    out.update(seconds_times=[out["seconds"]], repeats=1, warmup=1, warmup_resolution=warmup_resolution)
    if method == "amg":
        np.save(solution_path, u)
    else:
        estimate = gmg.memory_estimate(resolution)
        out.update(levels=gmg.grid_sizes(resolution), threads=gmg.default_threads(),
                   estimated_peak_gib=round(estimate["total"] / 1024 ** 3, 3),
                   estimate_gib={k: round(v / 1024 ** 3, 3) for k, v in estimate.items()})
        if os.path.exists(solution_path):
            u_amg = np.load(solution_path)
            out["relative_difference_to_amg"] = float(np.linalg.norm(u - u_amg) / np.linalg.norm(u_amg))
    out["peak_rss_gib"] = round(_common.peak_rss_gib(), 3)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolutions", default="32,64,128")
    parser.add_argument("--methods", default="amg,gmg")
    parser.add_argument("--samples", default="sobol0,corner", help=f"comma-separated, from {sorted(SAMPLES)}")
    parser.add_argument("--rtol", type=float, default=1e-10)
    parser.add_argument("--child", nargs=4, metavar=("N", "METHOD", "SAMPLE", "SOLUTION"))
    args = parser.parse_args()
    if args.child:
        n, method, sample, path = args.child
        return child(int(n), method, sample, args.rtol, path)
    methods = [m for m in ("amg", "gmg") if m in args.methods.split(",")]  # amg first: gmg compares to it
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, args.resolutions.split(",")):
            for sample in args.samples.split(","):
                path = os.path.join(tmp, f"amg_{n}_{sample}.npy")
                for method in methods:
                    if method == "amg" and n > AMG_MAX_RESOLUTION:
                        print(f"N={n:4d}  amg skipped: its assembled hierarchy does not fit in memory above "
                              f"N={AMG_MAX_RESOLUTION}", flush=True)
                        continue
                    r = _common.run_child(__file__, "--child", str(n), method, sample, path, f"--rtol={args.rtol}")
                    records.append(r)
                    extra = (f"  estimate={r['estimated_peak_gib']:.2f} GiB" if "estimated_peak_gib" in r else "")
                    if "relative_difference_to_amg" in r:
                        extra += f"  |u - u_amg|/|u_amg|={r['relative_difference_to_amg']:.1e}"
                    print(f"N={n:4d}  {method}  {sample:6s} contrast={r['contrast']:8.1e}  "
                          f"iterations={r['iterations']:3d}  "
                          f"solve={r['seconds']:8.2f} s (setup {r['setup_seconds']:.2f} s)  "
                          f"peak={r['peak_rss_gib']:.2f} GiB{extra}  residual={r['relative_residual']:.1e}", flush=True)
    print(_common.write("reference", records, {"rtol": args.rtol, "samples": args.samples,
                                               "amg_max_resolution": AMG_MAX_RESOLUTION}))


if __name__ == "__main__":
    main()
