"""poisson-tf-solve: reference AMG-CG solutions of KL or user-given diffusivity fields, written to HDF5 + XDMF."""
from __future__ import annotations

import json
import sys

import numpy as np
from absl import app, flags

from poisson_tf import fields, hdf5, reference

FLAGS = flags.FLAGS
flags.DEFINE_list("coeffs", None, "KL coefficients w_1..w_m (comma separated); or use --input.")
flags.DEFINE_integer("resolution", 32, "Nodes per axis N when the field is built from --coeffs.")
flags.DEFINE_float("eta", fields.DEFAULT_ETA, "KL correlation length.")
flags.DEFINE_string("input", None, "HDF5 file with a dataset `nu` [N,N,N] or [B,N,N,N] (instead of --coeffs).")
flags.DEFINE_string("output", "solution.h5", "HDF5 file to write (nu, u); an .xdmf is written beside it.")
flags.DEFINE_float("rtol", 1e-10, "Relative residual target of the preconditioned CG.")


def load_problem(coeffs, resolution: int, eta: float, input_path: str | None):
    """Returns (nu [N,N,N] or [B,N,N,N], coeffs or None, eta or None) from coefficients or an HDF5 file."""
    if (coeffs is None) == (input_path is None):
        raise ValueError("give exactly one of --coeffs (KL coefficients) or --input (an HDF5 file with `nu`)")
    if input_path is not None:
        data, attrs = hdf5.read_fields(input_path, ("nu",))
        nu = data["nu"]
        fields.check_diffusivity(nu, f"nu in {input_path}")
        eta_attr = attrs.get("eta")
        coeffs_attr = attrs.get("coeffs")
        return nu, (coeffs_attr if coeffs_attr is not None and len(coeffs_attr) else None), eta_attr
    try:
        w = np.array([float(c) for c in coeffs])
    except ValueError:
        raise ValueError(f"--coeffs must be a comma-separated list of numbers, got {coeffs}") from None
    return fields.kl_diffusivity(w, resolution, eta), w, eta


def solve_all(nu: np.ndarray, rtol: float):
    """Solves one field [N,N,N] or each of a batch [B,N,N,N]; returns (u of nu's shape, [records])."""
    batch = nu.reshape((-1,) + nu.shape[-3:])
    results = [reference.solve(sample, rtol=rtol) for sample in batch]
    u = np.stack([r[0] for r in results]).reshape(nu.shape)
    return u, [r[1] for r in results]


def main(argv):
    del argv
    try:
        nu, coeffs, eta = load_problem(FLAGS.coeffs, FLAGS.resolution, FLAGS.eta, FLAGS.input)
        u, records = solve_all(nu, FLAGS.rtol)
    except ValueError as e:
        sys.exit(f"poisson-tf-solve: error: {e}")
    summary = [r.as_dict() for r in records]
    hdf5.write_fields(FLAGS.output, {"nu": nu.astype(np.float32), "u": u.astype(np.float32)}, eta=eta,
                      coeffs=coeffs, attrs={"solver_records": json.dumps(summary)})
    for rec, sample_u, sample_nu in zip(records, u.reshape((-1,) + u.shape[-3:]),
                                        nu.reshape((-1,) + nu.shape[-3:])):
        flux = 2.0 * reference.energy(sample_u, sample_nu)
        print(json.dumps(dict(rec.as_dict(), effective_diffusivity=flux)))
    print(f"wrote {FLAGS.output} and {hdf5.xdmf_path(FLAGS.output)}")


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
