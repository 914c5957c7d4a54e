"""Reference AMG-CG solve: seconds, iterations and peak memory at N = 32, 64, 128 (one process per N).

Usage: python benchmarks/bench_reference.py [--resolutions 32,64,128]
Target (issue 3): the 128^3 solve in under a minute and under 8 GiB on the 2-core machine.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def child(resolution: int) -> None:
    from poisson_tf import fields, reference

    nu = fields.kl_diffusivity(fields.sample_coeffs(1, seed=0, method="sobol")[0], resolution)
    u, record = reference.solve(nu, rtol=1e-10)
    print(json.dumps(dict(record.as_dict(), unknowns=(resolution - 2) * resolution ** 2,
                          peak_rss_gib=round(_common.peak_rss_gib(), 3))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolutions", default="32,64,128")
    parser.add_argument("--child", type=int)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    records = [_common.run_child(__file__, "--child", str(n)) for n in map(int, args.resolutions.split(","))]
    for r in records:
        print(f"N={r['resolution']:4d}  unknowns={r['unknowns']:>9,d}  iterations={r['iterations']:3d}  "
              f"solve={r['seconds']:7.2f} s (AMG setup {r['setup_seconds']:.2f} s)  peak={r['peak_rss_gib']:.2f} GiB  "
              f"residual={r['relative_residual']:.1e}")
    print(_common.write("reference", records, {"rtol": 1e-10, "sample": "sobol seed 0, first"}))


if __name__ == "__main__":
    main()
