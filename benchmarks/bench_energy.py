"""FEM energy loss throughput (forward, forward+backward) next to one conv3d layer on the same field.

Usage: python benchmarks/bench_energy.py [--resolutions 32,64,128] [--batch 2]
The conv3d reference is Conv3D(24, 2, VALID) on 1 channel, the same shape as the energy's gradient kernel,
and a typical 3^3 16 -> 16 channel layer. Each is timed after one warm-up call (tracing), --repeats calls:
<name>_seconds is the median, <name>_seconds_times every call's seconds.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolutions", default="32,64,128")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import tensorflow as tf

    from poisson_tf import fem, fields

    records = []
    for n in map(int, args.resolutions.split(",")):
        nu = tf.constant(fields.kl_diffusivity(fields.sample_coeffs(args.batch, seed=1), n)[..., None], tf.float32)
        u = tf.Variable(tf.random.uniform(nu.shape))
        forward = tf.function(lambda: fem.energy(u, nu))

        @tf.function
        def backward():
            with tf.GradientTape() as tape:
                j = tf.reduce_sum(fem.energy(u, nu))
            return tape.gradient(j, u)

        kernel_small = tf.random.normal([2, 2, 2, 1, 24])
        kernel_wide = tf.random.normal([3, 3, 3, 16, 16])
        wide = tf.random.normal([args.batch, n, n, n, 16])
        conv_small = tf.function(lambda: tf.nn.conv3d(u, kernel_small, [1] * 5, "VALID"))
        conv_wide = tf.function(lambda: tf.nn.conv3d(wide, kernel_wide, [1] * 5, "SAME"))
        voxels = args.batch * n ** 3
        record = {"resolution": n, "batch": args.batch, "repeats": args.repeats, "warmup": 1}
        for name, fn in (("energy_forward", forward), ("energy_forward_backward", backward),
                         ("conv3d_2x2x2_1to24", conv_small), ("conv3d_3x3x3_16to16", conv_wide)):
            t = _common.timing(fn, repeats=args.repeats, warmup=1)
            seconds = t["median"]
            record[f"{name}_seconds"] = seconds
            record[f"{name}_seconds_times"] = t["times"]
            record[f"{name}_voxels_per_s"] = voxels / seconds
        records.append(record)
        print(f"N={n:4d}  energy fwd {record['energy_forward_voxels_per_s']:.3e} vox/s, fwd+bwd "
              f"{record['energy_forward_backward_voxels_per_s']:.3e} vox/s | conv3d 2^3 1->24 "
              f"{record['conv3d_2x2x2_1to24_voxels_per_s']:.3e} vox/s, 3^3 16->16 "
              f"{record['conv3d_3x3x3_16to16_voxels_per_s']:.3e} vox/s")
    print(_common.write("energy", records, {"batch": args.batch, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
