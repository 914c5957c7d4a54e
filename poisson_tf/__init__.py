"""poisson_tf: data-free neural solvers for -div(nu grad u) = 0 on the unit cube, trained with Horovod."""
from poisson_tf import hardware as _hardware

# Before anything imports TensorFlow, which sizes its kernels and thread pools then (see hardware.py):
_hardware.request_onednn()  # oneDNN on every x86 CPU
_hardware.bind_local_rank()  # a Horovod rank computes on its own cores

__version__ = "0.1.0"

#: Package-level names loaded on first use (PEP 562), so that `import poisson_tf` stays light.
_LAZY = {"load_pretrained": "poisson_tf.pretrained", "pretrained_dir": "poisson_tf.pretrained"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poisson_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
