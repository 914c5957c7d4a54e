"""Input pipeline samples/s per resolution next to the training step rate (the pipeline must not bottleneck).

Usage: python benchmarks/bench_pipeline.py [--resolutions 16,32,64] [--preset small] [--batch 2]
Target (issue 4): pipeline >= 5x the training rate at 64^3. The pipeline is measured uncached (nu generated
in TensorFlow inside the parallel map), its slowest mode.
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
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    import keras

    from poisson_tf import data, models, trainer

    records = []
    coeffs = data.make_sample_sets(64, 1)[0].coeffs
    for n in map(int, args.resolutions.split(",")):
        ds, _ = data.build_dataset(coeffs, n, args.batch, cache_budget_bytes=0)
        it = iter(ds)
        next(it)
        start = time.perf_counter()
        for _ in range(4 * args.steps):
            next(it)
        pipeline = 4 * args.steps * args.batch / (time.perf_counter() - start)

        network = models.build_model(args.preset)
        energy_trainer = trainer.EnergyTrainer(network)
        energy_trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        energy_trainer.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # trace
        start = time.perf_counter()
        energy_trainer.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)
        training = args.steps * args.batch / (time.perf_counter() - start)
        records.append({"resolution": n, "preset": args.preset, "batch": args.batch,
                        "pipeline_samples_per_s": pipeline, "training_samples_per_s": training,
                        "ratio": pipeline / training})
        print(f"N={n:4d}  pipeline {pipeline:9.1f} samples/s   training ({args.preset}, batch {args.batch}) "
              f"{training:7.2f} samples/s   ratio {pipeline / training:7.1f}x")
    print(_common.write("pipeline", records, vars(args)))


if __name__ == "__main__":
    main()
