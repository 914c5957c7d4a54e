"""Sample sets and per-resolution pipelines."""
import h5py
import numpy as np
import pytest

from poisson_tf import fields
from poisson_tf.training import data


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
    loaded = data.SampleSet.load(path, fields.Family(), num_terms=4)
    np.testing.assert_array_equal(loaded.coeffs, train.coeffs)
    assert (loaded.eta, loaded.method, loaded.seed, loaded.role) == (0.5, "sobol", 1, "train")


def test_a_sample_set_records_its_family_and_an_older_one_is_kl(tmp_path):
    family = fields.Family.of("twophase", num_terms=32, contrast=50.0)
    train, val = data.make_sample_sets(6, 2, family, seed=3)
    assert train.coeffs.shape == (6, 32) and train.family == family and abs(train.coeffs.mean()) < 0.3
    path = str(tmp_path / "twophase.h5")
    train.save(path)
    assert data.SampleSet.load(path, family).family == family
    with pytest.raises(ValueError, match="drawn for the family twophase .* this run uses grf"):
        data.SampleSet.load(path, fields.Family.of("grf", num_terms=32))
    kl, _ = data.make_sample_sets(4, 1)
    kl.save(path)
    with h5py.File(path, "a") as f:  # as written before families were recorded
        del f.attrs["family"]
    assert data.SampleSet.load(path, fields.Family()).family == fields.Family()


def test_corrupt_or_mismatched_sample_file_gets_a_clear_error(tmp_path):
    train, _ = data.make_sample_sets(8, 2)
    path = str(tmp_path / "s.h5")
    train.save(path)
    with pytest.raises(ValueError, match=r"drawn for the family kl \(eta 0.5, 4 terms\), but this run uses kl "
                                         r"\(eta 0.3, 4 terms\)"):
        data.SampleSet.load(path, fields.Family(eta=0.3))
    with pytest.raises(ValueError, match="has 4 terms, but this run uses 6"):
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


def global_sequence(coeffs, global_batch, size, steps, resolution=8, **kwargs):
    """The global batches (sample ids per step, ranks in order) that `size` workers' pipelines produce."""
    per_rank = []
    for rank in range(size):
        ds, _ = data.build_dataset(coeffs, resolution, global_batch, seed=7, rank=rank, size=size, **kwargs)
        ids = first_coeff_of_batches(ds, steps, resolution, coeffs)
        per_rank.append([ids[i:i + global_batch // size] for i in range(0, len(ids), global_batch // size)])
    return [sum((per_rank[r][step] for r in range(size)), []) for step in range(steps)]


def test_global_batches_are_the_same_for_any_number_of_workers():
    coeffs = fields.sample_coeffs(10, seed=2)  # 10 samples, global batch 4: 2 steps per epoch
    sequences = [global_sequence(coeffs, 4, size, steps=6) for size in (1, 2, 4)]
    assert sequences[0] == sequences[1] == sequences[2]
    batches = sequences[0]
    for epoch in range(3):
        ids = batches[2 * epoch] + batches[2 * epoch + 1]
        assert len(set(ids)) == 8  # one epoch: disjoint global batches
    assert set(sum(batches, [])) == set(range(10))  # the two left over change from epoch to epoch


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
    resumed, _ = data.build_dataset(coeffs, 8, 2, seed=5, start_step=steps, cache_budget_bytes=budget)
    assert first_coeff_of_batches(resumed, steps, 8, coeffs) == epoch1
    mid_epoch, _ = data.build_dataset(coeffs, 8, 2, seed=5, start_step=steps + 1, cache_budget_bytes=budget)
    assert first_coeff_of_batches(mid_epoch, steps - 1, 8, coeffs) == epoch1[2:]
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
    with pytest.raises(ValueError, match="must be divisible by the 2 workers"):
        data.build_dataset(coeffs, 8, 3, size=2)


def test_cache_budget_counts_every_sample_of_the_level():
    assert data.cache_bytes(10, 8) == 10 * 8 ** 3 * 4  # any worker may draw any sample


@pytest.mark.parametrize("budget", [0, data.DEFAULT_CACHE_BUDGET_BYTES])
def test_restricted_coarse_fields_are_block_averages_of_the_fine_field(budget):
    coeffs = fields.sample_coeffs(2, seed=9)
    ds, _ = data.build_dataset(coeffs, 8, 2, shuffle=False, cache_budget_bytes=budget, source_resolution=16)
    fine = fields.kl_diffusivity(coeffs, 16)
    expected = fine.reshape(2, 8, 2, 8, 2, 8, 2).mean(axis=(2, 4, 6))
    np.testing.assert_allclose(next(iter(ds)).numpy()[..., 0], expected, rtol=1e-5)
    sampled, _ = data.build_dataset(coeffs, 8, 2, shuffle=False, cache_budget_bytes=budget)
    assert not np.allclose(next(iter(sampled)).numpy(), next(iter(ds)).numpy(), rtol=1e-3)
    # harmonic means of a two-phase medium: a block with any low-nu node is far below its arithmetic mean
    family = fields.Family.of("twophase", num_terms=40)
    coeffs = family.sample(2, seed=1)
    ds, _ = data.build_dataset(coeffs, 8, 2, family, shuffle=False, cache_budget_bytes=budget, source_resolution=16,
                               coarse_nu="harmonic")
    blocks = family.diffusivity(coeffs, 16).reshape(2, 8, 2, 8, 2, 8, 2)
    np.testing.assert_allclose(next(iter(ds)).numpy()[..., 0], 1.0 / (1.0 / blocks).mean(axis=(2, 4, 6)), rtol=1e-5)


def test_multigrid_pipeline_draws_each_level_with_its_own_batch():
    from poisson_tf import cycles

    levels = cycles.level_settings([8, 16], 2, 4)  # constant voxels: 16 fields of 8^3 per step, 32 samples
    assert [(lv.global_batch_size, lv.num_samples, lv.steps_per_epoch) for lv in levels] == [(16, 32, 2), (2, 4, 2)]
    plan = cycles.compile_plan(cycles.parse_spec("16:1,8:2,16:1"), levels)
    coeffs = fields.sample_coeffs(32, seed=11)
    for size in (1, 2):
        ds, steps = data.multigrid_dataset(plan, coeffs, seed=3, size=size)
        shapes = [tuple(batch.shape[:2]) for batch in ds.take(plan.num_steps)]
        assert steps == 2 and shapes == [(2 // size, 16)] * 2 + [(16 // size, 8)] * 4 + [(2 // size, 16)] * 2
    resumed, _ = data.multigrid_dataset(plan, coeffs, seed=3, start_epoch=2)  # the second epoch at 8^3
    full, _ = data.multigrid_dataset(plan, coeffs, seed=3)
    expected = [b.numpy() for b in full.take(plan.num_steps)][2 * steps:]
    for got, want in zip(resumed.take(plan.num_steps - 2 * steps), expected):
        np.testing.assert_array_equal(got.numpy(), want)
