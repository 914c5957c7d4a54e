"""Frozen run configuration, built once from flags and saved to model_dir as JSON (the single source of truth)."""
from __future__ import annotations

import dataclasses
import json
import os

from poisson_tf import fields, files, multigrid
from poisson_tf.models import ModelConfig

CONFIG_FILE = "config.json"
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    num_train: int = 64
    num_val: int = 8
    num_terms: int = fields.DEFAULT_NUM_TERMS
    eta: float = fields.DEFAULT_ETA
    sampling: str = "sobol"
    seed: int = 0
    cache_budget_mb: int = 2048

    def __post_init__(self):
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError(f"num_train and num_val must be >= 1, got {self.num_train} and {self.num_val}")
        if self.sampling not in fields.SAMPLING_METHODS:
            raise ValueError(f"sampling must be one of {fields.SAMPLING_METHODS}, got {self.sampling!r}")
        fields.check_eta(self.eta)
        fields.kl_roots(self.num_terms)


@dataclasses.dataclass(frozen=True)
class CycleConfig:
    levels: tuple = (16, 32, 64)
    cycle: str = "half_v"           # a name from multigrid.CYCLES or a spec like '16:4,32:2,64:1'
    # One value for all levels, or one per level. The demo default: most steps on the cheap coarse grids.
    epochs_per_visit: tuple = (60, 30, 40)
    num_cycles: int = 1

    def visits(self) -> list:
        epochs = self.epochs_per_visit[0] if len(self.epochs_per_visit) == 1 else list(self.epochs_per_visit)
        return multigrid.build_schedule(self.cycle, self.levels, epochs, self.num_cycles)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    global_batch_size: int = 4
    learning_rate: float = 2e-3
    scale_lr_by_workers: bool = False
    warmup_steps: int = 0
    precision: str = "float32"      # float32, bfloat16 (CPU or GPU) or float16 (GPU, with loss scaling)

    def __post_init__(self):
        if self.global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {self.global_batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model_dir: str = "runs/demo"
    seed: int = 0
    validate_every: int = 1         # validate every this many visits (and always at the end)
    val_resolutions: tuple = ()     # () = the training levels
    reference_cache: str = ""       # "" = ~/.cache/poisson_tf/references
    threads: int = 0                # TF intra-op threads per worker; 0 = cores / workers on the host
    deterministic: bool = False
    verbose: int = 2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    preset: str = "small"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    cycle: CycleConfig = CycleConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        def build(kind, values):
            fields_ = {f.name: f for f in dataclasses.fields(kind)}
            unknown = set(values) - set(fields_)
            if unknown:
                raise ValueError(f"unknown {kind.__name__} keys {sorted(unknown)} in the saved config")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        return cls(preset=d.get("preset", "small"), model=build(ModelConfig, d["model"]),
                   data=build(DataConfig, d["data"]), cycle=build(CycleConfig, d["cycle"]),
                   optim=build(OptimConfig, d["optim"]), run=build(RunConfig, d["run"]))

    def fingerprint(self) -> dict:
        """What a checkpoint must share with the run that resumes it."""
        d = self.to_dict()
        return {"model": d["model"], "data": d["data"], "cycle": d["cycle"],
                "global_batch_size": d["optim"]["global_batch_size"], "precision": d["optim"]["precision"]}

    def save(self, model_dir: str) -> str:
        return files.write_json(os.path.join(model_dir, CONFIG_FILE), self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, model_dir: str) -> "TrainConfig":
        path = os.path.join(model_dir, CONFIG_FILE)
        if not os.path.exists(path):
            raise ValueError(f"{model_dir!r} holds no {CONFIG_FILE}: not a poisson_tf model_dir")
        with open(path) as f:
            return cls.from_dict(json.load(f))
