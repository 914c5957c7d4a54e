"""Multigrid training cycles of docs/design.rst s.7 as plain data (no TensorFlow here)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

CYCLES = ("half_v", "v", "w", "f", "single")
#: Units a visit's length can be given in: epochs of its level's samples, optimizer steps, or millions of voxels.
UNITS = ("epochs", "steps", "mvoxels")
_SPEC_SUFFIX = {"": "epochs", "s": "steps", "mv": "mvoxels"}


@dataclasses.dataclass(frozen=True)
class Visit:
    """One stay at one level: `epochs` epochs of training at `resolution`.

    In a schedule (schedule, parse_spec) the length is `epochs` units of `unit`; compile_plan turns it into
    epochs of the plan (blocks of plan.steps_per_epoch steps) and fills in the level's training settings.
    """

    level: int
    resolution: int
    epochs: int
    unit: str = "epochs"
    global_batch_size: int = 0  # samples per step over all workers (0: not compiled)
    num_samples: int = 0        # training samples the level draws from
    lr_scale: float = 1.0       # the base learning rate times this during the visit


@dataclasses.dataclass(frozen=True)
class LevelSettings:
    """How one level trains: global batch, samples, learning-rate factor (docs/design.rst s.7)."""

    resolution: int
    global_batch_size: int
    num_samples: int
    lr_scale: float = 1.0

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one pass over the level's samples (whole global batches)."""
        return self.num_samples // self.global_batch_size


