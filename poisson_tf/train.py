"""poisson-tf-train: multigrid-cycle training of a neural Poisson solver (single process or under Horovod).

The defaults are the embedded demo: a Half-V cycle 16 -> 32 -> 64 with the `small` preset.
"""
from __future__ import annotations

import dataclasses
import json
import sys

from absl import app, flags

from poisson_tf import config, fields, models, multigrid

FLAGS = flags.FLAGS
_D = config.TrainConfig()  # flag defaults come from the config's, the single source of truth
# Run.
flags.DEFINE_string("model_dir", _D.run.model_dir, "Directory for config, checkpoint, TensorBoard logs and the model.")
flags.DEFINE_bool("resume", False, "Continue from model_dir's checkpoint (saved config unless flags override).")
flags.DEFINE_integer("stop_after_epochs", None, "Stop after this many epochs of the cycle (resume later).")
flags.DEFINE_integer("seed", _D.run.seed, "Seed of initialization, dropout and data order.")
flags.DEFINE_integer("validate_every", _D.run.validate_every, "Validate at the end of every this many visits (and at the end).")
flags.DEFINE_list("val_resolutions", [], "Resolutions to validate at (default: the training levels).")
flags.DEFINE_string("reference_cache", "", "Directory of cached reference solutions (default ~/.cache/poisson_tf).")
flags.DEFINE_integer("threads", _D.run.threads, "TF intra-op threads per worker (0: cores on the host / workers on the host).")
flags.DEFINE_bool("deterministic", _D.run.deterministic, "Enable TensorFlow op determinism (bitwise-reproducible resume).")
flags.DEFINE_integer("verbose", _D.run.verbose, "Keras verbosity on the chief: 0 silent, 1 progress bar, 2 a line per epoch.")
# Model.
flags.DEFINE_string("preset", _D.preset, f"Model preset: one of {sorted(models.PRESETS)}.")
flags.DEFINE_integer("depth", None, "Override the preset's number of stride-2 levels.")
flags.DEFINE_integer("base_filters", None, "Override the preset's width of the first level.")
flags.DEFINE_integer("kernel_size", None, "Override the preset's kernel size.")
flags.DEFINE_string("normalization", None, f"Override the preset's normalization: {models.NORMALIZATIONS}.")
flags.DEFINE_float("dropout", None, "Override the preset's dropout rate.")
flags.DEFINE_string("input_features", None, f"Override the preset's input features: {models.INPUT_FEATURES}.")
# Cycle.
flags.DEFINE_list("levels", [str(n) for n in _D.cycle.levels], "Training resolutions, coarse to fine.")
flags.DEFINE_string("cycle", _D.cycle.cycle, f"One of {multigrid.CYCLES}, or a spec like '16:4,32:2,64:1'.")
flags.DEFINE_list("epochs_per_visit", [str(e) for e in _D.cycle.epochs_per_visit], "Epochs per visit: one value, or one per level (coarse to fine).")
flags.DEFINE_integer("num_cycles", _D.cycle.num_cycles, "How many times the cycle runs.")
# Optimization and data.
flags.DEFINE_integer("global_batch_size", _D.optim.global_batch_size, "Samples per step over all workers (split evenly).")
flags.DEFINE_float("learning_rate", _D.optim.learning_rate, "Adam learning rate.")
flags.DEFINE_bool("scale_lr_by_workers", _D.optim.scale_lr_by_workers, "Multiply the learning rate by the number of workers.")
flags.DEFINE_integer("warmup_steps", _D.optim.warmup_steps, "Linear learning-rate warmup steps.")
flags.DEFINE_enum("precision", _D.optim.precision, ["float32", "bfloat16", "float16"],
                  "Compute precision of the convolutions (the energy is always accumulated in float32).")
flags.DEFINE_integer("num_train", _D.data.num_train, "Training samples (KL coefficient vectors).")
flags.DEFINE_integer("num_val", _D.data.num_val, "Validation samples (disjoint from training).")
flags.DEFINE_integer("num_terms", _D.data.num_terms, "KL terms m.")
flags.DEFINE_float("eta", _D.data.eta, "KL correlation length.")
flags.DEFINE_enum("sampling", _D.data.sampling, list(fields.SAMPLING_METHODS), "Coefficient sampling.")
flags.DEFINE_integer("data_seed", _D.data.seed, "Seed of the sample sets.")
flags.DEFINE_integer("cache_budget_mb", _D.data.cache_budget_mb, "Memory for caching generated nu fields per worker.")

