"""Training a solver: the loop (loop.py) around one data-parallel step (step.py), with its callbacks, checkpoints,
model_dir rules (rundir.py) and tf.data pipelines (data.py); the cycles it runs are poisson_tf.cycles.

`train` loads on first use (PEP 562): poisson-tf-train decides from rundir and checkpoint, which need no
framework, before TensorFlow loads.
"""
__all__ = ["train"]


def __getattr__(name: str):
    if name == "train":
        from poisson_tf.training.loop import train

        return train
    raise AttributeError(f"module 'poisson_tf.training' has no attribute {name!r}")
