"""Memory before compute: the estimates (checked against measured peaks by benchmarks/bench_memory.py), the
memory available, and the command lines refusing a request that cannot fit before they compute anything."""
import dataclasses
import math
import os
import subprocess
import sys
import time

import keras
import pytest
import tensorflow as tf

from poisson_tf import memory, models
from train_helpers import config_flags, tiny_config

BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("name", ["tiny", "small", "reference"])
@pytest.mark.parametrize("change", [{}, {"downsampling": "pool"}, {"upsampling": "upsample"},
                                    {"normalization": "group", "dropout": 0.2, "output_prior": "none"}])
def test_the_activation_count_is_the_built_networks(name, change):
    cfg = dataclasses.replace(models.preset(name), **change)
    model = models.build_model(cfg)
    n = 4 * cfg.multiple
    outputs = keras.Model(model.inputs, [layer.output for layer in model.layers])(tf.ones([1, n, n, n, 1]))
    assert memory._unet_floats_per_voxel(cfg) == pytest.approx(sum(math.prod(o.shape) for o in outputs) / n ** 3)
    assert memory.network_bytes(cfg, n, 3) == pytest.approx(3 * 4 * memory._unet_floats_per_voxel(cfg) * n ** 3,
                                                             abs=4)
    assert memory.network_bytes(cfg, n, 1, training=True) == int(memory.TRAINING_FACTOR * memory.network_bytes(
        cfg, n, 1))


def test_a_working_resolution_runs_the_unet_at_w_whatever_n():
    cfg = dataclasses.replace(models.preset("small"), depth=5, working_resolution=32)
    assert memory.network_bytes(cfg, 512, 1) - memory.network_bytes(cfg, 256, 1) == 4 * 6 * (512 ** 3 - 256 ** 3)


def test_the_check_names_the_resolution_the_estimate_and_the_limit():
    parts = {"nu": 3 * memory.GIB, "network": 5 * memory.GIB}
    with pytest.raises(ValueError, match=r"poisson-tf-x at N = 512 needs about 8\.5 GiB \(nu 3\.0, network 5\.0, "
                                         r"framework 0\.5\), but 2\.0 GiB are available \(--memory_limit\)"):
        memory.check("poisson-tf-x", 512, parts, limit_gib=2.0)
    assert memory.check("poisson-tf-x", 512, parts, limit_gib=2.0, force=True) == memory.FRAMEWORK_BYTES + 8 * \
        memory.GIB
    assert memory.check("poisson-tf-x", 512, parts, limit_gib=9.0) > 0
    room, source = memory.available()
    assert room is None or (room > 0 and source in ("MemAvailable", "the memory cgroup's limit"))
    with pytest.raises(ValueError, match="--memory_limit must be a positive number of GiB"):
        memory.available(-1.0)


def run(command, *args, timeout=120):
    start = time.perf_counter()
    result = subprocess.run([os.path.join(BIN, command), *args], capture_output=True, text=True, timeout=timeout)
    return result, time.perf_counter() - start


@pytest.mark.parametrize("command, args", [
    ("poisson-tf-predict", ["--model_dir=pretrained", "--coeffs=1,0,0,0", "--resolution=1024"]),
    ("poisson-tf-solve", ["--coeffs=1,0,0,0", "--resolution=1024"]),
])
def test_a_1024_cube_is_refused_at_once_with_the_estimate(tmp_path, command, args):
    result, seconds = run(command, *args, f"--output={tmp_path / 'out.h5'}", "--memory_limit=20")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{command}: error: {command} at N = 1024 needs about" in result.stderr
    assert "but 20.0 GiB are available (--memory_limit)" in result.stderr
    assert seconds < 10 and not os.listdir(tmp_path)  # refused before TensorFlow and before any field


def test_prediction_lowers_its_batch_where_that_is_enough(tmp_path):
    # Two 96^3 fields in one batch of the shipped solver need more than 0.8 GiB, one at a time less.
    from poisson_tf import modeldir, pretrained

    cfg = modeldir.load_config(pretrained.pretrained_dir()).model
    one, two = (memory.FRAMEWORK_BYTES + sum(memory.prediction_parts(cfg, 96, 2, b, 8).values()) for b in (1, 2))
    limit = (one + two) / 2 / memory.GIB
    result, _ = run("poisson-tf-predict", "--model_dir=pretrained", "--coeffs=1,0,0,0", "--coeffs=0,1,0,0",
                    "--resolution=96", "--batch_size=2", f"--memory_limit={limit}", f"--output={tmp_path / 'u.h5'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--batch_size=2 would need more memory than is available; predicting 1 field(s) at a time" in result.stderr
    assert os.path.exists(tmp_path / "u.h5")


def test_training_and_evaluation_are_refused_before_anything_is_written(tmp_path):
    ref_cache = tmp_path / "refs"
    run_dir = tmp_path / "run"
    result, _ = run("poisson-tf-train", *config_flags(tiny_config(run_dir, ref_cache)), "--memory_limit=0.1",
                    timeout=300)
    assert result.returncode == 1 and "poisson-tf-train at N = 16 needs about" in result.stderr
    assert "Traceback" not in result.stderr and not os.path.exists(run_dir / "config.json")
    result, _ = run("poisson-tf-evaluate", "--model_dir=pretrained", "--resolutions=512", "--memory_limit=4",
                    f"--report={tmp_path / 'eval' / 'report.json'}")
    assert result.returncode == 1 and "poisson-tf-evaluate at N = 512 needs about" in result.stderr
    assert not os.path.exists(tmp_path / "eval")
