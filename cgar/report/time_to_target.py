"""Speedup at equal accuracy: when each run's eval curve first reaches a target test exact accuracy.

A fixed-step speedup (baseline hours / variant hours for the same number of optimizer steps) is true by
construction for PDC, which does fewer FLOPs per step. The paper's question is whether a variant gets *as good*
sooner. So for each run and target accuracy a, `time_to_target` reads the in-training eval curve
(eval_curve.jsonl: test exact accuracy of the EMA weights every train.eval_every steps) and returns the training
wall-clock (evaluation time excluded), the optimizer step and the cumulative FLOPs (both accountings) at which the
curve first reaches a, interpolating linearly between the two evaluation points around the crossing. A curve
that never reaches a gives NaN with reached=False: a value of the table, not an error. A curve that starts at
or above a gives its first point (the time before the first evaluation is not observed, so no earlier crossing
is invented).

Targets (`targets`): the configured absolute accuracies (report.targets) plus fractions of the baseline's mean
final full-test exact accuracy (report.baseline_fractions, default 0.95 and 0.99). A target of 0 or less says
nothing (every curve reaches it at its first point), so it is left out.

Speedup at equal accuracy = baseline time-to-target / variant time-to-target, paired by seed (cgar.report.tables
`paired`); a seed where either run does not reach the target does not enter the mean, and the table says how
many runs reached it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cgar.report.collect import Run
from cgar.report.tables import Column, Stat, Table, paired, per_experiment, speedup

# time-to-target quantities: column of the eval curve -> field of TimeToTarget
MEASURES = ("train_wall_s", "step", "flops", "flops_fwd_effective")
ACCURACY = "test_exact_accuracy"  # the curve column a target is an accuracy of


@dataclass(frozen=True)
class TimeToTarget:
    reached: bool
    train_wall_s: float  # NaN when not reached
    step: float  # interpolated, so generally not an integer
    flops: float
    flops_fwd_effective: float


@dataclass(frozen=True)
class Target:
    name: str  # e.g. "50% abs." or "95% of baseline"
    accuracy: float  # fraction in (0, 1]


def time_to_target(curve: pd.DataFrame, target: float, accuracy: str = ACCURACY) -> TimeToTarget:
    """First crossing of `target` by curve[accuracy] (rows in step order), each of MEASURES interpolated linearly
    between the last point below the target and the first point at or above it. Points with an undefined
    accuracy (NaN) are skipped, as if not evaluated."""
    curve = curve[curve[accuracy].notna()]
    acc = curve[accuracy].to_numpy(dtype=float)
    hit = np.flatnonzero(acc >= target)
    if len(hit) == 0:
        return TimeToTarget(False, *(math.nan,) * len(MEASURES))
    i = int(hit[0])
    values = {m: curve[m].to_numpy(dtype=float) for m in MEASURES}
    if i == 0:
        return TimeToTarget(True, *(float(values[m][0]) for m in MEASURES))
    # acc[i-1] < target <= acc[i], so the denominator is positive; an exact hit gives frac = 1 (point i)
    frac = (target - acc[i - 1]) / (acc[i] - acc[i - 1])
    return TimeToTarget(True, *(float(values[m][i - 1] + frac * (values[m][i] - values[m][i - 1]))
                                for m in MEASURES))


def targets(summary: pd.DataFrame, baseline: str, absolute: list[float], fractions: list[float]) -> list[Target]:
    """Absolute targets, then fractions of the baseline's mean final exact accuracy (eval.json, full test set);
    targets <= 0 are dropped (see the module docstring)."""
    base = float(summary.loc[summary.exp == baseline, "exact_accuracy"].mean())
    out = [Target(f"{100 * a:g}% abs.", float(a)) for a in absolute]
    out += [Target(f"{100 * f:g}% of {baseline}", f * base) for f in fractions]
    return [t for t in out if t.accuracy > 0]


def time_to_target_frame(runs: list[Run], target_list: list[Target]) -> pd.DataFrame:
    """Long frame: one row per (target, run): target, target_accuracy, exp, seed, has_curve, reached, MEASURES.
    A run without an eval curve has has_curve=False and NaN measures."""
    rows = []
    for t in target_list:
        for r in runs:
            has = r.eval_curve is not None and len(r.eval_curve) > 0
            ttt = time_to_target(r.eval_curve, t.accuracy) if has else TimeToTarget(False, *(math.nan,) * 4)
            rows.append({"target": t.name, "target_accuracy": t.accuracy, "exp": r.exp, "seed": r.seed,
                         "has_curve": has, "reached": ttt.reached,
                         **{m: getattr(ttt, m) for m in MEASURES}})
    return pd.DataFrame(rows, columns=["target", "target_accuracy", "exp", "seed", "has_curve", "reached",
                                       *MEASURES])


def speedup_at_target(frame: pd.DataFrame, target: str, exp: str, baseline: str,
                      measure: str = "train_wall_s") -> Stat:
    """Baseline time-to-target / variant time-to-target, paired by seed (seeds where both reached it)."""
    return paired(frame[frame.target == target], exp, baseline, measure, speedup)


def _columns(frame: pd.DataFrame, target: str, baseline: str) -> list[Column]:
    return [
        Column("reached", "Reached", lambda r, e: Stat(float(r.reached.sum()), math.nan, len(r)), 1, 0),
        Column("hours", "Time to target (h)", lambda r, e: Stat.of(r.train_wall_s / 3600), 1, 3),
        Column("step", "Steps", lambda r, e: Stat.of(r.step), 1, 0),
        Column("flops", "Train FLOPs (1e12)", lambda r, e: Stat.of(r.flops), 1e-12, 2),
        Column("flops_fwd_effective", "Fwd eff. FLOPs (1e12)", lambda r, e: Stat.of(r.flops_fwd_effective), 1e-12, 2),
        Column("speedup", "Speedup (×)", lambda r, e: speedup_at_target(frame, target, e, baseline)),
        Column("flops_ratio", "FLOPs ratio (×)", lambda r, e: speedup_at_target(frame, target, e, baseline, "flops")),
    ]


def time_to_target_table(frame: pd.DataFrame, baseline: str, exps: list[str]) -> Table:
    """Rows = (target, experiment): runs that reached it, hours / steps / FLOPs to it, speedups vs baseline."""
    title = (f"Time to a target test exact accuracy (eval curve, interpolated; speedups = {baseline} / experiment,"
             " paired by seed over the seeds where both reached it)")
    parts = []
    for target, rows in frame.groupby("target", sort=False):
        acc = float(rows.target_accuracy.iloc[0])
        t = per_experiment("time_to_target", title, rows, exps, _columns(frame, target, baseline),
                           lead=lambda e, t=target, a=acc: {"target": t, "target_acc": f"{100 * a:.2f}"})
        t.display["Reached"] = [f"{int(k)}/{n}" for k, n in zip(t.data.reached_mean, t.data.n_seeds)]
        parts.append(t)
    if not parts:  # no positive target (a baseline at 0% accuracy and no absolute targets): header only
        empty = per_experiment("time_to_target", title, frame.iloc[:0], [], [])
        cols = _columns(frame, "", baseline)
        data_cols = ["experiment", "target", "target_acc", "n_seeds", *(f"{c.name}_{f}" for c in cols
                                                                        for f in ("mean", "ci95"))]
        labels = ["Experiment", "Target", "Target acc. (%)", "Seeds", *(c.label for c in cols)]
        return Table("time_to_target", title, empty.data.reindex(columns=data_cols),
                     empty.display.reindex(columns=labels))
    return Table("time_to_target", title, pd.concat([p.data for p in parts], ignore_index=True),
                 pd.concat([p.display for p in parts], ignore_index=True))
