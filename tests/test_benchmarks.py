"""Smoke test of the benchmark scripts at tiny sizes: they run, write JSON lines, and render into a README.

No speed or memory is asserted here (those targets live in the benchmark outputs).
"""
import json
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


def run(script, *args, results):
    env = dict(os.environ, POISSON_TF_BENCH_RESULTS=str(results), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, os.path.join(BENCH, script), *args], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_benchmarks_write_json_and_render(tmp_path):
    run("bench_reference.py", "--resolutions=8", results=tmp_path)
    run("bench_energy.py", "--resolutions=8", "--batch=1", results=tmp_path)
    run("bench_throughput.py", "--presets=tiny", "--resolutions=8", "--precisions=float32", results=tmp_path)
    with open(tmp_path / "reference.jsonl") as f:
        record = json.loads(f.readline())
    assert record["resolution"] == 8 and record["relative_residual"] <= 1e-10 and record["machine"]["cpus"] >= 1
    with open(tmp_path / "throughput.jsonl") as f:
        assert json.loads(f.readline())["flops_per_voxel"] > 0
    readme = tmp_path / "README.rst"
    readme.write_text("Title\n\n.. results-start\nold\n.. results-end\n\nAfter\n")
    run("render_readme.py", f"--readme={readme}", results=tmp_path)
    text = readme.read_text()
    assert "old" not in text and "Reference AMG-CG solve" in text and "Training throughput" in text
    assert text.endswith(".. results-end\n\nAfter\n")
