"""The reference-solution cache: solved once per (coefficients, eta, N), then read back."""
import os

import numpy as np
import pytest

from poisson_tf import fields, solvers
from poisson_tf.solvers import store as store_module

KL = fields.Family()  # the kl family, eta 0.5


def test_reference_store_solves_once_and_reuses(tmp_path, monkeypatch):
    store = solvers.ReferenceStore(str(tmp_path))
    coeffs = fields.sample_coeffs(2, seed=7)
    nu, u = store.get_many(KL, coeffs, 9)
    assert nu.shape == u.shape == (2, 9, 9, 9)
    assert len(os.listdir(tmp_path)) == 2
    monkeypatch.setattr(store_module, "solve", lambda *a, **k: pytest.fail("solved again instead of reusing"))
    nu2, u2 = solvers.ReferenceStore(str(tmp_path)).get_many(KL, coeffs, 9)
    np.testing.assert_array_equal(u2, u)
    assert store.path(KL, coeffs[0], 9) != store.path(KL, coeffs[0], 17) != store.path(fields.Family(eta=0.3), coeffs[0], 9)


def test_ensure_solves_a_missing_reference_and_leaves_a_cached_one_unread(tmp_path, monkeypatch):
    store = solvers.ReferenceStore(str(tmp_path))
    coeffs = fields.sample_coeffs(1, seed=3)[0]
    store.ensure(KL, coeffs, 9)
    assert os.path.exists(store.path(KL, coeffs, 9))
    monkeypatch.setattr(store_module, "solve", lambda *a, **k: pytest.fail("solved again"))
    monkeypatch.setattr(store_module.hdf5, "read_fields", lambda *a, **k: pytest.fail("read a cached reference"))
    store.ensure(KL, coeffs, 9)
