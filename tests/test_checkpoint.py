"""Checkpoints: the last two kept, a checksum, non-finite values refused, the fall-back to the previous one, and
what a checkpoint must share with the run that resumes it."""
import os

import keras
import numpy as np
import pytest

from fault_helpers import flip_byte
from poisson_tf import modeldir, models
from poisson_tf.training import checkpoint
from train_helpers import tiny_config


def build():
    keras.utils.set_random_seed(1)
    network = models.build_model("tiny")
    optimizer = keras.optimizers.Adam()
    optimizer.build(network.trainable_variables)
    return network, optimizer


def two_checkpoints(model_dir):
    """Epochs 0 and 1 (the network's first variable + 1 in between); returns the weights at epoch 0."""
    network, optimizer = build()
    checkpointer = checkpoint.Checkpointer(str(model_dir), tiny_config(model_dir, "refs").fingerprint())
    checkpointer.save(network, optimizer, {"epoch": 0})
    first = network.get_weights()
    network.variables[0].assign(network.variables[0] + 1.0)
    checkpointer.save(network, optimizer, {"epoch": 1})
    return checkpointer, first


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path, capsys):
    checkpointer, first = two_checkpoints(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [checkpoint.CHECKPOINT_FILE, modeldir.PREVIOUS_CHECKPOINT_FILE]
    assert checkpointer.load()[1] == {"epoch": 1, "restored_from": checkpoint.CHECKPOINT_FILE}
    flip_byte(tmp_path / checkpoint.CHECKPOINT_FILE, "network/00000")
    network, optimizer = build()
    network.variables[0].assign(network.variables[0] * 0)
    state = checkpointer.restore(network, optimizer)
    assert state["epoch"] == 0 and state["restored_from"] == modeldir.PREVIOUS_CHECKPOINT_FILE
    assert "checkpoint.h5 does not match its checksum" in state["fallback_reason"]
    assert "resumed from checkpoint.previous.h5 (epoch 0) instead" in capsys.readouterr().err
    for got, want in zip(network.get_weights(), first):
        np.testing.assert_array_equal(got, want)
    flip_byte(tmp_path / modeldir.PREVIOUS_CHECKPOINT_FILE, "network/00001")
    with pytest.raises(ValueError, match="checkpoint.previous.h5 does not match its checksum.*no intact checkpoint"):
        checkpointer.load()


def test_a_crash_between_the_two_renames_leaves_the_previous_checkpoint(tmp_path):
    checkpointer, _ = two_checkpoints(tmp_path)
    os.remove(tmp_path / checkpoint.CHECKPOINT_FILE)
    assert checkpointer.load()[1] == {"epoch": 0, "restored_from": modeldir.PREVIOUS_CHECKPOINT_FILE}


def test_non_finite_weights_are_refused(tmp_path):
    network, optimizer = build()
    network.variables[0].assign(network.variables[0] * np.nan)
    checkpointer = checkpoint.Checkpointer(str(tmp_path), {})
    checkpointer.save(network, optimizer, {"epoch": 0})
    with pytest.raises(ValueError, match=r"holds non-finite values in network variable .*no intact checkpoint"):
        checkpointer.load()


def test_the_fingerprint_keeps_what_changes_the_updates_and_ignores_what_sizes_or_places_a_run():
    base = tiny_config("run", "refs").fingerprint()
    for key, value in (("data__cache_budget_mb", 1), ("run__threads", 2), ("run__verbose", 2),
                       ("run__checkpoint_seconds", 5.0), ("run__validate_every", 3), ("run__model_dir", "moved"),
                       ("run__reference_cache", "elsewhere")):
        assert tiny_config("run", "refs", **{key: value}).fingerprint() == base, key
    for key, value in (("run__seed", 1), ("data__seed", 1), ("data__sampling", "uniform"), ("data__num_train", 16),
                       ("data__eta", 0.4), ("run__deterministic", True), ("optim__learning_rate", 0.01),
                       ("optim__warmup_steps", 3), ("optim__global_batch_size", 4)):
        assert tiny_config("run", "refs", **{key: value}).fingerprint() != base, key


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_its_default(tmp_path):
    # Checkpoints written before the diffusivity families recorded no data.family: those runs were kl.
    network, optimizer = build()
    current = tiny_config(tmp_path, "refs").fingerprint()
    older = {k: v for k, v in current.items() if k not in ("data.family", "data.sigma", "data.contrast",
                                                             "data.threshold")}
    checkpoint.Checkpointer(str(tmp_path), older).save(network, optimizer, {"epoch": 3})
    assert checkpoint.Checkpointer(str(tmp_path), current).load()[1]["epoch"] == 3
    grf = tiny_config(tmp_path, "refs", data__family="grf", data__num_terms=8).fingerprint()
    with pytest.raises(ValueError, match="--family='kl' there, 'grf' now"):
        checkpoint.Checkpointer(str(tmp_path), grf).load()
