"""Shared test set-up: quiet TensorFlow; poisson_tf imported before any test module imports TensorFlow, so the
suite runs with the package's oneDNN choice (see poisson_tf/hardware.py), as users do."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# scripts/shipping.py, the maintainers' release tool, is not part of the installed package.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import poisson_tf  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a fault test that runs whole trainings (CI runs it; -m 'not slow' skips)")
