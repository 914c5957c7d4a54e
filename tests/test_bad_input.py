"""The bad-input corpus: each class of bad flag, bad input file or unusable place across the four command lines
ends with exit code != 0, exactly one `poisson-tf-X: error: ...` line saying what is wrong, no traceback, and
no existing file changed (every file of the corpus' world is hashed before and after each case).

Cases run two at a time (the machine has two cores); each fails before TensorFlow loads but one.
"""
import concurrent.futures
import fcntl
import os
import re
import shutil

import h5py
import numpy as np
import pytest

from fault_helpers import digest_tree, error_lines, flip_byte, run_cli
import shipping
from poisson_tf.training import checkpoint
from poisson_tf import training
from train_helpers import tiny_config

COMMANDS = {"train": "poisson-tf-train", "predict": "poisson-tf-predict", "evaluate": "poisson-tf-evaluate",
            "solve": "poisson-tf-solve"}
RUN, OUT = "--model_dir={w}/run", "--output={w}/outputs/previous.h5"
PROBE = ".write_probe."  # files.check_writable's test file, there for microseconds while a case runs

# (class of bad input, command, arguments ({w}: the world directory), what the one error line says)
CASES = [
    ("train: negative thread count (aborted TensorFlow)", "train", ["--model_dir={w}/new", "--threads=-1"],
     r"threads must be an integer from 0 \(automatic"),
    ("train: model_dir is a file", "train", ["--model_dir={w}/afile"], r"'.*afile' is a file, not a directory"),
    ("train: new run into a model_dir holding a run", "train", [RUN], r"is not empty .* give --resume .* --overwrite"),
    ("train: --resume with --overwrite", "train", [RUN, "--resume", "--overwrite"], "contradict each other"),
    ("train: --resume value", "train", [RUN, "--resume=maybe"], r"flag --resume=maybe: must be true, false or auto"),
    ("train: negative --stop_after_epochs", "train", ["--model_dir={w}/new", "--stop_after_epochs=-1"],
     r"--stop_after_epochs must be >= 1, got -1"),
    ("train: negative --cache_budget_mb", "train", ["--model_dir={w}/new", "--cache_budget_mb=-1"],
     r"cache_budget_mb must be >= 0"),
    ("train: --scale_lr_by_workers with a fixed global batch", "train", ["--model_dir={w}/new",
                                                                         "--scale_lr_by_workers"],
     r"--scale_lr_by_workers is refused: the global batch"),
    ("train: model_dir locked by another training", "train", ["--model_dir={w}/locked"],
     r"is in use by another training or by a poisson-tf-evaluate or -predict reading it \(the last training "
     r"there: pid \d+"),
    ("train: --resume with settings that change the training", "train", [RUN, "--resume", "--learning_rate=0.5"],
     r"written with other settings \(--learning_rate=0\.001 there, 0\.5 now\)"),
    ("train: --resume from a checkpoint with flipped bytes", "train", ["--model_dir={w}/bitrot", "--resume"],
     r"checkpoint\.h5 does not match its checksum .* no intact checkpoint is left"),
    ("train: --resume=auto on a trained model without checkpoint", "train", ["--model_dir={w}/model_only",
                                                                             "--resume=auto"],
     r"holds a trained model\.keras but no checkpoint"),
    ("train: --resume on a damaged config.json", "train", ["--model_dir={w}/bad_config", "--resume"],
     r"config\.json is not a valid poisson_tf configuration"),
    ("train: a flag value of the wrong type", "train", ["--model_dir={w}/new", "--num_train=many"],
     r"flag --num_train=many: .* \(--helpfull lists the flags\)"),
    ("predict: negative --batch_size (wrote uninitialized memory)", "predict", [RUN, "--coeffs=1,0,0,0", OUT,
                                                                                 "--resolution=8", "--batch_size=-1"],
     r"--batch_size must be >= 1"),
    ("predict: KL coefficients the model was not trained on", "predict", [RUN, "--coeffs=1,0,0", OUT],
     r"--coeffs gives 3 coefficients per field, but the model .* trained on the kl \(eta 0.5, 4 terms\) family; "
     r"give 4"),
    ("predict: both --coeffs and --input", "predict", [RUN, "--coeffs=1,0,0,0", "--input={w}/inputs/ok.h5", OUT],
     "give exactly one of --coeffs"),
    ("predict: an HDF5 nu that is a group", "predict", [RUN, "--input={w}/inputs/group.h5", OUT],
     r"'nu' in .* is a group, not a dataset"),
    ("predict: a complex nu (lost its imaginary part)", "predict", [RUN, "--input={w}/inputs/complex.h5", OUT],
     r"must hold real numbers, got dtype complex128 \(complex"),
    ("predict: a damaged model.keras (was 'File not found')", "predict", ["--model_dir={w}/bad_model",
                                                                          "--coeffs=1,0,0,0", OUT],
     r"model\.keras is damaged"),
    ("predict: --output is a directory", "predict", [RUN, "--coeffs=1,0,0,0", "--output={w}/outputs"],
     r"--output '.*outputs' is a directory"),
    ("predict: --output in a read-only place", "predict", [RUN, "--coeffs=1,0,0,0", "--output=/proc/poisson.h5"],
     r"--output '/proc/poisson\.h5' cannot be written: '/proc' is not writable"),
    ("predict: --output below a file", "predict", [RUN, "--coeffs=1,0,0,0", "--output={w}/afile/u.h5"],
     r"cannot be written: '.*afile' is a file, not a directory"),
    ("predict: a resolution the network cannot take", "predict", [RUN, "--coeffs=1,0,0,0", "--resolution=18", OUT],
     r"resolution 18 cannot pass a depth-2 U-Net"),
    ("predict: --export_savedmodel is a file", "predict", [RUN, "--coeffs=1,0,0,0", "--resolution=8", OUT,
                                                           "--export_savedmodel={w}/afile"],
     r"--export_savedmodel must be a directory"),
    ("predict: --input is not HDF5", "predict", [RUN, "--input={w}/afile", OUT], r"cannot read .* as an HDF5 field"),
    ("evaluate: negative --batch_size (replaced a good report by an empty one)", "evaluate",
     [RUN, "--batch_size=-1"], r"--batch_size must be >= 1"),
    ("evaluate: negative --num_samples (dropped a sample)", "evaluate", [RUN, "--num_samples=-1"],
     r"--num_samples must be >= 0"),
    ("evaluate: --samples that is not a sample set", "evaluate", [RUN, "--samples={w}/inputs/ok.h5"],
     r"cannot read sample set"),
    ("evaluate: --report is a directory", "evaluate", [RUN, "--report={w}/outputs"], r"--report '.*' is a directory"),
    ("evaluate: --reference_cache is a file", "evaluate", [RUN, "--reference_cache={w}/afile"],
     r"--reference_cache '.*afile' is a file"),
    ("evaluate: a model_dir a training is running in (its report could sit beside a newer model)", "evaluate",
     ["--model_dir={w}/locked"], r"is in use by a training \(pid \d+ .*\): its files change while it runs"),
    ("predict: a model_dir a training is running in", "predict", ["--model_dir={w}/locked", "--coeffs=1,0,0,0", OUT],
     r"is in use by a training \(pid \d+ .*\)"),
    ("evaluate: a model_dir without a trained model", "evaluate", ["--model_dir={w}/new_dir"],
     r"holds no trained model \(model\.keras\)"),
    ("evaluate: a pretrained solver that is not shipped", "evaluate", ["--model_dir=pretrained:nope"],
     r"no pretrained solver named 'nope' in .*; shipped: "),
    ("solve: nu = 1e300 (a NaN residual was reported converged)", "solve", ["--input={w}/inputs/huge.h5", OUT],
     r"nu in .* must lie within \[1e-30, 1e\+30\]"),
    ("solve: --rtol outside (0, 1)", "solve", ["--coeffs=1,0,0,0", "--rtol=0", OUT], r"--rtol must be in \(0, 1\)"),
    ("solve: KL coefficients whose nu overflows", "solve", ["--coeffs=1000,0,0,0", OUT], r"nu that overflows"),
    ("solve: a warm start network that cannot take the resolution", "solve", ["--coeffs=1,0,0,0", "--resolution=9",
                                                                              "--warm_start={w}/run", OUT],
     r"resolution 9 cannot pass a depth-2 U-Net"),
    ("solve: a warm start from a shipped solver whose weights changed", "solve",
     ["--coeffs=1,0,0,0", "--resolution=8", "--warm_start={w}/tampered", OUT],
     r"refusing .*tampered/model\.keras: its sha256 is [0-9a-f]{64}, but .*fingerprint\.json records"),
    ("solve: an HDF5 nu of strings", "solve", ["--input={w}/inputs/strings.h5", OUT],
     r"must hold real numbers, got dtype \|S1"),
    ("solve: an HDF5 nu of the wrong shape", "solve", ["--input={w}/inputs/shape.h5", OUT],
     r"must have shape \[N, N, N\] or \[B, N, N, N\]"),
    ("solve: an HDF5 eta attribute that is not a number", "solve", ["--input={w}/inputs/eta_text.h5", OUT],
     r"not a valid diffusivity family"),
    ("solve: neither --coeffs nor --input", "solve", [OUT], "give exactly one of --coeffs"),
    ("solve: a tolerance the solver cannot reach", "solve", ["--coeffs=1,0,0,0", "--resolution=5", "--rtol=1e-300",
                                                             OUT], r"did not (reach|converge)"),
]


