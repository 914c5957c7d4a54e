"""Per-op profile of one training step (TensorFlow profiler): where the time goes, by layer and op kind.

Usage: python benchmarks/bench_profile.py [--presets small,reference] [--resolution 64] [--batch 4]
                                          [--max_isa AVX2] [--padding auto|explicit|implicit]
                                          [--precision float32|bfloat16] [--top 25]
--max_isa sets ONEDNN_MAX_CPU_ISA (oneDNN's documented runtime control) before TensorFlow starts, so an
AVX-512 machine can run oneDNN's AVX2 code paths. Op times are summed over TensorFlow's compute threads
(the step's wall time is printed beside them); forward ops are named by their layer, backward ones too
("bwd"), and the energy loss's ops are "loss".
Timing: WARMUP_STEPS untimed steps (tracing, first-step compile), then --steps steps under the profiler, each
timed alone (step_seconds_times). step_seconds is their mean (as op_ms is the mean over the same steps; the
profiler's own overhead is in both), step_seconds_median their median.
Kernels: one more step in a child process with ONEDNN_VERBOSE=1 names the oneDNN implementation of every
primitive the step runs ("onednn_kernels": primitive, impl, direction, problem, calls, ms); "gemm_convolutions"
counts the convolutions that fell back to im2col + GEMM (x64:gemm:jit), so a regression shows in the record.
--padding sets POISSON_TF_CONV_PADDING (how 'same' convolutions pad; default: the package's choice for the ISA).
"""
import argparse
import collections
import glob
import json
import os
import re
import subprocess
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


KERNELS_BEGIN, KERNELS_END = "== poisson_tf kernels begin ==", "== poisson_tf kernels end =="


def parse_onednn_verbose(lines) -> list:
    """Aggregates ONEDNN_VERBOSE=1 'exec' lines by (primitive, impl, direction, problem): calls and ms, most
    time first. Line format (oneDNN 3.x): onednn_verbose,[timestamp,]primitive,exec,cpu,<primitive>,<impl>,
    <direction>,<memory descriptors>,<attributes>,<algorithm>,<problem>,<ms>."""
    totals = {}
    for line in lines:
        parts = line.strip().split(",")
        if "exec" not in parts[:4]:
            continue
        at = parts.index("exec")
        try:
            key = (parts[at + 2], parts[at + 3], parts[at + 4], parts[-2])
            ms = float(parts[-1])
        except (IndexError, ValueError):
            continue
        calls, total = totals.get(key, (0, 0.0))
        totals[key] = (calls + 1, total + ms)
    rows = [{"primitive": k[0], "impl": k[1], "direction": k[2], "problem": k[3], "calls": c, "ms": t}
            for k, (c, t) in totals.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def build_step(preset: str, resolution: int, batch: int, precision: str = "float32"):
    """The package's train step (step.make_train_step) for `preset` in `precision` (a config.PRECISIONS
    name), and a function running it once on a fixed KL batch (it waits for the step to finish)."""
    import keras
    import tensorflow as tf

    from poisson_tf import config, fields, models
    from poisson_tf.training import step

    keras.mixed_precision.set_dtype_policy(config.PRECISIONS[precision])

    train_step = step.make_train_step(models.build_model(preset), keras.optimizers.Adam(1e-3))
    nu = tf.constant(fields.kl_diffusivity(fields.sample_coeffs(batch, seed=0), resolution)[..., None], tf.float32)
    return lambda: float(train_step(nu)["loss"])


def kernels_child(preset: str, resolution: int, batch: int, precision: str) -> None:
    """Runs WARMUP_STEPS steps, then one between the markers (this process has ONEDNN_VERBOSE=1)."""
    step = build_step(preset, resolution, batch, precision)
    for _ in range(WARMUP_STEPS):
        step()
    print(KERNELS_BEGIN, flush=True)
    step()
    print(KERNELS_END, flush=True)


def onednn_kernels(preset: str, resolution: int, batch: int, args) -> list:
    """parse_onednn_verbose of one warm step, run in a child (oneDNN reads ONEDNN_VERBOSE when it starts) with
    this run's --max_isa and --padding."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--max_isa={args.max_isa}",
                          f"--padding={args.padding}", "--kernels_child", json.dumps([preset, resolution, batch, args.precision])],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")).stdout
    begin, end = out.index(KERNELS_BEGIN), out.index(KERNELS_END)
    return parse_onednn_verbose(out[begin:end].splitlines())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="small,reference")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max_isa", default="", help="ONEDNN_MAX_CPU_ISA, e.g. AVX2 (default: all the CPU has)")
    parser.add_argument("--padding", default="auto", choices=("auto", "explicit", "implicit"),
                        help="POISSON_TF_CONV_PADDING (default: the package's choice for this ISA)")
    parser.add_argument("--precision", default="float32", help="float32 or bfloat16 (the convolutions' precision)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--kernels_child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_isa:
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.max_isa  # read by oneDNN when TensorFlow first uses it
    os.environ["POISSON_TF_CONV_PADDING"] = args.padding  # the children inherit both
    if args.kernels_child:
        return kernels_child(*json.loads(args.kernels_child))
    import tensorflow as tf

    from poisson_tf import models

    records = []
    for preset in args.presets.split(","):
        step = build_step(preset, args.resolution, args.batch, args.precision)
        for _ in range(WARMUP_STEPS):  # traced and warm
            step()
        logdir = tempfile.mkdtemp(prefix="poisson_tf_profile_")
        tf.profiler.experimental.start(logdir)
        times = _common.timing(step, repeats=args.steps, warmup=0)["times"]  # warmed up above, unprofiled
        tf.profiler.experimental.stop()
        seconds = sum(times) / len(times)
        totals = op_times(logdir)
        op_ms = sum(totals.values()) / args.steps
        print(f"\n{preset} N={args.resolution} batch {args.batch} {args.precision}: step {seconds * 1e3:.0f} ms wall, "
              f"{op_ms:.0f} ms of op time on the compute threads")
        top = [{"layer": layer, "op": kind, "ms": ms / args.steps} for (layer, kind), ms in totals.most_common()]
        for row in top[:args.top]:
            print(f"  {row['ms']:8.1f} ms  {row['ms'] / op_ms:6.1%}  {row['layer']:<22} {row['op']}")
        kernels = onednn_kernels(preset, args.resolution, args.batch, args)
        gemm = sum(k["calls"] for k in kernels if k["primitive"] == "convolution" and "gemm" in k["impl"])
        impls = collections.Counter()
        for k in kernels:
            if k["primitive"] == "convolution":
                impls[(k["impl"], k["direction"])] += k["calls"]
        print(f"  oneDNN convolutions of one step (padding {'explicit' if models.explicit_padding() else 'implicit'}"
              f"): " + ", ".join(f"{c} x {impl} {direction}" for (impl, direction), c in impls.most_common()))
        records.append({"preset": preset, "resolution": args.resolution, "batch": args.batch,
                        "precision": args.precision, "padding": "explicit" if models.explicit_padding() else "implicit",
                        "onednn_kernels": kernels, "gemm_convolutions": gemm,
                        "step_seconds": seconds, "step_seconds_times": times,
                        "step_seconds_median": _common.median(times), "repeats": args.steps,
                        "warmup": WARMUP_STEPS, "op_ms": op_ms, "top_ops": top[:args.top]})
    print(_common.write("profile", records, vars(args)))


if __name__ == "__main__":
    main()
