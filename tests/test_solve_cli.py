"""The poisson-tf-solve command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from poisson_tf import fields, hdf5, solvers

CLI = [sys.executable, "-m", "poisson_tf.solve"]


def run(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120)


def test_solve_from_coefficients_writes_h5_and_xdmf(tmp_path):
    out = str(tmp_path / "sol.h5")
    result = run("--coeffs=0.5,-1,0,2", "--resolution=9", f"--output={out}")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])
    assert record["relative_residual"] <= 1e-10 and record["resolution"] == 9
    data, attrs = hdf5.read_fields(out, ("nu", "u"))
    np.testing.assert_allclose(data["nu"], fields.kl_diffusivity([0.5, -1, 0, 2], 9), rtol=1e-6)
    assert np.all(data["u"][0] == 1) and np.all(data["u"][-1] == 0)
    assert attrs["eta"] == 0.5 and list(attrs["coeffs"]) == [0.5, -1, 0, 2]
    assert os.path.exists(str(tmp_path / "sol.xdmf"))
    assert 2 * 0.0 < record["effective_diffusivity"] < data["nu"].max()


def test_solve_a_batch_from_hdf5(tmp_path):
    src, out = str(tmp_path / "in.h5"), str(tmp_path / "out.h5")
    nu = fields.kl_diffusivity(fields.sample_coeffs(2, seed=1), 6)
    hdf5.write_fields(src, {"nu": nu}, xdmf=False)
    result = run(f"--input={src}", f"--output={out}")
    assert result.returncode == 0, result.stderr
    u = hdf5.read_fields(out, ("u",))[0]["u"]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert u.shape == (2, 6, 6, 6) and len(records) == 2
    for i in range(2):  # each field solved, in order
        expected, record = solvers.solve(nu[i])
        np.testing.assert_allclose(u[i], expected, atol=1e-6)
        assert records[i]["effective_diffusivity"] == pytest.approx(2 * record.energy, rel=1e-9)


def test_solve_draws_fields_of_a_family_and_records_it(tmp_path):
    out = str(tmp_path / "two.h5")
    result = run("--family=twophase", "--num_terms=16", "--contrast=30", "--draw=2", "--draw_seed=5",
                 "--resolution=9", f"--output={out}")
    assert result.returncode == 0, result.stderr
    family = fields.Family.of("twophase", num_terms=16, contrast=30.0)
    nu, coeffs, recorded = hdf5.read_diffusivity(out)
    assert recorded == family and coeffs.shape == (2, 16) and set(np.unique(nu)) == {1.0, 30.0}
    np.testing.assert_array_equal(coeffs, family.sample(2, "uniform", 5))
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 2 and all(r["relative_residual"] <= 1e-10 for r in records)


@pytest.mark.parametrize("args, message", [
    (["--coeffs=1,abc"], "comma-separated list of numbers"),
    ([], "exactly one of --coeffs"),
    (["--coeffs=1", "--resolution=1"], "resolution must be an integer"),
    (["--input=/nonexistent.h5"], "does not exist"),
    (["--draw=0"], "--draw must be >= 1"),
    (["--draw=1", "--coeffs=1"], "exactly one of --coeffs"),
    (["--family=twophase", "--contrast=1", "--draw=1"], "contrast must be finite, > 0 and not 1"),
])
def test_bad_input_exits_with_one_clear_error(tmp_path, args, message):
    result = run(*args, f"--output={tmp_path / 'x.h5'}")
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "x.h5")


def test_nonpositive_nu_in_file_is_refused(tmp_path):
    src = str(tmp_path / "neg.h5")
    nu = np.ones((5, 5, 5))
    nu[2, 2, 2] = -1
    hdf5.write_fields(src, {"nu": nu}, xdmf=False)
    result = run(f"--input={src}", f"--output={tmp_path / 'x.h5'}")
    assert result.returncode != 0 and "finite and positive" in result.stderr
