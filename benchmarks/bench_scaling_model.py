"""A scaling model of data-parallel training, calibrated on this machine and projected to cluster nodes.

Usage: python benchmarks/bench_scaling_model.py [--preset small] [--levels 32,64,128] [--global_batch 64]
                                                [--nodes 1,2,4,8,16,32,64] [--hosts]

Measured here (each in child processes, one at a time):
- compute: a training step without allreduce (the package's step, make_train_step, one process) at every
  level and per-rank batch 1, 2 (and the validation's), with 1 and 2 TensorFlow threads;
- allreduce: Horovod allreduces of one float32 tensor of 1 KiB .. 16 MiB between 2 ranks over loopback (MPI
  and Gloo) and, with --hosts, between two network-namespace hosts over a veth pair (tests/netns_hosts.py),
  fitted as t = overhead + bytes / beta (overhead: the 1 KiB message, Horovod's negotiation and the wake-up
  of a waiting rank; beta: the slope over 256 KiB .. 16 MiB);
- validation: bench_scaling.py's full 1- and 2-rank training steps (with the allreduce) at 64^3, a global
  batch of 4, against what the model predicts from the two measurements above.

The model, per level n, p ranks of T threads each, per-rank batch b:
  step(n, b, p, T) = compute(n, b) / (T * e(n) ** log2(T)) + allreduce(p, gradient bytes)
  compute(n, b): the 1-thread step measured here (a + b s from b = 1, 2, with a >= 0; n = 256 scaled by voxels
  from 128);
  e(n): the 1 -> 2 thread efficiency measured here, taken to hold for every further doubling;
  allreduce(p, S) = overhead + 2 (p - 1) latency + 2 (p - 1) / p * S / beta (a ring: 2 (p - 1) messages of
  S / p), no overlap with the backward pass (the package reduces once, after it); overhead as measured here
  (taken not to grow with p), latency and beta the fabric's across nodes, this machine's shared memory within
  one (latency 1 us).
Projected systems (published figures, not measured here): PSC Bridges-2 RM nodes (2 x AMD EPYC 7742, 128
cores, one ConnectX-6 HDR-200 InfiniBand adapter: 25 GB/s; 8 ranks x 16 threads), Azure HBv3 (120 AMD cores,
HDR-200: 8 ranks x 15 threads), and for Azure ND A100 v4 (8 A100 on NVLink 3, 8 x HDR-200 per VM) the
allreduce alone: this machine cannot calibrate a GPU's compute. The compute of a remote core is taken as this
machine's under oneDNN's kernels for its ISA (run with ONEDNN_MAX_CPU_ISA=AVX2 for the AMD nodes' kernels);
strong scaling keeps the global batch (--global_batch; at most one sample per rank), weak scaling keeps b = 1.
One JSON line per calibration, validation and projection to benchmarks/results/projection.jsonl, and a figure.
Nothing projected is measured: every projection record says "projected": true.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
#: Published fabric and node figures (sources in docs/performance.rst, "Scaling model").
SYSTEMS = {
    "bridges2_rm": {"cores": 128, "ranks_per_node": 8, "link_gbytes_per_s": 25.0, "latency_us": 2.0,
                    "what": "PSC Bridges-2 RM: 2 x EPYC 7742, HDR-200 InfiniBand (one 200 Gb/s adapter)"},
    "azure_hbv3": {"cores": 120, "ranks_per_node": 8, "link_gbytes_per_s": 25.0, "latency_us": 2.0,
                   "what": "Azure HBv3: 120 AMD EPYC cores, HDR-200 InfiniBand"},
    "azure_nda100v4": {"cores": None, "ranks_per_node": 8, "link_gbytes_per_s": 200.0, "latency_us": 2.0,
                       "intra_gbytes_per_s": 300.0,
                       "what": "Azure ND A100 v4: 8 A100 on NVLink 3 (600 GB/s bidirectional per GPU: 300 each "
                               "way), 8 x HDR-200 InfiniBand per VM, one per GPU (allreduce only)"},
}
SIZES = [2 ** k for k in range(10, 25, 2)]  # bytes of one float32 tensor: 1 KiB .. 16 MiB


def child_compute(args) -> None:
    from poisson_tf import distributed

    distributed.init(intra_op_threads=args.threads, inter_op_threads=1)
    import keras
    import tensorflow as tf

    from poisson_tf import fields, models
    from poisson_tf.training import step

    keras.utils.set_random_seed(0)
    network = models.build_model(args.preset)
    train_step = step.make_train_step(network, keras.optimizers.Adam(1e-4))
    out = []
    for case in args.cases.split(","):
        n, b = map(int, case.split("x"))
        nu = tf.constant(fields.kl_diffusivity(fields.sample_coeffs(b, seed=1), n)[..., None], tf.float32)
        steps = max(1, min(5, int(2e6 // (b * n ** 3))))  # about 2 M voxels a repeat

        def round_():
            for _ in range(steps):
                float(train_step(nu)["loss"])

        times = [t / steps for t in _common.timing(round_, repeats=args.repeats, warmup=1)["times"]]
        out.append({"resolution": n, "batch": b, "threads": args.threads, "step_seconds": _common.median(times),
                    "step_seconds_times": times, "steps_per_repeat": steps,
                    "gradient_bytes": sum(v.numpy().nbytes for v in network.trainable_variables)})
    print("COMPUTE " + json.dumps(out), flush=True)


def child_allreduce(args) -> None:
    from poisson_tf import distributed

    distributed.init(intra_op_threads=1, inter_op_threads=1)
    import horovod.tensorflow as hvd
    import tensorflow as tf

    out = []
    for size in SIZES:
        tensor = tf.zeros([size // 4], tf.float32)
        reduce = tf.function(lambda x: hvd.allreduce(x, op=hvd.Average))
        calls = max(5, min(200, int(2e7 // size)))

        def round_():
            for _ in range(calls):
                reduce(tensor).numpy()
            distributed.barrier()

        times = [t / calls for t in _common.timing(round_, repeats=args.repeats, warmup=1)["times"]]
        out.append({"bytes": size, "seconds": _common.median(times), "seconds_times": times, "calls": calls})
    if distributed.is_chief():
        print("ALLREDUCE " + json.dumps(out), flush=True)


def tagged(stdout: str, tag: str):
    line = [x for x in stdout.splitlines() if f"{tag} " in x][-1]
    # horovodrun tags each line ("[1,0]<stdout>:") and may append another rank's tag after the JSON
    return json.JSONDecoder().raw_decode(line.split(f"{tag} ", 1)[1])[0]


def run(command: list, **kwargs) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{result.stderr[-3000:]}")
    return result.stdout


def fit(points: list) -> tuple:
    """(overhead in s, beta in bytes/s) of t = overhead + bytes / beta between 2 ranks: the overhead is the
    smallest message's time, beta the least-squares slope over the messages of 256 KiB and more."""
    large = [p for p in points if p["bytes"] >= 2 ** 18]
    xs, ys = [p["bytes"] for p in large], [p["seconds"] for p in large]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return points[0]["seconds"], 1.0 / slope


