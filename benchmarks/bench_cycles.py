"""Time to accuracy of multigrid schedules against single-level training: validation rel_l2 at the finest level
against training time and voxels, every schedule from scratch, the same validation fields and cadence for all.

Usage: python benchmarks/bench_cycles.py [--levels 32,64,128] [--schedules single,half_v,v,f] [--seeds 0,1]
          [--steps 600] [--validate_every_seconds 60] [--plot cycles_128.png] [--tag T] [--baseline_tag T0]
A schedule is a name from SCHEDULES (config overrides, as poisson-tf-train flags would give them); every one
trains about --steps optimizer steps in all (visit lengths are fractions of it, rounded to whole epochs: at
300 steps V trains 288, F 352), so with constant voxels per step (the default per-level batch) they cost
about the same time. Validation (rel_l2 against cached AMG solutions of --num_val fixed fields, at the finest
level only) runs after the first step (--validate_at=epoch: epoch end; the records before 2026-11-29 used epoch
ends) that ends --validate_every_seconds of training after the last one, and after the last step, so an epoch
of many slow steps does not hide when a target was crossed; its time is excluded from the training time (wall
time includes it). Per-level step times are recorded apart from the rest.
The summary compares each schedule with single-level training of the same seed (trained in the same run, or
with --baseline_tag the stored record of an earlier run with the same settings): the training time until it
first reaches single's final rel_l2 (speedup = single's time / that), the time from which on it stays at or
below it (speedup_stay; at batch 2 the curves jump by a percent from one step to the next, so the first
crossing is earlier the more often one validates), and its rel_l2 at single's total time.
Timing: every (schedule, seed) is a single training run, deliberately ("repeats": 1 in the record; the seeds
are the replicates): train_seconds is the sum of its steps' seconds, the first steps (tracing, compile) included
("warmup": 0), as time to accuracy is what a run pays. step_seconds_times holds every step's seconds per level
in order; median_step_seconds, per level, leaves out each level's first step ("step_warmup": 1).
Cycles (cycles.cycle_levels, level 0 the coarsest): V visits 2,1,0,1,2 at three levels, while W and F both
visit 2,1,0,1,0,1,2 there: at three levels W and F are the same schedule (the same levels in the same order,
one coarse revisit more than V), and with their equal fractions and revisit_lr_scale in SCHEDULES the same run
(the earlier 16,32,64 records of w and f reached the same rel_l2 after the same voxels). They differ from four
levels on (W 3,2,1,0,1,0,1,2,1,0,1,0,1,2,3; F 3,2,1,0,1,0,1,2,1,0,1,2,3), but every multigrid schedule here
has three fractions (one per level), so this script runs them at three levels only (four raise IndexError in
visit_steps): telling W from F needs a fourth level and a fourth fraction per schedule.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

# name -> (visit lengths as fractions of --steps per level of a named cycle, or a spec builder; overrides)
SCHEDULES = {
    "single": {"cycle.cycle": "single"},
    "half_v": {"cycle.cycle": "half_v", "fractions": (0.25, 0.25, 0.5)},
    "half_v_coarse": {"cycle.cycle": "half_v", "fractions": (0.5, 0.25, 0.25)},
    "v": {"cycle.cycle": "v", "fractions": (0.125, 0.125, 0.25), "cycle.revisit_lr_scale": 0.5},
    "w": {"cycle.cycle": "w", "fractions": (0.0625, 0.0625, 0.25), "cycle.revisit_lr_scale": 0.5},
    "f": {"cycle.cycle": "f", "fractions": (0.0625, 0.0625, 0.25), "cycle.revisit_lr_scale": 0.5},
    # the same Half-V with the finest level's batch at every level (coarse steps 8x, 64x cheaper)
    "half_v_same_batch": {"cycle.cycle": "half_v", "fractions": (0.25, 0.25, 0.5), "same_batch": True},
    # V and F (= W at three levels) with the finest level's batch at every level, like half_v_same_batch
    "v_same_batch": {"cycle.cycle": "v", "fractions": (0.125, 0.125, 0.25), "cycle.revisit_lr_scale": 0.5,
                     "same_batch": True},
    "f_same_batch": {"cycle.cycle": "f", "fractions": (0.0625, 0.0625, 0.25), "cycle.revisit_lr_scale": 0.5,
                     "same_batch": True},
    # half_v_same_batch with the learning rate's cosine restarted at every visit (a warm restart per level switch)
    "half_v_restart": {"cycle.cycle": "half_v", "fractions": (0.25, 0.25, 0.5), "same_batch": True,
                       "optim.lr_decay": "cosine_per_visit"},
    "half_v_restrict": {"cycle.cycle": "half_v", "fractions": (0.25, 0.25, 0.5), "data.coarse_nu": "restrict"},
    # half_v_same_batch with every coarse field the 2x2x2 average of a fine training field (nested data)
    "half_v_same_batch_restrict": {"cycle.cycle": "half_v", "fractions": (0.25, 0.25, 0.5), "same_batch": True,
                                   "data.coarse_nu": "restrict"},
}


def visit_steps(name: str, total: int, levels: tuple, block: int = 16) -> tuple:
    """Steps of every level's visits such that the whole schedule trains about `total` steps (one cycle; whole
    blocks of `block` steps, at least one per visit)."""
    from poisson_tf import cycles

    spec = SCHEDULES[name]
    if spec["cycle.cycle"] == "single":
        return (total,)
    fractions = spec["fractions"]
    visits = cycles.cycle_levels(spec["cycle.cycle"], len(levels))
    share = [fractions[level] for level in visits]
    # whole blocks of `block` steps, so the plan's epochs stay that long (validation runs at epoch ends)
    return tuple(max(block, block * round(total * f / sum(share) / block)) for f in fractions)


def make_config(name: str, args, seed: int, model_dir: str):
    from poisson_tf import config

    spec = dict(SCHEDULES[name])
    levels = tuple(int(x) for x in args.levels.split(","))
    steps = visit_steps(name, args.steps, levels, args.num_train // args.global_batch)
    values = {"preset": args.preset, **{f"model.{k}": v for k, v in args.model.items()},
              "cycle.levels": list(levels), "cycle.visit_unit": "steps",
              "cycle.epochs_per_visit": list(steps), "optim.global_batch_size": args.global_batch,
              "optim.learning_rate": args.learning_rate, "optim.lr_decay": args.lr_decay,
              "data.num_train": args.num_train, "data.num_val": args.num_val, "run.seed": seed,
              "run.model_dir": model_dir, "run.verbose": 0, "run.validate_every": 10 ** 6,
              "run.val_resolutions": [levels[-1]], "run.checkpoint_seconds": 10 ** 6}
    if spec.pop("same_batch", False):
        values["cycle.batch_per_level"] = [args.global_batch] * len(levels)
        values["cycle.samples_per_level"] = [args.num_train] * len(levels)
    spec.pop("fractions", None)
    values.update(spec)
    return config.override(values)


def run(name: str, seed: int, args, val_coeffs) -> dict:
    import keras
    import numpy as np

    from poisson_tf import inference
    from poisson_tf import solvers
    from poisson_tf import training

    cfg = make_config(name, args, seed, tempfile.mkdtemp(prefix=f"cycles_{name}_{seed}_"))
    plan = cfg.plan()
    finest = plan.resolutions[-1]
    store = solvers.ReferenceStore(args.reference_cache)
    nu_val, u_ref = store.get_many(cfg.data.field_family(), val_coeffs, finest)  # solved (or read) before the clock starts

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_seconds, self.voxels, self.points, self.step_seconds = 0.0, 0, [], {}
            self.resolutions, self.batches = plan.epoch_resolutions(), plan.epoch_batch_sizes()
            self.since_validation = 0.0

        def on_train_begin(self, logs=None):
            self.wall_start = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            seconds = time.perf_counter() - self._t
            self.train_seconds += seconds
            self.since_validation += seconds
            self.step_seconds.setdefault(self._resolution, []).append(seconds)
            self.voxels += self.batches[self._epoch] * self._resolution ** 3
            last = self._epoch == plan.num_epochs - 1 and batch == plan.steps_per_epoch - 1
            if last or (args.validate_at == "step" and self.since_validation >= args.validate_every_seconds):
                self.validate(self._epoch)

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._resolution = epoch, self.resolutions[epoch]

        def on_epoch_end(self, epoch, logs=None):
            if args.validate_at == "epoch" and self.since_validation >= args.validate_every_seconds \
                    and epoch < plan.num_epochs - 1:
                self.validate(epoch)

        def validate(self, epoch):
            u = inference.predict(self.model.network, nu_val, batch_size=1)
            errors = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(u, u_ref)]
            self.points.append({"epoch": epoch, "train_seconds": self.train_seconds, "voxels": self.voxels,
                                "wall_seconds": time.perf_counter() - self.wall_start,
                                "rel_l2": float(np.mean(errors)), "resolution": self.resolutions[epoch]})
            self.since_validation = 0.0
            print(f"  {name} seed {seed}: epoch {epoch + 1}/{plan.num_epochs} at {self.resolutions[epoch]}^3, "
                  f"{self.train_seconds:.0f} s, rel_l2 {np.mean(errors):.2%}", flush=True)

    recorder = Recorder()
    training.train(cfg, extra_callbacks=[recorder])
    steps = {str(n): float(np.median(s[1:] or s)) for n, s in recorder.step_seconds.items()}
    return {"schedule": name, "seed": seed, "levels": list(plan.resolutions), "steps": plan.num_steps,
            "visits": [[v.resolution, v.epochs * plan.steps_per_epoch, v.global_batch_size, v.lr_scale]
                       for v in plan.visits], "config": cfg.to_dict(), "curve": recorder.points,
            "median_step_seconds": steps, "step_warmup": 1,
            "step_seconds_times": {str(n): s for n, s in recorder.step_seconds.items()},
            "train_seconds": recorder.train_seconds, "train_seconds_times": [recorder.train_seconds],
            "repeats": 1, "warmup": 0,
            "final_rel_l2": recorder.points[-1]["rel_l2"]}


def first_time_at(curve: list, target: float, key: str = "train_seconds"):
    """The first `key` at which the curve's rel_l2 is <= target (None if never)."""
    return next((p[key] for p in curve if p["rel_l2"] <= target), None)


