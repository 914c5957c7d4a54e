"""The multigrid trainer under Horovod (and at -np 1): identical workers, worker-count-independent loss."""
import os
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import data, distributed, fem, models, trainer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from train_helpers import tiny_config  # noqa: E402

size, rank = distributed.size(), distributed.rank()


def shared_tmp_dir() -> str:
    """One directory for all workers (made by the chief, its name broadcast)."""
    return distributed.broadcast_object(tempfile.mkdtemp(prefix="poisson_tf_parallel_") if rank == 0 else None)


class FirstBatchLoss(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.value = None

    def on_train_batch_end(self, batch, logs=None):
        if self.value is None:
            self.value = float(logs["batch_loss"])


def test_end_to_end_run_keeps_workers_identical_and_loss_independent_of_worker_count():
    root = shared_tmp_dir()
    global_batch = 2 * size
    cfg = tiny_config(os.path.join(root, "run"), os.path.join(root, "refs"), optim__global_batch_size=global_batch,
                      data__num_train=4 * size, run__validate_every=1)
    first = FirstBatchLoss()
    summary = trainer.train(cfg, extra_callbacks=[first])
    assert summary["workers"] == size
    assert summary["trained_resolutions"] == cfg.plan().epoch_resolutions()

    # The validation metrics (gathered over workers) are the same on every worker.
    validation = distributed.allgather_object(summary["validation"])
    assert all(v == validation[0] for v in validation)

    # The first step's logged loss is the mean energy of the whole global batch under the initial weights,
    # exactly what one process would compute for that batch.
    keras.utils.set_random_seed(cfg.run.seed)
    initial = models.build_model(cfg.model)
    plan = cfg.plan()
    train_set, _ = data.make_sample_sets(cfg.num_train_samples, cfg.data.num_val, seed=cfg.data.seed)
    batches = []
    for worker in range(size):
        ds, _ = data.multigrid_dataset(plan, train_set.coeffs, seed=cfg.run.seed, rank=worker, size=size)
        batches.append(next(iter(ds)))
    global_nu = tf.concat(batches, axis=0)
    assert global_nu.shape[0] == global_batch
    expected = float(tf.reduce_mean(fem.energy(initial(global_nu, training=True), global_nu)))
    assert first.value == pytest.approx(expected, rel=1e-5)


def test_workers_hold_identical_weights_after_training():
    root = shared_tmp_dir()
    cfg = tiny_config(os.path.join(root, "run"), os.path.join(root, "refs"), optim__global_batch_size=2 * size,
                      data__num_train=4 * size, cycle__cycle="half_v")
    captured = {}

    class Capture(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            captured["weights"] = [w.copy() for w in self.model.network.get_weights()]

    trainer.train(cfg, extra_callbacks=[Capture()])
    weights = captured["weights"]
    chief = distributed.broadcast_object(weights)
    assert all(np.array_equal(a, b) for a, b in zip(weights, chief))
