"""Renders the benchmark JSON lines (benchmarks/results/*.jsonl) into the documentation's results pages, one page
per record family (docs/results/<family>.rst: its table and figures), and the README's headline table.

Usage: python benchmarks/render_readme.py [--readme README.rst] [--docs docs]
The newest record of each configuration and CPU class wins (every table names the class, see cpu()); a benchmark
without results has no page. The pages and the README's table between its headline markers are generated: edit
this script, not them.
"""
import argparse
import glob
import json
import os

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
RESULTS = os.environ.get("POISSON_TF_BENCH_RESULTS", os.path.join(ROOT, "benchmarks", "results"))
START, END = ".. headline-start", ".. headline-end"
# The README's headline: the shipped solver's accuracy (its records' --model name in evaluation.jsonl).
HEADLINE_MODEL = "kl_small (shipped, runs at 32)"

# Each results page's title, by record family (a family not listed here is titled by its name).
PAGES = {
    "evaluation": "Accuracy of trained models",
    "error_analysis": "Where a solver's error sits",
    "interpolation_floor": "How much resolution a medium needs (interpolation floor)",
    "memory": "Peak memory: the estimates the command lines check, against measured peaks",
    "preemption": "Preemption: SIGTERM at random moments, then --resume=auto",
    "reference": "Reference solvers",
    "energy": "FEM energy loss",
    "pipeline": "Input pipeline",
    "models": "Presets: step time and memory",
    "throughput": "Training throughput and efficiency",
    "profile": "Where a training step's time goes",
    "scaling": "Horovod ranks on one host",
    "projection": "Scaling model: calibrated here, projected to cluster nodes",
    "inference": "The network against the solver",
    "megavoxel": "Megavoxel scale",
    "precision": "Mixed precision",
    "cycles": "Time to accuracy: training cycles",
}
# A figure belongs to the family its name starts with (before the first "_"), or to the family aliased here.
FIGURE_FAMILIES = {"error": "error_analysis"}
CAPTIONS = {
    "projection_bridges2.png": "Projected parallel efficiency on Bridges-2 RM nodes per level, strong (fixed global "
                               "batch) and weak (batch 1 per rank) scaling: a model, not a measurement",
    "cycles_128.png": "Validation rel_l2 at 128^3 against training time and voxels: single level, Half-V, "
                      "Half-V with the finest batch and with a cosine restart per visit, 2 seeds",
    "cycles_128_step.png": "Validation rel_l2 at 128^3 against training time and voxels, single level and the "
                           "Half-V, 2 seeds (validation after the first step 10 s after the last)",
    "cycles_128_vf.png": "Validation rel_l2 at 128^3: V and F cycles against single-level training (run V/F 128)",
    "cycles_128_restrict.png": "Coarse nu sampled from the KL expansion against restricted from the fine field "
                               "(--coarse_nu), Half-V at 128^3",
    "cycles_256.png": "Validation rel_l2 at 256^3: single level and the Half-V, first runs",
    "cycles_256_all.png": "Validation rel_l2 at 256^3 against training time and voxels: single level, Half-V, V "
                          "and F, 2 seeds (run all cycles 256)",
    "error_kl_small_128.png": "kl_small at 128^3: plane errors, decile profiles, rel_l2 against contrast and KL "
                              "coefficients, 2J and flux errors",
    "error_kl_small_64.png": "kl_small at 64^3: the same panels",
    "error_demo_64.png": "The demo model at 64^3: the same panels",
    "error_training.png": "Validation rel_l2 against training seconds at 64^3 and 128^3, by schedule, depth and "
                          "parameter count",
}


def cpu(record: dict) -> str:
    """The CPU class a record was measured on: avx2, avx512, or amx (an AVX-512 CPU with AMX tiles), and
    ":avx2" after it when ONEDNN_MAX_CPU_ISA capped oneDNN at AVX2. Records from before they named the class
    came from the AVX-512 machine (their matmul reference, 499 GFLOP/s, is out of an AVX2 machine's reach) and
    are marked "avx512*"."""
    machine = record.get("machine", {})
    name = machine.get("isa_class")
    if not name:
        return "avx512*"
    if "amx_tile" in machine.get("isa_flags", ()):
        name = "amx"
    capped = machine.get("onednn_max_isa", "")
    return f"{name}:{capped.lower()}" if capped else name


