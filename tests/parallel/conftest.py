"""Parallel tests run under `horovodrun -np 2` (and pass at -np 1): every worker runs the same tests in order."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from poisson_tf import distributed  # noqa: E402

distributed.init(intra_op_threads=1, inter_op_threads=1)