def time_staying_at(curve: list, target: float, key: str = "train_seconds"):
    """The first `key` from which on every validated rel_l2 is <= target (None if the last one is above): with a
    noisy curve (batch 2) the first crossing depends on how often one looks, this one much less."""
    above = [i for i, p in enumerate(curve) if p["rel_l2"] > target]
    start = above[-1] + 1 if above else 0
    return curve[start][key] if start < len(curve) else None


def rel_l2_at(curve: list, seconds: float) -> float:
    """The last validated rel_l2 at or before `seconds` of training."""
    before = [p["rel_l2"] for p in curve if p["train_seconds"] <= seconds * 1.0001]
    return before[-1] if before else float("nan")


def summarize(records: list) -> list:
    """Per schedule and seed, against single-level training of the same seed."""
    singles = {r["seed"]: r for r in records if r["schedule"] == "single"}
    rows = []
    for r in records:
        base = singles.get(r["seed"])
        row = {"schedule": r["schedule"], "seed": r["seed"], "final_rel_l2": r["final_rel_l2"],
               "train_seconds": r["train_seconds"]}
        if base is r:  # the baseline itself: its speedup is 1 by definition
            row.update(target=r["final_rel_l2"], seconds_to_target=r["train_seconds"], speedup=1.0,
                       seconds_to_stay=r["train_seconds"], speedup_stay=1.0,
                       rel_l2_at_single_time=r["final_rel_l2"])
        elif base is not None:
            target = base["final_rel_l2"]
            reached, stays = first_time_at(r["curve"], target), time_staying_at(r["curve"], target)
            row.update(target=target, seconds_to_target=reached,
                       speedup=(base["train_seconds"] / reached) if reached else None,
                       seconds_to_stay=stays, speedup_stay=(base["train_seconds"] / stays) if stays else None,
                       rel_l2_at_single_time=rel_l2_at(r["curve"], base["train_seconds"]))
        rows.append(row)
    return rows