def onednn(record: dict) -> str:
    """Whether TensorFlow's oneDNN kernels ran (records from before they said so: on, the AVX-512 default)."""
    return "off" if record.get("machine", {}).get("onednn") is False else "on"


def threads(record: dict) -> str:
    """TensorFlow's thread pools a record set, "intra x inter" ("default": TensorFlow's, 2 x 2 on 2 cores)."""
    settings = record.get("settings", {})
    intra, inter = settings.get("intra_op_threads"), settings.get("inter_op_threads")
    if intra is None and inter is None:
        return "default"
    return f"{intra if intra is not None else 'default'} x {inter if inter is not None else 'default'}"


def load(name: str, key, keep=lambda r: True) -> list:
    """The newest record of every (CPU class, key) of a benchmark, in file order; `keep` filters formats."""
    path = os.path.join(RESULTS, f"{name}.jsonl")
    if not os.path.exists(path):
        return []
    latest = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if keep(record):
                latest[(cpu(record),) + tuple(key(record) if isinstance(key(record), tuple) else (key(record),))] = record
    return list(latest.values())


def table(title: str, command: str, header: list, records: list, cells, order=None) -> str:
    """An RST table of records, the CPU class first: cells(record) -> the other columns."""
    if not records:
        return ""
    records = sorted(records, key=lambda r: (cpu(r),) + tuple(order(r) if order else ()))
    rows = [[cpu(r)] + [str(c) for c in cells(r)] for r in records]
    cells_ = [["CPU"] + header] + rows
    widths = [max(len(r[i]) for r in cells_) for i in range(len(cells_[0]))]
    rule = "  ".join("=" * w for w in widths)
    lines = [title, "~" * len(title), "", f"``{command}``", "", rule,
             "  ".join(h.ljust(w) for h, w in zip(cells_[0], widths)), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines + [rule, "", ""])


