"""Cycle schedules: golden sequences for 2, 3 and 4 levels, specs, and the per-epoch plan."""
import sys

import pytest

from poisson_tf import cycles

GOLDEN = {
    ("half_v", 2): [0, 1], ("half_v", 3): [0, 1, 2], ("half_v", 4): [0, 1, 2, 3],
    ("v", 2): [1, 0, 1], ("v", 3): [2, 1, 0, 1, 2], ("v", 4): [3, 2, 1, 0, 1, 2, 3],
    ("w", 2): [1, 0, 1], ("w", 3): [2, 1, 0, 1, 0, 1, 2],
    ("w", 4): [3, 2, 1, 0, 1, 0, 1, 2, 1, 0, 1, 0, 1, 2, 3],
    ("f", 2): [1, 0, 1], ("f", 3): [2, 1, 0, 1, 0, 1, 2],
    ("f", 4): [3, 2, 1, 0, 1, 0, 1, 2, 1, 0, 1, 2, 3],
    ("single", 2): [1], ("single", 3): [2], ("single", 4): [3],
}


@pytest.mark.parametrize("cycle, levels", sorted(GOLDEN))
def test_golden_cycles(cycle, levels):
    assert cycles.cycle_levels(cycle, levels) == GOLDEN[(cycle, levels)]


def test_schedule_uses_resolutions_epochs_and_keeps_each_cycle_repetition():
    visits = cycles.schedule("v", [16, 32, 64], epochs_per_visit=[3, 2, 1], num_cycles=2)
    assert [(v.resolution, v.epochs) for v in visits] == [
        (64, 1), (32, 2), (16, 3), (32, 2), (64, 1), (64, 1), (32, 2), (16, 3), (32, 2), (64, 1)]
    plan = cycles.EpochPlan.of(visits)
    assert plan.num_epochs == 18 and plan.resolutions == [16, 32, 64]
    assert plan.epoch_resolutions()[:6] == [64, 32, 32, 16, 16, 16]
    assert [plan.is_visit_end(e) for e in range(4)] == [True, False, True, False]
    single = cycles.schedule("single", [16, 32], epochs_per_visit=2, num_cycles=3)
    assert [(v.resolution, v.epochs) for v in single] == [(32, 2)] * 3
    assert cycles.EpochPlan.of(single).is_visit_end(1) and not cycles.EpochPlan.of(single).is_visit_end(2)


def test_epoch_plan_tables_are_computed_once_and_handed_out_as_copies():
    plan = cycles.EpochPlan.of(cycles.build_schedule("16:2,32:1,16:1", [8]))
    assert plan.visit_of_epoch() == [0, 0, 1, 2]
    assert plan.epoch_resolutions() == [16, 16, 32, 16] and plan.epoch_levels() == [0, 0, 1, 0]
    assert [plan.is_visit_end(e) for e in range(4)] == [False, True, True, True]
    assert plan.num_epochs == 4 and plan.resolutions == [16, 32]
    plan.epoch_resolutions().append(64)  # a caller's copy: the plan's own table is unchanged
    assert plan.epoch_resolutions() == [16, 16, 32, 16]
    assert plan == cycles.EpochPlan.of(plan.visits) and hash(plan) == hash(cycles.EpochPlan.of(plan.visits))


def test_spec_string():
    visits = cycles.build_schedule("16:4,32:2,64:1,32:1", [8])
    assert [(v.level, v.resolution, v.epochs) for v in visits] == [(0, 16, 4), (1, 32, 2), (2, 64, 1), (1, 32, 1)]


@pytest.mark.parametrize("call, message", [
    (lambda: cycles.schedule("x", [16, 32]), "unknown cycle 'x'; valid cycles"),
    (lambda: cycles.schedule("v", [32, 16]), "strictly increasing"),
    (lambda: cycles.schedule("v", [16, 16]), "strictly increasing"),
    (lambda: cycles.schedule("v", [16, 32], epochs_per_visit=[1]), "one per level"),
    (lambda: cycles.schedule("v", [16, 32], epochs_per_visit=0), "epochs per visit"),
    (lambda: cycles.parse_spec("16-4,32"), "cycle spec must look like"),
    (lambda: cycles.parse_spec("16:0"), "must be >= 1"),
])
def test_bad_schedules_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_schedules_import_no_tensorflow():
    import subprocess
    code = "import sys, poisson_tf.cycles; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
