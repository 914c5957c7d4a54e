"""The solvers shipped inside the package: loading, accuracy against the reference, the fingerprint check, the
command lines, and shipping a run (scripts/ship_pretrained.py).

The tests of the shipped solvers run against whatever poisson_tf/pretrained/ holds.
"""
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile

import h5py
import keras
import numpy as np
import pytest

import poisson_tf
import shipping
from poisson_tf import config, fields, inference, modeldir, models, pretrained, scoring, solvers
from poisson_tf.training import data
from poisson_tf import training
from fault_helpers import error_lines, run_cli
from train_helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = pretrained.names()
DEFAULT_DIR = os.path.join(pretrained.ROOT, pretrained.DEFAULT_NAME)
#: Subprocesses started in another working directory import this checkout.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))


def flip_middle_byte(path) -> None:
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0x5A
    with open(path, "wb") as f:
        f.write(bytes(raw))


def held_out(name: str, count: int) -> np.ndarray:
    return data.SampleSet.load(os.path.join(pretrained.pretrained_dir(name), modeldir.VAL_SAMPLES_FILE)).coeffs[:count]


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    return request.param


@pytest.fixture(scope="module")
def solver(shipped):
    return poisson_tf.load_pretrained(shipped)


def test_the_default_solver_is_shipped_whole():
    assert pretrained.DEFAULT_NAME in SHIPPED
    for name in SHIPPED:
        assert sorted(os.listdir(pretrained.pretrained_dir(name))) == sorted(modeldir.SHIPPED_FILES), name
    assert poisson_tf.pretrained_dir() == DEFAULT_DIR == pretrained.resolve_model_dir("pretrained")
    assert pretrained.resolve_model_dir(f"pretrained:{pretrained.DEFAULT_NAME}") == DEFAULT_DIR
    assert pretrained.resolve_model_dir("runs/demo") == "runs/demo"  # an ordinary model_dir is left alone


