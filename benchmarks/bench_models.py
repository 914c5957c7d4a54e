"""Forward and training-step time and peak memory per preset and resolution (one process each).

Usage: python benchmarks/bench_models.py [--presets small,reference] [--resolutions 32,64,128] [--batch 1]
The training step (forward, backward and the Adam update) is the package's own: step.make_train_step.
Both are timed after one warm-up call (tracing), --repeats calls each: forward_seconds and step_seconds are
medians, forward_seconds_times and step_seconds_times every call's seconds.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def child(preset: str, n: int, batch: int, repeats: int) -> None:
    import keras
    import tensorflow as tf

    from poisson_tf import fields, models
    from poisson_tf.training import step

    network = models.build_model(preset)
    nu = tf.constant(fields.kl_diffusivity(fields.sample_coeffs(batch, seed=0), n)[..., None], tf.float32)
    forward = tf.function(lambda: network(nu, training=False))
    step = step.make_train_step(network, keras.optimizers.Adam(1e-3))

    fwd = _common.timing(forward, repeats=repeats)
    inference_peak = _common.peak_rss_gib()  # ru_maxrss only grows: measured before any training step
    bwd = _common.timing(lambda: step(nu), repeats=repeats)
    print(json.dumps({"preset": preset, "resolution": n, "batch": batch, "params": network.count_params(),
                      "forward_seconds": fwd["median"], "forward_seconds_times": fwd["times"],
                      "step_seconds": bwd["median"], "step_seconds_times": bwd["times"],
                      "repeats": repeats, "warmup": bwd["warmup"],
                      "voxels_per_s_training": batch * n ** 3 / bwd["median"],
                      "peak_inference_gib": round(inference_peak, 3), "peak_rss_gib": round(_common.peak_rss_gib(), 3)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="small,reference")
    parser.add_argument("--resolutions", default="32,64,128")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.batch, args.repeats)
    records = []
    for preset in args.presets.split(","):
        for n in map(int, args.resolutions.split(",")):
            r = _common.run_child(__file__, "--child", preset, str(n), "--batch", str(args.batch),
                                  "--repeats", str(args.repeats))
            records.append(r)
            print(f"{preset:>10} N={n:4d} batch {args.batch}: forward {r['forward_seconds']:7.3f} s, "
                  f"train step {r['step_seconds']:7.3f} s ({r['voxels_per_s_training']:.2e} vox/s), "
                  f"peak {r['peak_inference_gib']:.2f} GiB inference, {r['peak_rss_gib']:.2f} GiB training")
    print(_common.write("models", records, {"batch": args.batch, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
