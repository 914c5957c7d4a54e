"""One training step, in one place: the data-free loss (the FEM energy of the prediction, docs/design.rst s.4), the
data-parallel step that averages its gradients over workers (Horovod collectives of distributed.py), and the
resolution it reports; make_train_step hands the same step to the benchmarks."""
from __future__ import annotations

import keras
import tensorflow as tf

from poisson_tf import distributed, fem


class DataParallelTrainer(keras.Model):
    """Trains `network` on `loss_fn` with gradients and logged loss averaged over all workers.

    Keras 3 replacement for hvd.DistributedOptimizer: train_step computes the per-worker mean loss, averages
    the gradients with one grouped allreduce, applies them, and logs the worker-averaged loss, so every
    worker makes the same update and History/TensorBoard see global values. Use with BroadcastCallback.

    Args:
      network: the Keras model being trained (its weights are the ones updated and saved).
      loss_fn: loss_fn(network, batch, training) -> per-sample losses [B] (or a scalar).
    """

    def __init__(self, network: keras.Model, loss_fn, gradient_shards: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.loss_fn = loss_fn
        self.gradient_shards = int(gradient_shards)  # optim.gradient_shards: 0, or S exact shards of the batch
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def compile(self, optimizer, **kwargs):
        # XLA cannot compile Horovod's ops; Keras' "auto" would turn XLA on for GPUs.
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)

    def _mean_loss(self, batch, training):
        return tf.reduce_mean(tf.cast(self.loss_fn(self.network, batch, training), tf.float32))

    def _gradients(self, batch, variables):
        with tf.GradientTape() as tape:
            loss = self._mean_loss(batch, True)
            scaled = self.optimizer.scale_loss(loss)  # float16: LossScaleOptimizer scales; identity otherwise
        return loss, tape.gradient(scaled, variables)

    def train_step(self, batch):
        variables = self.network.trainable_variables
        if self.gradient_shards:  # this worker's shards one by one, their gradients summed exactly over all
            local = self.gradient_shards // distributed.size()  # config and check_runtime: a whole number
            shards = [self._gradients(shard, variables) for shard in tf.split(batch, local)]
            loss = tf.add_n([shard_loss for shard_loss, _ in shards]) / float(local)
            grads = distributed.exact_mean([shard_grads for _, shard_grads in shards], self.gradient_shards)
        else:
            loss, grads = self._gradients(batch, variables)
            # Horovod: averaged (still scaled) gradients; the optimizer's apply unscales and skips non-finite
            # steps, the same decision on every worker since all hold the same averaged gradients.
            grads = distributed.allreduce_gradients(grads)
        self.optimizer.apply(grads, variables)
        loss = distributed.allreduce_mean(loss)  # Horovod: the global-batch loss
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result(), "batch_loss": loss}

    def test_step(self, batch):
        self.loss_tracker.update_state(distributed.allreduce_mean(self._mean_loss(batch, False)))
        return {"loss": self.loss_tracker.result()}


def energy_loss(network, nu, training):
    """Per-sample FEM energy J of the network's prediction: the data-free loss (docs/design.rst s.4)."""
    return fem.energy(network(nu, training=training), nu)


class EnergyTrainer(DataParallelTrainer):
    """DataParallelTrainer on the FEM energy that also reports the resolution of every batch."""

    def __init__(self, network, gradient_shards: int = 0, **kwargs):
        super().__init__(network, energy_loss, gradient_shards, **kwargs)

    def train_step(self, nu):
        logs = super().train_step(nu)
        logs["resolution"] = tf.shape(nu)[1]
        return logs


def make_train_step(network, optimizer):
    """The step fit runs (EnergyTrainer.train_step: the energy, gradients averaged over workers, the update)
    as a tf.function of one nu batch [B, N, N, N, 1] -> logs, for timing steps outside fit (benchmarks/)."""
    energy_trainer = EnergyTrainer(network)
    energy_trainer.compile(optimizer=optimizer)
    return tf.function(energy_trainer.train_step)
