"""The peak-memory estimates the command lines check before they compute (poisson_tf.memory) against the peaks
measured: each case runs the real command line in a child process and takes its maximum resident size.

Usage: python benchmarks/bench_memory.py [--predict pretrained:128,pretrained:256,runs/demo:256]
                                         [--solve 128,256] [--train 128]
A case "MODEL_DIR:N" predicts one KL field at N with that model (batch 1); "N" for --solve solves one at N (the
package's default method); "N" for --train trains the small preset 8 steps of batch 1 at N (validation at 16^3,
so that the step's peak is what is measured). One JSON line per case to benchmarks/results/memory.jsonl: estimate_gib (the
estimate memory.check compares), measured_gib (ru_maxrss of the child), their ratio. Target (issue 28): every
estimate within 25% of the measured peak. A single run per case, deliberately ("repeats": 1): the peak, not a
time, is the point.
"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

BIN = os.path.dirname(sys.executable)


def peak_of(command: list) -> float:
    """GiB: the maximum resident size of the child running command (its own, not this process's)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read()
    process.stderr.close()
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stderr[-2000:]}")
    return usage.ru_maxrss / 1024 ** 2  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--predict", default="pretrained:128,pretrained:256", help="MODEL_DIR:N cases")
    parser.add_argument("--solve", default="128,256", help="resolutions of the solve cases")
    parser.add_argument("--train", default="128", help="resolutions of the training cases")
    args = parser.parse_args()
    from poisson_tf import config, memory, modeldir, pretrained

    records = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.h5")
        for case in filter(None, args.predict.split(",")):
            model_dir, _, n = case.rpartition(":")
            n = int(n)
            cfg = modeldir.load_config(pretrained.resolve_model_dir(model_dir)).model
            parts = memory.prediction_parts(cfg, n, 1, 1, 8)
            estimate = memory.FRAMEWORK_BYTES + sum(parts.values())
            measured = peak_of([os.path.join(BIN, "poisson-tf-predict"), f"--model_dir={model_dir}",
                                "--coeffs=" + ",".join(["0.5"] * modeldir.load_config(
                                    pretrained.resolve_model_dir(model_dir)).data.num_terms),
                                f"--resolution={n}", f"--output={out}"])
            records.append({"command": "predict", "model_dir": model_dir, "resolution": n,
                            "parts_gib": {k: v / memory.GIB for k, v in parts.items()}})
            records[-1].update(estimate_gib=estimate / memory.GIB, measured_gib=measured)
        for n in (int(x) for x in filter(None, args.solve.split(","))):
            parts = memory.solve_parts(n, 1)
            measured = peak_of([os.path.join(BIN, "poisson-tf-solve"), "--coeffs=0.5,0.5,0.5,0.5",
                                f"--resolution={n}", f"--output={out}"])
            records.append({"command": "solve", "resolution": n,
                            "parts_gib": {k: v / memory.GIB for k, v in parts.items()},
                            "estimate_gib": sum(parts.values()) / memory.GIB, "measured_gib": measured})
        for n in (int(x) for x in filter(None, args.train.split(","))):
            flags = [f"--cycle={n}:8s", "--global_batch_size=1", "--num_train=4", "--num_val=1", "--val_resolutions=16",
                     "--verbose=0", "--checkpoint_seconds=1000"]
            cfg = config.override({"cycle.cycle": f"{n}:8s", "optim.global_batch_size": 1, "data.num_train": 4,
                                   "data.num_val": 1, "run.val_resolutions": ["16"]})
            parts = memory.training_parts(cfg)
            measured = peak_of([os.path.join(BIN, "poisson-tf-train"), f"--model_dir={tmp}/run{n}", *flags])
            records.append({"command": "train", "resolution": n,
                            "parts_gib": {k: v / memory.GIB for k, v in parts.items()},
                            "estimate_gib": (memory.FRAMEWORK_BYTES + sum(parts.values())) / memory.GIB,
                            "measured_gib": measured})
    for r in records:
        r.update(ratio=r["estimate_gib"] / r["measured_gib"], repeats=1, warmup=0)
        print(f"{r['command']:>8} {r.get('model_dir', ''):>12} N={r['resolution']:4d}: estimate "
              f"{r['estimate_gib']:6.2f} GiB, measured {r['measured_gib']:6.2f} GiB, ratio {r['ratio']:.2f}")
    print(_common.write("memory", records, vars(args)))


if __name__ == "__main__":
    main()
