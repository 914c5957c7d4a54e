"""Records a poisson-tf-evaluate report as benchmark results, so the accuracy tables come from files.

Usage: python benchmarks/record_evaluation.py --report runs/demo/eval/report.json --model demo
          [--command "make demo"] [--wall_seconds 300] [--peak_gib 15.2]
One JSON line per evaluated resolution goes to benchmarks/results/evaluation.jsonl: the mean and worst sample
rel_l2, the mean energy_gap and flux_error, each next to the u = 1 - x baseline, the network's seconds per field,
whether the resolution is zero-shot (finer than any trained level); and the run's training settings and time
(from its config.json and train_summary.json). --wall_seconds and --peak_gib are what the caller measured around
the job (e.g. `make demo`'s wall time, /usr/bin/time's maximum resident set of the evaluation).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def records(report: dict, model: str, config: dict, summary: dict) -> list:
    out = []
    for n, r in sorted(report["resolutions"].items(), key=lambda item: int(item[0])):
        worst = max(r["per_sample"], key=lambda s: s["rel_l2"])
        out.append({
            "model": model, "resolution": int(n), "num_samples": r["num_samples"], "zero_shot": r["zero_shot"],
            "rel_l2": r["model"]["rel_l2"], "rel_l2_worst": worst["rel_l2"], "worst_sample": worst["sample"],
            "energy_gap": r["model"]["energy_gap"], "flux_error": r["model"]["flux_error"],
            "baseline_rel_l2": r["baseline"].get("rel_l2"), "baseline_energy_gap": r["baseline"].get("energy_gap"),
            "seconds_per_field": r["inference_seconds_per_field"],
            "trained_resolutions": report.get("trained_resolutions"), "workers": report.get("workers"),
            "preset": config.get("preset"), "model_config": config.get("model"), "cycle": config.get("cycle"),
            "optim": config.get("optim"), "num_train": config.get("data", {}).get("num_train"),
            "train_seconds": summary.get("fit_seconds"),
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", required=True, help="a poisson-tf-evaluate report.json")
    parser.add_argument("--model", required=True, help="a name for the model in the tables (e.g. demo)")
    parser.add_argument("--model_dir", default="", help="the run (default: the report's model_dir)")
    parser.add_argument("--command", default="", help="the command that trained it")
    parser.add_argument("--wall_seconds", type=float, default=None, help="the training job's measured wall time")
    parser.add_argument("--peak_gib", type=float, default=None, help="the evaluation's measured peak memory")
    args = parser.parse_args()
    with open(args.report) as f:
        report = json.load(f)
    model_dir = args.model_dir or report["model_dir"]
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    summary = {}
    if os.path.exists(os.path.join(model_dir, "train_summary.json")):
        with open(os.path.join(model_dir, "train_summary.json")) as f:
            summary = json.load(f)
    rows = records(report, args.model, config, summary)
    for row in rows:
        row.update(command=args.command, wall_seconds=args.wall_seconds, eval_peak_gib=args.peak_gib,
                   repeats=1, warmup=0)
        print(f"{row['model']} {row['resolution']}^3: rel_l2 {row['rel_l2']:.2%} (worst {row['rel_l2_worst']:.2%}, "
              f"u = 1 - x {row['baseline_rel_l2']:.2%}) over {row['num_samples']} fields")
    print(_common.write("evaluation", rows, vars(args)))


if __name__ == "__main__":
    main()