SHARED_MEMORY_LATENCY = 1e-6


def allreduce_seconds(p: int, nbytes: float, overhead: float, beta: float,
                      latency: float = SHARED_MEMORY_LATENCY) -> float:
    return 0.0 if p == 1 else overhead + 2 * (p - 1) * latency + 2 * (p - 1) / p * nbytes / beta


class Model:
    """Step times from the calibration (compute[(n, b, threads)] seconds; the allreduce's overhead and beta)."""

    def __init__(self, compute: dict, overhead: float, beta: float, gradient_bytes: int):
        self.compute, self.overhead, self.beta, self.gradient_bytes = compute, overhead, beta, gradient_bytes

    def one_thread(self, n: int, b: float) -> float:
        if (n, b, 1) in self.compute:
            return self.compute[(n, b, 1)]
        if n not in {k[0] for k in self.compute}:  # beyond the measured levels: by voxels from the finest
            finest = max(k[0] for k in self.compute)
            return self.one_thread(finest, b) * (n / finest) ** 3
        one, two = self.compute[(n, 1, 1)], self.compute[(n, 2, 1)]
        per_sample = min(two - one, one)  # a + b s with a fixed cost a >= 0 (noise can make two > 2 one)
        return one + (b - 1) * per_sample

    def efficiency(self, n: int) -> float:
        measured = [k[0] for k in self.compute if k[2] == 2 and k[1] == 2]
        m = n if n in measured else max(measured)
        return min(1.0, self.compute[(m, 2, 1)] / (2 * self.compute[(m, 2, 2)]))

    def compute_seconds(self, n: int, b: float, threads: int) -> float:
        if (n, b, threads) in self.compute:
            return self.compute[(n, b, threads)]
        return self.one_thread(n, b) / (threads * self.efficiency(n) ** math.log2(threads))

    def step(self, n: int, b: float, p: int, threads: int) -> float:
        """A step on p ranks of this machine (shared memory)."""
        return self.compute_seconds(n, b, threads) + allreduce_seconds(p, self.gradient_bytes, self.overhead,
                                                                       self.beta)


