"""poisson_tf: data-free neural solvers for -div(nu grad u) = 0 on the unit cube, trained with Horovod."""
__version__ = "0.1.0"
