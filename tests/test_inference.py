"""Evaluation, prediction, neural warm start and export of a trained solver."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import keras
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import fields, hdf5, inference, metrics, scoring, solvers, training
from train_helpers import tiny_config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    training.train(tiny_config(root / "run", root / "refs", cycle__cycle="half_v"))
    return str(root / "run")


@pytest.fixture(scope="module")
def store(model_dir):
    return solvers.ReferenceStore(os.path.join(os.path.dirname(model_dir), "refs"))


def test_exact_solution_as_prediction_scores_zero():
    nu = fields.kl_diffusivity(fields.sample_coeffs(2, seed=1), 9)
    u_ref = np.stack([solvers.solve(x)[0] for x in nu])
    for m in metrics.field_metrics(u_ref, u_ref, nu):
        assert m == {"rel_l2": 0.0, "max_abs": 0.0, "energy_gap": 0.0, "flux_error": 0.0, "energy_norm_error": 0.0,
                     "perturbation_error": 0.0, "flux_field_error": 0.0}


def test_perturbed_prediction_gives_the_expected_metrics():
    nu = fields.kl_diffusivity(fields.sample_coeffs(1, seed=2)[0], 9)
    u_ref, _ = solvers.solve(nu)
    d = np.zeros_like(u_ref)
    x = np.linspace(0, 1, 9)
    d[1:-1] = 0.05 * np.sin(np.pi * x[1:-1])[:, None, None]  # zero on the Dirichlet planes
    m = metrics.field_metrics((u_ref + d)[None], u_ref[None], nu[None])[0]
    assert m["rel_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(u_ref), rel=1e-6)
    assert m["max_abs"] == pytest.approx(0.05 * np.sin(np.pi * x[4]), rel=1e-6)
    k = solvers.stiffness(nu)
    # u_ref minimizes J over the free nodes, so J(u_ref + d) - J(u_ref) = 1/2 d^T K d exactly.
    assert m["energy_gap"] == pytest.approx(0.5 * d.ravel() @ (k @ d.ravel()) / solvers.energy(u_ref, nu), rel=1e-3)
    flux = (k @ (u_ref + d).ravel()).reshape(d.shape)[0].sum()
    assert m["flux_error"] == pytest.approx(abs(flux / (2 * solvers.energy(u_ref, nu)) - 1), rel=1e-3)
    # energy norm ||d||_K / ||u_ref||_K, the square root of the gap; the perturbation's norm is u_ref - (1 - x)'s
    assert m["energy_norm_error"] == pytest.approx(np.sqrt(m["energy_gap"]), rel=1e-3)
    perturbation = u_ref - (1 - x)[:, None, None]
    assert m["perturbation_error"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(perturbation), rel=1e-9)
    k2 = solvers.stiffness(nu ** 2)  # the flux field nu grad u in the norm of the stiffness of nu^2
    assert m["flux_field_error"] == pytest.approx(
        np.sqrt((d.ravel() @ (k2 @ d.ravel())) / (u_ref.ravel() @ (k2 @ u_ref.ravel()))), rel=1e-6)
    # the trivial guess u = 1 - x misses exactly the perturbation
    (baseline,) = metrics.field_metrics(np.broadcast_to((1 - x)[:, None, None], u_ref.shape)[None], u_ref[None],
                                        nu[None])
    assert baseline["perturbation_error"] == pytest.approx(1.0, rel=1e-12)


def test_compare_fields_scores_every_candidate_as_field_metrics_does():
    nu = fields.kl_diffusivity(fields.sample_coeffs(2, seed=3), 9)
    u_ref = np.stack([solvers.solve(x)[0] for x in nu])
    linear = scoring.linear_baseline(nu)
    bumped = u_ref + 0.01 * np.sin(np.pi * np.linspace(0, 1, 9))[None, :, None, None]
    together = metrics.compare_fields([linear, bumped], u_ref, nu)
    assert together == [metrics.field_metrics(linear, u_ref, nu), metrics.field_metrics(bumped, u_ref, nu)]
    assert together[0][0]["rel_l2"] > together[1][0]["rel_l2"] > 0
    with pytest.raises(ValueError, match=r"candidate 1 \(2, 8, 9, 9\).*one shape"):
        metrics.compare_fields([linear, bumped[:, :-1]], u_ref, nu)


def test_evaluate_reports_model_next_to_baseline(store):
    coeffs = fields.sample_coeffs(3, seed=3)
    oracle = lambda nu: np.stack([solvers.solve(x)[0] for x in nu])  # noqa: E731
    report = scoring.evaluate(oracle, fields.Family(), coeffs, [8, 16], store, batch_size=2, trained_resolutions=[8])
    for n, r in report["resolutions"].items():
        assert r["num_samples"] == 3 and [s["sample"] for s in r["per_sample"]] == [0, 1, 2]
        assert r["model"]["rel_l2"] < 1e-9 and abs(r["model"]["energy_gap"]) < 1e-5
        assert 0.05 < r["baseline"]["rel_l2"] < 0.5 and r["baseline"]["energy_gap"] > 0
        assert r["zero_shot"] == (n == 16)
    assert "8" in scoring.format_table(report) and "zero-shot" in scoring.format_table(report)
    lean = scoring.evaluate(oracle, fields.Family(), coeffs, [8], store, baseline=False)["resolutions"][8]
    assert lean["baseline"] == {} and lean["model"] == report["resolutions"][8]["model"]
    assert not any(k.startswith("baseline_") for k in lean["per_sample"][0])


def test_predict_equals_the_model_in_sample_order_with_a_partial_last_batch(model_dir):
    model = inference.load_solver(model_dir)
    nu = fields.kl_diffusivity(fields.sample_coeffs(5, seed=4), 16)
    expected = model(tf.constant(nu[..., None], tf.float32), training=False).numpy()[..., 0]
    assert min(np.abs(expected[i] - expected[j]).max() for i in range(5) for j in range(i)) > 1e-3  # told apart
    for shift, batch_size in enumerate((1, 2, 3, 5, 8)):  # 2 and 3 leave a partial last batch
        order = np.roll(np.arange(5), shift)  # a new order every call: no stale output can pass
        got = inference.predict(model, nu[order], batch_size=batch_size)
        np.testing.assert_allclose(got, expected[order], rtol=0, atol=1e-5)
    np.testing.assert_allclose(inference.predict(model, nu[3]), expected[3:4], rtol=0, atol=1e-5)  # one [N,N,N] field


def test_predict_rejects_bad_input(model_dir):
    model = inference.load_solver(model_dir)
    nu = fields.kl_diffusivity(fields.sample_coeffs(1, seed=4), 16)
    bad = nu.copy()
    bad[0, 3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="finite and positive"):
        inference.predict(model, bad)
    with pytest.raises(ValueError, match="resolution 18 cannot pass a depth-2 U-Net"):
        inference.predict(model, np.ones((18, 18, 18)))
    with pytest.raises(ValueError, match="holds no trained model"):
        inference.load_solver(os.path.dirname(model_dir))


def test_keras_and_savedmodel_exports_give_the_same_predictions(model_dir, tmp_path):
    model = inference.load_solver(model_dir)
    nu = tf.constant(fields.kl_diffusivity(fields.sample_coeffs(2, seed=5), 16)[..., None], tf.float32)
    expected = model(nu).numpy()
    model.save(str(tmp_path / "copy.keras"))
    np.testing.assert_allclose(keras.saving.load_model(str(tmp_path / "copy.keras"))(nu).numpy(), expected, atol=1e-6)
    served = tf.saved_model.load(inference.export_savedmodel(model, str(tmp_path / "saved")))
    np.testing.assert_allclose(served.serve(nu).numpy(), expected, atol=1e-6)


def run_cli(module, *args):
    return subprocess.run([sys.executable, "-m", f"poisson_tf.{module}", *args], capture_output=True, text=True,
                          timeout=300)


def test_predict_cli_writes_fields_and_xdmf(model_dir, tmp_path):
    out = str(tmp_path / "pred.h5")
    result = run_cli("predict", f"--model_dir={model_dir}", "--coeffs=1,0,-1,2", "--coeffs=0,1,0,0",
                     "--resolution=16", f"--output={out}", "--batch_size=2")
    assert result.returncode == 0, result.stderr[-2000:]
    fields_, attrs = hdf5.read_fields(out, ("nu", "u"))
    assert fields_["u"].shape == (2, 16, 16, 16)
    assert np.all(fields_["u"][:, 0] == 1) and np.all(fields_["u"][:, -1] == 0)
    assert attrs["resolution"] == 16 and attrs["eta"] == 0.5 and attrs["coeffs"].shape == (2, 4)
    refs = {d.text.strip() for d in ET.parse(hdf5.xdmf_path(out)).getroot().iter("DataItem")
            if d.get("Format") == "HDF"}
    assert refs == {"pred.h5:/nu", "pred.h5:/u"}
    bad = str(tmp_path / "bad.h5")
    nu = np.ones((16, 16, 16))
    nu[0, 0, 0] = 0.0
    hdf5.write_fields(bad, {"nu": nu}, xdmf=False)
    result = run_cli("predict", f"--model_dir={model_dir}", f"--input={bad}", f"--output={tmp_path / 'x.h5'}")
    assert result.returncode != 0 and "finite and positive" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("predict", f"--model_dir={tmp_path}", "--coeffs=1,0,0,0", f"--output={tmp_path / 'x.h5'}")
    assert result.returncode != 0 and "no trained model" in result.stderr


COUNTING_PREDICT = """
import builtins, collections, json, os, sys
from poisson_tf import modeldir
counts = collections.Counter()
real_open, real_hash = builtins.open, modeldir.file_sha256
def counting_open(file, *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and os.path.basename(os.fspath(file)) == "config.json":
        counts["config.json read"] += 1
    return real_open(file, *args, **kwargs)
def counting_hash(path):
    counts[os.path.basename(path) + " hashed"] += 1
    return real_hash(path)
builtins.open, modeldir.file_sha256 = counting_open, counting_hash
import atexit
atexit.register(lambda: print("COUNTS " + json.dumps(counts, sort_keys=True)))
from poisson_tf.cli import predict
sys.argv = ["poisson-tf-predict"] + sys.argv[1:]
predict.run()
"""


@pytest.mark.parametrize("shipped", [True, False])
def test_predict_reads_the_config_once_and_hashes_the_model_once(model_dir, tmp_path, shipped):
    # The model_dir is opened and verified once (modeldir.open_model_dir) and passed on: a shipped solver's
    # model.keras is hashed once, a training run's never; config.json is read once either way.
    directory = "pretrained" if shipped else model_dir
    result = subprocess.run([sys.executable, "-c", COUNTING_PREDICT, f"--model_dir={directory}",
                             "--coeffs=1,0,-1,2", "--resolution=16", f"--output={tmp_path / 'u.h5'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout.split("COUNTS ")[-1])
    assert counts == ({"config.json read": 1, "model.keras hashed": 1} if shipped else {"config.json read": 1})


def test_evaluate_cli_writes_report_figure_and_table(model_dir, tmp_path):
    report_path = str(tmp_path / "eval" / "report.json")
    result = run_cli("evaluate", f"--model_dir={model_dir}", f"--report={report_path}", "--batch_size=2")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(report_path) as f:
        report = json.load(f)
    assert sorted(report["resolutions"], key=int) == ["8", "16", "32"]  # trained levels + zero-shot 2x finest
    assert report["resolutions"]["32"]["zero_shot"] and not report["resolutions"]["16"]["zero_shot"]
    for r in report["resolutions"].values():
        assert set(r["model"]) == set(r["baseline"]) == set(metrics.METRIC_NAMES)
        assert r["num_samples"] == 2 and r["inference_seconds_per_field"] > 0
    assert os.path.getsize(str(tmp_path / "eval" / "report.png")) > 10_000
    assert "rel_l2" in result.stdout and "zero-shot" in result.stdout
    result = run_cli("evaluate", f"--model_dir={model_dir}", "--resolutions=10", f"--report={report_path}")
    assert result.returncode != 0 and "resolution 10 cannot pass" in result.stderr
    # The kl model on fields of another family: drawn, scored with every metric, both families named.
    result = run_cli("evaluate", f"--model_dir={model_dir}", "--family=twophase", "--num_terms=16", "--draw=2",
                     "--resolutions=16", f"--report={report_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(report_path) as f:
        report = json.load(f)
    assert report["family"]["kind"] == "twophase" and report["trained_family"]["kind"] == "kl"
    assert report["samples"]["role"] == "drawn" and report["resolutions"]["16"]["num_samples"] == 2
    result = run_cli("evaluate", f"--model_dir={model_dir}", "--draw=0", f"--report={report_path}")
    assert result.returncode != 0 and "--draw must be >= 1" in result.stderr


def test_warm_start_reaches_the_same_tolerance(model_dir, tmp_path):
    out = str(tmp_path / "warm.h5")
    result = run_cli("solve", "--coeffs=1,-1,0.5,2", "--resolution=16", f"--warm_start={model_dir}",
                     f"--output={out}", "--rtol=1e-10")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.splitlines()[0])
    assert record["cold"]["relative_residual"] <= 1e-10 and record["warm"]["relative_residual"] <= 1e-10
    assert "zero guess:" in result.stdout and "network guess:" in result.stdout
    # The same two solves made here: from the zero guess, and from this network's prediction.
    nu = fields.kl_diffusivity([1, -1, 0.5, 2], 16)
    cold_u, cold = solvers.solve(nu)
    _, warm = solvers.solve(nu, x0=inference.predict(inference.load_solver(model_dir), nu)[0])
    assert record["cold"]["initial_relative_residual"] == 1.0 and record["cold"]["iterations"] == cold.iterations
    assert record["warm"]["initial_relative_residual"] == pytest.approx(warm.initial_relative_residual, rel=1e-4)
    assert record["warm"]["iterations"] == warm.iterations
    assert record["iterations_saved"] == cold.iterations - warm.iterations
    np.testing.assert_allclose(hdf5.read_fields(out, ("u",))[0]["u"], cold_u, atol=1e-6)


def test_evaluate_cli_on_a_spec_cycle_run_scores_the_trained_resolutions(tmp_path):
    run, refs = str(tmp_path / "run"), f"--reference_cache={tmp_path / 'refs'}"
    result = run_cli("train", f"--model_dir={run}", refs, "--preset=tiny", "--cycle=8:1,16:1", "--num_train=4",
                     "--num_val=1", "--global_batch_size=2", "--threads=1", "--verbose=0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation rel_l2 at 8^3" in result.stdout and "validation rel_l2 at 16^3" in result.stdout
    report_path = str(tmp_path / "report.json")
    result = run_cli("evaluate", f"--model_dir={run}", f"--report={report_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(report_path) as f:
        report = json.load(f)
    assert report["trained_resolutions"] == [8, 16]  # the spec's levels, not the --levels default 16,32,64
    assert sorted(report["resolutions"], key=int) == ["8", "16", "32"]
    assert [n for n, r in report["resolutions"].items() if r["zero_shot"]] == ["32"]
