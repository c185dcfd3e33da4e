"""The `claims` table (one row per claim of the CGAR paper, tested) and the `halting` table (ACT inference).

Claims (arXiv 2511.08653 abstract and README, spec §3.2): speedups 1.71x (CGAR), 2.26x (PDC alone), 1.61x (HSW
alone), each tested two ways: for the same number of optimizer steps (what the paper's wall-clock ratio is) and
at equal accuracy (time to each target of cgar.report.time_to_target); accuracies 86.65% (TRM baseline), 86.02%
(CGAR), 85.47% (PDC alone), for the final model (eval.json) and the best-by-validation snapshot (eval_best.json);
the 41.4% FLOPs reduction of PDC (in the paper's effective-depth accounting and in full fwd+bwd FLOPs); the 40%
gradient-variance reduction of HSW (grad_stats.jsonl `variance_reduction`, mean over a run's measurements); 100%
halting accuracy and 11% fewer reasoning steps of CGAR models (eval_act.json: ACT inference on the full test
set, halting accuracy as cgar.eval_metrics.HALTING_ACCURACY_DEFINITION, steps vs the baseline's).

Experiments are matched to a claim by their components (run_config pdc.enabled / hsw.enabled), whatever they are
called; an experiment matching a claim gets its own row. "Ours" is the mean over seeds with a 95% t-interval
(paired by seed where the claim is relative to the baseline); "CI contains paper value" is yes/no with >= 2
seeds (the paper's value read as the interval its rounding allows, see `contains`) and "n.a." otherwise (no
interval from one seed, or no data: n = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from cgar.report.tables import Column, Stat, Table, column, experiments_in_order, paired, per_experiment, \
    reduction, speedup
from cgar.report.time_to_target import speedup_at_target

# component flags (pdc.enabled, hsw.enabled) of the paper's variants
CGAR, PDC_ONLY, HSW_ONLY, TRM = (True, True), (True, False), (False, True), (False, False)


@dataclass(frozen=True)
class Claim:
    text: str
    variants: tuple[tuple[bool, bool], ...]  # experiments with these component flags are tested
    paper: float  # in the units of `measure` (fractions for percentages)
    precision: float  # unit of the paper's last reported digit (0.01 for "1.71x", 0.0001 for "86.65%")
    measure: Callable[[pd.DataFrame, str, str], Stat]  # (summary, experiment, baseline) -> Stat over seeds
    scale: float = 1.0  # display: value * scale
    digits: int = 2
    unit: str = ""


def of_column(col: str) -> Callable[[pd.DataFrame, str, str], Stat]:
    return lambda summary, exp, baseline: Stat.of(summary.loc[summary.exp == exp, col])


def vs_baseline(col: str, fn) -> Callable[[pd.DataFrame, str, str], Stat]:
    return lambda summary, exp, baseline: paired(summary, exp, baseline, col, fn)


def paper_claims(ttt: pd.DataFrame) -> list[Claim]:
    """Every claim, with one equal-accuracy speedup row per target present in the time-to-target frame."""
    claims = []
    for flags, name, value in ((CGAR, "CGAR", 1.71), (PDC_ONLY, "PDC alone", 2.26), (HSW_ONLY, "HSW alone", 1.61)):
        claims.append(Claim(f"{name}: training speedup, same steps", (flags,), value, 0.01,
                            vs_baseline("train_hours", speedup), unit="×"))
        for target in dict.fromkeys(ttt.target):
            claims.append(Claim(f"{name}: training speedup at equal accuracy ({target})", (flags,), value, 0.01,
                                lambda s, e, b, t=target: speedup_at_target(ttt, t, e, b), unit="×"))
    for flags, name, value in ((TRM, "TRM baseline", 0.8665), (CGAR, "CGAR", 0.8602), (PDC_ONLY, "PDC alone", 0.8547)):
        claims.append(Claim(f"{name}: test exact accuracy, final model", (flags,), value, 1e-4,
                            of_column("exact_accuracy"), 100, unit="%"))
        claims.append(Claim(f"{name}: test exact accuracy, best-by-val model", (flags,), value, 1e-4,
                            of_column("best_exact_accuracy"), 100, unit="%"))
    claims += [
        Claim("PDC: FLOPs reduction (effective-depth accounting)", (PDC_ONLY, CGAR), 0.414, 1e-3,
              of_column("fwd_depth_reduction"), 100, 1, "%"),
        Claim("PDC: FLOPs reduction (fwd+bwd training FLOPs vs baseline)", (PDC_ONLY, CGAR), 0.414, 1e-3,
              vs_baseline("train_flops", reduction), 100, 1, "%"),
        Claim("HSW: gradient variance reduction", (HSW_ONLY, CGAR), 0.40, 0.01,
              of_column("grad_variance_reduction"), 100, 1, "%"),
        Claim("CGAR: halting accuracy (ACT inference)", (CGAR,), 1.00, 0.01,
              of_column("actrun_halting_accuracy"), 100, 1, "%"),
        Claim("CGAR: fewer reasoning steps than baseline (ACT inference)", (CGAR,), 0.11, 0.01,
              vs_baseline("actrun_mean_steps", reduction), 100, 1, "%"),
    ]
    return claims


def contains(stat: Stat, value: float, precision: float) -> str:
    """Whether the 95% CI meets the paper's value, read as the interval its rounding allows (value +- precision/2:
    "41.4%" is anything in [41.35, 41.45)), so a zero-width CI at 41.43% is not a "no"."""
    if stat.n < 2 or not math.isfinite(stat.ci95):
        return "n.a."
    half = precision / 2
    return "yes" if stat.mean - stat.ci95 <= value + half and value - half <= stat.mean + stat.ci95 else "no"


def claims_table(summary: pd.DataFrame, ttt: pd.DataFrame, baseline: str) -> Table:
    flags = summary.groupby("exp", sort=False)[["pdc_enabled", "hsw_enabled"]].first().astype(bool)
    exps = experiments_in_order(summary)
    data, display = [], []
    for claim in paper_claims(ttt):
        for exp in exps:
            if (bool(flags.loc[exp, "pdc_enabled"]), bool(flags.loc[exp, "hsw_enabled"])) not in claim.variants:
                continue
            stat = claim.measure(summary, exp, baseline)
            verdict = contains(stat, claim.paper, claim.precision)
            data.append({"claim": claim.text, "experiment": exp, "paper_value": claim.paper, "ours_mean": stat.mean,
                         "ours_ci95": stat.ci95, "n": stat.n, "ci_contains_paper": verdict})
            paper = f"{claim.paper * claim.scale:.{claim.digits}f}{claim.unit}"
            display.append({"Claim": claim.text, "Experiment": exp, "Paper": paper,
                            "Ours (mean ± 95% CI)": stat.text(claim.scale, claim.digits), "n": stat.n,
                            "CI contains paper": verdict})
    data_cols = ["claim", "experiment", "paper_value", "ours_mean", "ours_ci95", "n", "ci_contains_paper"]
    return Table("claims", f"The paper's claims against ours (relative claims vs {baseline}, paired by seed)",
                 pd.DataFrame(data, columns=data_cols),
                 pd.DataFrame(display, columns=["Claim", "Experiment", "Paper", "Ours (mean ± 95% CI)", "n",
                                                "CI contains paper"]))


def halting_table(summary: pd.DataFrame, baseline: str) -> Table:
    """ACT inference (eval_act.json) per experiment; accuracy at the halt against all S steps (eval.json)."""
    s = summary.assign(
        # puzzles that halted on q_halt > 0 and were right there; 0 when none halted (precision undefined)
        actrun_halted_and_correct=summary.actrun_halted_by_q * summary.actrun_halt_precision.fillna(0.0),
        halt_minus_full=summary.actrun_exact_accuracy - summary.exact_accuracy)
    cols = [
        column("actrun_mean_steps", "Mean halt steps"),
        Column("steps_reduction", "Step red. (%)",
               lambda runs, exp: paired(s, exp, baseline, "actrun_mean_steps", reduction), 100, 1),
        column("actrun_halting_accuracy", "Halting acc. (%)", 100, 1),
        column("actrun_halted_and_correct", "Halted & correct (%)", 100, 1),
        column("actrun_exact_accuracy", "Acc. at halt (%)", 100),
        column("exact_accuracy", "Acc. all steps (%)", 100),
        column("halt_minus_full", "Δ halt − all (pp)", 100),
    ]
    return per_experiment("halting", f"ACT inference on the test set (halt at the first q_halt > 0; step reduction "
                          f"vs {baseline}, paired by seed)", s, experiments_in_order(s), cols)