def project(model: Model, system: str, levels: list, nodes: list, global_batch: int) -> list:
    """Projected steps of `system` (SYSTEMS) on each node count: within one node the ranks reduce at this
    machine's measured shared-memory rate (NVLink's published one for GPUs), across nodes at the fabric's link
    rate (at most the shared-memory one) and latency, after Horovod's overhead measured here."""
    spec = SYSTEMS[system]
    r = spec["ranks_per_node"]
    out = []
    for mode in ("strong", "weak"):
        for n in levels:
            base = None
            for k in nodes:
                p = k * r
                b = global_batch / p if mode == "strong" else 1.0
                if b < 1:
                    continue
                intra = spec.get("intra_gbytes_per_s", model.beta / 1e9) * 1e9  # shared memory here, or NVLink
                latency = spec["latency_us"] * 1e-6 if k > 1 else SHARED_MEMORY_LATENCY
                beta = intra if k == 1 else min(spec["link_gbytes_per_s"] * 1e9, intra)
                comm = allreduce_seconds(p, model.gradient_bytes, model.overhead, beta, latency)
                if spec["cores"] is None:  # a GPU node: no compute calibrated here
                    out.append({"system": system, "mode": mode, "resolution": n, "nodes": k, "ranks": p,
                                "per_rank_batch": b, "allreduce_seconds": comm, "projected": True})
                    continue
                threads = spec["cores"] // r
                step = model.compute_seconds(n, b, threads) + comm
                samples_per_s = p * b / step
                base = base or (samples_per_s, k)
                out.append({"system": system, "mode": mode, "resolution": n, "nodes": k, "ranks": p,
                            "threads_per_rank": threads, "per_rank_batch": b, "step_seconds": step,
                            "allreduce_seconds": comm, "allreduce_share": comm / step,
                            "samples_per_s": samples_per_s,
                            "efficiency": samples_per_s / (base[0] * k / base[1]), "projected": True})
    return out


