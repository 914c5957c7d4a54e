"""poisson-tf-train: multigrid-cycle training of a neural Poisson solver (single process or under Horovod).

The defaults are the embedded demo: a Half-V cycle 16 -> 32 -> 64 with the `small` preset.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

from poisson_tf import config

FLAGS = flags.FLAGS


def _define_config_flags() -> None:
    """One flag per config field (--depth, --levels, --data_seed, ...), derived from the dataclasses."""
    define = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float, "str": flags.DEFINE_string,
              "bool": flags.DEFINE_bool, "tuple": flags.DEFINE_list}
    for option in config.options():
        if option.default is None:
            define[option.kind](option.flag, None, option.help + " Default: the preset's.")
        else:
            define[option.kind](option.flag, list(map(str, option.default)) if option.kind == "tuple"
                                else option.default, option.help)


_define_config_flags()
flags.DEFINE_bool("resume", False, "Continue from model_dir's checkpoint (saved config unless flags override).")
flags.DEFINE_integer("stop_after_epochs", None, "Stop after this many epochs of the cycle (resume later).")


def config_from_flags() -> config.TrainConfig:
    """One frozen TrainConfig: the saved one on --resume, else the defaults and the preset; flags given override."""
    given = {o.path: FLAGS[o.flag].value for o in config.options() if FLAGS[o.flag].present}
    given["run.model_dir"] = FLAGS.model_dir  # where the run is now, even if its saved config says elsewhere
    return config.override(given, config.TrainConfig.load(FLAGS.model_dir) if FLAGS.resume else None)


def main(argv):
    del argv
    from poisson_tf import distributed, trainer

    try:
        cfg = config_from_flags()
        summary = trainer.train(cfg, resume=FLAGS.resume, stop_after_epochs=FLAGS.stop_after_epochs)
    except ValueError as e:
        sys.exit(f"poisson-tf-train: error: {e}")
    if distributed.is_chief():
        if summary["start_epoch"] >= summary["end_epoch"]:
            print(f"nothing to train: the checkpoint in {cfg.run.model_dir} already completed epoch "
                  f"{summary['start_epoch']} of {summary['end_epoch']}; evaluate it with "
                  f"poisson-tf-evaluate --model_dir={cfg.run.model_dir}")
        for n, means in sorted(summary["validation_by_resolution"].items()):
            print(f"validation rel_l2 at {n}^3: {100 * means['rel_l2']:.2f}% ({cfg.data.num_val} samples vs the AMG "
                  "reference)")
        print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "validation_by_resolution")}))


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
