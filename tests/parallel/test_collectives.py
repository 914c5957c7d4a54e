"""Real collective results of the Horovod adapter; expected values are written in terms of size()."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import distributed
from poisson_tf.training import callbacks
from poisson_tf.training.step import DataParallelTrainer

size, rank = distributed.size(), distributed.rank()


def test_allreduce_gradients_is_the_mean_over_workers():
    grads = [tf.fill([3, 2], float(rank + 1)), None, tf.constant(10.0 * rank)]
    out = distributed.allreduce_gradients(grads)
    np.testing.assert_allclose(out[0].numpy(), np.full((3, 2), (size + 1) / 2))
    assert out[1] is None
    assert out[2].numpy() == pytest.approx(10.0 * (size - 1) / 2)


def test_allreduce_inside_tf_function():
    fn = tf.function(lambda x: distributed.allreduce_gradients([x])[0])
    assert fn(tf.constant(float(rank))).numpy() == pytest.approx((size - 1) / 2)


def test_average_metrics_and_objects():
    logs = distributed.average_metrics({"loss": float(rank), "resolution": 32, "name": "x"})
    assert logs["loss"] == pytest.approx((size - 1) / 2) and logs["resolution"] == 32 and logs["name"] == "x"
    assert distributed.broadcast_object({"rank": rank}) == {"rank": 0}
    assert distributed.allgather_object(rank) == list(range(size))
    assert distributed.is_chief() == (rank == 0)


def small_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="glorot_uniform")(
        keras.layers.Dense(8, activation="tanh")(inputs)))


def identical_on_all_workers(values) -> bool:
    """True when every worker holds exactly rank 0's values."""
    ok = all(np.array_equal(v, r) for v, r in zip(values, distributed.broadcast_object(values)))
    return all(distributed.allgather_object(ok))


def test_broadcast_makes_different_initial_weights_identical():
    model = small_model(seed=100 + rank)  # a different initialization on every worker
    before = [w.copy() for w in model.get_weights()]
    assert identical_on_all_workers(before) == (size == 1)
    distributed.broadcast_variables(model.variables)
    assert identical_on_all_workers(model.get_weights())


def regression_data(worker, n=20):  # 5 steps of 4
    rng = np.random.default_rng(worker)  # different data on every worker
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32) + worker)[:, None]


def mse(network, batch, training):
    x, y = batch
    return tf.reduce_mean(tf.square(network(x, training=training) - y), axis=-1)


def test_fit_with_averaged_gradients_keeps_workers_identical_and_matches_one_big_batch():
    steps, per_worker = 5, 4
    trainer = DataParallelTrainer(small_model(seed=200 + rank), mse)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    x, y = regression_data(rank)
    history = trainer.fit(x, y, batch_size=per_worker, epochs=1, steps_per_epoch=steps, shuffle=False,
                          verbose=0, callbacks=[callbacks.BroadcastCallback()])
    weights = trainer.network.get_weights()
    assert identical_on_all_workers(weights)
    assert history.history["loss"][0] > 0

    # The same SGD run by one process on the union of every worker's batches (rank 0's initial weights).
    reference = small_model(seed=200)
    data = [regression_data(w) for w in range(size)]
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    for step in range(steps):
        sl = slice(step * per_worker, (step + 1) * per_worker)
        xb = np.concatenate([d[0][sl] for d in data])
        yb = np.concatenate([d[1][sl] for d in data])
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(mse(reference, (xb, yb), True))
        optimizer.apply(tape.gradient(loss, reference.trainable_variables), reference.trainable_variables)
    for got, want in zip(weights, reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_split_batch():
    assert distributed.split_batch(4 * size) == 4
    with pytest.raises(ValueError, match="multiple of the number of workers"):
        distributed.split_batch(size + 1 if size > 1 else 0)
