"""The multigrid trainer under Horovod (and at -np 1): identical workers, worker-count-independent loss."""
import os
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import distributed, fem, models
from poisson_tf.training import data
from poisson_tf import training

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
    summary = training.train(cfg, extra_callbacks=[first])
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


class Capture(keras.callbacks.Callback):
    """This worker's network weights and optimizer variables when fit begins (after the broadcast) and ends."""

    def on_train_begin(self, logs=None):
        self.begin = [np.array(w) for w in self.model.network.get_weights()]

    def on_train_end(self, logs=None):
        self.end = [np.array(w) for w in self.model.network.get_weights()]
        self.optimizer = [np.array(v) for v in self.model.optimizer.variables]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def max_change(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_workers_start_from_rank_0s_weights_and_take_one_step_of_the_learning_rate(monkeypatch):
    # Every worker initializes differently; after fit, all must hold rank 0's initial weights moved by one Adam
    # step. Adam's first step moves every weight by lr * g / (|g| + eps) ~ lr, so the largest move is the
    # learning rate (the global batch is fixed, so the rate does not depend on the number of workers).
    build = models.build_model
    initial = {}

    def build_with_rank_seed(cfg):
        keras.utils.set_random_seed(100 + rank)
        network = build(cfg)
        initial["weights"] = [np.array(w) for w in network.get_weights()]
        return network

    monkeypatch.setattr(models, "build_model", build_with_rank_seed)
    root = shared_tmp_dir()
    base_lr = 1e-3
    cfg = tiny_config(os.path.join(root, "run"), os.path.join(root, "refs"), cycle__cycle="8:1",
                      data__num_train=2 * size, optim__global_batch_size=2 * size,
                      optim__learning_rate=base_lr)  # one step
    capture = Capture()
    training.train(cfg, extra_callbacks=[capture])
    inits = distributed.allgather_object(initial["weights"])
    assert all(not same(inits[0], other) for other in inits[1:])  # the workers really started apart
    assert all(same(end, capture.end) for end in distributed.allgather_object(capture.end))
    assert same(capture.begin, inits[0])  # rank 0's weights before the first step, on every worker
    assert max_change(capture.end, inits[0]) == pytest.approx(base_lr, rel=1e-2)
    for other in inits[1:]:
        assert max_change(capture.end, other) > 10 * base_lr


def test_resumed_run_equals_an_uninterrupted_one_on_every_worker():
    # The checkpoint is restored on rank 0 only; the broadcast must bring its weights, Adam moments and
    # iteration counter to the other workers, or their next steps differ.
    root = shared_tmp_dir()
    settings = dict(run__deterministic=True, run__validate_every=99, data__num_train=2 * size,
                    optim__global_batch_size=2 * size)  # V(16, 8, 16), one step per epoch
    full, resumed = Capture(), Capture()
    training.train(tiny_config(os.path.join(root, "full"), os.path.join(root, "refs"), **settings),
                  extra_callbacks=[full])
    part = tiny_config(os.path.join(root, "part"), os.path.join(root, "refs"), **settings)
    assert training.train(part, stop_after_epochs=1)["end_epoch"] == 1
    summary = training.train(part, resume=True, extra_callbacks=[resumed])
    assert summary["start_epoch"] == 1 and summary["trained_resolutions"] == [8, 16]
    assert not same(resumed.begin, resumed.end)  # the resumed epochs trained
    assert same(resumed.end, full.end) and same(resumed.optimizer, full.optimizer)  # bit for bit
    assert int(resumed.optimizer[0]) == 3  # the iteration counter: 3 steps, 1 before and 2 after the resume
    assert all(same(end, full.end) for end in distributed.allgather_object(resumed.end))
