"""Horovod on one host: total training throughput of N ranks against one process using all the cores, at a
fixed global batch (the package's defaults: each rank bound to its share of the cores, cores / N threads,
MPI yielding while it waits), and what the gradient allreduce costs inside the step.

Usage: python benchmarks/bench_scaling.py [--workers 1,2] [--resolution 64] [--preset small] [--gloo]
The allreduce's cost is the step time with it minus the same step traced without it (the gradients then
stay per-rank; only the timing is used), both measured in the same processes.
Timing: each step function is timed --repeats times after one untimed warm-up round, a round being --steps
steps and a barrier (so every round starts with the ranks in step); a repeat's time is its round's seconds
per step. step_seconds is the median
repeat with the allreduce and step_seconds_times every repeat (step_seconds_repeats, the same list, is kept
for older readers); step_seconds_without_allreduce is that step's list of repeats (as it always was),
step_seconds_without_allreduce_times the same list, and step_seconds_without_allreduce_median its median.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def child(args) -> None:
    from poisson_tf import distributed

    distributed.init(intra_op_threads=0, inter_op_threads=0)  # the package's defaults: this rank's cores
    import keras
    import tensorflow as tf

    from poisson_tf import fields, models
    from poisson_tf.training import step

    keras.utils.set_random_seed(0)
    per_worker = distributed.split_batch(args.global_batch)
    coeffs = fields.sample_coeffs(args.global_batch, seed=1)[distributed.rank() * per_worker:][:per_worker]
    nu = tf.constant(fields.kl_diffusivity(coeffs, args.resolution)[..., None], tf.float32)
    network = models.build_model(args.preset)
    with_allreduce = step.make_train_step(network, keras.optimizers.Adam(1e-3))
    reduce = distributed.allreduce_gradients
    distributed.allreduce_gradients = list  # traced below without the allreduce (timing only)
    without_allreduce = step.make_train_step(models.build_model(args.preset), keras.optimizers.Adam(1e-3))
    without_allreduce(nu)
    distributed.allreduce_gradients = reduce

    def seconds_per_step(step):
        def round_():  # starts in step on every rank: the round before (the warm-up, at first) ended in a barrier
            for _ in range(args.steps):
                float(step(nu)["loss"])
            distributed.barrier()

        return [t / args.steps for t in _common.timing(round_, repeats=args.repeats, warmup=1)["times"]]

    full, bare = seconds_per_step(with_allreduce), seconds_per_step(without_allreduce)
    if distributed.is_chief():
        median = _common.median(full)
        allreduce = max(0.0, median - _common.median(bare)) if distributed.size() > 1 else 0.0
        print(json.dumps({"workers": distributed.size(), "resolution": args.resolution, "preset": args.preset,
                          "global_batch": args.global_batch, "threads_per_worker": len(os.sched_getaffinity(0)),
                          "step_seconds": median, "step_seconds_times": full, "step_seconds_repeats": full,
                          "step_seconds_without_allreduce": bare, "step_seconds_without_allreduce_times": bare,
                          "step_seconds_without_allreduce_median": _common.median(bare),
                          "repeats": args.repeats, "warmup": 1, "steps_per_repeat": args.steps,
                          "total_voxels_per_s": args.global_batch * args.resolution ** 3 / median,
                          "allreduce_seconds_in_step": allreduce, "allreduce_share": allreduce / median,
                          "gradient_megabytes": sum(v.numpy().nbytes for v in network.trainable_variables) / 1e6,
                          "transport": "gloo" if args.gloo else "mpi" if distributed.size() > 1 else "none"}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--global_batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gloo", action="store_true")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        return child(args)
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    records = []
    for np_ in map(int, args.workers.split(",")):
        cmd = [sys.executable, __file__, "--child"] + (["--gloo"] if args.gloo else []) + [
            f"--{k}={v}" for k, v in vars(args).items() if k not in ("child", "workers", "gloo")]
        if np_ > 1:
            cmd = [horovodrun, "-np", str(np_), "-H", f"localhost:{np_}"] + (["--gloo"] if args.gloo else []) + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        line = [x for x in out.stdout.splitlines() if '"workers"' in x][-1]
        # horovodrun tags each line ("[1,0]<stdout>:") and may append another rank's tag after the JSON.
        records.append(json.JSONDecoder().raw_decode(line[line.index("{"):])[0])
    base = records[0]["total_voxels_per_s"]
    for r in records:
        r["speedup_over_one_process"] = r["total_voxels_per_s"] / base
        r["bound"] = os.environ.get("POISSON_TF_BIND", "1") != "0"  # POISSON_TF_BIND=0: ranks share all cores
        print(f"{r['workers']} worker(s) x {r['threads_per_worker']} thread(s) ({r['transport']}): "
              f"{r['total_voxels_per_s']:.3e} voxels/s in total = {r['speedup_over_one_process']:.2f}x one "
              f"process; allreduce {r['allreduce_seconds_in_step'] * 1e3:.1f} ms = {r['allreduce_share']:.1%} of "
              f"a step ({r['gradient_megabytes']:.2f} MB of gradients)")
    print(_common.write("scaling", records, vars(args)))


if __name__ == "__main__":
    main()
