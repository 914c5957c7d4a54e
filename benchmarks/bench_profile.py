"""Per-op profile of one training step (TensorFlow profiler): where the time goes, by layer and op kind.

Usage: python benchmarks/bench_profile.py [--presets small,reference] [--resolution 64] [--batch 4]
                                          [--max_isa AVX2] [--top 25]
--max_isa sets ONEDNN_MAX_CPU_ISA (oneDNN's documented runtime control) before TensorFlow starts, so an
AVX-512 machine can run oneDNN's AVX2 code paths. Op times are summed over TensorFlow's compute threads
(the step's wall time is printed beside them); forward ops are named by their layer, backward ones too
("bwd"), and the energy loss's ops are "loss".
Timing: WARMUP_STEPS untimed steps (tracing, first-step compile), then --steps steps under the profiler, each
timed alone (step_seconds_times). step_seconds is their mean (as op_ms is the mean over the same steps; the
profiler's own overhead is in both), step_seconds_median their median.
"""
import argparse
import collections
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

WARMUP_STEPS = 2  # untimed steps before the profiler starts: the first traces and compiles


def op_times(logdir: str) -> collections.Counter:
    """Milliseconds per (layer, op) summed over the compute threads of an XPlane trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                match = re.match(r"(gradient_tape/)?(poisson_unet\w*/)?([^/:]+)[^:]*:(\w+)$", name)
                if not match or "ExecutorState" in name:
                    continue
                layer = re.sub(r"_\d+$", "", match.group(3)) if match.group(2) else "loss"
                kind = ("bwd " if match.group(1) else "fwd ") + match.group(4).replace("_MklNative", "")
                totals[(layer, kind)] += event.duration_ps / 1e9
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="small,reference")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max_isa", default="", help="ONEDNN_MAX_CPU_ISA, e.g. AVX2 (default: all the CPU has)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.max_isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.max_isa  # read by oneDNN when TensorFlow first uses it
    import keras
    import tensorflow as tf

    from poisson_tf import fields, models, trainer

    records = []
    for preset in args.presets.split(","):
        network = models.build_model(preset)
        train_step = trainer.make_train_step(network, keras.optimizers.Adam(1e-3))
        nu = tf.constant(fields.kl_diffusivity(fields.sample_coeffs(args.batch, seed=0), args.resolution)[..., None],
                         tf.float32)

        def step():
            return float(train_step(nu)["loss"])  # waits for the step to finish

        for _ in range(WARMUP_STEPS):  # traced and warm
            step()
        logdir = tempfile.mkdtemp(prefix="poisson_tf_profile_")
        tf.profiler.experimental.start(logdir)
        times = _common.timing(step, repeats=args.steps, warmup=0)["times"]  # warmed up above, unprofiled
        tf.profiler.experimental.stop()
        seconds = sum(times) / len(times)
        totals = op_times(logdir)
        op_ms = sum(totals.values()) / args.steps
        print(f"\n{preset} N={args.resolution} batch {args.batch}: step {seconds * 1e3:.0f} ms wall, "
              f"{op_ms:.0f} ms of op time on the compute threads")
        top = [{"layer": layer, "op": kind, "ms": ms / args.steps} for (layer, kind), ms in totals.most_common()]
        for row in top[:args.top]:
            print(f"  {row['ms']:8.1f} ms  {row['ms'] / op_ms:6.1%}  {row['layer']:<22} {row['op']}")
        records.append({"preset": preset, "resolution": args.resolution, "batch": args.batch,
                        "step_seconds": seconds, "step_seconds_times": times,
                        "step_seconds_median": _common.median(times), "repeats": args.steps,
                        "warmup": WARMUP_STEPS, "op_ms": op_ms, "top_ops": top[:args.top]})
    print(_common.write("profile", records, vars(args)))


if __name__ == "__main__":
    main()