def level_settings(resolutions: Sequence[int], global_batch_size: int, num_samples: int, batch_per_level=(),
                   samples_per_level=(), lr_per_level=()) -> list:
    """Per-level settings, coarse to fine; empty tuples take the defaults.

    Default batch: constant voxels per step, B_l = B (N_finest / N_l)^3, so a coarse step costs about what a
    fine one does and sees (N_finest / N_l)^3 times the fields. Default samples: in proportion to the batch,
    S_l = S B_l / B, so every level has the same steps per epoch and coarse levels see more distinct nu (they
    are cheap to make). Default learning-rate factor 1.

    Args:
      resolutions: the levels, coarse to fine.
      global_batch_size / num_samples: the finest level's.
      batch_per_level, samples_per_level, lr_per_level: one value per level to override the defaults.

    Raises:
      ValueError: a list of the wrong length, a batch < 1, fewer samples than one batch, a factor <= 0.
    """
    resolutions = check_levels(resolutions)
    finest = resolutions[-1]

    def per_level(name, values, default):
        if not values:
            return [default(n) for n in resolutions]
        if len(values) != len(resolutions):
            raise ValueError(f"{name} needs one value per level ({len(resolutions)} levels {resolutions}), "
                             f"got {list(values)}")
        return list(values)

    batches = per_level("batch_per_level", batch_per_level,
                        lambda n: global_batch_size * max(1, round((finest / n) ** 3)))
    samples = per_level("samples_per_level", samples_per_level,
                        lambda n: num_samples * batches[resolutions.index(n)] // global_batch_size)
    scales = per_level("lr_per_level", lr_per_level, lambda n: 1.0)
    out = []
    for n, b, s_, lr in zip(resolutions, batches, samples, scales):
        if isinstance(b, bool) or int(b) != b or b < 1:
            raise ValueError(f"the global batch at level {n} must be a positive integer, got {b!r}")
        if int(s_) != s_ or s_ < b:
            raise ValueError(f"level {n} has {s_!r} training samples, fewer than one global batch ({b}); "
                             f"give more samples or a smaller batch")
        if not float(lr) > 0:
            raise ValueError(f"the learning-rate factor of level {n} must be > 0, got {lr!r}")
        out.append(LevelSettings(n, int(b), int(s_), float(lr)))
    return out


def compile_plan(visits: Sequence[Visit], levels: Sequence[LevelSettings], revisit_lr_scale: float = 1.0,
                 ) -> "EpochPlan":
    """The EpochPlan of a schedule: each visit's length in steps, the plan's epoch as the largest block of
    steps that divides every visit and level epoch, and every visit's batch, samples and learning-rate factor.

    A visit's steps: epochs x the level's steps per epoch; steps; or ceil(mvoxels 1e6 / (batch N^3)).
    `revisit_lr_scale` multiplies the factor of a visit to a level coarser than one visited before it (the
    coarse revisits of V, W and F cycles), which then perturbs less what the finer level learned.

    Raises:
      ValueError: a visit to a level without settings, an unknown unit, or revisit_lr_scale <= 0.
    """
    import math

    if not revisit_lr_scale > 0:
        raise ValueError(f"revisit_lr_scale must be > 0, got {revisit_lr_scale!r}")
    by_resolution = {lv.resolution: lv for lv in levels}
    steps, finest_seen = [], -1
    for v in visits:
        if v.resolution not in by_resolution:
            raise ValueError(f"the schedule visits {v.resolution}^3 but the levels are {sorted(by_resolution)}")
        lv = by_resolution[v.resolution]
        if v.unit == "epochs":
            steps.append(v.epochs * lv.steps_per_epoch)
        elif v.unit == "steps":
            steps.append(v.epochs)
        elif v.unit == "mvoxels":
            steps.append(max(1, math.ceil(v.epochs * 1e6 / (lv.global_batch_size * v.resolution ** 3))))
        else:
            raise ValueError(f"unknown unit {v.unit!r} of a visit; valid units: {UNITS}")
    # The plan's epoch: the largest block of steps dividing every visit and every visited level's epoch (so with
    # the default settings, where all levels share their steps per epoch, it is one pass over the samples).
    block = math.gcd(*steps, *(by_resolution[v.resolution].steps_per_epoch for v in visits))
    compiled = []
    for v, n_steps in zip(visits, steps):
        lv = by_resolution[v.resolution]
        scale = lv.lr_scale * (revisit_lr_scale if v.level < finest_seen else 1.0)
        finest_seen = max(finest_seen, v.level)
        compiled.append(Visit(v.level, v.resolution, n_steps // block, "epochs", lv.global_batch_size,
                              lv.num_samples, scale))
    return EpochPlan(tuple(compiled), steps_per_epoch=block)


def _v(k: int) -> list:
    return list(range(k, -1, -1)) + list(range(1, k + 1))


def _w(k: int) -> list:
    return [0] if k == 0 else [k] + _w(k - 1) + _w(k - 1) + [k]


def _f(k: int) -> list:
    return [0] if k == 0 else [k] + _f(k - 1) + _v(k - 1) + [k]


def _merge_repeats(levels: Sequence[int]) -> list:
    out = []
    for level in levels:
        if not out or out[-1] != level:
            out.append(level)
    return out


def cycle_levels(cycle: str, num_levels: int) -> list:
    """Level indices (0 = coarsest) of one cycle, consecutive repeated visits merged.

    half_v: 0..k; v: k..0..k; w: W(k) = k, W(k-1), W(k-1), k; f: F(k) = k, F(k-1), V(k-1), k; single: k.
    """
    if cycle not in CYCLES:
        raise ValueError(f"unknown cycle {cycle!r}; valid cycles: {CYCLES} (or a spec like '16:4,32:2,64:1')")
    if int(num_levels) != num_levels or num_levels < 1:
        raise ValueError(f"a cycle needs at least one level, got num_levels={num_levels!r}")
    k = num_levels - 1
    levels = {"half_v": lambda: list(range(k + 1)), "v": lambda: _v(k), "w": lambda: _w(k),
              "f": lambda: _f(k), "single": lambda: [k]}[cycle]()
    return _merge_repeats(levels)


def check_levels(resolutions: Sequence[int]) -> list:
    """Raises ValueError unless the resolutions are integers >= 2, strictly increasing."""
    res = list(resolutions)
    if not res or any(isinstance(r, bool) or int(r) != r or r < 2 for r in res):
        raise ValueError(f"levels must be resolutions (integers >= 2), got {res}")
    if any(b <= a for a, b in zip(res, res[1:])):
        raise ValueError(f"levels must be strictly increasing from coarse to fine, got {res}")
    return [int(r) for r in res]


def _epochs_for(epochs_per_visit, num_levels: int, unit: str = "epochs") -> list:
    per_level = [epochs_per_visit] * num_levels if isinstance(epochs_per_visit, int) else list(epochs_per_visit)
    if len(per_level) != num_levels or any(int(e) != e or e < 1 for e in per_level):
        raise ValueError(f"{unit} per visit must be one positive integer or one per level ({num_levels}), "
                         f"got {epochs_per_visit!r}")
    return [int(e) for e in per_level]


def schedule(cycle: str, resolutions: Sequence[int], epochs_per_visit=1, num_cycles: int = 1,
             unit: str = "epochs") -> list:
    """The visits of `num_cycles` repetitions of a cycle over the given levels.

    Repeated visits are merged within a cycle (docs/design.rst s.7); repetitions of the cycle keep their own
    visits, so `single` run k times trains k visits and a V-cycle run twice visits the finest level twice
    in a row.

    Args:
      cycle: one of CYCLES.
      resolutions: the levels L_0 < ... < L_k.
      epochs_per_visit: one int, or one per level (coarse to fine): each visit's length, in `unit`.
      num_cycles: how many times the cycle runs.
      unit: one of UNITS.

    Returns:
      list of Visit.
    """
    resolutions = check_levels(resolutions)
    if unit not in UNITS:
        raise ValueError(f"unknown visit unit {unit!r}; valid units: {UNITS}")
    epochs = _epochs_for(epochs_per_visit, len(resolutions), unit)
    if int(num_cycles) != num_cycles or num_cycles < 1:
        raise ValueError(f"num_cycles must be a positive integer, got {num_cycles!r}")
    levels = cycle_levels(cycle, len(resolutions)) * int(num_cycles)
    return [Visit(level, resolutions[level], epochs[level], unit) for level in levels]


def parse_spec(spec: str) -> list:
    """A custom sequence 'resolution:length,...' -> visits (levels by resolution). A length is epochs, or
    steps with an 's' suffix, or millions of voxels with 'mv': '16:4,32:2,64:1', '16:400s,64:100s', '32:50mv'."""
    visits = []
    try:
        for item in spec.split(","):
            res, _, length = item.strip().partition(":")
            digits = length.rstrip("smv")
            unit = _SPEC_SUFFIX[length[len(digits):]]
            visits.append((int(res), int(digits) if digits else 1, unit))
    except (ValueError, KeyError):
        raise ValueError(f"cycle spec must look like '16:4,32:2,64:1' (resolution:epochs,...; a length may end in "
                         f"'s' for steps or 'mv' for millions of voxels), got {spec!r}") from None
    resolutions = check_levels(sorted(set(r for r, _, _ in visits)))
    if any(e < 1 for _, e, _ in visits):
        raise ValueError(f"lengths in the cycle spec must be >= 1, got {spec!r}")
    return [Visit(resolutions.index(r), r, e, unit) for r, e, unit in visits]


def is_spec(cycle: str) -> bool:
    """True for a custom sequence 'resolution:epochs,...' (it names its own levels and epochs), False for a name."""
    return ":" in cycle


def build_schedule(cycle: str, resolutions: Sequence[int], epochs_per_visit=1, num_cycles: int = 1,
                   unit: str = "epochs") -> list:
    """schedule() for a named cycle, parse_spec() for a spec (its own levels and lengths; the rest is unused)."""
    return parse_spec(cycle) if is_spec(cycle) else schedule(cycle, resolutions, epochs_per_visit, num_cycles,
                                                             unit)


def _table():
    return dataclasses.field(init=False, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """Where every epoch of a schedule stands: the per-epoch view a training loop executes.

    An epoch of a compiled plan (compile_plan) is `steps_per_epoch` optimizer steps at one level; a plan of a
    bare schedule (EpochPlan.of) has steps_per_epoch 0 and no training settings. The per-epoch tables are
    computed once, when the plan is made; the methods hand out copies.
    """

    visits: tuple
    steps_per_epoch: int = 0
    _visit_of_epoch: tuple = _table()
    _resolutions: tuple = _table()
    _levels: tuple = _table()
    _visit_ends: frozenset = _table()

    def __post_init__(self):
        visits = tuple(self.visits)
        of_epoch = tuple(i for i, v in enumerate(visits) for _ in range(v.epochs))
        tables = {"visits": visits, "_visit_of_epoch": of_epoch,
                  "_resolutions": tuple(visits[i].resolution for i in of_epoch),
                  "_levels": tuple(visits[i].level for i in of_epoch),
                  "_visit_ends": frozenset(e for e, (i, j) in enumerate(zip(of_epoch, of_epoch[1:] + (None,)))
                                           if i != j)}
        for name, value in tables.items():
            object.__setattr__(self, name, value)  # a frozen dataclass: set once, here

    @classmethod
    def of(cls, visits: Sequence[Visit]) -> "EpochPlan":
        return cls(tuple(visits))

    @property
    def num_epochs(self) -> int:
        return len(self._visit_of_epoch)

    @property
    def resolutions(self) -> list:
        """Distinct resolutions, coarse to fine (index = level)."""
        return sorted({v.resolution for v in self.visits})

    def visit_of_epoch(self) -> list:
        """Visit index of every epoch."""
        return list(self._visit_of_epoch)

    def epoch_resolutions(self) -> list:
        """Resolution trained in every epoch."""
        return list(self._resolutions)

    def epoch_levels(self) -> list:
        """Level index (0 = coarsest) trained in every epoch."""
        return list(self._levels)

    def is_visit_end(self, epoch: int) -> bool:
        """True when `epoch` (0-based) is the last epoch of its visit."""
        return epoch in self._visit_ends

    def level(self, resolution: int) -> LevelSettings:
        """The training settings of the level at `resolution` (a compiled plan)."""
        visit = next(v for v in self.visits if v.resolution == resolution)
        return LevelSettings(resolution, visit.global_batch_size, visit.num_samples)

    def epoch_batch_sizes(self) -> list:
        """Global batch of every epoch."""
        return [self.visits[i].global_batch_size for i in self._visit_of_epoch]

    def steps_at(self, resolution: int, before_epoch: int) -> int:
        """Steps trained at `resolution` in the epochs before `before_epoch` (where a resumed level stream is)."""
        return self._resolutions[:before_epoch].count(resolution) * self.steps_per_epoch

    def lr_segments(self) -> list:
        """(first step, learning-rate factor) of every visit, in order: the piecewise-constant schedule."""
        out, step = [], 0
        for v in self.visits:
            out.append((step, v.lr_scale))
            step += v.epochs * self.steps_per_epoch
        return out

    @property
    def num_steps(self) -> int:
        return self.num_epochs * self.steps_per_epoch