def figure(projections: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, mode in zip(axes, ("strong", "weak")):
        rows = [r for r in projections if r["system"] == "bridges2_rm" and r["mode"] == mode]
        for n in sorted({r["resolution"] for r in rows}):
            these = [r for r in rows if r["resolution"] == n]
            ax.plot([r["nodes"] for r in these], [r["efficiency"] for r in these], "o-", label=f"{n}^3")
        ax.axhline(0.5, color="gray", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("Bridges-2 RM nodes (8 ranks x 16 threads each)")
        ax.set_ylabel("parallel efficiency (projected)")
        ax.set_title(f"{mode} scaling" + (" (fixed global batch)" if mode == "strong" else " (batch 1 per rank)"))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--levels", default="32,64,128", help="measured levels (256 is scaled from the finest)")
    parser.add_argument("--project_levels", default="32,64,128,256")
    parser.add_argument("--global_batch", type=int, default=64, help="strong scaling's fixed global batch")
    parser.add_argument("--nodes", default="1,2,4,8,16,32,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--validation_resolution", type=int, default=64)
    parser.add_argument("--hosts", action="store_true", help="also measure between two namespace hosts (root)")
    parser.add_argument("--child", choices=["compute", "allreduce"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default="")
    args = parser.parse_args()
    if args.child == "compute":
        return child_compute(args)
    if args.child == "allreduce":
        return child_allreduce(args)
    levels = [int(x) for x in args.levels.split(",")]
    v, g = args.validation_resolution, 4
    base = [sys.executable, __file__, f"--preset={args.preset}", f"--repeats={args.repeats}"]

    # 1. compute: 1 and 2 threads (the validation's 1-rank and 2-rank steps among the cases)
    compute, gradient_bytes = {}, 0
    for threads in (1, 2):
        cases = [f"{n}x{b}" for n in levels for b in (1, 2)]
        cases += [f"{v}x{g // 2}"] if threads == 1 else [f"{v}x{g}"]
        for r in tagged(run(base + ["--child=compute", f"--threads={threads}", "--cases=" + ",".join(
                dict.fromkeys(cases))]), "COMPUTE"):
            compute[(r["resolution"], r["batch"], r["threads"])] = r["step_seconds"]
            gradient_bytes = r["gradient_bytes"]

    # 2. allreduce between 2 ranks: loopback (MPI, Gloo) and, with --hosts, two namespace hosts
    links = {}
    for transport in ("mpi", "gloo"):
        command = [HOROVODRUN, "-np", "2", "-H", "localhost:2"] + (["--gloo"] if transport == "gloo" else [])
        links[f"loopback_{transport}"] = tagged(run(command + base + ["--child=allreduce"]), "ALLREDUCE")
    if args.hosts:
        sys.path.insert(0, os.path.join(HERE, "..", "tests"))
        from netns_hosts import Hosts

        why = Hosts.unavailable()
        if why:
            raise SystemExit(f"--hosts: {why}")
        with Hosts() as hosts:
            command, env = hosts.launcher("mpi", 1, base + ["--child=allreduce"])
            links["veth_mpi"] = tagged(run(command, cwd="/"), "ALLREDUCE")
    records = []
    for link, points in links.items():
        overhead, beta = fit(points)
        records.append({"kind": "allreduce", "link": link, "overhead_seconds": overhead, "beta_bytes_per_s": beta,
                        "points": points, "repeats": args.repeats, "warmup": 1})
    overhead, beta = next((r["overhead_seconds"], r["beta_bytes_per_s"]) for r in records
                          if r["link"] == "loopback_mpi")
    model = Model(compute, overhead, beta, gradient_bytes)
    records.append({"kind": "compute", "preset": args.preset, "gradient_bytes": gradient_bytes,
                    "step_seconds": [{"resolution": n, "batch": b, "threads": t, "seconds": s}
                                     for (n, b, t), s in sorted(compute.items())],
                    "thread_efficiency": {str(n): model.efficiency(n) for n in levels},
                    "repeats": args.repeats, "warmup": 1})

    # 3. validation: bench_scaling's measured 1- and 2-rank steps against the model
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(HERE, "bench_scaling.py"), "--workers=1,2",
                        f"--resolution={v}", f"--global_batch={g}", f"--preset={args.preset}",
                        f"--repeats={args.repeats}"], check=True, capture_output=True, text=True,
                       env=dict(os.environ, POISSON_TF_BENCH_RESULTS=tmp, TF_CPP_MIN_LOG_LEVEL="2"))
        with open(os.path.join(tmp, "scaling.jsonl")) as f:
            measured = [json.loads(line) for line in f]
    for m in measured:
        p = m["workers"]
        predicted = model.step(v, g // p, p, 2 // p)
        records.append({"kind": "validation", "resolution": v, "global_batch": g, "workers": p,
                        "threads_per_worker": m["threads_per_worker"], "measured_step_seconds": m["step_seconds"],
                        "measured_step_seconds_times": m["step_seconds_times"], "predicted_step_seconds": predicted,
                        "error": predicted / m["step_seconds"] - 1, "repeats": m["repeats"], "warmup": 1})

    # 4. projections (published fabric figures; Horovod's own overhead per collective as measured here)
    nodes = [int(x) for x in args.nodes.split(",")]
    project_levels = [int(x) for x in args.project_levels.split(",")]
    for system in SYSTEMS:
        for r in project(model, system, project_levels, nodes, args.global_batch):
            records.append({"kind": "projection", **r, "global_batch": args.global_batch})
    for r in records:
        if r["kind"] == "validation":
            print(f"validation {r['workers']} rank(s) x {r['threads_per_worker']} thread(s) at {v}^3, batch {g}: "
                  f"measured {r['measured_step_seconds'] * 1e3:.1f} ms, model {r['predicted_step_seconds'] * 1e3:.1f}"
                  f" ms ({r['error']:+.1%})")
        elif r["kind"] == "allreduce":
            print(f"allreduce {r['link']}: overhead {r['overhead_seconds'] * 1e6:.0f} us, beta "
                  f"{r['beta_bytes_per_s'] / 1e9:.2f} GB/s")
    figure([r for r in records if r["kind"] == "projection"], os.path.join(_common.RESULTS, "projection_bridges2.png"))
    print(_common.write("projection", records, {k: v for k, v in vars(args).items() if k not in ("child", "cases")}))


if __name__ == "__main__":
    main()
