"""Time-to-target on hand-made eval curves, the targets, and the claims' CI check (cgar.report.time_to_target,
cgar.report.claims)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cgar.report.claims import contains
from cgar.report.tables import Stat
from cgar.report.time_to_target import Target, targets, time_to_target

# accuracy 0.2 -> 0.6 -> 0.8 at steps 100, 200, 300; wall-clock 10 s / step, FLOPs 1e9 / step (half of it fwd)
CURVE = pd.DataFrame({"step": [100, 200, 300], "train_wall_s": [1000.0, 2000.0, 3000.0],
                      "flops": [1e11, 2e11, 3e11], "flops_fwd_effective": [5e10, 1e11, 1.5e11],
                      "test_exact_accuracy": [0.2, 0.6, 0.8]})


def test_crossing_is_interpolated():
    t = time_to_target(CURVE, 0.5)  # (0.5 - 0.2) / (0.6 - 0.2) = 3/4 of the way from step 100 to 200
    assert t.reached
    assert t.step == pytest.approx(175.0) and t.train_wall_s == pytest.approx(1750.0)
    assert t.flops == pytest.approx(1.75e11) and t.flops_fwd_effective == pytest.approx(8.75e10)
    t = time_to_target(CURVE, 0.7)  # halfway between steps 200 and 300
    assert t.step == pytest.approx(250.0) and t.train_wall_s == pytest.approx(2500.0)


def test_never_reaching_is_a_value():
    t = time_to_target(CURVE, 0.81)
    assert not t.reached
    assert all(math.isnan(v) for v in (t.step, t.train_wall_s, t.flops, t.flops_fwd_effective))


def test_reached_at_the_first_point_is_that_point():
    for target in (0.1, 0.2):  # below and exactly at the first point
        t = time_to_target(CURVE, target)
        assert t.reached and t.step == 100 and t.train_wall_s == 1000.0 and t.flops == 1e11


def test_exact_hit_is_the_point_itself():
    t = time_to_target(CURVE, 0.6)
    assert t.reached and t.step == 200 and t.train_wall_s == 2000.0 and t.flops_fwd_effective == 1e11


def test_first_crossing_wins_over_a_later_one():
    dip = CURVE.assign(test_exact_accuracy=[0.2, 0.6, 0.4])  # reaches 0.5, drops below, never comes back
    assert time_to_target(dip, 0.5).step == pytest.approx(175.0)
    nan_first = CURVE.assign(test_exact_accuracy=[float("nan"), 0.6, 0.8])  # an undefined point never reaches
    assert time_to_target(nan_first, 0.5).step == 200


def test_targets_absolute_then_fractions_of_the_baseline():
    summary = pd.DataFrame({"exp": ["baseline", "baseline", "cgar"], "exact_accuracy": [0.8, 0.84, 0.5]})
    got = targets(summary, "baseline", [0.5], [0.95, 0.99])
    assert [t.name for t in got] == ["50% abs.", "95% of baseline", "99% of baseline"]
    assert [t.accuracy for t in got] == pytest.approx([0.5, 0.95 * 0.82, 0.99 * 0.82])
    zero = pd.DataFrame({"exp": ["baseline"], "exact_accuracy": [0.0]})
    assert targets(zero, "baseline", [], [0.95]) == []  # 95% of 0: every curve "reaches" it, so it is dropped
    assert targets(zero, "baseline", [0.3], [0.95]) == [Target("30% abs.", 0.3)]


def test_ci_contains_the_rounded_paper_value():
    # 12.706 * sd / sqrt(2) for values 1.6, 1.8: sd = 0.1414 -> half-width 1.27
    assert contains(Stat.of([1.6, 1.8]), 1.71, 0.01) == "yes"
    assert contains(Stat.of([0.25, 0.25]), 0.11, 0.01) == "no"
    assert contains(Stat.of([0.41428, 0.41428]), 0.414, 1e-3) == "yes"  # 41.4% stands for [41.35, 41.45)
    assert contains(Stat.of([0.4146, 0.4146]), 0.414, 1e-3) == "no"
    assert contains(Stat.of([1.9]), 1.71, 0.01) == "n.a."  # one seed: no interval
    assert contains(Stat.of([]), 1.71, 0.01) == "n.a."
