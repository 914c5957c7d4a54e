"""Tiny training configurations shared by the single-process and parallel training tests."""
import dataclasses

from poisson_tf import config, models


def tiny_config(model_dir, reference_cache, **overrides) -> config.TrainConfig:
    """2 levels (8, 16), the tiny preset, a handful of steps."""
    sections = {
        "data": config.DataConfig(num_train=8, num_val=2),
        "cycle": config.CycleConfig(levels=(8, 16), cycle="v", epochs_per_visit=(1,)),
        "optim": config.OptimConfig(global_batch_size=2, learning_rate=1e-3, lr_decay="constant"),
        "run": config.RunConfig(model_dir=str(model_dir), reference_cache=str(reference_cache), verbose=0,
                                threads=1),
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        sections[section] = dataclasses.replace(sections[section], **{name: value})
    return config.TrainConfig(preset="tiny", model=models.preset("tiny"), **sections)


def config_flags(cfg: config.TrainConfig) -> list:
    """The poisson-tf-train flags that give cfg (every field, by config.options()): a TrainConfig as a command line."""
    values = cfg.to_dict()
    out = [f"--preset={cfg.preset}"]
    for option in config.options()[1:]:
        section, _, name = option.path.partition(".")
        value = values[section][name]
        out.append(f"--{option.flag}={','.join(map(str, value)) if option.kind == 'tuple' else value}")
    return out
