"""poisson-tf-predict: u from a trained solver for nu fields from HDF5 or KL coefficients -> HDF5 + XDMF."""
from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags

from poisson_tf import cli, config

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "runs/demo", "A model_dir written by poisson-tf-train, or pretrained[:name] (a "
                    "solver shipped with the package).")
flags.DEFINE_string("input", None, "HDF5 file with a dataset `nu` [N,N,N] or [B,N,N,N].")
flags.DEFINE_multi_string("coeffs", None, "KL coefficients of one field (comma separated); repeat for more.")
flags.DEFINE_integer("resolution", 64, "Nodes per axis N for fields built from --coeffs or --draw.")
flags.DEFINE_float("eta", None, "Correlation length for --coeffs and --draw (default: the model's training eta).")
flags.DEFINE_integer("draw", None, "Draw this many fields of the model's training family (instead of --coeffs).")
flags.DEFINE_integer("draw_seed", 0, "Seed of the fields --draw draws (i.i.d. draws, not the training sequence).")
flags.DEFINE_string("output", "prediction.h5", "HDF5 file to write (nu, u); an .xdmf is written beside it.")
flags.DEFINE_integer("batch_size", 1, "Fields per forward pass.")
flags.DEFINE_string("export_savedmodel", None, "Also export the model as a TensorFlow SavedModel to this directory.")
cli.define_memory_flags()


def parse_coeffs(values) -> np.ndarray:
    """['1,2,3,4', ...] -> [B, m]."""
    try:
        rows = [[float(c) for c in v.split(",")] for v in values]
    except ValueError:
        raise ValueError(f"--coeffs must be comma-separated numbers, got {values}") from None
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"every --coeffs needs the same number of KL terms, got {[len(r) for r in rows]}")
    return np.array(rows)


def load_fields(opened):
    """(nu [N,N,N] or [B,N,N,N], coeffs or None, fields.Family or None) from --coeffs or --draw (fields of the
    model's training family, opened.config, with its eta unless --eta; --coeffs checked to have its number of
    terms) or from --input."""
    import dataclasses

    from poisson_tf import fields, hdf5, inference

    given = [name for name in ("coeffs", "draw", "input") if FLAGS[name].value is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of --coeffs (coefficients of the model's family, repeatable), --draw "
                         f"(a number of fields to draw) or --input (an HDF5 file with `nu`); got {given or 'none'}")
    trained, model_dir = opened.config, opened.path
    family = trained.data.field_family()
    if FLAGS.eta is not None:
        family = dataclasses.replace(family, eta=fields.check_eta(FLAGS.eta))
    if FLAGS.input is not None:
        nu, coeffs, recorded = hdf5.read_diffusivity(FLAGS.input)
        family = recorded
    else:
        if FLAGS.draw is not None:
            config.require(FLAGS.draw >= 1, "--draw", FLAGS.draw, ">= 1 (fields to draw)")
            coeffs = family.sample(FLAGS.draw, "uniform", FLAGS.draw_seed)
        else:
            coeffs = parse_coeffs(FLAGS.coeffs)
            if coeffs.shape[1] != family.num_terms:
                raise ValueError(f"--coeffs gives {coeffs.shape[1]} coefficients per field, but the model in "
                                 f"{model_dir!r} was trained on the {family.describe()} family; give "
                                 f"{family.num_terms}")
        trained.model.check_resolution(FLAGS.resolution)
        nu = family.diffusivity(coeffs, FLAGS.resolution)
        nu, coeffs = (nu[0], coeffs[0]) if len(coeffs) == 1 else (nu, coeffs)
    inference.check_input(nu, trained.model.input_depth)
    return nu, coeffs, family


def requested_fields(model_cfg):
    """(fields, N, bytes per nu value) the flags ask to predict, known before any field is made or read; None
    when the flags do not say (load_fields then explains)."""
    from poisson_tf import hdf5

    if FLAGS.input is not None:
        found = hdf5.field_shape(FLAGS.input)
        if found is None or len(found[0]) not in (3, 4):
            return None
        shape, itemsize = found
        return (shape[0] if len(shape) == 4 else 1), shape[-1], itemsize
    model_cfg.check_resolution(FLAGS.resolution)
    count = FLAGS.draw if FLAGS.draw is not None else len(FLAGS.coeffs or [])
    return (count, FLAGS.resolution, 8) if count >= 1 else None


def fitting_batch(opened) -> int:
    """--batch_size, or the largest smaller batch whose peak fits (said once); ValueError (memory.check's)
    when not even one field at a time does."""
    from poisson_tf import memory

    requested = requested_fields(opened.config.model)
    if requested is None:
        return FLAGS.batch_size
    count, n, itemsize = requested
    batch = min(FLAGS.batch_size, count)

    def estimate(b):
        return memory.prediction_parts(opened.config.model, n, count, b, itemsize)

    for b in range(batch, 0, -1):
        try:
            cli.check_memory("poisson-tf-predict", n, estimate(b))
        except ValueError:
            if b == 1:
                cli.check_memory("poisson-tf-predict", n, estimate(batch))  # the refusal names the batch asked
            continue
        if b < batch:
            print(f"poisson-tf-predict: --batch_size={FLAGS.batch_size} would need more memory than is available; "
                  f"predicting {b} field(s) at a time", file=sys.stderr)
        return b
    return batch


def main(argv):
    del argv
    from poisson_tf import files, hdf5, inference, modeldir, pretrained

    # Every check that needs no network first, so bad input fails in a second and before any compute.
    config.require(FLAGS.batch_size >= 1, "--batch_size", FLAGS.batch_size, ">= 1 (fields per forward pass)")
    files.check_writable(FLAGS.output, "--output")
    files.check_writable(hdf5.xdmf_path(FLAGS.output), "--output's .xdmf")
    if FLAGS.export_savedmodel is not None:
        if not FLAGS.export_savedmodel or (os.path.exists(FLAGS.export_savedmodel)
                                           and not os.path.isdir(FLAGS.export_savedmodel)):
            raise ValueError(f"--export_savedmodel must be a directory, got {FLAGS.export_savedmodel!r}")
        files.check_writable(os.path.join(FLAGS.export_savedmodel, "saved_model.pb"), "--export_savedmodel")
    model_dir = pretrained.resolve_model_dir(FLAGS.model_dir)
    with modeldir.reading(model_dir, "predict with"):  # config and weights of one model: no training starts
        opened = modeldir.open_model_dir(model_dir)  # config read, files verified
        batch_size = fitting_batch(opened)  # before any field is made: a request that cannot fit is refused here
        nu, coeffs, family = load_fields(opened)
        from poisson_tf import distributed

        distributed.init(intra_op_threads=0, inter_op_threads=0)
        model = inference.load_solver(opened)
    u = inference.predict(model, nu, batch_size, progress=True).reshape(np.shape(nu))
    if not distributed.is_chief():
        return
    files.remove_dead_writes(FLAGS.output, hdf5.xdmf_path(FLAGS.output))  # a killed predict's temporary files
    hdf5.write_fields(FLAGS.output, {"nu": np.asarray(nu, np.float32), "u": u}, family=family, coeffs=coeffs,
                      attrs={"model_dir": os.path.abspath(opened.path)})
    print(f"wrote {FLAGS.output} and {hdf5.xdmf_path(FLAGS.output)} ({u.shape})")
    if FLAGS.export_savedmodel:
        inference.export_savedmodel(model, FLAGS.export_savedmodel)
        print(f"exported SavedModel {FLAGS.export_savedmodel}")


def run():
    """Console-script entry point."""
    cli.run("poisson-tf-predict", main)


if __name__ == "__main__":
    run()