def tables() -> dict:
    """Each record family's table (RST), by family; a family without records has none."""
    out = {}
    out["evaluation"] = table(
        "Accuracy of trained models against the reference solver (poisson-tf-evaluate, mean over the fields)",
        "python benchmarks/record_evaluation.py --report <model_dir>/eval/report.json --model <name>",
        ["model", "trained", "N", "fields", "rel_l2", "worst", "u = 1 - x", "energy_gap", "flux_error", "s / field",
         "train s", "job wall s", "eval peak GiB"],
        load("evaluation", lambda r: (r["model"], r["resolution"])),
        lambda r: [r["model"], ",".join(map(str, r["trained_resolutions"] or [])), r["resolution"]
                   if not r["zero_shot"] else f"{r['resolution']} (zero-shot)", r["num_samples"],
                   f"{r['rel_l2']:.2%}", f"{r['rel_l2_worst']:.2%}", f"{r['baseline_rel_l2']:.2%}",
                   f"{r['energy_gap']:.4f}", f"{r['flux_error']:.4f}", f"{r['seconds_per_field']:.3f}",
                   f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-",
                   f"{r['wall_seconds']:.0f}" if r.get("wall_seconds") else "-",
                   f"{r['eval_peak_gib']:.1f}" if r.get("eval_peak_gib") else "-"],
        lambda r: (r["model"], r["resolution"]))
    out["memory"] = table(
        "Estimated against measured peak memory of the command lines (one run each)",
        "python benchmarks/bench_memory.py",
        ["command", "model_dir", "N", "estimate GiB", "measured GiB", "ratio"],
        load("memory", lambda r: (r["command"], r.get("model_dir", ""), r["resolution"])),
        lambda r: [r["command"], r.get("model_dir", "-"), r["resolution"], f"{r['estimate_gib']:.2f}",
                   f"{r['measured_gib']:.2f}", f"{r['ratio']:.2f}"],
        lambda r: (r["command"], r.get("model_dir", ""), r["resolution"]))
    out["preemption"] = table(
        "SIGTERM at random moments of one tiny training, each launch resumed from the last (--deterministic)",
        "python benchmarks/bench_preemption.py [--launcher=horovodrun]",
        ["launcher", "stops", "within an epoch", "checkpoint + exit <= 10 s", "messages", "tracebacks",
         "slowest exit s", "final weights = uninterrupted"],
        load("preemption", lambda r: (r["launcher"],)),
        lambda r: [r["launcher"], r["stops"], r["stops_within_an_epoch"], f"{r['within_10s']}/{r['stops']}",
                   f"{r['messages']}/{r['stops']}", r["tracebacks"], f"{r['max_gone_s']:.1f}",
                   "bit for bit" if r["bitwise_equal"] else f"no: {', '.join(r['different_variables'])}"],
        lambda r: (r["launcher"],))

    out["reference"] = table(
        "Reference AMG-CG solve and matrix-free GMG-CG (rtol 1e-10)",
        "python benchmarks/bench_reference.py --resolutions 32,64,128,256,512",
        ["N", "method", "sample", "contrast", "unknowns", "iterations", "seconds", "setup s", "peak GiB", "vs AMG"],
        load("reference", lambda r: (r["resolution"], r.get("method", "amg"), r.get("sample", "sobol0"))),
        lambda r: [r["resolution"], r.get("method", "amg"), r.get("sample", "sobol0"),
                   f"{r['contrast']:.0e}" if "contrast" in r else "", f"{r['unknowns']:,}", r["iterations"],
                   f"{r['seconds']:.2f}", f"{r['setup_seconds']:.2f}", f"{r['peak_rss_gib']:.2f}",
                   f"{r['relative_difference_to_amg']:.0e}" if "relative_difference_to_amg" in r else ""],
        lambda r: (r["resolution"], r.get("sample", "sobol0"), r.get("method", "amg")))
    out["energy"] = table(
        "FEM energy loss next to one conv3d layer (voxels/s)", "python benchmarks/bench_energy.py",
        ["N", "energy fwd", "energy fwd+bwd", "conv3d 2^3 1->24", "conv3d 3^3 16->16"],
        load("energy", lambda r: (r["resolution"], r["batch"])),
        lambda r: [r["resolution"], f"{r['energy_forward_voxels_per_s']:.2e}",
                   f"{r['energy_forward_backward_voxels_per_s']:.2e}", f"{r['conv3d_2x2x2_1to24_voxels_per_s']:.2e}",
                   f"{r['conv3d_3x3x3_16to16_voxels_per_s']:.2e}"],
        lambda r: (r["resolution"],))
    out["pipeline"] = table(
        "Input pipeline next to training (samples/s)", "python benchmarks/bench_pipeline.py",
        ["N", "preset", "batch", "steps per call", "threads", "pipeline (uncached)", "training", "training step ms",
         "ratio"],
        load("pipeline", lambda r: (r["resolution"], r["preset"], r["batch"], r.get("steps_per_execution", 1),
                                    threads(r))),
        lambda r: [r["resolution"], r["preset"], r["batch"], r.get("steps_per_execution", 1), threads(r),
                   f"{r['pipeline_samples_per_s']:.0f}", f"{r['training_samples_per_s']:.1f}",
                   f"{1e3 * r['batch'] / r['training_samples_per_s']:.1f}", f"{r['ratio']:.0f}x"],
        lambda r: (r["batch"], r.get("steps_per_execution", 1), threads(r), r["resolution"]))
    out["models"] = table(
        "Step time and peak memory per preset (batch 1)", "python benchmarks/bench_models.py",
        ["preset", "params", "N", "forward s", "fwd+bwd s", "peak GiB inference", "peak GiB training"],
        load("models", lambda r: (r["preset"], r["resolution"], r["batch"])),
        lambda r: [r["preset"], f"{r['params']:,}", r["resolution"], f"{r['forward_seconds']:.3f}",
                   f"{r['step_seconds']:.3f}", f"{r.get('peak_inference_gib', float('nan')):.2f}",
                   f"{r['peak_rss_gib']:.2f}"])
    out["throughput"] = table(
        "Training throughput and efficiency (2 threads)", "python benchmarks/bench_throughput.py",
        ["preset", "N", "batch", "precision", "oneDNN", "voxels/s", "FLOP/voxel (fwd)", "GFLOP/s", "matmul GFLOP/s",
         "efficiency"],
        load("throughput", lambda r: (r["preset"], r["resolution"], r["precision"], r["batch"], onednn(r))),
        lambda r: [r["preset"], r["resolution"], r["batch"], r["precision"], onednn(r), f"{r['voxels_per_s']:.2e}",
                   f"{r['flops_per_voxel']:.0f}", f"{r['achieved_flops'] / 1e9:.1f}",
                   f"{r['matmul_flops'] / 1e9:.0f}", f"{r['efficiency']:.0%}"],
        lambda r: (r["precision"], r["preset"], r["batch"], r["resolution"]))
    out["profile"] = table(
        "Where a training step's time goes (top 5 ops, summed over the compute threads)",
        "python benchmarks/bench_profile.py",
        ["preset", "N", "batch", "precision", "padding", "GEMM convs", "step ms", "op ms", "top ops (ms)"],
        # Precision and padding are configurations of their own (records from before they were set say "-").
        load("profile", lambda r: (r["preset"], r["resolution"], r["batch"], r.get("precision", "-"),
                                   r.get("padding", "-"))),
        lambda r: [r["preset"], r["resolution"], r["batch"], r.get("precision", "-"), r.get("padding", "-"),
                   r.get("gemm_convolutions", "-"), f"{r['step_seconds'] * 1e3:.0f}", f"{r['op_ms']:.0f}",
                   "; ".join(f"{op['layer']} {op['op']} {op['ms']:.0f}" for op in r["top_ops"][:5])],
        lambda r: (r["preset"], r.get("precision", "-"), r.get("padding", "-")))
    out["scaling"] = table(
        "Horovod ranks on one host against one process (same global batch)",
        "python benchmarks/bench_scaling.py --resolution=64 [--gloo]",
        ["N", "workers", "threads each", "transport", "ranks bound", "voxels/s in total", "vs one process",
         "allreduce ms", "allreduce share"],
        load("scaling", lambda r: (r["workers"], r["resolution"], r["transport"], r.get("bound", True)),
             lambda r: "global_batch" in r),
        lambda r: [r["resolution"], r["workers"], r["threads_per_worker"], r["transport"],
                   "yes" if r.get("bound", True) else "no (POISSON_TF_BIND=0)",
                   f"{r['total_voxels_per_s']:.2e}", f"{r['speedup_over_one_process']:.2f}x",
                   f"{r['allreduce_seconds_in_step'] * 1e3:.1f}", f"{r['allreduce_share']:.1%}"],
        lambda r: (r["resolution"], r["workers"], r["transport"]))
    out["inference"] = table(
        "The network against the reference solver at matched accuracy (demo model, seconds per field)",
        "python benchmarks/bench_inference.py --resolutions 32,64,128,256",
        ["N", "network s", "network rel_l2", "solver", "solver s to that rel_l2", "speedup", "solver s to 1e-10",
         "warm start its (1e-8)", "cold its (1e-8)"],
        load("inference", lambda r: r["resolution"], lambda r: "solver_seconds_matched" in r),
        lambda r: [r["resolution"], f"{r['network_seconds']:.3f}", f"{r['network_rel_l2']:.2%}", r["solver_method"],
                   f"{r['solver_seconds_matched']:.2f}", f"{r['speedup_matched']:.0f}x",
                   f"{r['solver_seconds_1e10']:.2f}", f"{r['warm_iterations_1e8']:.1f}",
                   f"{r['cold_iterations_1e8']:.1f}"],
        lambda r: (r["resolution"],))
    out["megavoxel"] = table(
        "Megavoxel scale (small preset, batch 1)", "python benchmarks/bench_megavoxel.py",
        ["task", "N", "Mvoxel", "precision", "seconds", "peak GiB"],
        load("megavoxel", lambda r: (r["kind"], r["resolution"], r["precision"], r["preset"])),
        lambda r: [r["kind"], r["resolution"], f"{r['voxels'] / 1e6:.1f}", r["precision"],
                   f"{r.get('step_seconds', r.get('predict_seconds')):.2f}", f"{r['peak_rss_gib']:.2f}"])
    out["precision"] = table(
        "Mixed precision: the same training in float32 and bfloat16 (1 process)", "python benchmarks/bench_precision.py",
        ["precision", "levels", "epochs per visit", "train s", "rel_l2 finest", "energy_gap finest"],
        load("precision", lambda r: (r["precision"], tuple(r["levels"]), tuple(r["epochs_per_visit"]))),
        lambda r: [r["precision"], ",".join(map(str, r["levels"])), ",".join(map(str, r["epochs_per_visit"])),
                   f"{r['train_seconds']:.0f}",
                   "diverged (NaN)" if r.get("diverged") or r["rel_l2"] != r["rel_l2"] else f"{r['rel_l2']:.2%}",
                   "-" if r.get("diverged") or r["energy_gap"] != r["energy_gap"] else f"{r['energy_gap']:.3f}"])

    out["error_analysis"] = table(
        "Where a solver's error sits (held-out fields against the reference)",
        "python benchmarks/error_analysis.py --model_dir pretrained --name kl_small --resolution 128",
        ["model", "trained", "params", "N", "fields", "rel_l2", "worst", "worst's contrast", "2J error", "flux error",
         "inlet tenth share", "lowest log nu decile", "highest log nu decile", "steepest decile",
         "corr(rel_l2, log contrast)"],
        load("error_analysis", lambda r: (r["model"], tuple(r["trained_resolutions"] or ()), r["resolution"])),
        lambda r: [r["model"], ",".join(map(str, r["trained_resolutions"] or [])), f"{r['params']:,}", r["resolution"],
                   r["num_samples"], f"{r['summary']['rel_l2']:.2%}", f"{r['summary']['rel_l2_worst']:.2%}",
                   f"{r['summary']['worst_contrast']:.1e}", f"{r['summary']['conductance_error']:.2%}",
                   f"{r['summary']['flux_error']:.1%}", f"{r['summary']['share_inlet_tenth']:.1%}",
                   f"{r['summary']['lowest_nu_decile_error_ratio']:.2f}x",
                   f"{r['summary']['highest_nu_decile_error_ratio']:.2f}x",
                   f"{r['summary']['steepest_decile_error_ratio']:.2f}x",
                   f"{r['summary']['corr_rel_l2_log_contrast']:.2f}"],
        lambda r: (r["model"], r["params"], r["resolution"]))
    def family(r):  # records from before families were recorded: the shipped kl_small's held-out set
        f = r.get("family") or {"kind": "kl", "eta": 0.5, "num_terms": 4}
        return f"{f['kind']} eta {f['eta']:g}" + (f", contrast {f['contrast']:g}" if "contrast" in f else "")

    def percent(r, key, digits=2):
        return f"{r[key]:.{digits}%}" if key in r else "-"

    out["interpolation_floor"] = table(
        "How much resolution a medium needs: references interpolated to finer grids",
        "python benchmarks/interpolation_floor.py",
        ["family", "from N", "to N", "fields", "rel_l2", "worst", "2J error", "energy norm", "perturbation",
         "flux field", "inlet flux"],
        load("interpolation_floor", lambda r: (family(r), r["source"], r["target"])),
        lambda r: [family(r), r["source"], r["target"], r["num_samples"], percent(r, "rel_l2", 3),
                   percent(r, "rel_l2_worst"), percent(r, "energy_gap"), percent(r, "energy_norm_error"),
                   percent(r, "perturbation_error"), percent(r, "flux_field_error"), percent(r, "flux_error")],
        lambda r: (family(r), r["source"], r["target"]))

    def speedup(r, field="speedup"):
        if field not in r["summary"]:  # records from before the field existed
            return "-"
        value = r["summary"][field]
        return "never" if value is None and "target" in r["summary"] else f"{value:.2f}x" if value else "-"

    out["cycles"] = table(
        "Time to accuracy: schedules against single-level training (1 process, rel_l2 at the finest level)",
        "python benchmarks/bench_cycles.py --levels 32,64,128",
        ["schedule", "levels", "seed", "steps", "train s", "final rel_l2", "single's final", "reached after s",
         "speedup", "speedup (stays below)", "rel_l2 at single's time", "run (--tag)"],
        load("cycles", lambda r: (r["schedule"], tuple(r["levels"]), r["seed"], r["settings"].get("tag", "")),
             lambda r: "schedule" in r),
        lambda r: [r["schedule"], ",".join(map(str, r["levels"])), r["seed"], r["steps"], f"{r['train_seconds']:.0f}",
                   f"{r['final_rel_l2']:.2%}", f"{r['summary'].get('target', float('nan')):.2%}",
                   f"{r['summary']['seconds_to_target']:.0f}" if r["summary"].get("seconds_to_target") else "-",
                   speedup(r), speedup(r, "speedup_stay"),
                   f"{r['summary'].get('rel_l2_at_single_time', float('nan')):.2%}",
                   r["settings"].get("tag", "")],
        lambda r: (r["levels"][-1], r["settings"].get("tag", ""), r["seed"], r["schedule"]))
    out["projection"] = projection_tables()
    return {family: text for family, text in out.items() if text}