def plot(records: list, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    names = sorted({r["schedule"] for r in records}, key=lambda n: list(SCHEDULES).index(n))
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    for r in records:
        curve = r["curve"]
        for ax, key, scale in ((axes[0], "train_seconds", 60.0), (axes[1], "voxels", 1e9)):
            ax.plot([p[key] / scale for p in curve], [100 * p["rel_l2"] for p in curve], "-o", ms=3,
                    color=colors[r["schedule"]], alpha=0.85, label=f"{r['schedule']} (seed {r['seed']})")
    levels = max((r["levels"] for r in records), key=len)  # a cycle's levels (single-level records name one)
    finest = levels[-1]
    for ax, label in ((axes[0], "training time (min)"), (axes[1], "voxels processed (1e9)")):
        ax.set_xlabel(label)
        ax.set_ylabel(f"validation rel_l2 at {finest}^3 (%)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    machine = _common.machine()
    fig.suptitle(f"levels {','.join(map(str, levels))}: time to accuracy, {len(records)} runs "
                 f"({machine['isa_class']}, {machine['cpu_model']}, {machine['logical_cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# what a stored single-level baseline must share with this run besides its training config: how it was validated
# (the validation fields follow from --num_val, which is in the config) and the machine that timed it
SAME_SETTINGS = ("validate_every_seconds", "validate_at")
SAME_MACHINE = ("cpu_model", "isa_class", "logical_cpus", "tensorflow", "onednn", "onednn_max_isa")


def _comparable_config(config: dict) -> dict:
    """A run's config as stored in JSON, flat ("section.key": value), without what does not change training
    (its directory, the reference cache)."""
    config = json.loads(json.dumps(config))
    flat = {f"{section}.{k}": v for section, values in config.items() if isinstance(values, dict)
            for k, v in values.items()}
    flat.update((k, v) for k, v in config.items() if not isinstance(v, dict))
    return {k: v for k, v in flat.items() if k not in ("run.model_dir", "run.reference_cache")}


def stored_singles(args, seeds: list) -> list:
    """The single-level records of the run tagged --baseline_tag, one per seed: the newest whose training config
    (make_config's, all but the model directory), validation settings and machine equal this run's. Time on
    these shared machines drifts between sessions (a 128^3 step took 0.80 s one day, 1.07 s another), so a
    stored baseline is fair only from the same session: its date is printed.

    Raises:
      SystemExit: a seed without such a record, naming the tags there are and the first setting that differs.
    """
    finest = int(args.levels.split(",")[-1])
    path = os.path.join(_common.RESULTS, "cycles.jsonl")
    with open(path) as f:
        singles = [r for r in map(json.loads, filter(str.strip, f))
                   if r.get("schedule") == "single" and r["levels"] == [finest]]
    here = _common.machine()
    out = []
    for seed in seeds:
        want = _comparable_config(make_config("single", args, seed, "unused").to_dict())
        tagged = [r for r in singles if r["seed"] == seed and r["settings"].get("tag") == args.baseline_tag]
        if not tagged:
            tags = sorted({r["settings"].get("tag", "") for r in singles if r["seed"] == seed})
            raise SystemExit(f"--baseline_tag={args.baseline_tag!r}: no single-level record of seed {seed} at "
                             f"{finest}^3 in {path}; tags with one: {tags}")
        differences = []
        for r in reversed(tagged):
            got = _comparable_config(r["config"])
            differ = ([f"config {k}={v!r} (here {want.get(k)!r})" for k, v in got.items() if want.get(k) != v]
                      + [f"--{k}={r['settings'].get(k)!r} (here {vars(args)[k]!r})" for k in SAME_SETTINGS
                         if r["settings"].get(k) != vars(args)[k]]
                      + [f"machine {k}={r['machine'].get(k)!r} (here {here.get(k)!r})" for k in SAME_MACHINE
                         if r["machine"].get(k) != here.get(k)])
            if not differ:
                print(f"single seed {seed}: the stored run of {r['machine']['date']} (tag {args.baseline_tag!r}, "
                      f"final {r['final_rel_l2']:.2%} after {r['train_seconds']:.0f} s)")
                out.append({k: v for k, v in r.items() if k not in ("benchmark", "settings", "machine", "summary")})
                break
            differences.append(differ[0])
        else:
            raise SystemExit(f"--baseline_tag={args.baseline_tag!r}: seed {seed}'s single-level records at "
                             f"{finest}^3 were run otherwise: {differences[0]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="32,64,128")
    parser.add_argument("--schedules", default="single,half_v,v,f")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of every schedule in all")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--model", default="", type=lambda text: {
        k: (int(v) if v.isdigit() else v) for k, v in (item.split("=") for item in text.split(",") if item)},
        help="model overrides, e.g. depth=4,base_filters=16")
    parser.add_argument("--global_batch", type=int, default=4, help="the finest level's global batch")
    parser.add_argument("--num_train", type=int, default=64, help="the finest level's training samples")
    parser.add_argument("--num_val", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--lr_decay", default="cosine")
    parser.add_argument("--validate_every_seconds", type=float, default=60.0)
    parser.add_argument("--validate_at", default="step", choices=("step", "epoch"),
                        help="validate after the first step (or epoch end) that ends --validate_every_seconds of "
                             "training after the last validation (records before 2026-11-29: epoch)")
    parser.add_argument("--reference_cache", default="")
    parser.add_argument("--plot", default="", help="PNG path (default: results/cycles_<finest>.png)")
    parser.add_argument("--tag", default="", help="a label stored with the records")
    parser.add_argument("--baseline_tag", default="",
                        help="compare with the single-level records of an earlier run with this --tag (the same "
                             "training config, validation settings and machine) instead of training them again")
    args = parser.parse_args()
    from poisson_tf.training import data

    if args.baseline_tag and "single" in args.schedules.split(","):
        raise SystemExit(f"--baseline_tag={args.baseline_tag!r} takes single-level training from the stored "
                         f"records; leave 'single' out of --schedules={args.schedules!r}")
    levels = tuple(int(x) for x in args.levels.split(","))
    seeds = [int(x) for x in args.seeds.split(",")]
    baselines = stored_singles(args, seeds) if args.baseline_tag else []
    # The same validation fields for every schedule: a set of their own (seed 2027), not the runs' samples.
    _, val_set = data.make_sample_sets(1, args.num_val, seed=2027)
    records = []
    for seed in seeds:
        for name in args.schedules.split(","):
            records.append(run(name, seed, args, val_set.coeffs))
    rows = summarize(baselines + records)[len(baselines):]
    for row in rows:
        extra = ""
        if row.get("target") is not None:
            extra = (f"; reaches single's {row['target']:.2%} after "
                     + (f"{row['seconds_to_target']:.0f} s = {row['speedup']:.2f}x faster" if row["speedup"]
                        else "never")
                     + (f", stays there from {row['seconds_to_stay']:.0f} s = {row['speedup_stay']:.2f}x"
                        if row["speedup_stay"] else ", does not stay there")
                     + f"; at single's time {row['rel_l2_at_single_time']:.2%}")
        print(f"{row['schedule']:>18} seed {row['seed']}: final {row['final_rel_l2']:.2%} after "
              f"{row['train_seconds']:.0f} s{extra}")
    for record, row in zip(records, rows):
        record["summary"] = row
    path = args.plot or os.path.join(_common.RESULTS, f"cycles_{levels[-1]}.png")
    print(plot(baselines + records, path))
    print(_common.write("cycles", records, vars(args)))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