_MODEL_FLAGS = ("depth", "base_filters", "kernel_size", "normalization", "dropout", "input_features")


def _ints(name: str, values) -> tuple:
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"--{name} must be a comma-separated list of integers, got {','.join(values)}") from None


def config_from_flags() -> config.TrainConfig:
    """One frozen TrainConfig from the flags (on --resume: the saved config with explicit flags applied)."""
    base = config.TrainConfig.load(FLAGS.model_dir) if FLAGS.resume else None

    def pick(name, value):
        return value if base is None or FLAGS[name].present else None

    model = base.model if base and not FLAGS["preset"].present else models.preset(FLAGS.preset)
    model = dataclasses.replace(model, **{k: getattr(FLAGS, k) for k in _MODEL_FLAGS
                                          if getattr(FLAGS, k) is not None})
    sections = {
        "data": dict(num_train=pick("num_train", FLAGS.num_train), num_val=pick("num_val", FLAGS.num_val),
                     num_terms=pick("num_terms", FLAGS.num_terms), eta=pick("eta", FLAGS.eta),
                     sampling=pick("sampling", FLAGS.sampling), seed=pick("data_seed", FLAGS.data_seed),
                     cache_budget_mb=pick("cache_budget_mb", FLAGS.cache_budget_mb)),
        "cycle": dict(levels=pick("levels", _ints("levels", FLAGS.levels)), cycle=pick("cycle", FLAGS.cycle),
                      epochs_per_visit=pick("epochs_per_visit", _ints("epochs_per_visit", FLAGS.epochs_per_visit)),
                      num_cycles=pick("num_cycles", FLAGS.num_cycles)),
        "optim": dict(global_batch_size=pick("global_batch_size", FLAGS.global_batch_size),
                      learning_rate=pick("learning_rate", FLAGS.learning_rate),
                      scale_lr_by_workers=pick("scale_lr_by_workers", FLAGS.scale_lr_by_workers),
                      warmup_steps=pick("warmup_steps", FLAGS.warmup_steps),
                      precision=pick("precision", FLAGS.precision)),
        "run": dict(model_dir=FLAGS.model_dir, seed=pick("seed", FLAGS.seed),
                    validate_every=pick("validate_every", FLAGS.validate_every),
                    val_resolutions=pick("val_resolutions", _ints("val_resolutions", FLAGS.val_resolutions)),
                    reference_cache=pick("reference_cache", FLAGS.reference_cache),
                    threads=pick("threads", FLAGS.threads), deterministic=pick("deterministic", FLAGS.deterministic),
                    verbose=FLAGS.verbose),
    }
    defaults = base or config.TrainConfig()
    built = {}
    for section, values in sections.items():
        current = getattr(defaults, section)
        built[section] = dataclasses.replace(current, **{k: v for k, v in values.items() if v is not None})
    preset = FLAGS.preset if (base is None or FLAGS["preset"].present) else base.preset
    return config.TrainConfig(preset=preset, model=model, **built)


def main(argv):
    del argv
    from poisson_tf import distributed, trainer

    try:
        cfg = config_from_flags()
        distributed.init(intra_op_threads=cfg.run.threads, inter_op_threads=0 if cfg.run.threads == 0 else 1)
        trainer.validate_config(cfg)
        summary = trainer.train(cfg, resume=FLAGS.resume, stop_after_epochs=FLAGS.stop_after_epochs)
    except ValueError as e:
        sys.exit(f"poisson-tf-train: error: {e}")
    if distributed.is_chief():
        if summary["start_epoch"] >= summary["end_epoch"]:
            print(f"nothing to train: the checkpoint in {cfg.run.model_dir} already completed epoch "
                  f"{summary['start_epoch']} of {summary['end_epoch']}; evaluate it with "
                  f"poisson-tf-evaluate --model_dir={cfg.run.model_dir}")
        for n, value in sorted(trainer.final_rel_l2(summary).items()):
            print(f"validation rel_l2 at {n}^3: {100 * value:.2f}% ({cfg.data.num_val} samples vs the AMG reference)")
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
