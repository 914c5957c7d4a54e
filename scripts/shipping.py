"""Shipping a trained run as a pretrained solver: its files, a held-out sample set, the fingerprint, the card.

A maintainer's release tool, not part of the installed package: scripts/ship_pretrained.py is its command line;
model_card() can be re-run once the shipped solver has been
evaluated (poisson-tf-evaluate --model_dir=pretrained:<name>), to put the report into MODEL_CARD.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex

import numpy as np

from poisson_tf import config, cycles, fields, files, inference, modeldir, pretrained

#: The held-out set's default seed is the training data seed plus this (a different scrambled sequence).
HELD_OUT_SEED_OFFSET = 1000
MIN_HELD_OUT = 16
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def check_name(name: str) -> str:
    """Raises ValueError unless name can name a shipped solver (lower-case letters, digits, underscores)."""
    config.require(isinstance(name, str) and bool(_NAME.match(name)), "--name", name,
                   "lower-case letters, digits and underscores, starting with a letter (e.g. kl_small)")
    return name


def held_out_set(cfg: config.TrainConfig, num_samples: int = MIN_HELD_OUT, seed: int | None = None):
    """A held-out data.SampleSet for the run cfg: KL coefficients of its family (eta, num_terms, sampling) drawn
    with a seed other than the training seed, checked disjoint from the run's training and validation sets.

    Raises:
      ValueError: fewer than MIN_HELD_OUT samples, the training seed, or a sample the run trained or
        validated on.
    """
    from poisson_tf.training import data

    config.require(num_samples >= MIN_HELD_OUT, "--num_held_out", num_samples, f">= {MIN_HELD_OUT}")
    seed = (cfg.data.seed + HELD_OUT_SEED_OFFSET) % (config.MAX_SEED + 1) if seed is None else seed
    config.require(seed != cfg.data.seed and 0 <= seed <= config.MAX_SEED, "--held_out_seed", seed,
                   f"in 0..{config.MAX_SEED} and not the training data seed {cfg.data.seed}")
    family = cfg.data.field_family()
    held_out = data.SampleSet(family.sample(num_samples, cfg.data.sampling, seed), family, cfg.data.sampling, seed,
                              role="held_out")
    seen = np.concatenate([s.coeffs for s in data.make_sample_sets(
        cfg.num_train_samples, cfg.data.num_val, family, cfg.data.sampling, cfg.data.seed)])
    closest = np.abs(held_out.coeffs[:, None, :] - seen[None, :, :]).max(axis=-1).min()
    if closest < 1e-9:
        raise ValueError(f"the held-out set of seed {seed} shares a sample with the run's training or validation "
                         "set; give another --held_out_seed")
    return held_out


def read_summary(run_dir: str) -> dict | None:
    """The run's train_summary.json without its per-epoch history, or None when it has none."""
    path = os.path.join(run_dir, modeldir.SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    summary.pop("history", None)
    return summary


def read_report(path: str) -> dict:
    """A poisson-tf-evaluate report (JSON); ValueError when it is not one."""
    try:
        with open(path) as f:
            report = json.load(f)
        if not all({"model", "baseline", "per_sample"} <= set(r) for r in report["resolutions"].values()):
            raise KeyError("model, baseline or per_sample")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"--report {path!r} is not a poisson-tf-evaluate report ({type(e).__name__}: {e})") from None
    return report


def train_command(cfg: config.TrainConfig, workers: int = 1, model_dir: str = "runs/pretrained") -> str:
    """The poisson-tf-train command that trains cfg again: every setting that changes the training (those of
    TrainConfig.fingerprint(), explicit even where they equal today's defaults, but switches that are off and
    empty per-level lists), under horovodrun when the run had several workers. A spec cycle names its own
    levels and visit lengths, so those flags are left out."""
    flags = {o.path: o for o in config.options()}
    args = [f"--preset={cfg.preset}"]
    for path, value in cfg.fingerprint().items():
        section, _, name = path.partition(".")
        option = flags[path]
        if section == "cycle" and name in config.SPEC_SETS and cycles.is_spec(cfg.cycle.cycle):
            continue
        if option.kind == "tuple":
            if not value:  # empty: the default per-level rule
                continue
            args.append(f"--{option.flag}={','.join(map(str, value))}")
        elif option.kind == "bool":  # only when set: both are off by default, and one is refused when on
            if value:
                args.append(f"--{option.flag}")
        else:
            args.append(f"--{option.flag}={value}")
    launcher = f"horovodrun -np {workers} " if workers > 1 else ""
    return launcher + shlex.join(["poisson-tf-train", *args, f"--model_dir={model_dir}"])