def projection_tables() -> str:
    """bench_scaling_model.py's records: the calibration (allreduce fits), the validation against measured steps,
    and the projected efficiency per system, mode and level (one column per node count)."""
    command = "python benchmarks/bench_scaling_model.py --hosts"
    text = table("Allreduce between 2 ranks, measured here: t = overhead + bytes / beta", command,
                 ["link", "overhead us", "beta GB/s"], load("projection", lambda r: r["link"],
                                                            lambda r: r["kind"] == "allreduce"),
                 lambda r: [r["link"], f"{r['overhead_seconds'] * 1e6:.0f}", f"{r['beta_bytes_per_s'] / 1e9:.2f}"])
    text += table("The model against this machine's measured training steps (bench_scaling.py)", command,
                  ["N", "global batch", "workers", "threads each", "measured ms", "model ms", "error"],
                  load("projection", lambda r: (r["resolution"], r["global_batch"], r["workers"]),
                       lambda r: r["kind"] == "validation"),
                  lambda r: [r["resolution"], r["global_batch"], r["workers"], r["threads_per_worker"],
                             f"{r['measured_step_seconds'] * 1e3:.1f}", f"{r['predicted_step_seconds'] * 1e3:.1f}",
                             f"{r['error']:+.1%}"],
                  lambda r: (r["workers"],))
    rows = load("projection", lambda r: (r["system"], r["mode"], r["resolution"], r["nodes"]),
                lambda r: r["kind"] == "projection" and "efficiency" in r)
    groups = {}
    for r in rows:
        groups.setdefault((cpu(r), r["system"], r["mode"], r["resolution"]), []).append(r)
    nodes = sorted({r["nodes"] for r in rows})
    summary = [dict(group[0], by_nodes={r["nodes"]: r for r in group}) for group in groups.values()]
    text += table("Projected parallel efficiency (and step ms) by node count: a model, not a measurement", command,
                  ["system", "scaling", "N", *[f"{k} node{'s' * (k > 1)}" for k in nodes]], summary,
                  lambda r: [r["system"], r["mode"], r["resolution"], *[
                      f"{r['by_nodes'][k]['efficiency']:.0%} ({r['by_nodes'][k]['step_seconds'] * 1e3:.0f})"
                      if k in r["by_nodes"] else "-" for k in nodes]],
                  lambda r: (r["system"], r["mode"], r["resolution"]))
    # flags/multigrid_128.flags: 64, 64 and 160 steps at 32, 64 and 128; here at one sample per rank (weak)
    recipe = {32: 64, 64: 64, 128: 160}
    weak = {}
    for r in rows:
        if r["mode"] == "weak" and r["resolution"] in recipe:
            weak.setdefault((cpu(r), r["system"], r["nodes"]), {})[r["resolution"]] = r
    runs = [dict(next(iter(levels.values())), seconds=sum(recipe[n] * levels[n]["step_seconds"] for n in recipe))
            for levels in weak.values() if set(levels) == set(recipe)]
    text += table("Projected time of the 128^3 Half-V recipe's 288 steps (32/64/128) at one sample per rank, "
                  "assuming the same step count at that global batch (not measured)", command,
                  ["system", "nodes", "ranks", "global batch", "seconds"], runs,
                  lambda r: [r["system"], r["nodes"], r["ranks"], r["ranks"], f"{r['seconds']:.1f}"],
                  lambda r: (r["system"], r["nodes"]))
    gpu = load("projection", lambda r: (r["system"], r["nodes"]),
               lambda r: r["kind"] == "projection" and "efficiency" not in r and r["mode"] == "weak")
    gpu = [r for r in gpu if r["resolution"] == min(x["resolution"] for x in gpu)] if gpu else []
    text += table("Projected allreduce per step on Azure ND A100 v4 (8 GPUs per VM; no GPU compute is modelled)",
                  command, ["system", "nodes", "GPUs", "allreduce ms"], gpu,
                  lambda r: [r["system"], r["nodes"], r["ranks"], f"{r['allreduce_seconds'] * 1e3:.2f}"],
                  lambda r: (r["nodes"],))
    return text


