"""Figures that test the paper's claims: in-training eval curves, time to target, gradient norms and variance per
supervision step (HSW's premise), and one test puzzle through the recursion.

Each builder takes the runs and the report options (baseline, targets, baseline_fractions) and returns a figure;
a run without the file a figure needs (an eval curve with train.eval_every = 0, say) is left out of it, and a
figure with nothing to draw says so in its middle rather than failing, so cached runs of older code still render.
Seed means with a band: the band is the 95% t-interval over seeds at each evaluation step (none for one seed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cgar.report.collect import Run, summary_frame
from cgar.report.plotting import LINESTYLES, by_exp, colors, plt, start
from cgar.report.tables import Stat, experiments_in_order
from cgar.report.time_to_target import speedup_at_target, time_to_target_frame
from cgar.report.time_to_target import targets as targets_for
from cgar.sudoku.grid import shape_of


def no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def legend_or_note(ax, drawn: bool, empty: str, fontsize: int = 8) -> None:
    """A legend where something was drawn, else the reason there is nothing."""
    if drawn:
        ax.legend(fontsize=fontsize)
    else:
        no_data(ax, empty)


def mean_band(frames: list[pd.DataFrame], x: str, y: str) -> pd.DataFrame:
    """Per step over seeds: mean of x, mean of y and the 95% half-width of y (NaN for one seed)."""
    long = pd.concat(frames)
    rows = [{"step": step, x: g[x].mean(), "mean": (s := Stat.of(g[y])).mean, "ci": s.ci95}
            for step, g in long.groupby("step")]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(["step", x, "mean", "ci"])))


# ----------------------------------------------------------------------------- accuracy during training

EVAL_CURVE_X = (("train_wall_s", "training wall-clock (hours, evaluation excluded)", 1 / 3600),
                ("flops", "cumulative training FLOPs", 1.0), ("step", "optimizer step", 1.0))


def eval_curves(runs: list[Run], **options) -> plt.Figure:
    groups = by_exp(runs)
    col = colors(list(groups))
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), squeeze=False)
    drawn = False
    for row, (ycol, ylabel) in enumerate((("test_exact_accuracy", "test exact accuracy (%)"),
                                          ("test_token_accuracy", "test token accuracy (%)"))):
        for ax, (xcol, xlabel, xscale) in zip(axes[row], EVAL_CURVE_X):
            for exp, rs in groups.items():
                curves = [r.eval_curve for r in rs if r.eval_curve is not None and len(r.eval_curve)]
                if not curves:
                    continue
                drawn = True
                for c in curves:
                    ax.plot(c[xcol] * xscale, c[ycol] * 100, color=col[exp], lw=0.6, alpha=0.3)
                m = mean_band(curves, xcol, ycol)
                ax.plot(m[xcol] * xscale, m["mean"] * 100, color=col[exp], lw=1.8, marker="o", ms=3,
                        label=f"{exp} (n={len(curves)})")
                if m["ci"].notna().any():
                    lo, hi = ((m["mean"] + sign * m["ci"]).clip(0, 1) * 100 for sign in (-1, 1))  # accuracy bounds
                    ax.fill_between(m[xcol] * xscale, lo, hi, color=col[exp], alpha=0.2)
            ax.set(xlabel=xlabel, ylabel=ylabel)
    legend_or_note(axes[0][0], drawn, "no eval curves (train.eval_every = 0)")
    fig.suptitle("Test accuracy during training (EMA weights, full depth, fixed test subsample; band = 95% CI)")
    fig.tight_layout()
    return fig


def time_to_target(runs: list[Run], baseline: str, targets: list[float], baseline_fractions: list[float],
                   **_) -> plt.Figure:
    summary = summary_frame(runs)
    exps = experiments_in_order(summary)
    col = colors(exps)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    target_list = (targets_for(summary, baseline, list(targets), list(baseline_fractions))
                   if baseline in set(summary.exp) else [])
    frame = time_to_target_frame(runs, target_list)
    width = 0.8 / max(len(exps), 1)
    for i, exp in enumerate(exps):
        x = np.arange(len(target_list)) + (i - (len(exps) - 1) / 2) * width
        hours = [Stat.of(frame[(frame.target == t.name) & (frame.exp == exp)].train_wall_s / 3600) for t in target_list]
        ups = [speedup_at_target(frame, t.name, exp, baseline) for t in target_list]
        for ax, stats in ((axes[0], hours), (axes[1], ups)):
            means = np.array([s.mean for s in stats])
            ax.bar(x, np.nan_to_num(means), width, yerr=np.nan_to_num([s.ci95 for s in stats]), capsize=3,
                   color=col[exp], label=exp)
            for xi, s in zip(x, stats):
                if s.n == 0:  # not reached by any run (or, for the speedup, by no pair of runs)
                    ax.text(xi, 0, "n.r.", ha="center", va="bottom", fontsize=7, rotation=90)
    names = [f"{t.name}\n({100 * t.accuracy:.1f}%)" for t in target_list]
    for ax in axes:
        ax.set_xticks(range(len(target_list)), names)
    axes[0].set(ylabel="training hours to target (mean ± 95% CI)", title="Time to target accuracy")
    axes[1].axhline(1.0, color="gray", ls="--", lw=1)
    axes[1].set(ylabel=f"speedup vs {baseline} (paired by seed)", title="Speedup at equal accuracy (n.r.: not reached)")
    legend_or_note(axes[0], bool(target_list), "no target > 0 (baseline accuracy 0 and no report.targets)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- gradients (HSW's premise)

def grad_norm_by_step(runs: list[Run], **_) -> plt.Figure:
    """Mean gradient norm of the unweighted loss of the slots at each supervision step, per experiment and PDC
    stage (measurements and seeds averaged; steps with no slot left out)."""
    groups, col, fig, ax = start(runs, 1, (9, 5))
    drawn = False
    for exp, rs in groups.items():
        stats = [r.grad_stats for r in rs if r.grad_stats is not None and len(r.grad_stats)]
        if not stats:
            continue
        long = pd.concat(stats)
        for k, (stage, g) in enumerate(long.groupby("stage")):
            grid = np.stack(g.grad_norm_by_step.to_list())  # [measurements, S], NaN where no slot
            seen = np.isfinite(grid).sum(0)
            norms = np.where(seen > 0, np.nansum(grid, 0) / np.maximum(seen, 1), np.nan)
            t = np.arange(1, len(norms) + 1)
            T, n = int(g["T"].iloc[0]), int(g["n"].iloc[0])
            ax.plot(t[np.isfinite(norms)], norms[np.isfinite(norms)], color=col[exp], marker="o", ms=3,
                    ls=LINESTYLES[k % len(LINESTYLES)], label=f"{exp}, stage {int(stage)} (T={T}, n={n})")
            drawn = True
    ax.set(xlabel="supervision step t", ylabel="‖∇ unweighted loss of the slots at step t‖ (per slot)",
           yscale="log" if drawn else "linear",
           title="Gradient norm per supervision step (HSW's premise: it decays with t)")
    ax.xaxis.set_major_locator(plt.matplotlib.ticker.MaxNLocator(integer=True))  # t is a step number
    legend_or_note(ax, drawn, "no gradient statistics (train.grad_stats_every = 0)", 7)
    return fig


def grad_variance(runs: list[Run], **_) -> plt.Figure:
    groups, col, fig, axes = start(runs, 2, (14, 4.8))
    exps = list(groups)
    reductions = {e: Stat.of([r.grad_stats.variance_reduction.mean() for r in groups[e]
                              if r.grad_stats is not None and len(r.grad_stats)]) for e in exps}
    means = [reductions[e].mean for e in exps]
    axes[0].bar(range(len(exps)), np.nan_to_num(means) * 100, yerr=np.nan_to_num([reductions[e].ci95 for e in exps]) * 100,
                capsize=4, color=[col[e] for e in exps])
    axes[0].axhline(40, color="gray", ls="--", lw=1, label="paper: 40%")
    axes[0].set_xticks(range(len(exps)), [f"{e}\n(n={reductions[e].n})" for e in exps])
    axes[0].set(ylabel="variance reduction (%, mean ± 95% CI over seeds)",
                title="1 − Var_rel(weighted) / Var_rel(uniform) of the minibatch gradient")
    axes[0].legend(fontsize=8)
    drawn = False
    for i, (exp, rs) in enumerate(groups.items()):
        stats = [r.grad_stats for r in rs if r.grad_stats is not None and len(r.grad_stats)]
        if not stats:
            continue
        drawn = True
        m = pd.concat(stats).groupby("step", as_index=False)[["var_weighted_rel", "var_unweighted_rel"]].mean()
        axes[1].plot(m.step, m.var_weighted_rel, color=col[exp], lw=1.6, label=f"{exp}: run's weights")
        axes[1].plot(m.step, m.var_unweighted_rel, color=col[exp], lw=1.0, ls="--", label=f"{exp}: uniform")
    axes[1].set(xlabel="optimizer step", ylabel="Var / ‖mean gradient‖²", yscale="log" if drawn else "linear",
                title="Relative variance across fixed chunks of the batch (seed mean)")
    legend_or_note(axes[1], drawn, "no gradient statistics (train.grad_stats_every = 0)", 7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- one puzzle through the recursion

def _grid(ax, trace: dict, k: int) -> None:
    """Step k's prediction: wrong cells red (givens too: the model predicts every cell and all are scored), right
    givens grey (digits in bold), cells changed since step k-1 outlined in blue; box lines of the trace's grid."""
    shape = shape_of(len(trace["puzzle"]))  # 9x9, 6x6 (2x3 boxes) or 4x4
    n = shape.n
    given = np.array(trace["puzzle"]) > 0
    pred, sol = np.array(trace["predictions"][k]), np.array(trace["solution"])
    prev = np.array(trace["predictions"][k - 1]) if k else pred
    shade = np.where(pred != sol, 0.0, np.where(given, 0.85, 1.0)).reshape(n, n)  # red / grey / white
    ax.imshow(shade, cmap=plt.matplotlib.colors.ListedColormap(["#f4a6a6", "#d9d9d9", "white"]),
              norm=plt.matplotlib.colors.BoundaryNorm([-0.5, 0.5, 0.9, 1.5], 3))
    for i in range(shape.cells):
        r, c = divmod(i, n)
        ax.text(c, r, str(pred[i]) if pred[i] else "·", ha="center", va="center", fontsize=5.5,
                weight="bold" if given[i] else "normal")
        if pred[i] != prev[i]:
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="#1f5fd6", lw=0.9))
    for j in range(0, n + 1, shape.box_rows):  # box lines: a band every box_rows rows, a stack every box_cols
        ax.axhline(j - 0.5, color="black", lw=0.8)
    for j in range(0, n + 1, shape.box_cols):
        ax.axvline(j - 0.5, color="black", lw=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_title(f"t={k + 1}: {trace['cells_correct'][k]}/{shape.cells}", fontsize=7)


def puzzle_trace(runs: list[Run], **_) -> plt.Figure:
    """One row per experiment (its first run with a trace.json), one grid (9x9, 6x6, ...) per supervision step."""
    traced = {}
    for r in runs:
        if r.trace is not None and r.exp not in traced:
            traced[r.exp] = r
    if not traced:
        fig, ax = plt.subplots(figsize=(6, 2))
        no_data(ax, "no trace.json (python -m cgar.trace)")
        ax.set_axis_off()
        return fig
    steps = max(len(r.trace["predictions"]) for r in traced.values())
    fig, axes = plt.subplots(len(traced), steps, figsize=(1.25 * steps, 1.45 * len(traced) + 0.6), squeeze=False)
    for row, (exp, r) in enumerate(traced.items()):
        for k in range(steps):
            if k < len(r.trace["predictions"]):
                _grid(axes[row][k], r.trace, k)
            else:
                axes[row][k].set_axis_off()
        axes[row][0].set_ylabel(f"{exp}\nseed {r.seed}", fontsize=8)
    index = next(iter(traced.values())).trace.get("index")
    fig.suptitle(f"Test puzzle {index} after each supervision step (bold: given; red: wrong; grey: given and "
                 "right; blue box: changed since the previous step)", fontsize=9)
    fig.tight_layout()
    return fig


ANALYSIS_FIGURES = {"eval_curves": eval_curves, "time_to_target": time_to_target,
                    "grad_norm_by_step": grad_norm_by_step, "grad_variance": grad_variance,
                    "puzzle_trace": puzzle_trace}
