"""Cycle comparison: wall time and training voxels until validation rel_l2 at the finest level first reaches
a target, for each multigrid cycle and the single-level baseline, in one invocation on one machine.

Usage: python benchmarks/bench_cycles.py [--levels 16,32,64] [--target 0.05] [--cycles half_v,v,w,f,single]
          [--epochs_per_visit 4,2,1] [--max_cycles 40] [--single_epochs_per_visit N]
The demo schedule against single-level training validated every epoch:
  python benchmarks/bench_cycles.py --cycles=half_v,single --epochs_per_visit=60,30,40 --max_cycles=1
          --single_epochs_per_visit=1 --target=0.03
Each cycle repeats (num_cycles) until the target is met or max_cycles; validation runs at every visit end at
the finest level only. Training seconds exclude validation; wall seconds include it.
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
    parser.add_argument("--levels", default="16,32,64")
    parser.add_argument("--target", type=float, default=0.05)
    parser.add_argument("--cycles", default="half_v,v,w,f,single")
    parser.add_argument("--epochs_per_visit", default="4,2,1")
    parser.add_argument("--max_cycles", type=int, default=40)
    parser.add_argument("--single_epochs_per_visit", type=int, default=0,
                        help="epochs per visit of the single-level baseline (0: the finest level's)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    args = parser.parse_args()
    import keras

    from poisson_tf import config, models, trainer

    levels = tuple(int(x) for x in args.levels.split(","))
    finest = levels[-1]
    key = f"eval/res{finest}/rel_l2"

    class StopAtTarget(keras.callbacks.Callback):
        """Stops at the first validation that reaches the target; times training apart from validation."""

        def __init__(self, plan, global_batch, steps):
            super().__init__()
            self.resolutions, self.global_batch, self.steps = plan.epoch_resolutions(), global_batch, steps
            self.train_seconds, self.voxels, self.reached, self.best = 0.0, 0, None, float("inf")

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self._last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.train_seconds += self._last - self._start
            self.voxels += self.steps * self.global_batch * self.resolutions[epoch] ** 3
            if key in logs:
                self.best = min(self.best, logs[key])
                if logs[key] <= args.target and self.reached is None:
                    self.reached = epoch
                    self.model.stop_training = True

    epochs = tuple(int(x) for x in args.epochs_per_visit.split(","))
    records = []
    for cycle in args.cycles.split(","):
        cfg = config.TrainConfig(
            preset=args.preset, model=models.preset(args.preset), data=config.DataConfig(num_train=64, num_val=4),
            cycle=config.CycleConfig(levels=levels, cycle=cycle, epochs_per_visit=epochs if cycle != "single"
                                     else (args.single_epochs_per_visit or epochs[-1],),
                                     # single visits once per cycle: give it as many epochs as a cycle has visits
                                     num_cycles=args.max_cycles * (1 if cycle != "single" else
                                                                   4 * sum(epochs) // (args.single_epochs_per_visit
                                                                                       or epochs[-1]))),
            optim=config.OptimConfig(global_batch_size=4, learning_rate=args.learning_rate),
            run=config.RunConfig(model_dir=tempfile.mkdtemp(prefix=f"cycle_{cycle}_"), verbose=0,
                                 val_resolutions=(finest,), threads=0))
        plan = cfg.cycle.plan()
        stop = StopAtTarget(plan, 4, 16)
        start = time.perf_counter()
        summary = trainer.train(cfg, extra_callbacks=[stop])
        wall = time.perf_counter() - start
        records.append({"cycle": cycle, "levels": list(levels), "target": args.target,
                        "reached": stop.reached is not None, "epochs": len(summary["trained_resolutions"]),
                        "train_seconds": stop.train_seconds, "wall_seconds": wall, "training_voxels": stop.voxels,
                        "best_rel_l2": stop.best})
    base = next((r for r in records if r["cycle"] == "single"), None)
    for r in records:
        if base and base["reached"] and r["reached"]:
            r["speedup_train_seconds"] = base["train_seconds"] / r["train_seconds"]
            r["speedup_voxels"] = base["training_voxels"] / r["training_voxels"]
        print(f"{r['cycle']:>7}: {'reached' if r['reached'] else 'NOT reached'} rel_l2 <= {args.target:.0%} at "
              f"{finest}^3 after {r['epochs']} epochs, {r['train_seconds']:.0f} s training ({r['wall_seconds']:.0f} s "
              f"wall), {r['training_voxels']:.2e} voxels, best {r['best_rel_l2']:.2%}"
              + (f", speedup {r['speedup_train_seconds']:.2f}x time / {r['speedup_voxels']:.2f}x voxels"
                 if "speedup_train_seconds" in r else ""))
    print(_common.write("cycles", records, vars(args)))


if __name__ == "__main__":
    main()
