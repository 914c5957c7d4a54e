"""The reference-solution cache: solved once per (coefficients, eta, N), then read back."""
import os

import numpy as np
import pytest

from poisson_tf import fields, solvers
from poisson_tf.solvers import store as store_module


def test_reference_store_solves_once_and_reuses(tmp_path, monkeypatch):
    store = solvers.ReferenceStore(str(tmp_path))
    coeffs = fields.sample_coeffs(2, seed=7)
    nu, u = store.get_many(coeffs, 0.5, 9)
    assert nu.shape == u.shape == (2, 9, 9, 9)
    assert len(os.listdir(tmp_path)) == 2
    monkeypatch.setattr(store_module, "solve", lambda *a, **k: pytest.fail("solved again instead of reusing"))
    nu2, u2 = solvers.ReferenceStore(str(tmp_path)).get_many(coeffs, 0.5, 9)
    np.testing.assert_array_equal(u2, u)
    assert store.path(coeffs[0], 0.5, 9) != store.path(coeffs[0], 0.5, 17) != store.path(coeffs[0], 0.3, 9)


def test_ensure_solves_a_missing_reference_and_leaves_a_cached_one_unread(tmp_path, monkeypatch):
    store = solvers.ReferenceStore(str(tmp_path))
    coeffs = fields.sample_coeffs(1, seed=3)[0]
    store.ensure(coeffs, 0.5, 9)
    assert os.path.exists(store.path(coeffs, 0.5, 9))
    monkeypatch.setattr(store_module, "solve", lambda *a, **k: pytest.fail("solved again"))
    monkeypatch.setattr(store_module.hdf5, "read_fields", lambda *a, **k: pytest.fail("read a cached reference"))
    store.ensure(coeffs, 0.5, 9)
