"""The multigrid trainer single-process: schedule execution, artifacts, resume, clear errors."""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import types

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import fields, hardware, inference, metrics, modeldir, models, solvers, training
from poisson_tf.training import checkpoint, data, loop, step
from train_helpers import tiny_config


@pytest.fixture(scope="module")
def ref_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("references")


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, ref_cache):
    """The tiny V(16, 8, 16) run stopped after its first epoch (4 steps; checkpoint at epoch 0). Tests copy it."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    training.train(tiny_config(run, ref_cache), stop_after_epochs=1)
    return run


def copy_of(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


def read_events(log_dir):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def step_values(acc, tag) -> dict:
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


def test_trained_resolutions_follow_the_schedule_and_artifacts_are_written(tmp_path, ref_cache):
    cfg = tiny_config(tmp_path / "run", ref_cache, cycle__cycle="w", cycle__levels=(8, 16, 32),
                      cycle__epochs_per_visit=(2, 1, 1))
    summary = training.train(cfg)
    plan = cfg.plan()
    assert summary["trained_resolutions"] == plan.epoch_resolutions() == [32, 16, 8, 8, 16, 8, 8, 16, 32]
    assert summary["history"]["level"] == [2, 1, 0, 0, 1, 0, 0, 1, 2]
    for n in (8, 16, 32):
        assert 0 < summary["validation"][f"eval/res{n}/rel_l2"] < 1
    run = tmp_path / "run"
    assert modeldir.load_config(str(run)) == cfg
    for name in ("checkpoint.h5", "model.keras", "train_samples.h5", "val_samples.h5", "train_summary.json"):
        assert (run / name).exists(), name
    with h5py.File(run / "checkpoint.h5") as f:
        assert json.loads(f.attrs["state"])["epoch"] == plan.num_epochs - 1

    acc = read_events(run / "logs")
    tags = set(acc.Tags()["tensors"])
    expected = {"_hparams_/session_start_info", "train/energy", "train/resolution", "train/level",
                "train/learning_rate", "train/voxels_per_second"}
    for n in (8, 16, 32):
        expected |= {f"eval/res{n}/{m}" for m in ("rel_l2", "max_abs", "energy_gap", "flux_error",
                                                   "nu", "u", "u_ref", "abs_error")}
    assert expected <= tags, expected - tags
    per_step = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("train/resolution")]
    steps_per_epoch = 4  # 8 samples, global batch 2
    assert per_step == [float(r) for r in plan.epoch_resolutions() for _ in range(steps_per_epoch)]
    assert [e.step for e in acc.Tensors("train/energy")] == list(range(1, len(per_step) + 1))
    values = {tag: [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(f"train/{tag}")]
              for tag in ("energy", "learning_rate", "level", "voxels_per_second")}
    assert values["learning_rate"] == pytest.approx([cfg.optim.learning_rate] * len(per_step))
    # Each step's energy is that step's batch loss: their mean over an epoch is the epoch's loss.
    epoch_means = np.reshape(values["energy"], (-1, steps_per_epoch)).mean(axis=1)
    np.testing.assert_allclose(epoch_means, summary["history"]["loss"], rtol=1e-5)
    assert values["level"] == [float(lv) for lv in plan.epoch_levels() for _ in range(steps_per_epoch)]
    assert all(v > 0 and np.isfinite(v) for v in values["energy"] + values["voxels_per_second"])


def checkpoint_weights(run_dir):
    with h5py.File(os.path.join(run_dir, checkpoint.CHECKPOINT_FILE)) as f:
        return [f["network"][k][()] for k in sorted(f["network"])]


def test_a_two_phase_run_trains_validates_every_metric_and_records_its_family(tmp_path, ref_cache):
    family = fields.Family.of("twophase", num_terms=24, contrast=20.0)
    cfg = tiny_config(tmp_path / "run", ref_cache, data__family="twophase", data__num_terms=24, data__eta=0.1,
                      data__contrast=20.0, data__coarse_nu="harmonic")
    assert cfg.data.field_family() == family
    summary = training.train(cfg)
    means = summary["validation_by_resolution"][16]
    assert set(means) == set(metrics.METRIC_NAMES) and all(np.isfinite(v) for v in means.values())
    assert modeldir.load_config(str(tmp_path / "run")).data.field_family() == family
    val = data.SampleSet.load(str(tmp_path / "run" / modeldir.VAL_SAMPLES_FILE), family)
    assert val.coeffs.shape == (2, 24)
    _, u_ref = solvers.ReferenceStore(str(ref_cache)).get(family, val.coeffs[0], 16)  # cached by the validation
    assert len(os.listdir(ref_cache)) >= 2


def test_interrupted_then_resumed_run_reaches_the_same_weights(tmp_path, ref_cache):
    settings = dict(run__deterministic=True, cycle__epochs_per_visit=(2,))  # V(16, 8, 16): 6 epochs
    training.train(tiny_config(tmp_path / "full", ref_cache, **settings))
    part = tiny_config(tmp_path / "part", ref_cache, **settings)
    first = training.train(part, stop_after_epochs=3)
    assert first["end_epoch"] == 3 and not (tmp_path / "part" / "model.keras").exists()
    interrupted = checkpoint_weights(tmp_path / "part")
    resumed = training.train(part, resume=True)
    assert resumed["start_epoch"] == 3 and resumed["trained_resolutions"] == [8, 16, 16]
    full, final = checkpoint_weights(tmp_path / "full"), checkpoint_weights(tmp_path / "part")
    assert any(not np.array_equal(a, b) for a, b in zip(interrupted, final))  # the resumed epochs trained
    for a, b in zip(full, final):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    a = keras.saving.load_model(str(tmp_path / "full" / "model.keras")).get_weights()
    b = keras.saving.load_model(str(tmp_path / "part" / "model.keras")).get_weights()
    for x, y in zip(a, b):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-6)


def test_several_steps_per_execution_train_the_same_weights(tmp_path, ref_cache):
    # Keras' steps_per_execution runs k steps per call of the compiled function: the same updates, fewer
    # returns to Python; the per-step TensorBoard scalars then come every k-th step.
    settings = dict(run__deterministic=True, cycle__cycle="8:8s", data__num_train=16)  # 8 steps, one epoch
    training.train(tiny_config(tmp_path / "one", ref_cache, **settings))
    cfg = tiny_config(tmp_path / "four", ref_cache, run__steps_per_execution=4, **settings)
    assert cfg.plan().steps_per_epoch == 8
    training.train(cfg)
    for a, b in zip(checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "four")):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    assert sorted(step_values(read_events(tmp_path / "one" / "logs"), "train/energy")) == list(range(1, 9))
    assert sorted(step_values(read_events(tmp_path / "four" / "logs"), "train/energy")) == [4, 8]
    with pytest.raises(ValueError, match=r"steps_per_execution \(3\) must divide the steps per epoch \(8, from "
                                         r"num_train, the batch and the cycle\), e.g. 2"):
        tiny_config(tmp_path / "three", ref_cache, run__steps_per_execution=3, **settings)


def test_checkpoint_from_an_incompatible_config_is_refused(one_epoch_run, tmp_path, ref_cache):
    run = copy_of(one_epoch_run, tmp_path)
    saved = {name: (run / name).read_bytes() for name in ("config.json", "train_samples.h5")}
    other = tiny_config(run, ref_cache, optim__global_batch_size=4)
    with pytest.raises(ValueError, match=r"written with other settings \(--global_batch_size=2 there, 4 now\)"):
        training.train(other, resume=True)
    assert saved == {name: (tmp_path / "run" / name).read_bytes() for name in saved}  # a refusal writes nothing
    with pytest.raises(ValueError, match="no checkpoint"):
        training.train(tiny_config(tmp_path / "empty", ref_cache), resume=True)


def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(one_epoch_run, tmp_path, ref_cache):
    cfg = tiny_config(copy_of(one_epoch_run, tmp_path), ref_cache)
    path = tmp_path / "run" / checkpoint.CHECKPOINT_FILE
    before = path.read_bytes()

    class FailingVariable:
        path = "broken/kernel"

        def numpy(self):
            raise OSError("disk full")

    network = models.build_model("tiny")
    broken = types.SimpleNamespace(variables=list(network.variables) + [FailingVariable()])
    optimizer = keras.optimizers.Adam()
    optimizer.build(network.trainable_variables)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.Checkpointer(str(tmp_path / "run"), cfg.fingerprint()).save(broken, optimizer, {"epoch": 9})
    assert path.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]


def test_non_finite_validation_stops_training_before_the_checkpoint(one_epoch_run, tmp_path, ref_cache, monkeypatch):
    # Predictions that are not finite while the training energy still is (e.g. inference-mode statistics gone bad).
    run = copy_of(one_epoch_run, tmp_path)
    before = (run / checkpoint.CHECKPOINT_FILE).read_bytes()
    monkeypatch.setattr(inference, "predict", lambda model, nu, batch_size=1, progress=False:
                        np.full(np.shape(nu), np.nan, np.float32))
    with pytest.raises(RuntimeError, match=r"validation after epoch 1 is not finite \(eval/res16/energy_gap, "):
        training.train(tiny_config(run, ref_cache), resume=True)
    assert (run / checkpoint.CHECKPOINT_FILE).read_bytes() == before  # the last good checkpoint is kept


def test_flags_given_on_resume_override_the_saved_config_and_no_others(one_epoch_run, tmp_path, ref_cache):
    # Flags that only size, place or report a run may change on resume; the others are refused (see
    # test_checkpoint_from_an_incompatible_config_is_refused).
    run = copy_of(one_epoch_run, tmp_path)
    result = subprocess.run([sys.executable, "-m", "poisson_tf.train", f"--model_dir={run}", "--resume",
                             "--checkpoint_seconds=0", "--validate_every=2"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = tiny_config(run, ref_cache)  # flags not given (--levels, --preset, --verbose ...) keep the saved values
    loaded = modeldir.load_config(str(run))
    assert dataclasses.replace(loaded, run=dataclasses.replace(loaded.run, threads=saved.run.threads)) == \
        dataclasses.replace(saved, run=dataclasses.replace(saved.run, checkpoint_seconds=0.0, validate_every=2))
    rates = step_values(read_events(run / "logs"), "train/learning_rate")
    assert sorted(rates) == list(range(1, 13))  # 4 steps before the resume, 8 after, at the saved rate
    assert [rates[s] for s in sorted(rates)] == pytest.approx([1e-3] * 12)


class WeightsAfterEachStep(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.history = [self.model.network.get_weights()]

    def on_train_batch_end(self, batch, logs=None):
        self.history.append(self.model.network.get_weights())


@pytest.fixture(scope="module")
def warmup_run(tmp_path_factory, ref_cache):
    """Two steps at 8^3 with a 4-step warmup of the learning rate 1e-3: the weights after each, the TensorBoard log."""
    run = tmp_path_factory.mktemp("warmup") / "run"
    weights = WeightsAfterEachStep()
    training.train(tiny_config(run, ref_cache, cycle__cycle="8:2", data__num_train=2, optim__warmup_steps=4),
                  extra_callbacks=[weights])
    return weights.history, read_events(run / "logs")


def test_warmup_ramps_the_learning_rate_linearly_then_keeps_it():
    schedule = loop.WarmupSchedule(1e-3, warmup_steps=4)
    assert [float(schedule(tf.constant(step))) for step in range(6)] == pytest.approx(  # the rate of update step + 1
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert float(loop.WarmupSchedule(1e-3)(tf.constant(0))) == pytest.approx(1e-3)


def test_visit_factors_and_cosine_decays():
    # two visits: steps 0-3 at factor 1, steps 4-11 at factor 0.5; 12 steps in all
    segments, total = ((0, 1.0), (4, 0.5)), 12
    rate = lambda decay, step: float(loop.WarmupSchedule(1e-3, 0, segments, total, decay)(tf.constant(step)))
    assert [rate("constant", s) for s in (0, 3, 4, 11)] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])
    cosine = lambda done: 0.5 * (1 + np.cos(np.pi * done))
    assert [rate("cosine", s) for s in (0, 3, 6, 11)] == pytest.approx(
        [1e-3, 1e-3 * cosine(3 / 12), 5e-4 * cosine(6 / 12), 5e-4 * cosine(11 / 12)], rel=1e-5)  # float32
    # a warm restart at the level switch: the cosine runs over each visit's own steps
    assert [rate("cosine_per_visit", s) for s in (0, 2, 4, 8, 11)] == pytest.approx(
        [1e-3, 1e-3 * cosine(2 / 4), 5e-4, 5e-4 * cosine(4 / 8), 5e-4 * cosine(7 / 8)], rel=1e-5)
    steps = tf.constant([2, 8])  # vectorized, as TensorBoardLogger calls it
    assert np.asarray(loop.WarmupSchedule(1e-3, 0, segments, total, "cosine_per_visit")(steps)) == pytest.approx(
        [rate("cosine_per_visit", 2), rate("cosine_per_visit", 8)])


def max_change(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_training_applies_the_warmup(warmup_run):
    # Adam's first update moves every weight by lr * g / (|g| + eps) ~ lr: the largest move is the first rate.
    weights, _ = warmup_run
    assert max_change(weights[1], weights[0]) == pytest.approx(1e-3 / 4, rel=1e-2)


def test_tensorboard_logs_the_learning_rate_each_step_used(warmup_run):
    _, events = warmup_run
    rates = step_values(events, "train/learning_rate")
    assert [rates[1], rates[2]] == pytest.approx([2.5e-4, 5e-4])


CLI = [sys.executable, "-m", "poisson_tf.train", "--preset=tiny", "--num_train=4", "--num_val=1", "--verbose=0",
       "--epochs_per_visit=1"]


@pytest.mark.parametrize("args, message", [
    (["--cycle=zigzag"], "unknown cycle 'zigzag'"),
    (["--levels=32,16"], "strictly increasing"),
    (["--levels=16,30"], "resolution 30 cannot pass a depth-2 U-Net"),
    (["--global_batch_size=0"], "global_batch_size must be >= 1"),
    (["--global_batch_size=8"], r"num_train \(4\) must hold at least one global batch"),
    (["--levels=16,x"], "--levels must be a comma-separated list of integers"),
    (["--normalization=weight"], "normalization must be one of"),
    (["--preset=huge"], "unknown model preset 'huge'"),
    (["--resume"], "holds no config.json"),
    (["--cycle=8:1,16:1", "--levels=8,16"], r"--levels, --epochs_per_visit cannot be given with the cycle spec"),
])
def test_bad_flags_fail_before_training(tmp_path, args, message):
    result = subprocess.run(CLI + [f"--model_dir={tmp_path / 'run'}"] + args, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoint.h5").exists()


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_is_refused_on_cpu_without_native_support(tmp_path, ref_cache, precision, monkeypatch):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the CPU guard does not apply on a GPU machine")
    monkeypatch.delenv("POISSON_TF_ALLOW_CPU_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: False)
    with pytest.raises(ValueError, match=rf"--precision={precision} .*use --precision=float32 (here|on CPU)"):
        training.train(tiny_config(tmp_path / "run", ref_cache, optim__precision=precision))
    assert not (tmp_path / "run" / "checkpoint.h5").exists()


def test_bfloat16_is_accepted_on_a_cpu_with_native_bfloat16(tmp_path, ref_cache, monkeypatch):
    monkeypatch.delenv("POISSON_TF_ALLOW_CPU_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: True)
    cfg = tiny_config(tmp_path / "run", ref_cache, optim__precision="mixed_bfloat16")  # Keras' policy name too
    assert cfg.optim.precision == "bfloat16" and cfg.fingerprint()["optim.precision"] == "bfloat16"
    loop.check_runtime(cfg)
    with pytest.raises(ValueError, match="--precision=float16 is meant for GPUs"):
        loop.check_runtime(tiny_config(tmp_path / "run", ref_cache, optim__precision="float16"))


def test_diverging_training_stops_with_a_clear_error(tmp_path, ref_cache, monkeypatch):
    monkeypatch.setattr(step, "energy_loss", lambda network, nu, training: network(nu)[:, 0, 0, 0, 0] * np.nan)
    with pytest.raises(RuntimeError, match="training diverged at batch 0: the energy is nan"):
        training.train(tiny_config(tmp_path / "run", ref_cache))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_with_float32_output_and_energy(tmp_path, ref_cache, precision, monkeypatch):
    monkeypatch.setenv("POISSON_TF_ALLOW_CPU_MIXED_PRECISION", "1")  # the tiny preset avoids the oneDNN defect
    reference_run = training.train(tiny_config(tmp_path / "f32", ref_cache))
    run = training.train(tiny_config(tmp_path / precision, ref_cache, optim__precision=precision))
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored
    model = keras.saving.load_model(str(tmp_path / precision / "model.keras"))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    assert convs and all(layer.variable_dtype == "float32" for layer in convs)
    # Every conv in the 16-bit precision but the first, on the 1-channel input (float32: see models._conv).
    assert [layer.compute_dtype for layer in convs] == ["float32"] + [precision] * (len(convs) - 1)
    u = model(tf.ones([1, 8, 8, 8, 1]))
    assert u.dtype == tf.float32
    losses, reference_losses = run["history"]["loss"], reference_run["history"]["loss"]
    assert np.all(np.isfinite(losses))
    if precision == "bfloat16":  # same steps, only rounding differs
        np.testing.assert_allclose(losses, reference_losses, rtol=0.02)
    else:  # dynamic loss scaling skips the first steps while it finds its scale
        with h5py.File(tmp_path / precision / "checkpoint.h5") as f:
            paths = [f["optimizer"][k].attrs["path"] for k in f["optimizer"]]
        assert any("loss_scale" in p or "dynamic_scale" in p for p in paths), paths


def test_single_level_baseline_trains_only_the_finest_level(tmp_path, ref_cache):
    cfg = tiny_config(tmp_path / "run", ref_cache, cycle__cycle="single", cycle__levels=(8, 16),
                      cycle__num_cycles=2)
    summary = training.train(cfg, stop_after_epochs=1)
    assert summary["trained_resolutions"] == [16]
    resumed = training.train(cfg, resume=True)
    assert resumed["trained_resolutions"] == [16] and summary["history"]["level"] == [1]


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tmp_path, ref_cache):
    run = tmp_path / "run"
    training.train(tiny_config(run, ref_cache))
    from fault_helpers import digest_tree

    before = digest_tree(run)
    result = subprocess.run([sys.executable, "-m", "poisson_tf.train", f"--model_dir={run}", "--resume",
                             "--verbose=0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nothing to train" in result.stdout and "poisson-tf-evaluate" in result.stdout
    assert digest_tree(run) == before  # no file changed, the lock file included


def test_a_signal_within_an_epoch_checkpoints_its_steps_and_the_resume_is_bit_for_bit(tmp_path, ref_cache):
    import signal

    class SignalAt(keras.callbacks.Callback):  # a real SIGTERM to this process after step 2 of epoch 4
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 4 and batch == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    settings = dict(cycle__epochs_per_visit=(3,), run__deterministic=True, run__checkpoint_seconds=0)
    training.train(tiny_config(tmp_path / "full", ref_cache, **settings))
    cfg = tiny_config(tmp_path / "run", ref_cache, **settings)
    summary = training.train(cfg, extra_callbacks=[SignalAt()])
    # the handler ran after step 2 had ended; the agreement after step 3 acted on it: 3 of the epoch's 4 steps
    assert summary["interrupted"] == {"reason": "SIGTERM", "epoch": 4, "steps_in_epoch": 3}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the listener gave the signal back
    assert not (tmp_path / "run" / modeldir.MODEL_FILE).exists()  # an interrupted run is not a finished one
    with h5py.File(tmp_path / "run" / modeldir.CHECKPOINT_FILE, "r") as f:
        state = json.loads(f.attrs["state"])
    assert state["epoch"] == 3 and state["partial"] == {"epoch": 4, "steps": 3} and state["step"] == 19
    resumed = training.train(cfg, resume=True)
    assert resumed["start_epoch"] == 4 and "interrupted" not in resumed
    full, run = checkpoint.stored_values(tmp_path / "full"), checkpoint.stored_values(tmp_path / "run")
    assert sorted(full) == sorted(run) and [k for k in full if not np.array_equal(full[k], run[k])] == []