def ship(run_dir: str, name: str = pretrained.DEFAULT_NAME, root: str = pretrained.ROOT, report: str | None = None,
         num_held_out: int = MIN_HELD_OUT, held_out_seed: int | None = None, placeholder: bool = False) -> str:
    """Copies a trained run's model.keras and config.json into root/<name>/ and writes the held-out set, the
    fingerprint and MODEL_CARD.md; loads the result through the fingerprint check before returning it.

    The shipped config.json is the run's with run.reference_cache cleared (the user's default cache, not a
    path on the training machine). Shipping again replaces the solver of that name.

    Args:
      run_dir: a finished poisson-tf-train model_dir.
      report: a poisson-tf-evaluate report of this model for the card (None: the card says it is not
        evaluated yet).
      placeholder: the card says the weights are a placeholder.

    Returns:
      the shipped solver's directory.

    Raises:
      ValueError: a bad name, a run without a trained model, a report that is not one, a bad held-out set.
    """
    check_name(name)
    run = modeldir.open_model_dir(run_dir)
    if run.fingerprint is not None:
        raise ValueError(f"{run_dir!r} is a shipped solver, not a training run; give the run it was shipped from")
    cfg = run.config
    evaluation = read_report(report) if report else None
    held_out = held_out_set(cfg, num_held_out, held_out_seed)
    num_params = inference.load_solver(run).count_params()

    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    fingerprint_path = os.path.join(directory, modeldir.FINGERPRINT_FILE)
    if os.path.exists(fingerprint_path):
        os.remove(fingerprint_path)  # until the new one is written, the directory is no shipped solver
    files.copy_file(run.model_path, os.path.join(directory, modeldir.MODEL_FILE))
    modeldir.save_config(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, reference_cache="")), directory)
    held_out.save(os.path.join(directory, modeldir.VAL_SAMPLES_FILE))
    files.write_json(fingerprint_path, modeldir.fingerprint(directory, num_params), indent=2, sort_keys=True)
    write_model_card(directory, read_summary(run_dir), evaluation, placeholder, source=os.path.abspath(run_dir))
    inference.load_solver(directory)  # the whole check a user's load makes
    return directory


def write_model_card(directory: str, summary: dict | None = None, report: dict | None = None,
                     placeholder: bool = False, source: str | None = None) -> str:
    """Writes directory's MODEL_CARD.md (model_card); returns its path."""
    return files.write_text(os.path.join(directory, modeldir.CARD_FILE),
                            model_card(directory, summary, report, placeholder, source))


def _machine(machine: dict) -> str:
    flags = ", ".join(machine.get("isa_flags", [])) or "none recorded"
    return (f"{machine.get('cpu_model', 'unknown CPU')} (ISA class {machine.get('isa_class', 'unknown')}: "
            f"{flags}; {machine.get('logical_cpus', '?')} logical CPUs)")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def _wall_time(summary: dict) -> str:
    seconds = summary.get("fit_seconds")
    if seconds is None:
        return "not recorded (the run's train_summary.json has no fit_seconds)"
    epochs = f"epochs {summary.get('start_epoch', 0) + 1}-{summary.get('end_epoch')}"
    return f"{_duration(seconds)} (the fit of {epochs}, validation included)"


