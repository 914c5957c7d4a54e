"""The run configuration's schema: one frozen dataclass per component, validated when built, and the model presets.

Every field is also a command-line flag of poisson-tf-train (config.options derives them from these
dataclasses; a new field is one line here). Framework-free: importing this module loads neither TensorFlow nor
Keras. modeldir saves and loads a TrainConfig in a model_dir.
"""
from __future__ import annotations

import dataclasses
import math

from poisson_tf import cycles, fields
from poisson_tf.config import checks
from poisson_tf.config.checks import check_resolution, require

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
NORMALIZATIONS = ("none", "batch", "group", "instance", "layer")
DOWNSAMPLING = ("conv", "pool")
UPSAMPLING = ("transpose", "upsample")
INPUT_FEATURES = ("log_nu", "nu")
OUTPUT_PRIORS = ("linear", "none")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "elu", "tanh")
COARSE_NU = ("sample", "restrict", "harmonic")
LR_DECAYS = ("constant", "cosine", "cosine_per_visit")


VERBOSITIES = (0, 1, 2)


def _field(default, help: str, flag: str = "", items: type = int):
    """A config field and the help of its command-line flag (named after the field unless `flag` is given);
    `items`: the type of a tuple field's elements."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "items": items})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the encoder-decoder (see models.build_model).

    The network has `depth` stride-2 levels: level l has width min(base_filters * growth**l, max_filters)
    (growth applies after the first level). N must be divisible by 2**depth, unless the network runs at a
    working resolution (then any N >= 2).
    """

    depth: int = _field(3, "Stride-2 levels of the U-Net (N must be divisible by 2^depth, without a "
                                 "working resolution).")
    base_filters: int = _field(16, "Width of the first level.")
    growth: float = _field(2.0, "Width factor from one level to the next.")
    max_filters: int = _field(128, "Width cap of the deepest levels.")
    kernel_size: int = _field(3, "Convolution kernel size.")
    extra_convs: int = _field(1, "Same-resolution conv blocks after every down and up step.")
    downsampling: str = _field("conv", f"Strided conv, or conv + average pooling: {DOWNSAMPLING}.")
    upsampling: str = _field("transpose", f"Transposed conv, or nearest upsampling + conv: {UPSAMPLING}.")
    normalization: str = _field("instance", f"Normalization: {NORMALIZATIONS}.")
    encoder_activation: str = _field("leaky_relu", f"Encoder activation: {ACTIVATIONS}.")
    decoder_activation: str = _field("relu", f"Decoder activation: {ACTIVATIONS}.")
    dropout: float = _field(0.0, "Dropout rate.")
    dropout_levels: int = _field(2, "Dropout on this many deepest encoder levels.")
    head_kernel_size: int = _field(3, "Kernel size of the output head.")
    input_features: str = _field("log_nu", f"Input features: {INPUT_FEATURES}.")
    # log(nu) of the KL family has a spread of about 2 (eta=0.5, w in [-3,3]^4).
    log_nu_scale: float = _field(2.0, "Divisor of the centred log(nu) feature.")
    output_prior: str = _field("linear", f"The head predicts a correction to logit(1 - x) (no parameters), or "
                                         f"not: {OUTPUT_PRIORS}.")
    working_resolution: int = _field(0, "0: the U-Net runs at the input's N (fully convolutional; N a multiple of "
                                        "2^depth). W > 0: nu is resampled trilinearly to W nodes per axis, the "
                                        "U-Net runs at W and u is interpolated back to N, so any N >= 2 passes at "
                                        "one cost (for fields smooth on the scale 1/W, e.g. the KL family).")

    def __post_init__(self):
        def need(ok, what, value, valid):
            require(ok, "model " + what, value, valid)
        need(isinstance(self.depth, int) and 1 <= self.depth <= 8, "depth", self.depth, "an integer in 1..8")
        need(self.base_filters >= 1, "base_filters", self.base_filters, ">= 1")
        need(1 <= self.growth < math.inf, "growth", self.growth, "finite and >= 1")
        need(self.max_filters >= self.base_filters, "max_filters", self.max_filters, ">= base_filters")
        need(self.kernel_size >= 1, "kernel_size", self.kernel_size, ">= 1")
        need(self.extra_convs >= 0, "extra_convs", self.extra_convs, ">= 0")
        need(self.downsampling in DOWNSAMPLING, "downsampling", self.downsampling, f"one of {DOWNSAMPLING}")
        need(self.upsampling in UPSAMPLING, "upsampling", self.upsampling, f"one of {UPSAMPLING}")
        need(self.normalization in NORMALIZATIONS, "normalization", self.normalization,
             f"one of {NORMALIZATIONS}")
        for name in ("encoder_activation", "decoder_activation"):
            need(getattr(self, name) in ACTIVATIONS, name, getattr(self, name), f"one of {ACTIVATIONS}")
        need(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        need(self.dropout_levels >= 0, "dropout_levels", self.dropout_levels, ">= 0")
        need(self.head_kernel_size >= 1, "head_kernel_size", self.head_kernel_size, ">= 1")
        need(self.input_features in INPUT_FEATURES, "input_features", self.input_features,
             f"one of {INPUT_FEATURES}")
        need(0 < self.log_nu_scale < math.inf, "log_nu_scale", self.log_nu_scale, "finite and > 0")
        need(self.output_prior in OUTPUT_PRIORS, "output_prior", self.output_prior, f"one of {OUTPUT_PRIORS}")
        need(isinstance(self.working_resolution, int) and not isinstance(self.working_resolution, bool)
             and (self.working_resolution == 0 or (self.working_resolution >= self.multiple
                                                   and self.working_resolution % self.multiple == 0)),
             "working_resolution", self.working_resolution,
             f"0 (off) or a multiple of 2^depth = {self.multiple} ({self.multiple}, {2 * self.multiple}, ...)")

    @property
    def multiple(self) -> int:
        """Every resolution N must be divisible by this (2**depth)."""
        return 2 ** self.depth

    @property
    def input_depth(self) -> int:
        """The depth whose 2**depth the input's N must be a multiple of: the U-Net's, or 0 (any N >= 2) when it
        runs at a working resolution."""
        return 0 if self.working_resolution else self.depth

    def check_resolution(self, resolution: int) -> int:
        """Raises ValueError unless this network takes inputs of N = resolution nodes per axis."""
        return check_resolution(resolution, self.input_depth)

    def filters(self, level: int) -> int:
        return int(min(self.base_filters * self.growth ** level, self.max_filters))


PRESETS = {
    # The default. No normalization: instance and group norm discard the amplitude of the features, which
    # the solution needs. Depth 4, not 3: a depth-3 U-Net does not see the whole cube at 64^3, and u at a point
    # depends on nu everywhere; depth 4 trained to half the error in the same time (the single-level rows of
    # benchmarks/results/cycles.jsonl; docs/design.rst, "Departures").
    "small": ModelConfig(depth=4, base_filters=8, max_filters=64, kernel_size=3, extra_convs=1,
                         normalization="none"),
    # For tests: as small as a U-Net gets.
    "tiny": ModelConfig(depth=2, base_filters=4, max_filters=8, kernel_size=3, extra_convs=0),
    # The published 64^3 architecture: five stride-2 4^3 downs (16-32-64-128-128, no bias, non-affine
    # instance norm, LeakyReLU 0.2, dropout 0.5 on the two deepest), four 4^3 transposed-conv ups with skip
    # concatenation, then UpSampling3D x2 and a 3^3 conv: 4,163,425 trainable parameters.
    "reference": ModelConfig(depth=5, base_filters=16, growth=2, max_filters=128, kernel_size=4, extra_convs=0,
                             normalization="instance", dropout=0.5, dropout_levels=2, output_prior="none"),
}


def preset(name: str) -> ModelConfig:
    """The named ModelConfig; raises ValueError naming the valid presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {sorted(PRESETS)}")
    return PRESETS[name]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The diffusivity family the run trains on, its sample sets and how each level's nu is made.

    The family's parameters are flat fields (each a flag); eta and num_terms default to the family's own
    (fields.FAMILY_DEFAULTS: kl 0.5 and 4, grf and twophase 0.1 and 1024) and are stored resolved.
    """

    num_train: int = _field(64, "Training samples (coefficient vectors of the family).")
    num_val: int = _field(8, "Validation samples (disjoint from training).")
    family: str = _field("kl", f"Diffusivity family, one of {fields.FAMILIES}: the Karhunen-Loeve field (kl), the "
                               "log-normal random field (grf) or the two-phase medium thresholded from it (twophase).")
    num_terms: int = _field(None, "Terms m of the family (kl: KL terms; grf, twophase: index triples). Default: the "
                                  "family's (kl 4, grf and twophase 1024).")
    eta: float = _field(None, "Correlation length. Default: the family's (kl 0.5, grf and twophase 0.1).")
    sigma: float = _field(1.0, "Standard deviation of the grf's log nu (grf, twophase).")
    contrast: float = _field(100.0, "nu of the phase where the grf's log nu > --threshold; the other is 1 (twophase).")
    threshold: float = _field(0.0, "Level of the grf's log nu that separates the phases (twophase; 0: equal "
                                   "fractions).")
    sampling: str = _field("sobol", f"Coefficient sampling: {fields.SAMPLING_METHODS} (a scrambled Sobol sequence, "
                                    "or i.i.d. draws).")
    seed: int = _field(0, "Seed of the sample sets.", flag="data_seed")
    cache_budget_mb: int = _field(2048, "Memory for caching generated nu fields per worker.")
    coarse_nu: str = _field("sample", f"How a coarse level's nu is made, one of {COARSE_NU}: the family's field "
                                      "sampled at the coarse nodes, or the finest level's field averaged over 2x2x2 "
                                      "blocks, arithmetically (restrict) or harmonically (harmonic).")

    def __post_init__(self):
        if self.coarse_nu not in COARSE_NU:
            raise ValueError(f"coarse_nu must be one of {COARSE_NU}, got {self.coarse_nu!r}")
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError(f"num_train and num_val must be >= 1, got {self.num_train} and {self.num_val}")
        if self.sampling not in fields.SAMPLING_METHODS:
            raise ValueError(f"sampling must be one of {fields.SAMPLING_METHODS}, got {self.sampling!r}")
        checks.check_seed("data_seed", self.seed)
        require(self.cache_budget_mb >= 0, "cache_budget_mb", self.cache_budget_mb, ">= 0 (0: no caching)")
        family = fields.Family.of(self.family, self.eta, self.num_terms, sigma=self.sigma, contrast=self.contrast,
                                  threshold=self.threshold)
        object.__setattr__(self, "eta", family.eta)  # resolved: a saved config names the values it trained on
        object.__setattr__(self, "num_terms", family.num_terms)
        if family.kind == "kl":
            fields.kl_roots(self.num_terms)

    def field_family(self) -> fields.Family:
        """The diffusivity family as one value (fields.Family)."""
        return fields.Family.of(self.family, self.eta, self.num_terms, sigma=self.sigma, contrast=self.contrast,
                                threshold=self.threshold)


# What a cycle spec ('16:4,32:2,64:1') sets itself: given beside one, these are refused (see override).
SPEC_SETS = ("levels", "epochs_per_visit", "visit_unit", "num_cycles")


@dataclasses.dataclass(frozen=True)
class CycleConfig:
    """The multigrid schedule and how each level trains; TrainConfig.plan() compiles it into the one EpochPlan
    every consumer uses.

    A spec cycle ('resolution:length,...') names its own levels and visit lengths: `levels` is derived from it,
    and `epochs_per_visit`, `visit_unit` and `num_cycles` apply to named cycles only. The per-level lists (one
    value per level, coarse to fine; empty = the default rule of cycles.level_settings) hold for both.
    """

    levels: tuple = _field((16, 32, 64), "Training resolutions, coarse to fine (a cycle spec sets its own).")
    # The default is what measured best at the default's finest level, 64^3 (benchmarks/results/cycles.jsonl):
    # single-level training, 800 steps (50 epochs); at 128^3 a Half-V pays off instead (flags/multigrid_128.flags).
    cycle: str = _field("single", f"One of {cycles.CYCLES}, or a spec like '16:4,32:2,64:1' (resolution:length "
                                  "of every visit; a length is epochs, or steps with an 's' suffix, or millions "
                                  "of voxels with 'mv').")
    # 50 epochs of the default 64 samples in batches of 4: 800 steps at the finest level.
    epochs_per_visit: tuple = _field((12, 12, 50), "Length of every visit of a named cycle in --visit_unit "
                                                   "units: one value, or one per level (coarse to fine).")
    visit_unit: str = _field("epochs", f"Unit of --epochs_per_visit, one of {cycles.UNITS}: epochs (passes "
                                      "over the level's samples), optimizer steps, or millions of voxels.")
    num_cycles: int = _field(1, "How many times a named cycle runs.")
    batch_per_level: tuple = _field((), "Global batch of every level, coarse to fine (default: constant voxels "
                                        "per step, the finest level's --global_batch_size times (N_fine/N)^3).")
    samples_per_level: tuple = _field((), "Training samples of every level, coarse to fine (default: in "
                                          "proportion to the batch, so every level has --num_train's steps per "
                                          "epoch).")
    lr_per_level: tuple = _field((), "Learning-rate factor of every level, coarse to fine (default: 1).",
                                 items=float)
    revisit_lr_scale: float = _field(1.0, "Extra learning-rate factor of visits to a level coarser than one "
                                          "visited before (the coarse revisits of V, W, F).")

    def __post_init__(self):
        epochs = self.epochs_per_visit[0] if len(self.epochs_per_visit) == 1 else list(self.epochs_per_visit)
        visits = cycles.build_schedule(self.cycle, self.levels, epochs, self.num_cycles, self.visit_unit)
        if cycles.is_spec(self.cycle):
            object.__setattr__(self, "levels", tuple(sorted({v.resolution for v in visits})))
        object.__setattr__(self, "_visits", tuple(visits))  # derived once, with the validation it implies
        if not self.revisit_lr_scale > 0:
            raise ValueError(f"revisit_lr_scale must be > 0, got {self.revisit_lr_scale}")

    def visits(self) -> list:
        """The schedule's visits, lengths in their own units (TrainConfig.plan() compiles them)."""
        return list(self._visits)

    def level_settings(self, global_batch_size: int, num_train: int) -> list:
        """cycles.LevelSettings of every level, from the finest level's batch and samples."""
        return cycles.level_settings(self.levels, global_batch_size, num_train, self.batch_per_level,
                                        self.samples_per_level, self.lr_per_level)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    global_batch_size: int = _field(4, "Samples per step over all workers (split evenly).")
    learning_rate: float = _field(2e-3, "Adam learning rate.")
    # Kept so that saved configurations still load; refused when set (see __post_init__).
    scale_lr_by_workers: bool = _field(False, "Refused (kept for old configurations): the global batch is fixed, "
                                              "so the learning rate does not depend on the number of workers.")
    warmup_steps: int = _field(0, "Linear learning-rate warmup steps.")
    lr_decay: str = _field("cosine", f"Learning-rate decay, one of {LR_DECAYS}, on top of the per-visit factors: "
                                       "cosine to zero over the whole plan, or over every visit (a warm restart at "
                                       "each level switch).")
    gradient_shards: int = _field(0, "0: each worker's gradient is averaged over the workers (Horovod's allreduce). "
                                     "S > 0: the global batch is cut into S equal shards, each shard's gradient is "
                                     "computed alone and the S are summed exactly (in fixed point), so the weights do "
                                     "not depend on how many workers (any divisor of S) train the run: bit for bit "
                                     "with --deterministic and the same --threads per worker.")
    precision: str = _field("float32", f"Compute precision of the convolutions, one of {list(PRECISIONS)} (or "
                                       "their Keras policy names mixed_bfloat16, mixed_float16): bfloat16 (GPUs, "
                                       "and CPUs with avx512_bf16 or AMX) or float16 (GPU, with loss scaling); "
                                       "weights, optimizer state, the energy, the Dirichlet planes and the metrics "
                                       "stay float32.")

    def __post_init__(self):
        if self.global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {self.global_batch_size}")
        if not 0 < self.learning_rate < math.inf:
            raise ValueError(f"learning_rate must be finite and > 0, got {self.learning_rate}")
        if self.scale_lr_by_workers:
            raise ValueError("--scale_lr_by_workers is refused: the global batch (--global_batch_size) is fixed and "
                             "split over the workers, so the same learning rate trains the same way on any number of "
                             "workers; give the --learning_rate you want instead")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.gradient_shards < 0:
            raise ValueError(f"gradient_shards must be >= 0 (0: averaged over the workers), got {self.gradient_shards}")
        policies = {policy: name for name, policy in PRECISIONS.items()}
        if self.precision in policies:  # the Keras policy's name: one spelling in configs and fingerprints
            object.__setattr__(self, "precision", policies[self.precision])
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model_dir: str = _field("runs/demo", "Directory for config, checkpoint, TensorBoard logs and the model.")
    seed: int = _field(0, "Seed of initialization, dropout and data order.")
    validate_every: int = _field(1, "Validate at the end of every this many visits (and at the end).")
    val_resolutions: tuple = _field((), "Resolutions to validate at (default: the trained resolutions).")
    reference_cache: str = _field("", "Directory of cached reference solutions (default "
                                      "~/.cache/poisson_tf/references).")
    threads: int = _field(0, "TF intra-op threads per worker (0: cores on the host / workers on the host); a "
                             "setting of each launch, not taken from a resumed run's saved config.")
    deterministic: bool = _field(False, "Enable TensorFlow op determinism (bitwise-reproducible resume).")
    checkpoint_seconds: float = _field(60.0, "Checkpoint at the end of every visit and of training, and after "
                                             "epochs ending this many seconds after the last save (0: every epoch).")
    verbose: int = _field(2, "Keras verbosity on the chief: 0 silent, 1 progress bar, 2 a line per epoch.")
    steps_per_execution: int = _field(1, "Optimizer steps per call of the compiled training function (Keras' "
                                         "steps_per_execution; must divide the steps per epoch). k > 1 trims "
                                         "the per-step overhead that dominates small coarse steps; callbacks then "
                                         "see every k-th step (per-step TensorBoard scalars, the divergence check).")

    def __post_init__(self):
        require(bool(self.model_dir), "model_dir", self.model_dir, "a directory name")
        checks.check_seed("seed", self.seed)
        require(self.validate_every >= 1, "validate_every", self.validate_every, ">= 1 (visits)")
        checks.check_threads(self.threads)
        if not self.checkpoint_seconds >= 0:
            raise ValueError(f"checkpoint_seconds must be >= 0 (0: every epoch), got {self.checkpoint_seconds}")
        require(self.verbose in VERBOSITIES, "verbose", self.verbose, f"one of {VERBOSITIES}")
        require(isinstance(self.steps_per_execution, int) and not isinstance(self.steps_per_execution, bool)
                and self.steps_per_execution >= 1, "steps_per_execution", self.steps_per_execution,
                "an integer >= 1")


#: Settings that only size, place or report a run (caches, threads, paths, logging, checkpoint cadence,
#: validation): a resumed run may change them. Every other setting is in TrainConfig.fingerprint().
RUNTIME_SETTINGS = ("data.cache_budget_mb", "run.model_dir", "run.validate_every", "run.val_resolutions",
                    "run.reference_cache", "run.threads", "run.checkpoint_seconds", "run.verbose",
                    "run.steps_per_execution")

SECTIONS = {"model": ModelConfig, "data": DataConfig, "cycle": CycleConfig, "optim": OptimConfig,
             "run": RunConfig}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The whole run; each component gets only its own part (build_model(cfg.model), ...)."""

    preset: str = _field("small", f"Model preset, one of {sorted(PRESETS)}; model flags (--depth, ...) "
                                  "override its fields.")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    cycle: CycleConfig = CycleConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()

    def __post_init__(self):
        # Each section checked its own fields; these rules join two of them.
        if self.data.num_train < self.optim.global_batch_size:
            raise ValueError(f"num_train ({self.data.num_train}) must hold at least one global batch "
                             f"({self.optim.global_batch_size})")
        levels = self.cycle.level_settings(self.optim.global_batch_size, self.data.num_train)
        plan = cycles.compile_plan(self.cycle.visits(), levels, self.cycle.revisit_lr_scale)
        if plan.steps_per_epoch % self.run.steps_per_execution:
            raise ValueError(f"steps_per_execution ({self.run.steps_per_execution}) must divide the steps per "
                             f"epoch ({plan.steps_per_epoch}, from num_train, the batch and the cycle), e.g. "
                             f"{max(k for k in range(1, self.run.steps_per_execution + 1) if plan.steps_per_epoch % k == 0)}")
        for n in plan.resolutions + list(self.run.val_resolutions):
            self.model.check_resolution(n)
        shards = self.optim.gradient_shards
        if shards:
            uneven = sorted({v.global_batch_size for v in plan.visits if v.global_batch_size % shards})
            if uneven:
                raise ValueError(f"--gradient_shards={shards} must divide every level's global batch, and "
                                 f"{uneven[0]} is not a multiple of it; use a divisor of {uneven[0]}, or "
                                 "--gradient_shards=0")
            if self.model.dropout > 0 or self.model.normalization == "batch":
                raise ValueError(f"--gradient_shards={shards} makes the weights independent of the number of "
                                 "workers, which dropout masks and batch statistics are not (each worker draws and "
                                 "keeps its own): use --dropout=0 and a --normalization other than batch, or "
                                 "--gradient_shards=0")
        if self.data.coarse_nu != "sample":
            for n in plan.resolutions:
                ratio = plan.resolutions[-1] // n
                if plan.resolutions[-1] != n * ratio or ratio & (ratio - 1):
                    raise ValueError(f"--coarse_nu={self.data.coarse_nu} averages 2x2x2 blocks of the finest field, so every "
                                     f"level must be the finest ({plan.resolutions[-1]}) over a power of 2; {n} "
                                     "is not")
        object.__setattr__(self, "_plan", plan)  # compiled once, with the validation it implies

    def plan(self) -> cycles.EpochPlan:
        """The compiled epoch plan: visits with their steps, batches, samples and learning-rate factors."""
        return self._plan

    @property
    def num_train_samples(self) -> int:
        """Training samples to draw: the most any level uses (each level takes the first ones)."""
        return max(v.num_samples for v in self._plan.visits)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        def build(kind, values):
            names = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"unknown {kind.__name__} keys {sorted(unknown)} in the saved config")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        return cls(preset=d.get("preset", "small"),
                   **{section: build(kind, d[section]) for section, kind in SECTIONS.items()})

    def fingerprint(self) -> dict:
        """What a checkpoint must share with the run that resumes it: every setting that changes the sequence
        of updates (so that a --deterministic resume reaches the weights of an uninterrupted run), as
        {path: value}; the RUNTIME_SETTINGS may differ, and so may the family parameters its kind does not use
        (a kl run has no sigma, contrast or threshold)."""
        d = self.to_dict()
        unused = {f"data.{name}" for name in ("sigma", "contrast", "threshold")
                  if name not in self.data.field_family().params()}  # the family's kind ignores them
        return {f"{section}.{name}": value for section in SECTIONS for name, value in d[section].items()
                if f"{section}.{name}" not in RUNTIME_SETTINGS and f"{section}.{name}" not in unused}


