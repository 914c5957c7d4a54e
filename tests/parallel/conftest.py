"""Parallel tests run under `horovodrun -np 2` (and pass at -np 1): every worker runs the same tests in order.

They are collected only where they mean something: under a launcher with more than one worker. A single-process
`pytest tests` skips this directory, and its TensorFlow threads are left alone (one thread per worker is for
ranks sharing a host).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from poisson_tf import distributed, hardware

if hardware.launched():
    distributed.init(intra_op_threads=1, inter_op_threads=1)
if distributed.size() == 1:
    collect_ignore_glob = ["test_*.py"]
