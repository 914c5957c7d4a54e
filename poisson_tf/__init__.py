"""poisson_tf: data-free neural solvers for -div(nu grad u) = 0 on the unit cube, trained with Horovod."""
from poisson_tf import hardware as _hardware

# Before anything imports TensorFlow, which sizes its kernels and thread pools then (see hardware.py):
_hardware.request_onednn()  # oneDNN on every x86 CPU
_hardware.bind_local_rank()  # a Horovod rank computes on its own cores

__version__ = "0.1.0"
