"""Smoke test of the benchmark scripts at tiny sizes: they run, write JSON lines, and render into the docs' results
pages and the README's headline table.

No speed or memory is asserted here (those targets live in the benchmark outputs); what is asserted is that a
record says what it measured: every repeat's time beside the median, the repeats and warm-up counts, and the
CPU (model and ISA class) it ran on.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

BENCH = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


def run(script, *args, results):
    env = dict(os.environ, POISSON_TF_BENCH_RESULTS=str(results), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, os.path.join(BENCH, script), *args], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def records(results, name):
    with open(results / f"{name}.jsonl") as f:
        return [json.loads(line) for line in f]


def bench_module(name):
    """A benchmark script imported as a module (its functions, without running it)."""
    import importlib

    sys.path.insert(0, BENCH)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(BENCH)


def median(times):
    return sorted(times)[len(times) // 2]  # the benchmarks' median (_common.median)


def assert_timed(record, field, repeats, warmup):
    """record[field] is the median of record[field + '_times'], `repeats` positive seconds after `warmup` calls."""
    times = record[f"{field}_times"]
    assert len(times) == repeats and all(isinstance(t, float) and t > 0 for t in times), (field, times)
    assert record[field] == median(times), field
    assert record["repeats"] == repeats and record["warmup"] == warmup, field


def assert_machine(record):
    machine = record["machine"]
    assert machine["cpus"] >= 1 and isinstance(machine["cpu_model"], str) and machine["cpu_model"]
    assert machine["isa_class"] in ("avx512", "avx2", "other") and isinstance(machine["isa_flags"], list)


def test_benchmarks_write_json_and_render(tmp_path):
    run("bench_reference.py", "--resolutions=8", results=tmp_path)
    run("bench_energy.py", "--resolutions=8", "--batch=1", "--repeats=3", results=tmp_path)
    run("bench_throughput.py", "--presets=tiny", "--resolutions=8", "--precisions=float32", "--repeats=2",
        results=tmp_path)
    run("bench_pipeline.py", "--resolutions=8", "--preset=tiny", "--steps=2", "--warmup=2", results=tmp_path)
    run("bench_pipeline.py", "--resolutions=8", "--preset=tiny", "--steps=2", "--warmup=2", "--intra_op_threads=1",
        "--inter_op_threads=2", results=tmp_path)
    run("bench_models.py", "--presets=tiny", "--resolutions=8", "--repeats=2", results=tmp_path)

    reference = records(tmp_path, "reference")
    assert {r["method"] for r in reference} == {"amg", "gmg"}
    for record in reference:  # a single run, deliberately, after a warm-up solve
        assert record["resolution"] == 8 and record["relative_residual"] <= 1e-10
        assert record["seconds_times"] == [record["seconds"]] and record["repeats"] == 1
        assert record["warmup"] == 1 and record["warmup_resolution"] == 8
    for record in records(tmp_path, "energy"):
        for name in ("energy_forward", "energy_forward_backward", "conv3d_2x2x2_1to24", "conv3d_3x3x3_16to16"):
            assert_timed(record, f"{name}_seconds", repeats=3, warmup=1)
    for record in records(tmp_path, "throughput"):
        assert record["flops_per_voxel"] > 0
        assert_timed(record, "step_seconds", repeats=2, warmup=1)
        assert len(record["matmul_seconds_times"]) == 2 and record["matmul_seconds"] == median(
            record["matmul_seconds_times"])
    for record in records(tmp_path, "pipeline"):  # steady state: the warm-up batches and steps are not timed
        assert record["warmup"] == 2 and len(record["training_step_seconds_times"]) == 2
        assert len(record["pipeline_batch_seconds_times"]) == 8
        assert abs(record["training_samples_per_s"] * sum(record["training_step_seconds_times"]) - 2 * 2) < 1e-6
        assert abs(record["pipeline_samples_per_s"] * sum(record["pipeline_batch_seconds_times"]) - 8 * 2) < 1e-6
    for record in records(tmp_path, "models"):
        assert_timed(record, "forward_seconds", repeats=2, warmup=1)
        assert_timed(record, "step_seconds", repeats=2, warmup=1)
    for name in ("reference", "energy", "throughput", "pipeline", "models"):
        for record in records(tmp_path, name):
            assert_machine(record)

    # One results page per record family, with its table and figures; the README's headline comes from the
    # repository's own evaluation records of the shipped solver.
    shutil.copy(os.path.join(BENCH, "results", "evaluation.jsonl"), tmp_path / "evaluation.jsonl")
    figure = tmp_path / "reference_solves.png"
    shutil.copy(os.path.join(BENCH, "results", "cycles_128.png"), figure)
    readme, docs = tmp_path / "README.rst", tmp_path / "docs"
    readme.write_text("Title\n\n.. headline-start\nold\n.. headline-end\n\nAfter\n")
    run("render_readme.py", f"--readme={readme}", f"--docs={docs}", results=tmp_path)
    render = bench_module("render_readme")
    pages = {page.stem: page.read_text() for page in (docs / "results").iterdir()}
    assert set(pages) == {"reference", "energy", "throughput", "pipeline", "models", "evaluation"}
    assert "Reference AMG-CG solve" in pages["reference"] and "Training throughput" in pages["throughput"]
    assert "Input pipeline next to training" in pages["pipeline"] and "Step time and peak memory" in pages["models"]
    pipeline = pages["pipeline"]
    assert "  1 x 2  " in pipeline and "  default  " in pipeline  # a row per thread setting, neither overwritten
    for name in ("reference", "energy", "throughput", "pipeline", "models"):  # the class of this machine, per row
        assert f"\n{render.cpu(records(tmp_path, name)[0])}  " in pages[name], name
    (directive,) = [line for line in pages["reference"].splitlines() if line.startswith(".. figure:: ")]
    assert os.path.samefile(docs / "results" / directive.split(":: ", 1)[1], figure)  # the figure, found from the page

    text = readme.read_text()
    assert "old" not in text and text.endswith(".. headline-end\n\nAfter\n")
    headline = text[text.index(".. headline-start"):text.index(".. headline-end")].splitlines()
    shipped = {r["resolution"]: r for r in records(tmp_path, "evaluation")
               if r["model"] == render.HEADLINE_MODEL}
    assert shipped, "the repository's evaluation records include the shipped solver's"
    for n, record in shipped.items():  # the newest record of each resolution: one row, with its rel_l2 and worst
        (row,) = [line for line in headline if line.split()[1:2] == [str(n)]]
        cells = " ".join(row.split())
        assert f" {record['num_samples']} {record['rel_l2']:.2%} {record['rel_l2_worst']:.2%} " in cells, row


def test_timing_keeps_every_repeat_after_the_warmup():
    _common = bench_module("_common")
    calls = []
    t = _common.timing(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(t["times"]) == 4 and t["repeats"] == 4 and t["warmup"] == 2
    assert t["median"] == median(t["times"]) and all(a >= 0 for a in t["times"])
    assert isinstance(_common.timed(lambda: None, repeats=3), float)  # the median alone, as before


def test_error_analysis_plane_errors_and_deciles():
    ea = bench_module("error_analysis")
    rng = np.random.default_rng(0)
    u_ref = rng.random((8, 8, 8)) + 0.5
    u = u_ref + 0.01 * rng.standard_normal((8, 8, 8))
    planes = ea.plane_errors(u, u_ref)
    assert planes.shape == (8,)
    # the planes' root mean square is the field's rel_l2
    assert np.isclose(np.sqrt(np.mean(planes ** 2)), np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref))
    values = rng.random((8, 8, 8))
    assert np.allclose(ea._decile_profile(values, np.full_like(values, 3.0)), 1.0)  # even error: 1 everywhere
    rising = ea._decile_profile(values, values)
    assert all(a < b for a, b in zip(rising, rising[1:])) and rising[0] < 0.2 < 1.8 < rising[-1]


def test_error_analysis_on_the_shipped_solver(tmp_path):
    out = run("error_analysis.py", "--model_dir", "pretrained", "--name", "shipped", "--resolution", "32",
              "--num_samples", "3", "--reference_cache", str(tmp_path / "refs"), results=tmp_path)
    (record,) = records(tmp_path, "error_analysis")
    assert record["resolution"] == 32 and record["num_samples"] == 3 and len(record["per_sample"]) == 3
    assert_machine(record)
    rel = np.array([r["rel_l2"] for r in record["per_sample"]])
    planes = np.array(record["plane_error"]["model"])
    assert len(planes) == 32 and planes[0] == 0 and planes[-1] == 0  # Dirichlet planes are exact
    assert np.isclose(np.sqrt(np.mean(planes ** 2)), np.sqrt(np.mean(rel ** 2)))
    assert np.isclose(record["summary"]["rel_l2"], rel.mean())
    assert all(r["rel_l2"] < r["baseline_rel_l2"] for r in record["per_sample"])
    assert (tmp_path / "error_shipped_32.png").stat().st_size > 10_000 and "wrote" in out


def test_interpolation_floor_is_zero_at_the_source_and_small_above(tmp_path):
    out = run("interpolation_floor.py", "--model_dir", "pretrained", "--sources", "9", "--targets", "9,17",
              "--num_samples", "2", "--reference_cache", str(tmp_path / "refs"), results=tmp_path)
    same, finer = records(tmp_path, "interpolation_floor")
    assert_machine(same)
    assert (same["target"], finer["target"], finer["num_samples"]) == (9, 17, 2) and same["family"]["kind"] == "kl"
    # interpolating to the same nodes is the identity: every error is zero
    assert same["rel_l2"] == 0 and same["energy_gap_worst"] == 0 and same["flux_field_error_worst"] == 0
    # 9 -> 17 nodes halves h: the discretizations differ, the interpolant of the coarse solution is not the fine
    # one, and being no minimizer there its energy is higher (a positive 2J error).
    assert 0 < finer["rel_l2"] <= finer["rel_l2_worst"] < 0.05
    assert all(f["energy_gap"] > 0 for f in finer["per_sample"])
    assert "9 -> 17: rel_l2" in out
    # Drawn fields of the other families, with every metric of the floor.
    run("interpolation_floor.py", "--families", "grf,twophase", "--num_terms", "16", "--sources", "9",
        "--targets", "17", "--num_samples", "1", "--reference_cache", str(tmp_path / "refs"), results=tmp_path)
    grf, twophase = records(tmp_path, "interpolation_floor")[2:]
    assert (grf["family"]["kind"], twophase["family"]["kind"]) == ("grf", "twophase")
    for record in (grf, twophase):
        assert record["source"] == 9 and record["target"] == 17
        for key in ("rel_l2", "energy_gap", "energy_norm_error", "perturbation_error", "flux_field_error"):
            assert 0 < record[key] < 1, (record["family"], key)


def test_bench_cycles_validates_within_an_epoch(tmp_path):
    """Tiny levels: every record has a curve whose last point is the end of training, with every voxel counted;
    validation at step ends gives more points than the epochs of the half-V (whose epochs are 8 steps here)."""
    run("bench_cycles.py", "--levels", "16,32,64", "--schedules", "single,half_v_same_batch", "--seeds", "0",
        "--steps", "48", "--global_batch", "2", "--num_train", "16", "--num_val", "2",
        "--validate_every_seconds", "0", "--reference_cache", str(tmp_path / "refs"),
        "--plot", str(tmp_path / "cycles.png"), "--tag", "base", results=tmp_path)
    single, half_v = records(tmp_path, "cycles")
    assert (single["schedule"], half_v["schedule"]) == ("single", "half_v_same_batch")
    for r in (single, half_v):
        assert_machine(r)
        voxels = sum(steps * batch * n ** 3 for n, steps, batch, _ in r["visits"])
        assert r["curve"][-1]["voxels"] == voxels and r["final_rel_l2"] == r["curve"][-1]["rel_l2"]
        assert len(r["curve"]) == r["steps"]  # --validate_every_seconds 0: after every step
        times = [p["train_seconds"] for p in r["curve"]]
        assert all(a < b for a, b in zip(times, times[1:]))
    assert half_v["summary"]["target"] == single["final_rel_l2"]
    assert (tmp_path / "cycles.png").stat().st_size > 10_000

    # a later run compares with the stored single-level record instead of training it again
    same = ["--levels", "16,32,64", "--seeds", "0", "--global_batch", "2", "--num_train", "16", "--num_val", "2",
            "--validate_every_seconds", "0", "--reference_cache", str(tmp_path / "refs"),
            "--plot", str(tmp_path / "later.png"), "--baseline_tag", "base"]
    run("bench_cycles.py", "--schedules", "v_same_batch", "--steps", "48", *same, results=tmp_path)
    later = records(tmp_path, "cycles")[2:]
    assert [r["schedule"] for r in later] == ["v_same_batch"]
    assert later[0]["summary"]["target"] == single["final_rel_l2"]
    # ... but only a run with the same settings: another --steps is refused by name, before any training
    refused = subprocess.run([sys.executable, os.path.join(BENCH, "bench_cycles.py"), "--schedules", "v_same_batch",
                              "--steps", "64", *same], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, POISSON_TF_BENCH_RESULTS=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2"))
    assert refused.returncode != 0 and "epochs_per_visit=[48] (here [64])" in refused.stderr, refused.stderr
    assert len(records(tmp_path, "cycles")) == 3


def test_bench_cycles_time_to_stay_below_a_target():
    bench_cycles = bench_module("bench_cycles")
    curve = [{"train_seconds": t, "rel_l2": e} for t, e in ((10, 0.12), (20, 0.09), (30, 0.11), (40, 0.08),
                                                             (50, 0.07))]
    assert bench_cycles.first_time_at(curve, 0.1) == 20  # the first crossing
    assert bench_cycles.time_staying_at(curve, 0.1) == 40  # below from then on
    assert bench_cycles.time_staying_at(curve, 0.075) == 50
    assert bench_cycles.time_staying_at(curve, 0.05) is None and bench_cycles.first_time_at(curve, 0.05) is None
    assert bench_cycles.time_staying_at(curve, 0.2) == 10


def test_the_scaling_model_fits_its_calibration_and_projects_consistently():
    model_module = bench_module("bench_scaling_model")
    points = [{"bytes": s, "seconds": 1e-4 + s / 2e9} for s in model_module.SIZES]
    overhead, beta = model_module.fit(points)
    assert abs(overhead - 1e-4) < 1e-6 and abs(beta / 2e9 - 1) < 1e-6
    # 1-thread compute linear in the batch, 1.6x faster on 2 threads; 1 MB of gradients
    compute = {(n, b, 1): 1e-8 * n ** 3 * (0.5 + b) for n in (16, 32) for b in (1, 2)}
    compute.update({(n, 2, 2): compute[(n, 2, 1)] / 1.6 for n in (16, 32)})
    model = model_module.Model(compute, overhead, beta, 10 ** 6)
    assert model.step(32, 2, 1, 2) == compute[(32, 2, 2)]  # one rank: the compute alone
    assert abs(model.efficiency(32) - 0.8) < 1e-12
    assert abs(model.compute_seconds(64, 1, 1) - 8 * compute[(32, 1, 1)]) < 1e-12  # by voxels beyond 32
    assert abs(model.step(32, 1, 2, 1) - compute[(32, 1, 1)] - (overhead + 2e-6 + 1e6 / 2e9)) < 1e-12
    rows = model_module.project(model, "bridges2_rm", [16, 32, 64], [1, 2, 4, 8, 16], global_batch=64)
    for mode in ("strong", "weak"):
        for n in (16, 32, 64):
            these = [r for r in rows if r["mode"] == mode and r["resolution"] == n]
            assert these[0]["nodes"] == 1 and abs(these[0]["efficiency"] - 1) < 1e-12
            assert all(a["efficiency"] >= b["efficiency"] for a, b in zip(these, these[1:]))  # never superlinear
            assert all(r["projected"] for r in these)
    assert max(r["nodes"] for r in rows if r["mode"] == "strong") == 8  # 64 samples: one per rank at most
    gpu = model_module.project(model, "azure_nda100v4", [32], [1, 2], global_batch=64)
    assert all("efficiency" not in r and r["allreduce_seconds"] > 0 for r in gpu)
