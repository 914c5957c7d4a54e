"""Shared test set-up: quiet TensorFlow, deterministic seeds."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a fault test that runs whole trainings (CI runs it; -m 'not slow' skips)")
