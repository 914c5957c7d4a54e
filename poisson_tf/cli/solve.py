"""poisson-tf-solve: reference CG solutions (AMG or matrix-free GMG) of KL or given nu fields, to HDF5 + XDMF."""
from __future__ import annotations

import json

import numpy as np
from absl import flags

from poisson_tf import cli, fields, hdf5, solvers

FLAGS = flags.FLAGS
flags.DEFINE_list("coeffs", None, "Coefficients w_1..w_m of one field of --family (comma separated); or use --draw "
                  "or --input.")
flags.DEFINE_integer("resolution", 32, "Nodes per axis N when the fields are built from --coeffs or --draw.")
cli.define_family_flags("--coeffs and --draw (--num_terms defaults to as many as --coeffs gives)")
flags.DEFINE_string("input", None, "HDF5 file with a dataset `nu` [N,N,N] or [B,N,N,N] (instead of --coeffs).")
flags.DEFINE_string("output", "solution.h5", "HDF5 file to write (nu, u); an .xdmf is written beside it.")
flags.DEFINE_float("rtol", 1e-10, "Relative residual target of the preconditioned CG.")
flags.DEFINE_enum("method", "auto", list(solvers.METHODS), "Preconditioner: amg (assembled, pyamg), gmg "
                  "(matrix-free geometric multigrid, up to 512^3), or auto (gmg from "
                  f"{solvers.AUTO_GMG_RESOLUTION} nodes per axis on).")
flags.DEFINE_string("warm_start", None, "A trained model_dir, or pretrained[:name] (a solver shipped with the "
                    "package): its prediction is CG's initial guess; iterations and seconds are reported next to a "
                    "solve from the zero guess at the same tolerance.")
cli.define_memory_flags()


