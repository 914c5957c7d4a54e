#!/usr/bin/env python
"""Ships a trained run as a pretrained solver inside the package (poisson_tf/pretrained/<name>/).

Usage: python scripts/ship_pretrained.py --model_dir=RUN --name=kl_small [--report=RUN/eval/report.json]
           [--placeholder] [--num_held_out=16] [--held_out_seed=S]
       python scripts/ship_pretrained.py --name=kl_small --card_only --report=pretrained_eval/kl_small/report.json
           [--model_dir=RUN]   (rewrites MODEL_CARD.md only, e.g. after evaluating the shipped solver)

Copies RUN's model.keras and config.json, writes a held-out sample set, fingerprint.json and MODEL_CARD.md
(scripts/shipping.py); then commit poisson_tf/pretrained/<name>/.
"""
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poisson_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The finished poisson-tf-train run to ship (with --card_only: its "
                    "train_summary.json, for wall time and machine).")
flags.DEFINE_string("name", "kl_small", "Name of the shipped solver (poisson_tf/pretrained/<name>/).")
flags.DEFINE_string("report", None, "A poisson-tf-evaluate report of this model, for the card's metrics table.")
flags.DEFINE_bool("placeholder", False, "The card says the weights are a placeholder, to be replaced.")
flags.DEFINE_integer("num_held_out", 16, "Fields in the held-out set (at least 16).")
flags.DEFINE_integer("held_out_seed", None, "Seed of the held-out set (default: the training data seed + 1000).")
flags.DEFINE_bool("card_only", False, "Only rewrite MODEL_CARD.md of the shipped solver --name.")
flags.DEFINE_string("root", None, "Directory of the shipped solvers (default: the package's poisson_tf/pretrained).")


def main(argv):
    del argv
    import shipping as ship

    from poisson_tf import pretrained

    root = FLAGS.root or pretrained.ROOT
    if FLAGS.card_only:
        directory = pretrained.pretrained_dir(ship.check_name(FLAGS.name), root)
        summary = ship.read_summary(FLAGS.model_dir) if FLAGS.model_dir else None
        report = ship.read_report(FLAGS.report) if FLAGS.report else None
        source = os.path.abspath(FLAGS.model_dir) if FLAGS.model_dir else None
        print(f"wrote {ship.write_model_card(directory, summary, report, FLAGS.placeholder, source)}")
        return
    if not FLAGS.model_dir:
        raise ValueError("--model_dir is required: the finished poisson-tf-train run to ship")
    directory = ship.ship(FLAGS.model_dir, FLAGS.name, root, FLAGS.report, FLAGS.num_held_out, FLAGS.held_out_seed,
                          FLAGS.placeholder)
    print(f"shipped {FLAGS.model_dir} as {directory} (load it with poisson_tf.load_pretrained({FLAGS.name!r}) or "
          f"--model_dir=pretrained:{FLAGS.name}); commit that directory")


if __name__ == "__main__":
    cli.run("ship_pretrained.py", main)
