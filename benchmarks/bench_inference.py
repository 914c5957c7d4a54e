"""Inference versus the reference solver: seconds per field for the network and for AMG-CG, with accuracy.

Usage: python benchmarks/bench_inference.py [--model_dir runs/demo] [--resolutions 32,64,128] [--samples 3]
AMG-CG is timed at the reference tolerance (1e-10) and at a loose one (1e-3); rel_l2 of each is against the
1e-10 solution.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", default="runs/demo")
    parser.add_argument("--resolutions", default="32,64,128")
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    import numpy as np

    from poisson_tf import data, fields, inference, reference

    model = inference.load_solver(args.model_dir)
    coeffs = data.SampleSet.load(os.path.join(args.model_dir, "val_samples.h5")).coeffs[:args.samples]
    records = []
    for n in map(int, args.resolutions.split(",")):
        inference.predict(model, fields.kl_diffusivity(coeffs[0], n))  # trace
        row = {"resolution": n, "samples": len(coeffs)}
        net_s, net_err, tight_s, loose_s, loose_err = [], [], [], [], []
        for c in coeffs:
            nu = fields.kl_diffusivity(c, n)
            start = time.perf_counter()
            u = inference.predict(model, nu)[0]
            net_s.append(time.perf_counter() - start)
            u_ref, rec = reference.solve(nu, rtol=1e-10)
            tight_s.append(rec.seconds)
            u_loose, rec_loose = reference.solve(nu, rtol=1e-3)
            loose_s.append(rec_loose.seconds)
            net_err.append(np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref))
            loose_err.append(np.linalg.norm(u_loose - u_ref) / np.linalg.norm(u_ref))
        row.update(network_seconds=float(np.mean(net_s)), network_rel_l2=float(np.mean(net_err)),
                   amg_seconds_rtol1e10=float(np.mean(tight_s)), amg_seconds_rtol1e3=float(np.mean(loose_s)),
                   amg_rel_l2_rtol1e3=float(np.mean(loose_err)),
                   speedup_vs_amg_1e10=float(np.mean(tight_s) / np.mean(net_s)))
        records.append(row)
        print(f"N={n:4d}: network {row['network_seconds']:.3f} s/field (rel_l2 {row['network_rel_l2']:.2%}); AMG-CG "
              f"{row['amg_seconds_rtol1e10']:.2f} s at rtol 1e-10, {row['amg_seconds_rtol1e3']:.2f} s at 1e-3 "
              f"(rel_l2 {row['amg_rel_l2_rtol1e3']:.1e}); network {row['speedup_vs_amg_1e10']:.0f}x faster")
    print(_common.write("inference", records, vars(args)))


if __name__ == "__main__":
    main()
