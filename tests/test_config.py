"""The run configuration: framework-free, flags derived from the dataclasses, one override rule, cycle specs."""
import dataclasses
import subprocess
import sys

import pytest

from poisson_tf import config, fields, modeldir


def test_importing_config_loads_neither_tensorflow_nor_keras():
    code = ("import sys, poisson_tf.config; "
            "sys.exit(','.join(m for m in ('tensorflow', 'keras') if m in sys.modules) or 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_field_is_one_flag_under_its_existing_name():
    options = config.options()
    paths = [o.path for o in options]
    every = ["preset"] + [f"{section}.{f.name}" for section, kind in
                          (("model", config.ModelConfig), ("data", config.DataConfig), ("cycle", config.CycleConfig),
                           ("optim", config.OptimConfig), ("run", config.RunConfig)) for f in dataclasses.fields(kind)]
    assert paths == every
    flags = {o.flag: o for o in options}
    assert len(flags) == len(options)  # no two fields share a flag
    assert flags["data_seed"].path == "data.seed" and flags["seed"].path == "run.seed"
    for name in ("levels", "cycle", "epochs_per_visit", "num_cycles", "preset", "depth", "base_filters", "kernel_size",
                 "normalization", "dropout", "input_features", "global_batch_size", "learning_rate", "model_dir"):
        assert name in flags, name
    assert flags["depth"].default is None and flags["levels"].default == (16, 32, 64)


def test_given_values_override_the_preset_or_the_saved_config():
    fresh = config.override({"preset": "tiny", "model.dropout": 0.25, "cycle.levels": ["16", "32"],
                             "cycle.epochs_per_visit": ["2"]})
    assert fresh.model == dataclasses.replace(config.preset("tiny"), dropout=0.25)
    assert fresh.cycle.levels == (16, 32) and fresh.data == config.DataConfig()
    assert config.override({}).model == config.preset("small")
    resumed = config.override({"optim.learning_rate": 1e-4}, saved=fresh)
    assert resumed.model == fresh.model and resumed.optim.learning_rate == 1e-4 and resumed.cycle == fresh.cycle
    assert config.override({"preset": "small"}, saved=fresh).model == config.preset("small")
    with pytest.raises(ValueError, match="--levels must be a comma-separated list of integers, got 8,x"):
        config.override({"cycle.levels": ["8", "x"]})
    with pytest.raises(ValueError, match=r"unknown configuration fields \['model.width'\]"):
        config.override({"model.width": 3})


def test_a_cycle_spec_sets_the_levels_and_refuses_them_beside_it(tmp_path):
    cfg = config.override({"preset": "tiny", "cycle.cycle": "8:2,16:1"})
    assert cfg.cycle.levels == (8, 16) and cfg.plan().epoch_resolutions() == [8, 8, 16]
    modeldir.save_config(cfg, str(tmp_path))
    assert modeldir.load_config(str(tmp_path)) == cfg
    for path, value, flag in [("cycle.levels", ["8", "16"], "--levels"), ("cycle.epochs_per_visit", ["1"],
                              "--epochs_per_visit"), ("cycle.num_cycles", 2, "--num_cycles")]:
        with pytest.raises(ValueError, match=rf"^{flag} cannot be given with the cycle spec '8:2,16:1'"):
            config.override({"preset": "tiny", "cycle.cycle": "8:2,16:1", path: value})
        with pytest.raises(ValueError, match=rf"^{flag} cannot be given with the cycle spec"):
            config.override({path: value}, saved=cfg)  # a resumed spec run too
    named = config.override({"cycle.cycle": "v", "cycle.levels": ["8", "16"], "cycle.epochs_per_visit": ["1"]},
                            saved=cfg)
    assert [v.resolution for v in named.cycle.visits()] == [16, 8, 16]


def test_a_family_takes_its_own_defaults_and_old_configurations_are_kl():
    grf = config.override({"data.family": "grf"})
    assert (grf.data.eta, grf.data.num_terms) == (0.1, 1024) and grf.data.field_family() == fields.Family.of("grf")
    given = config.override({"data.family": "twophase", "data.eta": 0.2, "data.contrast": 1e4})
    assert given.data.field_family() == fields.Family.of("twophase", 0.2, contrast=1e4)
    assert config.TrainConfig().data.field_family() == fields.Family()  # the default: kl, eta 0.5, 4 terms
    back = config.override({"data.family": "kl"}, saved=grf)
    assert (back.data.eta, back.data.num_terms) == (0.5, 4)
    old = config.TrainConfig().to_dict()
    for key in ("family", "sigma", "contrast", "threshold"):  # a config.json written before families
        del old["data"][key]
    assert config.TrainConfig.from_dict(old).data.field_family() == fields.Family()
    assert grf.fingerprint()["data.family"] == "grf" != config.TrainConfig().fingerprint()["data.family"]
    with pytest.raises(ValueError, match="family must be one of"):
        config.DataConfig(family="lognormal")


def test_the_configuration_is_validated_when_built():
    tiny = config.preset("tiny")
    with pytest.raises(ValueError, match="resolution 10 cannot pass a depth-2 U-Net"):
        config.TrainConfig(model=tiny, cycle=config.CycleConfig(levels=(8, 10), epochs_per_visit=(1,)))
    with pytest.raises(ValueError, match="resolution 6 cannot pass"):
        config.TrainConfig(model=tiny, run=config.RunConfig(val_resolutions=(6,)))
    with pytest.raises(ValueError, match=r"num_train \(2\) must hold at least one global batch \(4\)"):
        config.TrainConfig(data=config.DataConfig(num_train=2))
    with pytest.raises(ValueError, match="strictly increasing"):
        config.CycleConfig(levels=(32, 16))
    cfg = config.TrainConfig(model=tiny, cycle=config.CycleConfig(levels=(8, 16), cycle="v", epochs_per_visit=(1,)))
    assert cfg.plan() is cfg.plan()
    assert [(v.level, v.resolution) for v in cfg.plan().visits] == [(v.level, v.resolution) for v in cfg.cycle.visits()]
