"""poisson-tf-predict: u from a trained solver for nu fields from HDF5 or KL coefficients -> HDF5 + XDMF."""
from __future__ import annotations

import os

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
    opened = modeldir.open_model_dir(pretrained.resolve_model_dir(FLAGS.model_dir))  # config read, files verified
    nu, coeffs, family = load_fields(opened)
    from poisson_tf import distributed

    distributed.init(intra_op_threads=0, inter_op_threads=0)
    model = inference.load_solver(opened)
    u = inference.predict(model, nu, FLAGS.batch_size, progress=True).reshape(np.shape(nu))
    if not distributed.is_chief():
        return
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