def headline() -> str:
    """The README's table: the shipped solver against the reference, one row per evaluated resolution."""
    return table(
        "The shipped solver against the reference solver (held-out fields, mean over the fields)",
        "poisson-tf-evaluate --model_dir=pretrained --resolutions=32,64,128",
        ["N", "fields", "rel_l2", "worst", "u = 1 - x", "2J error", "flux error", "s / field", "eval peak GiB"],
        load("evaluation", lambda r: r["resolution"], lambda r: r["model"] == HEADLINE_MODEL),
        lambda r: [r["resolution"] if not r["zero_shot"] else f"{r['resolution']} (zero-shot)", r["num_samples"],
                   f"{r['rel_l2']:.2%}", f"{r['rel_l2_worst']:.2%}", f"{r['baseline_rel_l2']:.2%}",
                   f"{r['energy_gap']:.2%}", f"{r['flux_error']:.2%}", f"{r['seconds_per_field']:.3f}",
                   f"{r['eval_peak_gib']:.1f}" if r.get("eval_peak_gib") else "-"],
        lambda r: (r["resolution"],))


def classes(records: list) -> str:
    """What each CPU class of a family's records was: their CPU models and logical CPUs, from the records."""
    seen = {}
    for record in records:
        machine = record.get("machine", {})
        model = machine.get("cpu_model") or "the project's earlier AVX-512 machine (records without a CPU model)"
        cpus = machine.get("logical_cpus") or machine.get("cpus")
        seen.setdefault(cpu(record), set()).add(f"{model}, {cpus} CPUs" if cpus else model)
    return "; ".join(f"``{name}``: {', '.join(sorted(models))}" for name, models in sorted(seen.items()))


