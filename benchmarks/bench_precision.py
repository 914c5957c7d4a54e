"""Mixed precision accuracy and speed: the same multigrid training in float32 and bfloat16, one process.

Usage: python benchmarks/bench_precision.py [--precisions float32,bfloat16] [--levels 16,32,64] [--epochs_per_visit 20,10,8]
On CPU the trainer refuses 16-bit training; this script overrides that check to measure why (a run that
diverges is recorded as such, with the error).
A single run per precision, deliberately (a whole training; "repeats": 1, "warmup": 0 in the record):
train_seconds is the wall time of training.train, start-up (tracing, data generation) and validation included,
and train_seconds_times holds that one run.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--levels", default="16,32,64")
    parser.add_argument("--epochs_per_visit", default="20,10,8")
    args = parser.parse_args()
    os.environ["POISSON_TF_ALLOW_CPU_MIXED_PRECISION"] = "1"
    from poisson_tf import config
    from poisson_tf import training

    levels = tuple(int(x) for x in args.levels.split(","))
    epochs = tuple(int(x) for x in args.epochs_per_visit.split(","))
    records = []
    for precision in args.precisions.split(","):
        cfg = config.TrainConfig(cycle=config.CycleConfig(levels=levels, epochs_per_visit=epochs),
                                 optim=config.OptimConfig(precision=precision),
                                 run=config.RunConfig(model_dir=tempfile.mkdtemp(prefix=f"precision_{precision}_"),
                                                      verbose=0, validate_every=100, val_resolutions=(levels[-1],)))
        start = time.perf_counter()
        record = {"precision": precision, "levels": list(levels), "epochs_per_visit": list(epochs)}
        try:
            v = training.train(cfg)["validation"]
            record.update(diverged=False, rel_l2=v[f"eval/res{levels[-1]}/rel_l2"],
                          energy_gap=v[f"eval/res{levels[-1]}/energy_gap"])
        except RuntimeError as e:
            record.update(diverged=True, error=str(e), rel_l2=float("nan"), energy_gap=float("nan"))
        record["train_seconds"] = time.perf_counter() - start
        record.update(train_seconds_times=[record["train_seconds"]], repeats=1, warmup=0)
        records.append(record)
        print(f"{precision:>9}: {record['train_seconds']:.0f} s, " + (
            f"DIVERGED: {record['error']}" if record["diverged"] else
            f"rel_l2 at {levels[-1]}^3 {record['rel_l2']:.2%}, energy_gap {record['energy_gap']:.3f}"))
    print(_common.write("precision", records, vars(args)))


if __name__ == "__main__":
    main()