def test_importing_the_package_and_finding_a_solver_loads_no_framework():
    code = ("import sys, poisson_tf; d = poisson_tf.pretrained_dir(); "
            "assert not {'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules); print(d)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == DEFAULT_DIR, result.stderr[-2000:]


def test_loads_in_keras_safe_mode_with_the_recorded_architecture(shipped):
    path = os.path.join(pretrained.pretrained_dir(shipped), modeldir.MODEL_FILE)
    model = keras.saving.load_model(path, compile=False, safe_mode=True)  # no Lambda layers, no arbitrary code
    recorded = modeldir.read_fingerprint(pretrained.pretrained_dir(shipped))["architecture"]
    cfg = modeldir.load_config(pretrained.pretrained_dir(shipped))
    assert model.count_params() == recorded["num_params"] == models.build_model(cfg.model).count_params()
    assert models.resolution_multiple(model) == 2 ** cfg.model.input_depth


def test_predicts_exact_dirichlet_planes(solver, shipped):
    eta = modeldir.load_config(pretrained.pretrained_dir(shipped)).data.eta
    nu = fields.kl_diffusivity(held_out(shipped, 2), 32, eta)
    u = inference.predict(solver, nu, batch_size=2)
    assert u.shape == (2, 32, 32, 32) and np.all(np.isfinite(u))
    assert np.all(u[:, 0] == 1.0) and np.all(u[:, -1] == 0.0)


def test_runs_at_its_working_resolution_for_any_n(solver, shipped):
    # The shipped solver runs its U-Net at 32^3 and interpolates, so N need not be a multiple of 2^depth: at
    # N = 40 (not a multiple of 32) it keeps exact Dirichlet planes and the accuracy the card claims at 64^3
    # and 128^3 (mean rel_l2 below 1%; the same held-out fields score 0.3-0.8% there).
    cfg = modeldir.load_config(pretrained.pretrained_dir(shipped))
    assert cfg.model.working_resolution == 32
    nu = fields.kl_diffusivity(held_out(shipped, 2), 40, cfg.data.eta)
    u = inference.predict(solver, nu)
    assert u.shape == (2, 40, 40, 40) and np.all(u[:, 0] == 1.0) and np.all(u[:, -1] == 0.0)
    u_ref = np.stack([solvers.solve(x)[0] for x in nu])
    assert np.mean([m["rel_l2"] for m in metrics_of(u, u_ref, nu)]) < 0.01


def test_beats_the_linear_guess_by_a_wide_margin_on_held_out_fields(solver, shipped):
    eta = modeldir.load_config(pretrained.pretrained_dir(shipped)).data.eta
    nu = fields.kl_diffusivity(held_out(shipped, 4), 32, eta)
    u_ref = np.stack([solvers.solve(x)[0] for x in nu])
    network = [m["rel_l2"] for m in metrics_of(inference.predict(solver, nu), u_ref, nu)]
    linear = [m["rel_l2"] for m in metrics_of(scoring.linear_baseline(nu), u_ref, nu)]
    assert np.mean(network) <= np.mean(linear) / 3, (network, linear)


def metrics_of(u, u_ref, nu):
    from poisson_tf import metrics

    return metrics.field_metrics(np.asarray(u, np.float64), u_ref, nu)


def test_the_held_out_set_is_disjoint_from_the_training_run(shipped):
    directory = pretrained.pretrained_dir(shipped)
    cfg = modeldir.load_config(directory)
    held = data.SampleSet.load(os.path.join(directory, modeldir.VAL_SAMPLES_FILE), cfg.data.field_family())
    assert held.role == "held_out" and held.num_samples >= 16 and held.seed != cfg.data.seed
    train, val = data.make_sample_sets(cfg.num_train_samples, cfg.data.num_val, cfg.data.field_family(),
                                       cfg.data.sampling, cfg.data.seed)
    seen = np.concatenate([train.coeffs, val.coeffs])
    assert np.abs(held.coeffs[:, None] - seen[None]).max(axis=-1).min() > 1e-6
    assert np.abs(held.coeffs).max() <= fields.DEFAULT_COEFF_BOUND


def test_the_fingerprint_and_the_card_describe_the_shipped_files(solver, shipped):
    directory = pretrained.pretrained_dir(shipped)
    assert modeldir.fingerprint(directory, solver.count_params()) == modeldir.read_fingerprint(directory)
    cfg = modeldir.load_config(directory)
    card = open(os.path.join(directory, modeldir.CARD_FILE)).read()
    assert card.startswith(f"# Pretrained solver `{shipped}`")
    assert shipping.train_command(cfg, 1, f"runs/{shipped}") in card or "horovodrun" in card
    for needle in (f"--preset={cfg.preset}", f"--cycle={cfg.cycle.cycle}", f"eta = {cfg.data.eta}",
                   modeldir.read_fingerprint(directory)["sha256"]["model.keras"], "Machine: ", "Wall time: "):
        assert needle in card, needle


@pytest.fixture()
def copy_of_default(tmp_path):
    target = tmp_path / pretrained.DEFAULT_NAME
    shutil.copytree(DEFAULT_DIR, target)
    return target


def test_refuses_weights_whose_bytes_changed(copy_of_default):
    flip_middle_byte(copy_of_default / "model.keras")
    pattern = (rf"refusing {re.escape(str(copy_of_default / 'model.keras'))}: its sha256 is [0-9a-f]{{64}}, but "
               rf"{re.escape(str(copy_of_default / 'fingerprint.json'))} records [0-9a-f]{{64}}")
    with pytest.raises(ValueError, match=pattern):
        modeldir.open_model_dir(str(copy_of_default))  # before any framework loads
    with pytest.raises(ValueError, match=pattern):
        inference.load_solver(str(copy_of_default))


def _edit_config(directory, section: str, field: str, change):
    path = directory / "config.json"
    saved = json.loads(path.read_text())
    saved[section][field] = change(saved[section][field])
    path.write_text(json.dumps(saved))
    return saved[section][field]


def test_refuses_a_configuration_that_changed(copy_of_default):
    original = modeldir.load_config(str(copy_of_default))
    extra = _edit_config(copy_of_default, "model", "extra_convs", lambda v: v + 1)
    with pytest.raises(ValueError, match=rf"refusing the solver in .*: the architecture in .*config\.json differs "
                                         rf"from the one .*fingerprint\.json records \(model\.extra_convs is {extra}, "
                                         rf"the fingerprint records {original.model.extra_convs}\)"):
        inference.load_solver(str(copy_of_default))
    _edit_config(copy_of_default, "model", "extra_convs", lambda v: v - 1)
    _edit_config(copy_of_default, "data", "num_terms", lambda v: v + 1)  # not the architecture, but the input
    with pytest.raises(ValueError, match=r"refusing .*config\.json: its sha256 is [0-9a-f]{64}, but .* records"):
        modeldir.open_model_dir(str(copy_of_default))


def save_with_recorded_sha256(model, directory) -> dict:
    """Saves model as directory's model.keras and records its sha256 in fingerprint.json (the architecture
    record unchanged), so that only the architecture check can refuse it; returns the fingerprint."""
    model.save(str(directory / "model.keras"))
    path = directory / "fingerprint.json"
    recorded = json.loads(path.read_text())
    recorded["sha256"]["model.keras"] = modeldir.file_sha256(str(directory / "model.keras"))
    path.write_text(json.dumps(recorded))
    return recorded


def test_refuses_weights_of_another_architecture_even_when_their_sha256_was_recorded(copy_of_default):
    other = models.build_model("tiny")
    recorded = save_with_recorded_sha256(other, copy_of_default)
    modeldir.open_model_dir(str(copy_of_default))  # the files match the (edited) record ...
    expected = recorded["architecture"]["num_params"]
    with pytest.raises(ValueError, match=rf"refusing .*model\.keras: the network it holds is not the architecture "
                                         rf".*fingerprint\.json records \(num_params is {other.count_params()}, the "
                                         rf"fingerprint records {expected}"):
        inference.load_solver(str(copy_of_default))  # ... but the network is not the recorded architecture


@pytest.mark.parametrize("working, differs", [
    (0, r"resolution multiple is 32, the fingerprint records 1; working resolution is 0, the fingerprint records 32"),
    (64, r"working resolution is 64, the fingerprint records 32"),
])
def test_refuses_the_same_weights_at_another_working_resolution(copy_of_default, working, differs):
    cfg = modeldir.load_config(str(copy_of_default))
    other = models.build_model(dataclasses.replace(cfg.model, working_resolution=working))  # same weights
    other.set_weights(keras.saving.load_model(str(copy_of_default / "model.keras"), compile=False).get_weights())
    save_with_recorded_sha256(other, copy_of_default)
    with pytest.raises(ValueError, match=r"refusing .*model\.keras: the network it holds is not the architecture "
                                         rf".*\({differs}\)"):
        inference.load_solver(str(copy_of_default))


def test_an_unknown_name_is_refused_with_the_shipped_names():
    with pytest.raises(ValueError, match=rf"no pretrained solver named 'nope' in .*; shipped: "
                                         rf"{re.escape(', '.join(SHIPPED))} \(name one as pretrained:<name>"):
        poisson_tf.load_pretrained("nope")
    with pytest.raises(ValueError, match=r"shipped: none \(this installation ships no pretrained solver\)"):
        pretrained.pretrained_dir("kl_small", root="/nonexistent")


# The command lines, given --model_dir=pretrained / --warm_start=pretrained.

def test_predict_cli_with_the_shipped_solver(tmp_path, solver):
    out = tmp_path / "u.h5"
    result = run_cli("predict", "--model_dir=pretrained", "--coeffs=1,-2,1.5,0.5", "--resolution=32",
                     f"--output={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    with h5py.File(out) as f:
        u, attrs = f["u"][()], dict(f.attrs)
    assert attrs["model_dir"] == DEFAULT_DIR
    expected = inference.predict(solver, fields.kl_diffusivity(np.array([1, -2, 1.5, 0.5]), 32))[0]
    np.testing.assert_allclose(u, expected, atol=1e-5)


def test_evaluate_cli_defaults_to_the_held_out_set_and_a_report_in_the_working_directory(tmp_path):
    result = subprocess.run([sys.executable, "-m", "poisson_tf.evaluate", "--model_dir=pretrained",
                             "--resolutions=32", "--num_samples=2", f"--reference_cache={tmp_path / 'refs'}"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "pretrained_eval" / pretrained.DEFAULT_NAME / "report.json").read_text())
    assert report["samples"]["role"] == "held_out" and report["samples"]["num_samples"] == 2
    assert report["samples"]["path"] == os.path.join(DEFAULT_DIR, modeldir.VAL_SAMPLES_FILE)
    r = report["resolutions"]["32"]
    assert r["model"]["rel_l2"] < r["baseline"]["rel_l2"]
    assert (tmp_path / "pretrained_eval" / pretrained.DEFAULT_NAME / "report.png").exists()


def test_solve_cli_warm_starts_from_the_shipped_solver(tmp_path):
    # N = 40: the shipped solver's working resolution lets it warm-start any N, not only multiples of 2^depth.
    result = run_cli("solve", "--coeffs=1,-2,1.5,0.5", "--resolution=40", "--warm_start=pretrained",
                     f"--output={tmp_path / 's.h5'}")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.splitlines()[0])
    assert record["warm"]["relative_residual"] <= 1e-10 and record["warm"]["iterations"] <= record["cold"]["iterations"]


@pytest.mark.parametrize("module, args", [
    ("predict", ["--model_dir=pretrained:nope", "--coeffs=1,0,0,0"]),
    ("evaluate", ["--model_dir=pretrained:nope"]),
    ("solve", ["--warm_start=pretrained:nope", "--coeffs=1,0,0,0"]),
])
def test_every_cli_names_the_shipped_solvers_for_an_unknown_one(tmp_path, module, args):
    result = run_cli(module, *args, f"--{'report' if module == 'evaluate' else 'output'}={tmp_path / 'x.h5'}")
    errors = error_lines(result.stderr, f"poisson-tf-{module}")
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    assert "no pretrained solver named 'nope'" in errors[0] and pretrained.DEFAULT_NAME in errors[0]


# Shipping a run: scripts/ship_pretrained.py on a tiny training.

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ship")
    training.train(tiny_config(root / "run", root / "refs", cycle__cycle="half_v"))
    return root


def ship_script(*args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "ship_pretrained.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=ENV)


def test_ship_evaluate_and_rewrite_the_card(tiny_run):
    run, root = tiny_run / "run", tiny_run / "shipped"
    result = ship_script(f"--model_dir={run}", "--name=tiny", f"--root={root}", "--placeholder")
    assert result.returncode == 0, result.stderr[-2000:]
    directory = root / "tiny"
    assert pretrained.names(str(root)) == ["tiny"] and sorted(os.listdir(directory)) == sorted(modeldir.SHIPPED_FILES)
    assert (directory / "model.keras").read_bytes() == (run / "model.keras").read_bytes()
    shipped_cfg, run_cfg = modeldir.load_config(str(directory)), modeldir.load_config(str(run))
    assert shipped_cfg.fingerprint() == run_cfg.fingerprint() and shipped_cfg.run.reference_cache == ""
    model = inference.load_solver(str(directory))
    assert modeldir.read_fingerprint(str(directory)) == modeldir.fingerprint(str(directory), model.count_params())
    held = data.SampleSet.load(str(directory / "val_samples.h5"))
    assert held.seed == run_cfg.data.seed + shipping.HELD_OUT_SEED_OFFSET and held.num_samples == 16
    card = (directory / "MODEL_CARD.md").read_text()
    assert "**Placeholder weights.**" in card and "Not evaluated yet" in card
    assert re.search(r"Wall time: (\d+ min )?[0-9.]+ s \(the fit of epochs 1-\d+", card)
    assert f"Shipped from the run `{run}`" in card

    result = subprocess.run([sys.executable, "-m", "poisson_tf.evaluate", f"--model_dir={directory}",
                             "--resolutions=8,16", "--num_samples=3", f"--reference_cache={tiny_run / 'refs'}"],
                            capture_output=True, text=True, timeout=600, cwd=tiny_run,
                            env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    report_path = tiny_run / "pretrained_eval" / "tiny" / "report.json"  # not inside the shipped directory
    report = json.loads(report_path.read_text())
    result = ship_script("--name=tiny", f"--root={root}", "--card_only", f"--report={report_path}",
                         f"--model_dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    card = (directory / "MODEL_CARD.md").read_text()
    assert "Placeholder" not in card and "Not evaluated yet" not in card
    assert "the 3 fields of the shipped held-out set" in card
    for n in ("8", "16"):
        r = report["resolutions"][n]
        worst = max(s["rel_l2"] for s in r["per_sample"])
        assert (f"| {n}{' (zero-shot)' if r['zero_shot'] else ''} | 3 | {r['model']['rel_l2']:.2%} | {worst:.2%} | "
                f"{r['baseline']['rel_l2']:.2%}") in card
    inference.load_solver(str(directory))  # the card is not fingerprinted: rewriting it keeps the solver valid


def test_the_cards_training_command_trains_the_same_configuration(tiny_run):
    run_cfg = modeldir.load_config(str(tiny_run / "run"))
    again = tiny_run / "again"
    command = shlex.split(shipping.train_command(run_cfg, 1, str(again)))
    assert command[0] == "poisson-tf-train"
    result = run_cli("train", *command[1:], "--stop_after_epochs=1", "--verbose=0",
                     f"--reference_cache={tiny_run / 'refs'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert modeldir.load_config(str(again)).fingerprint() == run_cfg.fingerprint()
    spec = dataclasses_replace_cycle(run_cfg, "8:1,16:2")
    assert "--levels" not in shipping.train_command(spec) and "--cycle=8:1,16:2" in shipping.train_command(spec)
    assert shipping.train_command(run_cfg, 2).startswith("horovodrun -np 2 poisson-tf-train --preset=tiny ")


def dataclasses_replace_cycle(cfg, spec):
    import dataclasses

    return dataclasses.replace(cfg, cycle=config.CycleConfig(cycle=spec, levels=(8, 16)))


def test_ship_refuses_what_cannot_be_shipped(tiny_run, tmp_path):
    run = str(tiny_run / "run")
    seed = modeldir.load_config(run).data.seed
    for kwargs, message in [
        ({"name": "Kl-Small"}, r"--name must be lower-case letters, digits and underscores"),
        ({"num_held_out": 8}, r"--num_held_out must be >= 16, got 8"),
        ({"held_out_seed": seed}, rf"--held_out_seed must be in 0\.\.\d+ and not the training data seed {seed}"),
        ({"report": str(tmp_path / "missing.json")}, r"--report .* is not a poisson-tf-evaluate report"),
    ]:
        with pytest.raises(ValueError, match=message):
            shipping.ship(run, root=str(tmp_path), **kwargs)
    with pytest.raises(ValueError, match="holds no trained model"):
        shipping.ship(str(tmp_path), root=str(tmp_path))
    with pytest.raises(ValueError, match="is a shipped solver, not a training run"):
        shipping.ship(DEFAULT_DIR, root=str(tmp_path))
    assert pretrained.names(str(tmp_path)) == []


def test_a_wheel_of_the_package_ships_the_solvers(tmp_path):
    """`pip install .` (not editable) installs the shipped files: setup.py's package_data lists them."""
    setup_py = open(os.path.join(REPO, "setup.py")).read()
    listed = re.search(r"PRETRAINED_FILES = \(([^)]*)\)", setup_py).group(1)
    assert tuple(re.findall(r'"([^"]+)"', listed)) == modeldir.SHIPPED_FILES
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "README.rst", "MANIFEST.in"):
        shutil.copy(os.path.join(REPO, name), source / name)
    shutil.copytree(os.path.join(REPO, "poisson_tf"), source / "poisson_tf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").iterdir()
    names = set(zipfile.ZipFile(wheel).namelist())
    for solver_name in SHIPPED:
        for name in modeldir.SHIPPED_FILES:
            assert f"poisson_tf/pretrained/{solver_name}/{name}" in names, name
    assert not any("ship" in name for name in names)  # the release tool stays in scripts/
    for module in ("cli/train.py", "solvers/gmg.py", "training/loop.py", "config/schema.py", "modeldir.py"):
        assert f"poisson_tf/{module}" in names, module
