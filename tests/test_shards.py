"""--gradient_shards: the exact mean of shard gradients (distributed.exact_mean) does not depend on how the shards
are grouped or ordered, so neither do the weights on any number of workers (tests/test_multihost.py trains them)."""
import numpy as np
import pytest
import tensorflow as tf

from poisson_tf import config, distributed
from train_helpers import tiny_config


def shards(seed: int, count: int) -> list:
    """count shards of gradients of three variables (one without a gradient, one all zero), magnitudes 1e-9..1e3."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        wide = rng.standard_normal((5, 7)) * 10.0 ** rng.uniform(-9, 3, (5, 7))
        out.append([tf.constant(wide, tf.float32), None, tf.zeros([3], tf.float32)])
    return out


def test_the_exact_mean_does_not_depend_on_the_order_of_the_shards_and_matches_the_float_mean():
    grads = shards(0, 4)
    first = distributed.exact_mean(grads, 4)
    for order in ([3, 1, 0, 2], [1, 0, 3, 2], [2, 3, 1, 0]):
        again = distributed.exact_mean([grads[k] for k in order], 4)
        assert np.array_equal(first[0].numpy(), again[0].numpy())  # bit for bit
    float_mean = np.mean([g[0].numpy().astype(np.float64) for g in grads], axis=0)
    np.testing.assert_allclose(first[0].numpy(), float_mean, rtol=1e-6, atol=1e-3 * 2.0 ** -33)
    assert first[1] is None and not np.any(first[2].numpy())


def test_a_non_finite_gradient_stays_non_finite():
    grads = shards(1, 2)
    grads[1][0] = tf.tensor_scatter_nd_update(grads[1][0], [[0, 0]], [np.inf])
    assert np.all(np.isnan(distributed.exact_mean(grads, 2)[0].numpy()))


@pytest.mark.parametrize("overrides, words", [
    ({"optim__gradient_shards": 3}, "--gradient_shards=3 must divide every level's global batch"),
    ({"optim__gradient_shards": -1}, "gradient_shards must be >= 0"),
])
def test_shards_that_cannot_split_the_batch_are_refused_by_name(tmp_path, overrides, words):
    with pytest.raises(ValueError, match=words):
        tiny_config(tmp_path / "run", tmp_path / "refs", **overrides)


def test_shards_with_dropout_are_refused(tmp_path):
    cfg = tiny_config(tmp_path / "run", tmp_path / "refs", optim__gradient_shards=2)
    with pytest.raises(ValueError, match="dropout masks and batch statistics"):
        config.TrainConfig.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "dropout": 0.1}})
