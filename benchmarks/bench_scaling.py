"""Horovod weak scaling: per-worker training throughput at -np 1 and -np 2 (one compute thread per worker,
fixed per-worker batch), the efficiency ratio, and the share of a step spent in the gradient allreduce.

Usage: python benchmarks/bench_scaling.py [--workers 1,2] [--resolution 32] [--preset small] [--gloo]
The allreduce share is timed separately: the same grouped allreduce of gradient-shaped tensors, alone.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def child(args) -> None:
    from poisson_tf import distributed

    distributed.init(intra_op_threads=1, inter_op_threads=1)
    import tensorflow as tf

    from poisson_tf import fields, models, trainer

    import keras

    keras.utils.set_random_seed(0)
    network = models.build_model(args.preset)
    train_step = trainer.make_train_step(network, keras.optimizers.Adam(1e-3))  # with the gradient allreduce
    coeffs = fields.sample_coeffs(args.batch, seed=1 + distributed.rank())  # different data per worker
    nu = tf.constant(fields.kl_diffusivity(coeffs, args.resolution)[..., None], tf.float32)
    variables = network.trainable_variables

    def step():
        return train_step(nu)

    @tf.function
    def allreduce_only():
        return distributed.allreduce_gradients([tf.ones_like(v) for v in variables])

    def per_step(fn):
        fn()
        distributed.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        distributed.barrier()
        return (time.perf_counter() - start) / args.steps

    step_seconds = per_step(step)
    allreduce_seconds = per_step(allreduce_only) if distributed.size() > 1 else 0.0
    if distributed.is_chief():
        print(json.dumps({"workers": distributed.size(), "resolution": args.resolution, "preset": args.preset,
                          "per_worker_batch": args.batch, "step_seconds": step_seconds,
                          "per_worker_voxels_per_s": args.batch * args.resolution ** 3 / step_seconds,
                          "total_voxels_per_s": distributed.size() * args.batch * args.resolution ** 3 / step_seconds,
                          "allreduce_seconds": allreduce_seconds, "allreduce_share": allreduce_seconds / step_seconds,
                          "gradient_megabytes": sum(v.numpy().nbytes for v in variables) / 1e6,
                          "transport": "gloo" if args.gloo else "mpi"}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--gloo", action="store_true")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        return child(args)
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    records = []
    for np_ in map(int, args.workers.split(",")):
        cmd = [horovodrun, "-np", str(np_), "-H", f"localhost:{np_}"] + (["--gloo"] if args.gloo else []) + [
            sys.executable, __file__, "--child", f"--resolution={args.resolution}", f"--preset={args.preset}",
            f"--batch={args.batch}", f"--steps={args.steps}"] + (["--gloo"] if args.gloo else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        line = [x for x in out.stdout.splitlines() if '"workers"' in x][-1]
        # horovodrun tags each line ("[1,0]<stdout>:") and may append another rank's tag after the JSON.
        records.append(json.JSONDecoder().raw_decode(line[line.index("{"):])[0])
    base = records[0]["per_worker_voxels_per_s"]
    for r in records:
        r["weak_scaling_efficiency"] = r["per_worker_voxels_per_s"] / base
        print(f"-np {r['workers']} ({r['transport']}): {r['per_worker_voxels_per_s']:.3e} voxels/s per worker, "
              f"{r['total_voxels_per_s']:.3e} total, efficiency {r['weak_scaling_efficiency']:.1%}, "
              f"allreduce {r['allreduce_seconds'] * 1e3:.1f} ms = {r['allreduce_share']:.1%} of a step "
              f"({r['gradient_megabytes']:.2f} MB of gradients)")
    print(_common.write("scaling", records, vars(args)))


if __name__ == "__main__":
    main()
