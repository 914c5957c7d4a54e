"""Megavoxel scale: peak memory and time of a training step at 256^3 (batch 1) and of prediction at 512^3.

Usage: python benchmarks/bench_megavoxel.py [--preset small] [--cases train:256:float32,train:256:bfloat16,predict:512:float32]
Target (issue 7): both fit in the 24 GiB of the 2-core machine. Each case runs in its own process.
Timing: training runs one fit of WARMUP_STEPS + --repeats steps; the warm-up steps (tracing, first-step compile,
dataset start-up) are not timed, and each later step is timed alone (from one step's end to the next's,
_common.step_clock): step_seconds is their median, step_seconds_times every step's seconds. Prediction is a
single run, deliberately ("repeats": 1: at 512^3 it is long and its peak memory is the point); it follows one
untimed call at 16^3 ("warmup": 1, "warmup_resolution": 16: eager ops, no tracing), so its time includes the
full-size first call's costs (oneDNN primitives, allocation), as a one-off prediction pays them.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

WARMUP_STEPS = 2  # untimed training steps: the first traces and compiles
DEFAULT_CASES = "train:128:float32,train:256:float32,train:256:bfloat16,predict:256:float32,predict:512:float32"


def child(kind: str, n: int, precision: str, preset: str, repeats: int) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from poisson_tf import config, fields, models
    from poisson_tf.training import step

    keras.mixed_precision.set_dtype_policy(config.PRECISIONS[precision])
    network = models.build_model(preset)
    nu = tf.constant(fields.kl_diffusivity(fields.sample_coeffs(1, seed=0)[0], n, dtype=np.float32)[None, ..., None])
    record = {"kind": kind, "resolution": n, "voxels": n ** 3, "precision": precision, "preset": preset}
    if kind == "train":
        energy_trainer = step.EnergyTrainer(network)
        energy_trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        ds = tf.data.Dataset.from_tensors(nu).repeat()
        clock = _common.step_clock(WARMUP_STEPS)
        history = energy_trainer.fit(ds, steps_per_epoch=WARMUP_STEPS + repeats, epochs=1, verbose=0,
                                     callbacks=[clock])
        times = clock.times()
        record.update(step_seconds=_common.median(times), step_seconds_times=times, repeats=len(times),
                      warmup=WARMUP_STEPS, energy=float(history.history["loss"][-1]))
    else:
        network(nu[:, :16, :16, :16], training=False)
        start = time.perf_counter()
        u = network(nu, training=False)
        seconds = time.perf_counter() - start
        record.update(predict_seconds=seconds, predict_seconds_times=[seconds], repeats=1, warmup=1,
                      warmup_resolution=16,
                      u_min=float(tf.reduce_min(u)), u_max=float(tf.reduce_max(u)))
    record["peak_rss_gib"] = round(_common.peak_rss_gib(), 2)
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--repeats", type=int, default=3, help="timed training steps per case")
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2], args.preset, args.repeats)
    records = []
    for case in args.cases.split(","):
        kind, n, precision = case.split(":")
        r = _common.run_child(__file__, "--child", kind, n, precision, "--preset", args.preset,
                              "--repeats", str(args.repeats))
        records.append(r)
        seconds = r.get("step_seconds", r.get("predict_seconds"))
        print(f"{kind:>8} {int(n):4d}^3 ({r['voxels'] / 1e6:6.1f} Mvoxel) {precision:>9}: {seconds:7.2f} s, "
              f"peak {r['peak_rss_gib']:.2f} GiB")
    print(_common.write("megavoxel", records, {"preset": args.preset, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