def load_problem(coeffs, resolution: int, family: fields.Family, input_path: str | None, draw: int | None = None,
                 draw_seed: int = 0):
    """Returns (nu [N,N,N] or [B,N,N,N], coeffs or None, fields.Family or None) from coefficients of `family`, a
    number of fields drawn from it, or an HDF5 file, checked (real, finite, positive, in
    fields.DIFFUSIVITY_RANGE)."""
    given = [name for name, value in (("--coeffs", coeffs), ("--draw", draw), ("--input", input_path))
             if value is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of --coeffs (coefficients of --family), --draw (a number of fields to "
                         f"draw) or --input (an HDF5 file with `nu`); got {', '.join(given) or 'none'}")
    if input_path is not None:
        return hdf5.read_diffusivity(input_path)
    if draw is not None:
        if draw < 1:
            raise ValueError(f"--draw must be >= 1 (fields to draw), got {draw}")
        w = family.sample(draw, "uniform", draw_seed)
        return family.diffusivity(w, resolution), w, family
    try:
        w = np.array([float(c) for c in coeffs])
    except ValueError:
        raise ValueError(f"--coeffs must be a comma-separated list of numbers, got {coeffs}") from None
    nu = fields.check_diffusivity(family.diffusivity(w, resolution), f"nu of --coeffs={','.join(coeffs)}")
    return nu, w, family


def check_solution(u: np.ndarray, record, rtol: float) -> None:
    """Raises RuntimeError unless the solve reached rtol with a finite solution (a NaN residual is no answer)."""
    residual = record.relative_residual
    if not (np.isfinite(residual) and residual <= rtol * 1.0001 and np.all(np.isfinite(u))):
        raise RuntimeError(f"the solver did not converge at N={record.resolution}: relative residual {residual!r} "
                           f"(target {rtol:g}){'' if np.all(np.isfinite(u)) else ', non-finite solution'}")


def solve_all(nu: np.ndarray, rtol: float, warm_start: str | None = None, method: str = "auto"):
    """Solves one field [N,N,N] or each of a batch [B,N,N,N].

    With warm_start (an opened modeldir.ModelDir), each field is solved twice to the same tolerance: from the zero guess and
    from the network's prediction.

    Returns:
      (u of nu's shape, [one JSON-ready dict per field]).
    """
    batch = nu.reshape((-1,) + nu.shape[-3:])
    guesses, predict_seconds = [None] * len(batch), 0.0
    if warm_start:
        import time

        from poisson_tf import inference

        model = inference.load_solver(warm_start)
        start = time.perf_counter()
        guesses = list(inference.predict(model, batch))
        predict_seconds = (time.perf_counter() - start) / len(batch)
    solutions, records = [], []
    for sample, guess in zip(batch, guesses):
        u, rec = solvers.solve(sample, rtol=rtol, method=method)
        check_solution(u, rec, rtol)
        record = rec.as_dict()
        if guess is not None:
            u, warm = solvers.solve(sample, rtol=rtol, x0=guess, method=method)
            check_solution(u, warm, rtol)
            record = {"cold": rec.as_dict(), "warm": dict(warm.as_dict(), predict_seconds=predict_seconds),
                      "iterations_saved": rec.iterations - warm.iterations,
                      "speedup": rec.seconds / (warm.seconds + predict_seconds)}
            rec = warm
        record["effective_diffusivity"] = 2.0 * rec.energy
        solutions.append(u)
        records.append(record)
    return np.stack(solutions).reshape(nu.shape), records


def check_memory(coeffs, resolution: int, input_path: str | None, draw: int | None, method: str,
                 warm_start: str | None) -> None:
    """Refuses (memory.check, with the command's flags) a request whose estimated peak exceeds the memory
    available, before any field is made or read; a request the flags do not make clear is left to
    load_problem's error."""
    from poisson_tf import memory

    if input_path is not None:
        found = hdf5.field_shape(input_path)
        if found is None or len(found[0]) not in (3, 4):
            return
        count, resolution = (found[0][0] if len(found[0]) == 4 else 1), found[0][-1]
    elif draw is not None and draw >= 1 or coeffs is not None:
        count = draw if draw is not None else 1
    else:
        return
    fields.check_resolution(resolution)
    parts = memory.solve_parts(resolution, count, method)
    if warm_start:  # the network's prediction of one field at a time (its architecture is not read here)
        parts["network (warm start)"] = count * resolution ** 3 * 4
    cli.check_memory("poisson-tf-solve", resolution, parts, framework=bool(warm_start))


def main(argv):
    del argv
    from poisson_tf import config, files, inference, modeldir, pretrained

    # Every check first, so that bad input fails in a second and before any solve.
    config.require(0 < FLAGS.rtol < 1, "--rtol", FLAGS.rtol, "in (0, 1)")
    files.check_writable(FLAGS.output, "--output")
    files.check_writable(hdf5.xdmf_path(FLAGS.output), "--output's .xdmf")
    family = cli.family_from_flags(len(FLAGS.coeffs) if FLAGS.coeffs else None)  # --coeffs give their own terms
    check_memory(FLAGS.coeffs, FLAGS.resolution, FLAGS.input, FLAGS.draw, FLAGS.method, FLAGS.warm_start)
    nu, coeffs, family = load_problem(FLAGS.coeffs, FLAGS.resolution, family, FLAGS.input, FLAGS.draw,
                                      FLAGS.draw_seed)
    warm_start = modeldir.open_model_dir(pretrained.resolve_model_dir(FLAGS.warm_start)) if FLAGS.warm_start else None
    if warm_start:
        inference.check_input(nu, warm_start.config.model.input_depth)
    u, records = solve_all(nu, FLAGS.rtol, warm_start, FLAGS.method)
    hdf5.write_fields(FLAGS.output, {"nu": nu.astype(np.float32), "u": u.astype(np.float32)}, family=family,
                      coeffs=coeffs, attrs={"solver_records": json.dumps(records)})
    for record in records:
        print(json.dumps(record))
        if "warm" in record:
            cold, warm = record["cold"], record["warm"]
            print(f"  zero guess: {cold['iterations']} iterations, {cold['seconds']:.2f} s; network guess: "
                  f"{warm['iterations']} iterations, {warm['seconds']:.2f} s + {warm['predict_seconds']:.2f} s "
                  f"prediction (relative residual {warm['relative_residual']:.1e} <= {FLAGS.rtol:g})")
    print(f"wrote {FLAGS.output} and {hdf5.xdmf_path(FLAGS.output)}")


def run():
    """Console-script entry point."""
    cli.run("poisson-tf-solve", main)


if __name__ == "__main__":
    run()
