"""poisson-tf-evaluate: a trained solver against the AMG reference at several resolutions (JSON, PNG, table)."""
from __future__ import annotations

import os

from absl import flags

from poisson_tf import cli, config, modeldir

FLAGS = flags.FLAGS
#: Where a shipped solver's report goes by default: the working directory, since the package may be read-only.
PRETRAINED_REPORT_DIR = "pretrained_eval"
flags.DEFINE_string("model_dir", "runs/demo", "A model_dir written by poisson-tf-train, or pretrained[:name] (a "
                    "solver shipped with the package).")
flags.DEFINE_list("resolutions", [], "Resolutions to evaluate (default: the training levels and twice the finest).")
flags.DEFINE_string("samples", "", "HDF5 sample set to evaluate (default: the model_dir's validation set; a shipped "
                    "solver's held-out set).")
flags.DEFINE_integer("num_samples", 0, "Evaluate only the first this many samples (0: all).")
cli.define_family_flags("the fields --draw draws (default: the model's training family)", family_default=None)
cli.define_memory_flags()
flags.DEFINE_integer("batch_size", 1, "Fields per forward pass.")
flags.DEFINE_string("reference_cache", "", "Directory of cached reference solutions (default: the run's).")
flags.DEFINE_string("report", "", "JSON report path (default: <model_dir>/eval/report.json, for a shipped solver "
                    f"./{PRETRAINED_REPORT_DIR}/<name>/report.json); a .png is written beside it.")


def default_report(model_dir: str) -> str:
    """<model_dir>/eval/report.json, or for a shipped solver ./pretrained_eval/<name>/report.json."""
    if modeldir.has_fingerprint(model_dir):
        return os.path.join(PRETRAINED_REPORT_DIR, os.path.basename(os.path.normpath(model_dir)), modeldir.REPORT_FILE)
    return os.path.join(model_dir, modeldir.EVAL_DIR, modeldir.REPORT_FILE)


def check_task(model_dir: str):
    """(the opened model_dir, resolutions, reference cache directory, report path) from the flags, each checked
    before any framework loads.

    Args:
      model_dir: the resolved model_dir (pretrained.resolve_model_dir).

    Raises:
      ValueError: a refused flag, or a model_dir, cache or report path that cannot serve.
    """
    from poisson_tf import files, memory

    config.require(FLAGS.batch_size >= 1, "--batch_size", FLAGS.batch_size, ">= 1 (fields per forward pass)")
    config.require(FLAGS.num_samples >= 0, "--num_samples", FLAGS.num_samples, ">= 0 (0: all)")
    opened = modeldir.open_model_dir(model_dir)
    cfg = opened.config
    trained = cfg.plan().resolutions  # what the run trained (a spec cycle names its own levels)
    try:
        resolutions = [int(r) for r in FLAGS.resolutions] or trained + [2 * trained[-1]]
    except ValueError:
        raise ValueError(f"--resolutions must be integers, got {FLAGS.resolutions}") from None
    for n in resolutions:
        cfg.model.check_resolution(n)
    cache = FLAGS.reference_cache or cfg.run.reference_cache
    if cache and os.path.exists(cache) and not os.path.isdir(cache):
        raise ValueError(f"--reference_cache {cache!r} is a file, not a directory")
    path = FLAGS.report or default_report(model_dir)
    files.check_writable(path, "--report")
    files.check_writable(os.path.splitext(path)[0] + ".png", "--report's .png")
    cli.check_memory("poisson-tf-evaluate", max(resolutions),
                     memory.evaluation_parts(cfg.model, max(resolutions), FLAGS.batch_size))
    return opened, resolutions, cache, path


def samples_path(model_dir: str) -> str:
    """--samples, or the model_dir's validation set (a shipped solver's held-out set)."""
    return FLAGS.samples or os.path.join(model_dir, modeldir.VAL_SAMPLES_FILE)


def load_samples(model_dir: str, trained):
    """The samples to evaluate: --draw fields of --family (default: the training family `trained`), or the set
    --samples names, or the run's validation set (any family: the network takes nu, and the report names both
    families); the coefficients chosen by --num_samples. ValueError when they cannot be read or there are none."""
    from poisson_tf.training import data

    if FLAGS.draw is not None:
        config.require(FLAGS.draw >= 1, "--draw", FLAGS.draw, ">= 1 (fields to draw)")
        if FLAGS.samples:
            raise ValueError("give at most one of --samples and --draw")
        family = cli.family_from_flags(default=trained)
        samples = data.SampleSet(family.sample(FLAGS.draw, "uniform", FLAGS.draw_seed), family, "uniform",
                                 FLAGS.draw_seed, role="drawn")
        return samples, samples.coeffs[:FLAGS.num_samples or None]

    path = samples_path(model_dir)
    try:
        samples = data.SampleSet.load(path)
    except (TypeError, AttributeError) as e:  # a file whose `coeffs` or attributes are of the wrong kind
        raise ValueError(f"cannot read sample set {path!r}: {e}") from None
    coeffs = samples.coeffs[:FLAGS.num_samples or None]
    if len(coeffs) == 0:
        raise ValueError(f"sample set {path!r} holds no samples")
    return samples, coeffs


def main(argv):
    del argv
    from poisson_tf import modeldir, pretrained

    model_dir = pretrained.resolve_model_dir(FLAGS.model_dir)
    with modeldir.reading(model_dir, "evaluate"):  # no training starts there until the report is written
        _evaluate(model_dir)


def _evaluate(model_dir: str) -> None:
    opened, resolutions, cache, path = check_task(model_dir)
    samples, coeffs = load_samples(model_dir, opened.config.data.field_family())

    from poisson_tf import distributed, hardware, inference, scoring, solvers

    distributed.init(intra_op_threads=0, inter_op_threads=0)
    model = inference.load_solver(opened)
    trained = opened.config.plan().resolutions
    report = scoring.evaluate(lambda nu: inference.predict(model, nu, FLAGS.batch_size), samples.family, coeffs,
                              resolutions, solvers.ReferenceStore(cache), FLAGS.batch_size, trained)
    examples = report.pop("examples")
    report.update(model_dir=os.path.abspath(model_dir), trained_resolutions=trained, eta=samples.eta,
                  family=samples.family.params(), trained_family=opened.config.data.field_family().params(),
                  workers=distributed.size(), machine=hardware.cpu_info(),
                  samples={"path": None if FLAGS.draw else os.path.abspath(samples_path(model_dir)),
                           "role": samples.role, "seed": samples.seed, "num_samples": len(coeffs)})
    distributed.on_chief(_publish, report, examples, path)


def _publish(report: dict, examples: dict, path: str) -> None:
    """Writes the JSON report and the figure beside it, as a pair (a failed write leaves the previous pair), and
    prints the table (the chief's part)."""
    import json

    from poisson_tf import files, scoring

    png = os.path.splitext(path)[0] + ".png"
    fig = scoring.figure(examples)  # first: it selects matplotlib's Agg backend
    import matplotlib.pyplot as plt

    files.remove_dead_writes(path, png)  # a killed evaluate's temporary files
    try:
        with files.atomic_paths(path, png) as (tmp_json, tmp_png):
            with open(tmp_json, "w") as f:
                json.dump(report, f, indent=2)
            fig.savefig(tmp_png, dpi=80)
    finally:
        plt.close(fig)
    print(scoring.format_table(report))
    print(f"wrote {path} and {png}")


def run():
    """Console-script entry point."""
    cli.run("poisson-tf-evaluate", main)


if __name__ == "__main__":
    run()