def page(family: str, text: str, figures: list, docs: str) -> str:
    """A results page: its title, where it comes from, the CPU classes, the table and the figures."""
    title = PAGES.get(family, family)
    with open(os.path.join(RESULTS, f"{family}.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    lines = [f".. Generated by benchmarks/render_readme.py from benchmarks/results/{family}.jsonl: edit the script, "
             "not this page.", "", title, "=" * len(title), "",
             f"Rendered from ``benchmarks/results/{family}.jsonl`` ({len(records)} records; the newest of each "
             f"configuration and CPU class is shown). CPU classes: {classes(records)}.", ""]
    lines += [text.rstrip("\n") + "\n"] if text else [
        "This family has no table in ``benchmarks/render_readme.py`` yet.", ""]
    if figures:
        lines += ["Figures", "~~~~~~~", ""]
    where = os.path.join(docs, "results")
    for path in figures:
        name = os.path.basename(path)
        caption = CAPTIONS.get(name, name)
        lines += [f".. figure:: {os.path.relpath(path, where)}", f"   :alt: {caption}", "",
                  f"   {caption} (``{name}``)", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_pages(docs: str) -> list:
    """Writes docs/results/<family>.rst for every family with records (and removes the pages of families that
    have none any more); returns the families."""
    families = sorted(os.path.basename(p)[:-len(".jsonl")] for p in glob.glob(os.path.join(RESULTS, "*.jsonl")))
    figures = {}
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.png"))):
        prefix = os.path.basename(path).split("_")[0]
        figures.setdefault(FIGURE_FAMILIES.get(prefix, prefix), []).append(path)
    orphans = sorted(set(figures) - set(families))
    if orphans:
        raise SystemExit(f"figures in {RESULTS} belong to no record family: {orphans}; name them after one "
                         f"(or add an alias to FIGURE_FAMILIES)")
    where = os.path.join(docs, "results")
    os.makedirs(where, exist_ok=True)
    for stale in glob.glob(os.path.join(where, "*.rst")):
        if os.path.basename(stale)[:-len(".rst")] not in families:
            os.remove(stale)
    rendered = tables()
    for family in families:
        with open(os.path.join(where, f"{family}.rst"), "w") as f:
            f.write(page(family, rendered.get(family, ""), figures.get(family, []), docs))
    return families


def render_readme(readme: str) -> None:
    """Replaces the README's table between its headline markers."""
    with open(readme) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no '{START}' ... '{END}' markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    table_ = headline() or "(no evaluation records of the shipped solver)\n\n"
    with open(readme, "w") as f:
        f.write(f"{head}{START}\n\n{table_}{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.rst"))
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    args = parser.parse_args()
    families = render_pages(args.docs)
    render_readme(args.readme)
    print(f"rendered {len(families)} results pages into {os.path.join(args.docs, 'results')} and {args.readme}")


if __name__ == "__main__":
    main()
