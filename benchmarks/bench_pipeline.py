"""Input pipeline samples/s per resolution next to the training step rate (the pipeline must not bottleneck).

Usage: python benchmarks/bench_pipeline.py [--resolutions 16,32,64] [--preset small] [--batch 2] [--steps 10]
                                           [--warmup 3] [--steps_per_execution 1]
                                           [--intra_op_threads T] [--inter_op_threads T]
Target (issue 4): pipeline >= 5x the training rate at 64^3. The pipeline is measured uncached (nu generated
in TensorFlow inside the parallel map), its slowest mode.
What is timed, both in the steady state (start-up excluded, so the ratio is not inflated by it):
  pipeline: next() on an iterator of the dataset, after --warmup untimed batches (the iterator's start-up, the
    map's tracing); 4 x --steps batches, each timed alone (pipeline_batch_seconds_times).
  training: one EnergyTrainer.fit of --warmup + --steps steps on the same dataset; the first --warmup steps
    (tracing, first-step compile, the fit's dataset warm-up) are not timed, the later ones each from one step's
    end to the next's (_common.step_clock: data, step and fit's callbacks; training_step_seconds_times).
    With --steps_per_execution k (Keras runs k steps per call; poisson-tf-train's flag of that name) the clock
    sees every k-th step's end: each timed interval of k steps is recorded as k equal step times.
--intra_op_threads / --inter_op_threads set TensorFlow's thread pools (default: TensorFlow's, on a 2-core machine
the 2 x 2 that poisson-tf-train sets too).
The rates are samples over the sum of the timed batches' (steps') seconds. (The first timed batches may come out
of the prefetch buffer the warm-up started filling: a bias of at most its few batches in 4 x --steps.)
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolutions", default="16,32,64")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (4x as many pipeline batches)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches and training steps first (>= 1)")
    parser.add_argument("--steps_per_execution", type=int, default=1,
                        help="training steps per call (must divide --warmup and --steps)")
    parser.add_argument("--intra_op_threads", type=int, default=None, help="threads per op (default: TF's)")
    parser.add_argument("--inter_op_threads", type=int, default=None, help="ops at once (default: TF's)")
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    if args.intra_op_threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads is not None:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)

    from poisson_tf import models
    from poisson_tf.training import data
    from poisson_tf.training import step

    k = args.steps_per_execution
    if k < 1 or args.warmup % k or args.steps % k:
        raise SystemExit(f"--steps_per_execution={k} must be >= 1 and divide --warmup ({args.warmup}) and --steps "
                         f"({args.steps})")
    records = []
    coeffs = data.make_sample_sets(64, 1)[0].coeffs
    for n in map(int, args.resolutions.split(",")):
        ds, _ = data.build_dataset(coeffs, n, args.batch, cache_budget_bytes=0)
        it = iter(ds)
        for _ in range(args.warmup):
            next(it)
        batch_times = []
        for _ in range(4 * args.steps):
            start = time.perf_counter()
            next(it)
            batch_times.append(time.perf_counter() - start)
        del it  # its prefetching stops before training starts
        pipeline = len(batch_times) * args.batch / sum(batch_times)

        network = models.build_model(args.preset)
        energy_trainer = step.EnergyTrainer(network)
        energy_trainer.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=k)
        clock = _common.step_clock(args.warmup // k)
        energy_trainer.fit(ds, steps_per_epoch=args.warmup + args.steps, epochs=1, verbose=0, callbacks=[clock])
        step_times = [t / k for t in clock.times() for _ in range(k)]
        training = len(step_times) * args.batch / sum(step_times)
        records.append({"resolution": n, "preset": args.preset, "batch": args.batch,
                        "pipeline_samples_per_s": pipeline, "training_samples_per_s": training,
                        "ratio": pipeline / training, "warmup": args.warmup, "steps_per_execution": k,
                        "pipeline_batch_seconds_times": batch_times, "training_step_seconds_times": step_times})
        print(f"N={n:4d}  pipeline {pipeline:9.1f} samples/s   training ({args.preset}, batch {args.batch}) "
              f"{training:7.2f} samples/s   ratio {pipeline / training:7.1f}x")
    print(_common.write("pipeline", records, vars(args)))


if __name__ == "__main__":
    main()
