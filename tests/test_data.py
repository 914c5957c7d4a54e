"""Sample sets and per-resolution pipelines."""
import h5py
import numpy as np
import pytest

from poisson_tf import data, fields


def first_coeff_of_batches(ds, steps, resolution, coeffs):
    """Identifies each sample of the first `steps` batches by matching nu against the known fields."""
    table = fields.kl_diffusivity(coeffs, resolution).reshape(len(coeffs), -1)
    seen = []
    for batch in ds.take(steps):
        for nu in batch.numpy().reshape(batch.shape[0], -1):
            seen.append(int(np.argmin(np.abs(table - nu).max(axis=1))))
    return seen


def test_sample_sets_are_disjoint_and_round_trip(tmp_path):
    train, val = data.make_sample_sets(24, 8, seed=1)
    assert train.coeffs.shape == (24, 4) and val.coeffs.shape == (8, 4)
    assert not (set(map(tuple, train.coeffs)) & set(map(tuple, val.coeffs)))
    path = str(tmp_path / "train.h5")
    train.save(path)
    loaded = data.SampleSet.load(path, eta=0.5, num_terms=4)
    np.testing.assert_array_equal(loaded.coeffs, train.coeffs)
    assert (loaded.eta, loaded.method, loaded.seed, loaded.role) == (0.5, "sobol", 1, "train")


def test_corrupt_or_mismatched_sample_file_gets_a_clear_error(tmp_path):
    train, _ = data.make_sample_sets(8, 2)
    path = str(tmp_path / "s.h5")
    train.save(path)
    with pytest.raises(ValueError, match=r"drawn for eta=0.5, but this run uses eta=0.3"):
        data.SampleSet.load(path, eta=0.3)
    with pytest.raises(ValueError, match="has 4 KL terms, but this run uses 6"):
        data.SampleSet.load(path, num_terms=6)
    with h5py.File(path, "a") as f:
        f.attrs["num_terms"] = 5
    with pytest.raises(ValueError, match="is corrupt"):
        data.SampleSet.load(path)
    junk = str(tmp_path / "junk.h5")
    with open(junk, "wb") as f:
        f.write(b"\x89HDF\r\n garbage")
    with pytest.raises(ValueError, match="cannot read sample set"):
        data.SampleSet.load(junk)


@pytest.mark.parametrize("size", [2, 3])
def test_shards_are_disjoint_and_cover_whole_batches(size):
    coeffs = fields.sample_coeffs(20, seed=2)
    global_batch = 2 * size
    shards = [data.shard(coeffs, global_batch, rank, size) for rank in range(size)]
    rows = [tuple(r) for s in shards for r in s]
    assert len(rows) == len(set(rows)) == (20 // global_batch) * global_batch
    assert len({len(s) for s in shards}) == 1  # every worker runs the same number of steps


@pytest.mark.parametrize("budget", [0, data.DEFAULT_CACHE_BUDGET_BYTES])  # generated on the fly / cached
def test_epochs_are_reshuffled_and_reproducible(budget):
    coeffs = fields.sample_coeffs(8, seed=3)
    ds, steps = data.build_dataset(coeffs, 8, 2, seed=5, cache_budget_bytes=budget)
    assert steps == 4 and ds.element_spec.shape == (2, 8, 8, 8, 1)
    order = first_coeff_of_batches(ds, 2 * steps, 8, coeffs)
    epoch0, epoch1 = order[:8], order[8:]
    assert sorted(epoch0) == sorted(epoch1) == list(range(8))  # each epoch is one pass over the set
    assert epoch0 != epoch1
    again, _ = data.build_dataset(coeffs, 8, 2, seed=5, cache_budget_bytes=budget)
    assert first_coeff_of_batches(again, 2 * steps, 8, coeffs) == order
    resumed, _ = data.build_dataset(coeffs, 8, 2, seed=5, start_epoch=1, cache_budget_bytes=budget)
    assert first_coeff_of_batches(resumed, steps, 8, coeffs) == epoch1
    other, _ = data.build_dataset(coeffs, 8, 2, seed=6, cache_budget_bytes=budget)
    assert first_coeff_of_batches(other, steps, 8, coeffs) != epoch0


def test_worker_pipelines_split_the_global_batch():
    coeffs = fields.sample_coeffs(12, seed=4)
    seen = []
    for rank in range(2):
        ds, steps = data.build_dataset(coeffs, 8, 4, rank=rank, size=2)
        assert steps == 3 and ds.element_spec.shape[0] == 2  # 12 samples, global batch 4
        seen += first_coeff_of_batches(ds, steps, 8, coeffs)
    assert sorted(seen) == list(range(12))
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        data.build_dataset(coeffs, 8, 16)


def test_cache_budget_counts_whole_global_batches_of_the_shard():
    coeffs = fields.sample_coeffs(10, seed=8)  # 10 samples, global batch 4: 8 usable, 4 per worker
    assert data.cache_bytes(coeffs, 8, 4, rank=1, size=2) == 4 * 8 ** 3 * 4