def _evaluation_section(report: dict | None, name: str) -> list:
    if report is None:
        return ["Not evaluated yet. Evaluate the shipped solver on its held-out set and write the report into this "
                "card:", "", "```",
                f"poisson-tf-evaluate --model_dir=pretrained:{name} --report=pretrained_eval/{name}/report.json",
                f"python scripts/ship_pretrained.py --name={name} --card_only "
                f"--report=pretrained_eval/{name}/report.json [--model_dir=RUN]", "```"]
    samples = report.get("samples", {})
    where = (f"the {samples.get('num_samples', '?')} fields of the shipped held-out set"
             if samples.get("role") == "held_out" else
             f"{samples.get('num_samples', 'the')} fields of {samples.get('path', 'an unnamed sample set')} "
             f"(role {samples.get('role', 'unknown')}; not the shipped held-out set)")
    lines = [f"`poisson-tf-evaluate` on {where}, against the reference CG solutions of the same Q1 discretization "
             "(relative residual 1e-10), next to the trivial guess u = 1 - x. rel_l2 = ||u - u_ref|| / ||u_ref||; "
             "flux error: relative error of the reaction flux through x = 0; 2J error (energy_gap): "
             "(J(u) - J(u_ref)) / J(u_ref), the relative error of the effective conductance 2J.", "",
             "| N | fields | rel_l2 mean | rel_l2 worst | u = 1 - x rel_l2 mean / worst | flux error | "
             "u = 1 - x | 2J error | u = 1 - x | s / field |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in sorted(report["resolutions"].items(), key=lambda item: int(item[0])):
        m, b, rows = r["model"], r["baseline"], r["per_sample"]
        worst = max(s["rel_l2"] for s in rows)
        base_worst = max((s.get("baseline_rel_l2", float("nan")) for s in rows), default=float("nan"))
        lines.append(f"| {n}{' (zero-shot)' if r.get('zero_shot') else ''} | {r.get('num_samples', len(rows))} | "
                     f"{m['rel_l2']:.2%} | {worst:.2%} | {b.get('rel_l2', float('nan')):.2%} / {base_worst:.2%} | "
                     f"{m['flux_error']:.2%} | {b.get('flux_error', float('nan')):.2%} | {m['energy_gap']:.2e} | "
                     f"{b.get('energy_gap', float('nan')):.2e} | {r.get('inference_seconds_per_field', 0):.3f} |")
    if "machine" in report:
        lines += ["", f"Inference seconds measured on {_machine(report['machine'])}, "
                      f"{report.get('workers', 1)} worker(s)."]
    return lines


def model_card(directory: str, summary: dict | None = None, report: dict | None = None, placeholder: bool = False,
               source: str | None = None) -> str:
    """MODEL_CARD.md of the shipped solver in directory, generated from its config.json and fingerprint.json,
    the run's train summary (wall time, workers, machine; read_summary) and an evaluation report (read_report).
    Re-run it after evaluating the shipped solver to fill in the metrics."""
    from poisson_tf import hardware

    name = os.path.basename(os.path.normpath(directory))
    cfg = modeldir.load_config(directory)
    recorded = modeldir.read_fingerprint(directory)
    held_out = _held_out_attrs(os.path.join(directory, modeldir.VAL_SAMPLES_FILE))
    plan, m, d, o = cfg.plan(), cfg.model, cfg.data, cfg.optim
    family = d.field_family()
    fields_flag = f"--coeffs={','.join(['0.5'] * d.num_terms)}" if family.kind == "kl" else "--draw=1"
    solve_flags = fields_flag if family.kind == "kl" else \
        " ".join(f"--{k}={v}" for k, v in ({"family": family.kind} | family.params()).items() if k != "kind") \
        + " --draw=1"
    params = recorded["architecture"]["num_params"]
    summary = summary or {}
    workers = summary.get("workers", 1)
    seconds = summary.get("fit_seconds")
    lines = [f"# Pretrained solver `{name}`", ""]
    if placeholder:
        lines += [f"> **Placeholder weights.** This solver was trained for "
                  f"{_duration(seconds) if seconds else 'a few minutes'} only, to exercise the shipping "
                  "infrastructure (packaging, fingerprint, command lines, tests); it will be replaced by a "
                  "properly trained solver. Do not rely on its accuracy beyond the table below.", ""]
    lines += [
        f"A {m.depth}-level 3D U-Net (`{cfg.preset}` preset, {params:,} parameters) that maps a diffusivity field nu "
        f"of the {'Karhunen-Loeve' if family.kind == 'kl' else family.describe()} family to the solution u of -div(nu grad u) = 0 on the unit cube (u = 1 on x = 0, "
        f"u = 0 on x = 1, zero flux elsewhere) in one forward pass. Trained data-free on the Q1 finite-element "
        f"energy (no solution data). Shipped in `poisson_tf/pretrained/{name}/`.", "",
        "## Use", "", "```python", "import poisson_tf", "from poisson_tf import fields, inference", "",
        f'model = poisson_tf.load_pretrained("{name}")  # verified against fingerprint.json, Keras safe mode',
        *([f"nu = fields.kl_diffusivity(w, 64, eta={d.eta})  # w: [B, {d.num_terms}] KL coefficients"]
          if family.kind == "kl" else
          [f"family = modeldir.load_config(poisson_tf.pretrained_dir({name!r})).data.field_family()",
           "nu = family.diffusivity(family.sample(2, 'uniform', seed=0), 64)  # two fields of its family"]),
        "u = inference.predict(model, nu)  # [B, 64, 64, 64], u = 1 at x = 0 and 0 at x = 1 exactly", "```", "",
        "```", f"poisson-tf-predict --model_dir=pretrained:{name} {fields_flag} --resolution=64 --output=u.h5",
        f"poisson-tf-evaluate --model_dir=pretrained:{name}  # held-out set; report in ./pretrained_eval/{name}/",
        f"poisson-tf-solve --warm_start=pretrained:{name} {solve_flags} --resolution=64", "```", "",
        "## Inputs it was trained for", "",
        (f"- nu = exp(sum_i w_i lambda_i^(3/2) phi_i(x) phi_i(y) phi_i(z)), eta = {d.eta}, {d.num_terms} KL terms, "
         f"w in [-{fields.DEFAULT_COEFF_BOUND:g}, {fields.DEFAULT_COEFF_BOUND:g}]^{d.num_terms} ({d.sampling} "
         "sampling)." if family.kind == "kl" else
         f"- The {family.describe()} family (docs/design.rst s.10): log nu = sigma sum_t w_t sqrt(lambda_i lambda_j "
         f"lambda_k) psi_i(x) psi_j(y) psi_k(z) over the {d.num_terms} index triples of largest eigenvalue products, "
         f"w standard normal ({d.sampling} sampling)"
         + (f"; nu = {d.contrast:g} where log nu > {d.threshold:g}, else 1." if family.kind == "twophase" else ".")),
        (f"- Trained at N = {', '.join(map(str, plan.resolutions))} nodes per axis; it takes any N that is a "
         f"multiple of {m.multiple} (2^{m.depth}); above N = {plan.resolutions[-1]} it predicts zero-shot."
         if not m.working_resolution else
         f"- The U-Net runs at N = {m.working_resolution} nodes per axis whatever the input's N: nu is resampled "
         f"trilinearly to {m.working_resolution}^3 and u interpolated back, so it takes any N >= 2 at the cost of "
         f"one {m.working_resolution}^3 pass plus the interpolation (trained at N = "
         f"{', '.join(map(str, plan.resolutions))}). This suits fields smooth on the scale 1/{m.working_resolution}, as "
         f"the KL family's are; the rows N > {m.working_resolution} of the evaluation below hold "
         f"the network's error and the interpolation's together."),
        "- Other diffusivities (another eta, more terms, coefficients outside the box, fields of another kind) "
        "are accepted but carry no accuracy claim. For a solution with a guaranteed tolerance use the network "
        f"as the initial guess of the reference CG: `poisson-tf-solve --warm_start=pretrained:{name}`.", "",
        "## Architecture", "",
        "| field | value |", "|---|---|", f"| preset | {cfg.preset} |",
        *[f"| {k} | {v} |" for k, v in dataclasses.asdict(m).items()],
        f"| parameters | {params:,} |", "",
        "## Training", "",
        "Reconstructed from `config.json` (every setting that changes the training, explicit):", "",
        "```", train_command(cfg, workers, f"runs/{name}"), "```", "",
        f"- Cycle `{cfg.cycle.cycle}` over levels {', '.join(map(str, plan.resolutions))}: {plan.num_epochs} epochs, "
        f"{plan.num_steps} optimizer steps, global batch {o.global_batch_size} at the finest level.",
        f"- Data: {d.num_train} training and {d.num_val} validation samples ({d.sampling}, data seed {d.seed}), "
        + (f"eta = {d.eta}, {d.num_terms} KL terms" if family.kind == "kl" else family.describe())
        + f"; coarse levels `{d.coarse_nu}`.",
        f"- Optimizer: Adam, learning rate {o.learning_rate:g}, {o.warmup_steps} warmup steps, decay "
        f"`{o.lr_decay}`, precision {o.precision}; seed {cfg.run.seed}"
        f"{', deterministic' if cfg.run.deterministic else ''}.",
        f"- Wall time: {_wall_time(summary)} on {workers} worker(s).",
        "- Machine: " + (_machine(summary["machine"]) if "machine" in summary else
                         _machine(hardware.cpu_info()) + " (the machine that shipped it; the run's summary "
                         "records none)") + ".",
    ]
    if source:
        lines.append(f"- Shipped from the run `{source}`.")
    validation = summary.get("validation_by_resolution") or {}
    if validation:
        lines.append("- Validation at the end of training (the run's " + str(d.num_val) + " validation samples): "
                     + ", ".join(f"rel_l2 {v['rel_l2']:.2%} at N = {n}"
                                 for n, v in sorted(validation.items(), key=lambda item: int(item[0]))) + ".")
    lines += ["", "## Evaluation", "", *_evaluation_section(report, name), "",
              "## Held-out set", "",
              f"`{modeldir.VAL_SAMPLES_FILE}`: {held_out['num_samples']} KL coefficient vectors ({held_out['method']}, "
              f"seed {held_out['seed']}; the training data seed is {d.seed}), checked disjoint from the run's "
              "training and validation sets when shipped. `poisson-tf-evaluate --model_dir=pretrained:"
              f"{name}` evaluates on it by default.", "",
              "## Fingerprint", "",
              f"`{modeldir.FINGERPRINT_FILE}` records the sha256 of the shipped files and the architecture "
              "(preset, every model field, parameter count). `poisson_tf.load_pretrained`, and the command lines "
              "given `pretrained[:name]` or this directory, refuse weights or a configuration that do not match it.",
              "", "| file | sha256 |", "|---|---|",
              *[f"| {k} | `{v}` |" for k, v in sorted(recorded["sha256"].items())], ""]
    return "\n".join(lines)


def _held_out_attrs(path: str) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        return {"num_samples": int(f["coeffs"].shape[0]), "method": str(f.attrs["method"]),
                "seed": int(f.attrs["seed"])}
