"""poisson-tf-predict: u from a trained solver for nu fields from HDF5 or KL coefficients -> HDF5 + XDMF."""
from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "runs/demo", "A model_dir written by poisson-tf-train.")
flags.DEFINE_string("input", None, "HDF5 file with a dataset `nu` [N,N,N] or [B,N,N,N].")
flags.DEFINE_multi_string("coeffs", None, "KL coefficients of one field (comma separated); repeat for more.")
flags.DEFINE_integer("resolution", 64, "Nodes per axis N for fields built from --coeffs.")
flags.DEFINE_float("eta", None, "KL correlation length for --coeffs (default: the model's training eta).")
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


def main(argv):
    del argv
    from poisson_tf import config, distributed, fields, hdf5, inference

    distributed.init(intra_op_threads=0, inter_op_threads=0)
    try:
        model = inference.load_solver(FLAGS.model_dir)
        eta = FLAGS.eta if FLAGS.eta is not None else config.TrainConfig.load(FLAGS.model_dir).data.eta
        if FLAGS.coeffs is not None:
            coeffs = parse_coeffs(FLAGS.coeffs)
            nu = fields.kl_diffusivity(coeffs, FLAGS.resolution, eta)
            nu = nu[0] if len(coeffs) == 1 else nu
            coeffs = coeffs[0] if len(coeffs) == 1 else coeffs
        elif FLAGS.input:
            nu, coeffs, file_eta = hdf5.read_diffusivity(FLAGS.input)
            eta = file_eta if file_eta is not None else eta
        else:
            raise ValueError("give --coeffs (KL coefficients, repeatable) or --input (an HDF5 file with `nu`)")
        u = inference.predict(model, nu, FLAGS.batch_size, progress=True).reshape(np.shape(nu))
    except ValueError as e:
        sys.exit(f"poisson-tf-predict: error: {e}")
    if not distributed.is_chief():
        return
    hdf5.write_fields(FLAGS.output, {"nu": np.asarray(nu, np.float32), "u": u}, eta=eta, coeffs=coeffs,
                      attrs={"model_dir": FLAGS.model_dir})
    print(f"wrote {FLAGS.output} and {hdf5.xdmf_path(FLAGS.output)} ({u.shape})")
    if FLAGS.export_savedmodel:
        inference.export_savedmodel(model, FLAGS.export_savedmodel)
        print(f"exported SavedModel {FLAGS.export_savedmodel}")


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
