"""Beyond the data, what keeps training independent of the number of workers: each worker its own dropout masks
(rank 0 the single-process ones), decisions read by the chief and broadcast, batch normalization refused."""
import dataclasses
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import distributed
from poisson_tf.training import callbacks, loop, step

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from train_helpers import tiny_config  # noqa: E402

size, rank = distributed.size(), distributed.rank()


def dropout_model(seed: int):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((256,))
    return keras.Model(inputs, keras.layers.Dropout(0.5)(inputs))


def mask(model) -> np.ndarray:
    return model(tf.ones([1, 256]), training=True).numpy()[0] != 0


def test_each_worker_draws_its_own_dropout_masks_and_rank_0_the_single_process_ones():
    model = dropout_model(seed=100 + rank)  # different seeds: the broadcast must make them one first
    wrapper = step.DataParallelTrainer(model, lambda network, batch, training: tf.zeros([1]))
    wrapper.compile(optimizer=keras.optimizers.SGD())
    callback = callbacks.BroadcastCallback()
    callback.set_model(wrapper)
    callback.on_train_begin()
    masks = distributed.allgather_object(mask(model))
    np.testing.assert_array_equal(masks[0], mask(dropout_model(seed=100)))  # one process, same seed
    assert all(not np.array_equal(masks[0], other) for other in masks[1:])


def test_the_chief_decides_once_and_every_worker_gets_its_answer_or_its_error():
    calls = []

    def read():
        calls.append(rank)
        return {"read by": rank}

    assert distributed.chief_decides(read) == {"read by": 0}
    assert distributed.allgather_object(len(calls)) == [1] + [0] * (size - 1)
    assert distributed.chief_decides(read, share=False) == ({"read by": 0} if rank == 0 else None)

    def refuse():
        raise ValueError(f"refused by rank {rank}")

    with pytest.raises(ValueError, match="^refused by rank 0$"):
        distributed.chief_decides(refuse)


def test_batch_normalization_is_refused_on_several_workers():
    cfg = tiny_config("unused", "unused", optim__global_batch_size=2 * size, data__num_train=4 * size)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, normalization="batch"))
    if size == 1:
        loop.check_runtime(cfg)
    else:
        with pytest.raises(ValueError, match=f"--normalization=batch is refused on {size} workers"):
            loop.check_runtime(cfg)
