"""poisson-tf-evaluate: a trained solver against the AMG reference at several resolutions (JSON, PNG, table)."""
from __future__ import annotations

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "runs/demo", "A model_dir written by poisson-tf-train.")
flags.DEFINE_list("resolutions", [], "Resolutions to evaluate (default: the training levels and twice the finest).")
flags.DEFINE_string("samples", "", "HDF5 sample set to evaluate (default: the model_dir's validation set).")
flags.DEFINE_integer("num_samples", 0, "Evaluate only the first this many samples (0: all).")
flags.DEFINE_integer("batch_size", 1, "Fields per forward pass.")
flags.DEFINE_string("reference_cache", "", "Directory of cached reference solutions (default: the run's).")
flags.DEFINE_string("report", "", "JSON report path (default: <model_dir>/eval/report.json); a .png is written beside it.")


def main(argv):
    del argv
    from poisson_tf import config, data, distributed, evaluation, inference, reference

    distributed.init(intra_op_threads=0, inter_op_threads=0)
    try:
        cfg = config.TrainConfig.load(FLAGS.model_dir)
        model = inference.load_solver(FLAGS.model_dir)
        samples = data.SampleSet.load(FLAGS.samples or os.path.join(FLAGS.model_dir, "val_samples.h5"),
                                      num_terms=cfg.data.num_terms)
        trained = cfg.plan().resolutions  # what the run trained (a spec cycle names its own levels)
        try:
            resolutions = [int(r) for r in FLAGS.resolutions] or trained + [2 * trained[-1]]
        except ValueError:
            raise ValueError(f"--resolutions must be integers, got {FLAGS.resolutions}") from None
        for n in resolutions:
            config.check_resolution(n, cfg.model.depth)
        coeffs = samples.coeffs[:FLAGS.num_samples or None]
        store = reference.ReferenceStore(FLAGS.reference_cache or cfg.run.reference_cache)
        report = evaluation.evaluate(lambda nu: inference.predict(model, nu, FLAGS.batch_size), coeffs, samples.eta,
                                     resolutions, store, FLAGS.batch_size, trained)
    except ValueError as e:
        sys.exit(f"poisson-tf-evaluate: error: {e}")
    path = FLAGS.report or os.path.join(FLAGS.model_dir, "eval", "report.json")
    examples = report.pop("examples")
    report.update(model_dir=os.path.abspath(FLAGS.model_dir), trained_resolutions=trained, eta=samples.eta,
                  workers=distributed.size())
    distributed.on_chief(_publish, report, examples, path)


def _publish(report: dict, examples: dict, path: str) -> None:
    """Writes the JSON report and the figure beside it, and prints the table (the chief's part)."""
    from poisson_tf import evaluation, files

    files.write_json(path, report, indent=2)
    figure = evaluation.save_figure(examples, os.path.splitext(path)[0] + ".png")
    print(evaluation.format_table(report))
    print(f"wrote {path} and {figure}")


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
