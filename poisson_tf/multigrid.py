"""Multigrid training cycles of DESIGN.md section 7 as plain data (no TensorFlow here)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

CYCLES = ("half_v", "v", "w", "f", "single")


@dataclasses.dataclass(frozen=True)
class Visit:
    """One stay at one level: `epochs` epochs of training at `resolution`."""

    level: int
    resolution: int
    epochs: int


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


def _epochs_for(epochs_per_visit, num_levels: int) -> list:
    per_level = [epochs_per_visit] * num_levels if isinstance(epochs_per_visit, int) else list(epochs_per_visit)
    if len(per_level) != num_levels or any(int(e) != e or e < 1 for e in per_level):
        raise ValueError(f"epochs per visit must be one positive integer or one per level ({num_levels}), "
                         f"got {epochs_per_visit!r}")
    return [int(e) for e in per_level]


def schedule(cycle: str, resolutions: Sequence[int], epochs_per_visit=1, num_cycles: int = 1) -> list:
    """The visits of `num_cycles` repetitions of a cycle over the given levels.

    Repeated visits are merged within a cycle (DESIGN.md s.7); repetitions of the cycle keep their own
    visits, so `single` run k times trains k visits and a V-cycle run twice visits the finest level twice
    in a row.

    Args:
      cycle: one of CYCLES.
      resolutions: the levels L_0 < ... < L_k.
      epochs_per_visit: one int, or one per level (coarse to fine).
      num_cycles: how many times the cycle runs.

    Returns:
      list of Visit.
    """
    resolutions = check_levels(resolutions)
    epochs = _epochs_for(epochs_per_visit, len(resolutions))
    if int(num_cycles) != num_cycles or num_cycles < 1:
        raise ValueError(f"num_cycles must be a positive integer, got {num_cycles!r}")
    levels = cycle_levels(cycle, len(resolutions)) * int(num_cycles)
    return [Visit(level, resolutions[level], epochs[level]) for level in levels]


def parse_spec(spec: str) -> list:
    """A custom sequence 'resolution:epochs,...', e.g. '16:4,32:2,64:1' -> visits (levels by resolution)."""
    visits = []
    try:
        for item in spec.split(","):
            res, _, epochs = item.strip().partition(":")
            visits.append((int(res), int(epochs) if epochs else 1))
    except ValueError:
        raise ValueError(f"cycle spec must look like '16:4,32:2,64:1' (resolution:epochs,...), got {spec!r}") \
            from None
    resolutions = check_levels(sorted(set(r for r, _ in visits)))
    if any(e < 1 for _, e in visits):
        raise ValueError(f"epochs in the cycle spec must be >= 1, got {spec!r}")
    return [Visit(resolutions.index(r), r, e) for r, e in visits]


def is_spec(cycle: str) -> bool:
    """True for a custom sequence 'resolution:epochs,...' (it names its own levels and epochs), False for a name."""
    return ":" in cycle


def build_schedule(cycle: str, resolutions: Sequence[int], epochs_per_visit=1, num_cycles: int = 1) -> list:
    """schedule() for a named cycle, parse_spec() for a spec (its own levels and epochs; the rest is unused)."""
    return parse_spec(cycle) if is_spec(cycle) else schedule(cycle, resolutions, epochs_per_visit, num_cycles)


def _table():
    return dataclasses.field(init=False, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """Where every epoch of a schedule stands: the per-epoch view a training loop executes.

    The per-epoch tables are computed once, when the plan is made; the methods hand out copies.
    """

    visits: tuple
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
