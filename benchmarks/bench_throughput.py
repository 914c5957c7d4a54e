"""Training throughput: voxels/s and achieved FLOP/s per preset, resolution and precision, next to a dense
matmul's FLOP/s measured in the same run (their ratio is the model's efficiency).

Usage: python benchmarks/bench_throughput.py [--presets small,reference] [--resolutions 32,64] [--precisions float32,bfloat16]
FLOPs per voxel are counted from the layers (models.flops_per_voxel); a training step is taken as 3x forward.
The step timed is the package's own (step.make_train_step: the train step fit runs). Both the step and the
matmul are timed after one warm-up call (tracing), --repeats calls each: step_seconds and matmul_seconds are
medians, step_seconds_times and matmul_seconds_times every call's seconds.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def matmul_timing(dtype, repeats: int, n: int = 4096) -> dict:
    """_common.timing of an n x n matmul, with its FLOP/s at the median ("flops")."""
    import tensorflow as tf

    a = tf.random.normal([n, n], dtype=tf.float32)
    a = tf.cast(a, dtype)
    fn = tf.function(lambda: tf.linalg.matmul(a, a))
    t = _common.timing(fn, repeats=repeats)
    return dict(t, flops=2.0 * n ** 3 / t["median"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="small,reference")
    parser.add_argument("--resolutions", default="32,64")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    from poisson_tf import config, fields, models
    from poisson_tf.training import step

    matmul = {p: matmul_timing(tf.float32 if p == "float32" else tf.bfloat16, args.repeats)
              for p in args.precisions.split(",")}
    peak = {p: t["flops"] for p, t in matmul.items()}
    records = []
    for precision in args.precisions.split(","):
        keras.mixed_precision.set_dtype_policy(config.PRECISIONS[precision])
        for preset in args.presets.split(","):
            network = models.build_model(preset)
            flops = models.flops_per_voxel(network)
            step = step.make_train_step(network, keras.optimizers.Adam(1e-3))
            for n in map(int, args.resolutions.split(",")):
                nu = tf.constant(fields.kl_diffusivity(fields.sample_coeffs(args.batch, seed=0), n)[..., None],
                                 tf.float32)
                t = _common.timing(lambda: step(nu), repeats=args.repeats)
                seconds = t["median"]
                voxels = args.batch * n ** 3 / seconds
                achieved = 3 * flops * voxels
                records.append({"preset": preset, "resolution": n, "precision": precision, "batch": args.batch,
                                "step_seconds": seconds, "step_seconds_times": t["times"],
                                "repeats": t["repeats"], "warmup": t["warmup"],
                                "voxels_per_s": voxels, "flops_per_voxel": flops,
                                "achieved_flops": achieved, "matmul_flops": peak[precision],
                                "matmul_seconds": matmul[precision]["median"],
                                "matmul_seconds_times": matmul[precision]["times"],
                                "efficiency": achieved / peak[precision]})
                print(f"{preset:>10} N={n:4d} {precision:>9}: {voxels:.3e} voxels/s, {achieved / 1e9:6.1f} GFLOP/s "
                      f"= {achieved / peak[precision]:5.1%} of a {precision} matmul ({peak[precision] / 1e9:.0f} GFLOP/s)")
    print(_common.write("throughput", records, vars(args)))


if __name__ == "__main__":
    main()
