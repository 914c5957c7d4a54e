"""Renders the benchmark JSON lines (benchmarks/results/*.jsonl) into README.rst between the results markers.

Usage: python benchmarks/render_readme.py [--readme README.rst]
The newest record of each configuration wins; a benchmark without results is left out.
"""
import argparse
import json
import os

RESULTS = os.environ.get("POISSON_TF_BENCH_RESULTS",
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
START, END = ".. results-start", ".. results-end"


def load(name: str, key) -> list:
    path = os.path.join(RESULTS, f"{name}.jsonl")
    if not os.path.exists(path):
        return []
    latest = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            latest[key(record)] = record
    return list(latest.values())


def table(title: str, command: str, header: list, rows: list) -> str:
    if not rows:
        return ""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    lines = [title, "~" * len(title), "", f"``{command}``", "", rule,
             "  ".join(h.ljust(w) for h, w in zip(header, widths)), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells[1:]]
    return "\n".join(lines + [rule, "", ""])


def render() -> str:
    out = []
    rows = load("reference", lambda r: (r["resolution"], r.get("method", "amg"), r.get("sample", "sobol0")))
    out.append(table("Reference AMG-CG solve and matrix-free GMG-CG (rtol 1e-10)",
                     "python benchmarks/bench_reference.py --resolutions 32,64,128,256,512",
                     ["N", "method", "sample", "contrast", "unknowns", "iterations", "seconds", "setup s", "peak GiB",
                      "vs AMG"],
                     [[r["resolution"], r.get("method", "amg"), r.get("sample", "sobol0"),
                       f"{r['contrast']:.0e}" if "contrast" in r else "", f"{r['unknowns']:,}", r["iterations"],
                       f"{r['seconds']:.2f}", f"{r['setup_seconds']:.2f}", f"{r['peak_rss_gib']:.2f}",
                       f"{r['relative_difference_to_amg']:.0e}" if "relative_difference_to_amg" in r else ""]
                      for r in sorted(rows, key=lambda r: (r["resolution"], r.get("sample", "sobol0"),
                                                           r.get("method", "amg")))]))
    rows = load("energy", lambda r: (r["resolution"], r["batch"]))
    out.append(table("FEM energy loss next to one conv3d layer (voxels/s)", "python benchmarks/bench_energy.py",
                     ["N", "energy fwd", "energy fwd+bwd", "conv3d 2^3 1->24", "conv3d 3^3 16->16"],
                     [[r["resolution"], f"{r['energy_forward_voxels_per_s']:.2e}",
                       f"{r['energy_forward_backward_voxels_per_s']:.2e}", f"{r['conv3d_2x2x2_1to24_voxels_per_s']:.2e}",
                       f"{r['conv3d_3x3x3_16to16_voxels_per_s']:.2e}"] for r in sorted(rows, key=lambda r: r["resolution"])]))
    rows = load("pipeline", lambda r: (r["resolution"], r["preset"], r["batch"]))
    out.append(table("Input pipeline next to training (samples/s)", "python benchmarks/bench_pipeline.py",
                     ["N", "pipeline (uncached)", "training (small, batch 2)", "ratio"],
                     [[r["resolution"], f"{r['pipeline_samples_per_s']:.0f}", f"{r['training_samples_per_s']:.1f}",
                       f"{r['ratio']:.0f}x"] for r in sorted(rows, key=lambda r: r["resolution"])]))
    rows = load("models", lambda r: (r["preset"], r["resolution"], r["batch"]))
    out.append(table("Step time and peak memory per preset (batch 1)", "python benchmarks/bench_models.py",
                     ["preset", "params", "N", "forward s", "fwd+bwd s", "peak GiB inference", "peak GiB training"],
                     [[r["preset"], f"{r['params']:,}", r["resolution"], f"{r['forward_seconds']:.3f}",
                       f"{r['step_seconds']:.3f}", f"{r.get('peak_inference_gib', float('nan')):.2f}",
                       f"{r['peak_rss_gib']:.2f}"] for r in rows]))
    rows = load("throughput", lambda r: (r["preset"], r["resolution"], r["precision"], r["batch"]))
    out.append(table("Training throughput and efficiency (batch 2, 2 threads)", "python benchmarks/bench_throughput.py",
                     ["preset", "N", "precision", "voxels/s", "FLOP/voxel (fwd)", "GFLOP/s", "matmul GFLOP/s",
                      "efficiency"],
                     [[r["preset"], r["resolution"], r["precision"], f"{r['voxels_per_s']:.2e}",
                       f"{r['flops_per_voxel']:.0f}", f"{r['achieved_flops'] / 1e9:.1f}",
                       f"{r['matmul_flops'] / 1e9:.0f}", f"{r['efficiency']:.0%}"] for r in rows]))
    rows = load("scaling", lambda r: (r["workers"], r["resolution"], r["transport"]))
    out.append(table("Horovod weak scaling (1 thread per worker, batch 2 per worker)",
                     "python benchmarks/bench_scaling.py --resolution=64",
                     ["workers", "transport", "N", "voxels/s per worker", "efficiency", "allreduce ms", "allreduce share"],
                     [[r["workers"], r["transport"], r["resolution"], f"{r['per_worker_voxels_per_s']:.2e}",
                       f"{r.get('weak_scaling_efficiency', 1):.0%}", f"{r['allreduce_seconds'] * 1e3:.2f}",
                       f"{r['allreduce_share']:.1%}"] for r in sorted(rows, key=lambda r: r["workers"])]))
    rows = load("inference", lambda r: r["resolution"])
    out.append(table("Network inference versus the AMG reference (demo model, s per field)",
                     "python benchmarks/bench_inference.py",
                     ["N", "network s", "network rel_l2", "AMG s (1e-10)", "AMG s (1e-3)", "AMG rel_l2 (1e-3)",
                      "speedup"],
                     [[r["resolution"], f"{r['network_seconds']:.3f}", f"{r['network_rel_l2']:.2%}",
                       f"{r['amg_seconds_rtol1e10']:.2f}", f"{r['amg_seconds_rtol1e3']:.2f}",
                       f"{r['amg_rel_l2_rtol1e3']:.1e}", f"{r['speedup_vs_amg_1e10']:.0f}x"]
                      for r in sorted(rows, key=lambda r: r["resolution"])]))
    rows = load("megavoxel", lambda r: (r["kind"], r["resolution"], r["precision"], r["preset"]))
    out.append(table("Megavoxel scale (small preset, batch 1)", "python benchmarks/bench_megavoxel.py",
                     ["task", "N", "Mvoxel", "precision", "seconds", "peak GiB"],
                     [[r["kind"], r["resolution"], f"{r['voxels'] / 1e6:.1f}", r["precision"],
                       f"{r.get('step_seconds', r.get('predict_seconds')):.2f}", f"{r['peak_rss_gib']:.2f}"]
                      for r in rows]))
    rows = load("precision", lambda r: (r["precision"], tuple(r["levels"]), tuple(r["epochs_per_visit"])))
    out.append(table("Mixed precision: the same training in float32 and bfloat16 (1 process)",
                     "python benchmarks/bench_precision.py",
                     ["precision", "levels", "epochs per visit", "train s", "rel_l2 finest", "energy_gap finest"],
                     [[r["precision"], ",".join(map(str, r["levels"])), ",".join(map(str, r["epochs_per_visit"])),
                       f"{r['train_seconds']:.0f}",
                       "diverged (NaN)" if r.get("diverged") or r["rel_l2"] != r["rel_l2"] else f"{r['rel_l2']:.2%}",
                       "-" if r.get("diverged") or r["energy_gap"] != r["energy_gap"] else f"{r['energy_gap']:.3f}"]
                      for r in rows]))
    rows = load("cycles", lambda r: (r["cycle"], tuple(r["levels"]), r["target"], r["settings"]["epochs_per_visit"],
                                     r["settings"].get("single_epochs_per_visit", 0)))

    def epochs_per_visit(r):
        if r["cycle"] == "single":
            return str(r["settings"].get("single_epochs_per_visit") or r["settings"]["epochs_per_visit"].split(",")[-1])
        return r["settings"]["epochs_per_visit"]

    out.append(table("Cycles until validation rel_l2 first reaches a target at the finest level (1 process)",
                     "python benchmarks/bench_cycles.py",
                     ["cycle", "levels", "epochs/visit", "target", "reached", "epochs", "train s", "voxels",
                      "best rel_l2", "speedup (time)", "speedup (voxels)"],
                     [[r["cycle"], ",".join(map(str, r["levels"])), epochs_per_visit(r), f"{r['target']:.0%}",
                       "yes" if r["reached"] else "no", r["epochs"], f"{r['train_seconds']:.0f}",
                       f"{r['training_voxels']:.2e}", f"{r['best_rel_l2']:.2%}",
                       f"{r['speedup_train_seconds']:.2f}x" if "speedup_train_seconds" in r else "-",
                       f"{r['speedup_voxels']:.2f}x" if "speedup_voxels" in r else "-"] for r in rows]))
    return "".join(out).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readme", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                         "README.rst"))
    args = parser.parse_args()
    with open(args.readme) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{args.readme} has no '{START}' ... '{END}' markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(args.readme, "w") as f:
        f.write(f"{head}{START}\n\n{render()}\n{END}{tail}")
    print(f"rendered {args.readme}")


if __name__ == "__main__":
    main()