def _write_nu(path, nu, **attrs):
    with h5py.File(path, "w") as f:
        f.create_dataset("nu", data=nu)
        f.attrs.update(attrs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained run and every kind of bad input beside it."""
    w = tmp_path_factory.mktemp("world")
    run = w / "run"
    training.train(tiny_config(run, w / "refs", cycle__cycle="single", cycle__levels=(8,)))
    (run / "eval").mkdir()
    (run / "eval" / "report.json").write_text('{"a": "good report"}')
    (w / "afile").write_text("not a directory, not HDF5")
    (w / "outputs").mkdir()
    (w / "outputs" / "previous.h5").write_bytes(b"a previous result")
    (w / "new_dir").mkdir()
    for name in ("bitrot", "bad_config", "bad_model", "model_only"):
        shutil.copytree(run, w / name)
    flip_byte(w / "bitrot" / checkpoint.CHECKPOINT_FILE, "network/00000")
    (w / "bad_config" / "config.json").write_text('{"model": {"depth": ')
    model = (w / "bad_model" / "model.keras").read_bytes()
    (w / "bad_model" / "model.keras").write_bytes(model[:len(model) // 2])
    for name in os.listdir(w / "model_only"):
        if name not in ("model.keras", "config.json"):
            path = w / "model_only" / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (w / "locked").mkdir()
    shipping.ship(str(run), "tampered", root=str(w))
    model = (w / "tampered" / "model.keras").read_bytes()
    (w / "tampered" / "model.keras").write_bytes(model[:len(model) // 2] + bytes([model[len(model) // 2] ^ 0x5A])
                                                 + model[len(model) // 2 + 1:])
    inputs = w / "inputs"
    inputs.mkdir()
    _write_nu(inputs / "ok.h5", np.ones((8, 8, 8)))
    with h5py.File(inputs / "group.h5", "w") as f:
        f.create_group("nu")
    _write_nu(inputs / "complex.h5", np.ones((8, 8, 8)) * (1 + 1j))
    _write_nu(inputs / "huge.h5", np.full((8, 8, 8), 1e300))
    _write_nu(inputs / "strings.h5", np.full((8, 8, 8), b"x"))
    _write_nu(inputs / "shape.h5", np.ones((3, 4, 5)))
    _write_nu(inputs / "eta_text.h5", np.ones((8, 8, 8)), eta="half")
    return w


@pytest.fixture(scope="module")
def outcomes(world):
    """Every case run once: {case: (result, files changed while it ran)}; two at a time."""
    lock = os.open(world / "locked" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as a training in progress holds it
    os.write(lock, f"pid {os.getpid()} on this host\n".encode())

    def one(case):
        name, module, args, _ = case
        before = digest_tree(world, skip=PROBE)
        result = run_cli(module, *[a.format(w=world) for a in args], timeout=240)
        after = digest_tree(world, skip=PROBE)
        return name, (result, sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            return dict(pool.map(one, CASES))
    finally:
        os.close(lock)


def test_the_corpus_covers_at_least_30_classes_across_the_four_commands(outcomes, world):
    assert len({name for name, *_ in CASES}) == len(CASES) == len(outcomes) >= 30
    assert {module for _, module, *_ in CASES} == set(COMMANDS)
    # The probes of writable places (skipped while cases run side by side) are all gone.
    assert not [name for _, _, names in os.walk(world) for name in names if name.startswith(PROBE)]


@pytest.mark.parametrize("name, module, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_error_and_changes_nothing(outcomes, name, module, args, message):
    result, changed = outcomes[name]
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = error_lines(result.stderr, COMMANDS[module])
    assert len(errors) == 1, result.stderr[-3000:]
    assert re.search(message, errors[0]), errors[0]
    assert changed == [], f"{name} changed {changed}"
