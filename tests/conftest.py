"""Shared test set-up: quiet TensorFlow, and poisson_tf imported before it (oneDNN and core binding are set then)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import poisson_tf  # noqa: E402,F401  (before any test module imports TensorFlow)
