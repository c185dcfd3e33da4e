"""Figures of the runs, each written as PNG and SVG (see cgar.report.FIGURES for the names).

One color per experiment throughout (in the order the runs were given). Where seeds are averaged, curves are
averaged per logged optimizer step (x and y alike), with each seed drawn as a thin line behind the mean, so the
spread stays visible without a distributional assumption.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch

from cgar.curriculum import effective_depth, hsw_scale_released, hsw_weights_paper
from cgar.report import DEFAULT_BASELINE, DEFAULT_BASELINE_FRACTIONS, FIGURES
from cgar.report.analysis_figures import ANALYSIS_FIGURES
from cgar.report.collect import Run, eval_by_step, eval_halting_histogram, summary_frame
from cgar.report.plotting import LINESTYLES, colors, plt, provenance, save, start
from cgar.report.tables import Stat, experiments_in_order

def seed_mean(runs: list[Run], cols: list[str]) -> pd.DataFrame:
    """Mean over seeds of `cols` at each logged step (steps logged by only some seeds use those seeds)."""
    cols = [c for c in dict.fromkeys(cols) if c != "step"]  # x may itself be the step
    frames = [r.metrics[["step", *cols]] for r in runs]
    return pd.concat(frames).groupby("step", as_index=False)[cols].mean()


# ----------------------------------------------------------------------------- training curves

CURVE_AXES = {  # figure name -> (x column, x label, x scale)
    "curves_vs_step": ("step", "optimizer step", 1.0),
    "curves_vs_time": ("wall_s", "training wall-clock (hours)", 1 / 3600),
    "curves_vs_flops": ("flops", "cumulative training FLOPs", 1.0),
}


def training_curves(runs: list[Run], name: str) -> plt.Figure:
    xcol, xlabel, xscale = CURVE_AXES[name]
    groups, col, fig, axes = start(runs, 2, (11, 4))
    panels = (("exact_accuracy", "train exact accuracy (%)", 100.0), ("loss_unweighted", "train loss (unweighted)", 1.0))
    for ax, (ycol, ylabel, yscale) in zip(axes, panels):
        for exp, rs in groups.items():
            for r in rs:
                ax.plot(r.metrics[xcol] * xscale, r.metrics[ycol] * yscale, color=col[exp], lw=0.6, alpha=0.3)
            m = seed_mean(rs, [xcol, ycol])
            ax.plot(m[xcol] * xscale, m[ycol] * yscale, color=col[exp], lw=1.8,
                    label=f"{exp} (mean of {len(rs)} seed{'s' * (len(rs) > 1)})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ycol == "loss_unweighted":
            ax.set_yscale("log")
    axes[0].legend(loc="best", fontsize=8)
    axes[0].set_title("Exact accuracy of puzzles halting in each logged window")
    axes[1].set_title("LM + 0.5 Q-halt loss (without HSW weights)")
    fig.suptitle(f"Training curves vs {xlabel.split(' (')[0]}")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- schedules

def depth_schedule(runs: list[Run]) -> plt.Figure:
    """T, n and effective depth T(n+1)·layers per logged step; seeds share the schedule, so the first is drawn."""
    groups, col, fig, axes = start(runs, 3, (14, 4))
    for i, (exp, rs) in enumerate(groups.items()):
        m, layers = rs[0].metrics, int(rs[0].config["model"]["n_layers"])
        depth = [effective_depth(int(t), int(n), layers) for t, n in zip(m["T"], m["n"])]
        style = dict(color=col[exp], ls=LINESTYLES[i % len(LINESTYLES)], drawstyle="steps-post", lw=1.6)
        axes[0].plot(m["step"], m["T"], label=exp, **style)
        axes[1].plot(m["step"], m["n"], label=exp, **style)
        axes[2].plot(m["step"], depth, label=f"{exp} (mean {np.mean(depth):.1f})", **style)
    for ax, label in zip(axes, ("T (H cycles)", "n (L cycles)", "effective depth T(n+1)·layers")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # T, n and depth are integers
        ax.legend(fontsize=8)
    axes[0].set_title("Outer recursions T")
    axes[1].set_title("Inner recursions n")
    axes[2].set_title("Layers per supervision step (mean over logged steps)")
    fig.suptitle("Recursion depth during training (PDC schedule)")
    fig.tight_layout()
    return fig


def hsw_weights(runs: list[Run], max_steps: int = 16) -> plt.Figure:
    """Paper weights lambda^(t-1)/Z and the released scalar, for every lambda in the runs, plus the logged weight."""
    decays = sorted({float(r.config["hsw"]["decay"]) for r in runs if r.config["hsw"]["enabled"]}) or [0.7]
    groups, col, fig, axes = start(runs, 3, (15, 4))
    t = np.arange(1, max_steps + 1)
    width = 0.8 / len(decays)
    k = np.linspace(0, max_steps, 16 * max_steps + 1)
    for i, lam in enumerate(decays):
        w = hsw_weights_paper(torch.as_tensor(t), lam, max_steps).numpy()
        shade = plt.cm.viridis(i / len(decays))  # not an experiment color: these are formulas, not runs
        axes[0].bar(t + (i - (len(decays) - 1) / 2) * width, w, width, color=shade,
                    label=f"λ={lam:g} (w1/w16 = {w[0] / w[-1]:.0f})")
        axes[1].plot(k, [hsw_scale_released(torch.tensor([x]), lam) for x in k], drawstyle="steps-post",
                     color=shade, label=f"decay={lam:g}")
    axes[0].axhline(1 / max_steps, color="gray", ls="--", lw=1, label=f"uniform 1/{max_steps}")
    axes[0].set(xlabel="supervision step t", ylabel="weight w_t", title="Paper mode: w_t = λ^(t-1) / Z")
    axes[1].set(xlabel="mean step count of the incoming carry", ylabel="loss scale",
                title="Released mode: decay^int(mean step), whole batch")
    for exp, rs in groups.items():
        if "hsw_weight" in rs[0].metrics:
            m = seed_mean(rs, ["hsw_weight"])
            axes[2].plot(m["step"], m["hsw_weight"], color=col[exp], label=exp)
    axes[2].set(xlabel="optimizer step", ylabel="mean weight over the batch", yscale="log",
                title="Logged HSW weight during training")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("Hierarchical Supervision Weighting")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- evaluation

def accuracy_by_step(runs: list[Run]) -> plt.Figure:
    groups, col, fig, ax = start(runs, 1, (7, 4.5))
    for exp, rs in groups.items():
        table = pd.concat([eval_by_step(r).assign(seed=r.seed) for r in rs])
        stats = [Stat.of(g.exact_accuracy) for _, g in table.groupby("step")]
        steps = sorted(table.step.unique())
        mean = np.array([s.mean for s in stats]) * 100
        ax.plot(steps, mean, marker="o", ms=3, color=col[exp], label=f"{exp} (n={len(rs)})")
        if len(rs) > 1:
            ci = np.array([s.ci95 for s in stats]) * 100
            ax.fill_between(steps, mean - ci, mean + ci, color=col[exp], alpha=0.2)
    ax.set(xlabel="supervision step", ylabel="test exact accuracy (%)",
           title="Test accuracy after each supervision step (full depth; band = 95% CI over seeds)")
    ax.legend()
    return fig


def halting_histogram(runs: list[Run]) -> plt.Figure:
    """Share of test puzzles halting at each step (first q_halt > 0), pooled over seeds; dashed = mean step."""
    groups, col, fig, ax = start(runs, 1, (9, 4.5))
    width = 0.8 / len(groups)
    for i, (exp, rs) in enumerate(groups.items()):
        hist = pd.concat([eval_halting_histogram(r) for r in rs], axis=1).fillna(0).sum(axis=1)
        share = hist / hist.sum() * 100
        ax.bar(share.index + (i - (len(groups) - 1) / 2) * width, share.values, width, color=col[exp], label=exp)
        ax.axvline(float((hist.index * hist).sum() / hist.sum()), color=col[exp], ls="--", lw=1)
    ax.set(xlabel="halting step (first step with q_halt > 0, else the last)", ylabel="share of test puzzles (%)",
           title="ACT halting steps on the test set (dashed: mean)")
    ax.set_xticks(range(1, int(max(ax.get_xlim()[1], 2))))
    ax.legend()
    return fig


def speed_accuracy(runs: list[Run]) -> plt.Figure:
    summary = summary_frame(runs)
    exps = experiments_in_order(summary)
    col = colors(exps)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for exp in exps:
        s = summary[summary.exp == exp]
        ax.scatter(s.train_hours, s.exact_accuracy * 100, color=col[exp], alpha=0.5, s=25)
        h, a = Stat.of(s.train_hours), Stat.of(s.exact_accuracy * 100)
        ax.errorbar(h.mean, a.mean, xerr=np.nan_to_num(h.ci95), yerr=np.nan_to_num(a.ci95), color=col[exp],
                    marker="D", ms=7, capsize=3, label=f"{exp} (mean ± 95% CI, n={len(s)})")
    ax.set(xlabel="training wall-clock (hours)", ylabel="test exact accuracy (%)",
           title="Training time vs accuracy (up-left is better; small dots = single runs)")
    ax.legend(fontsize=8)
    return fig


def make_figures(runs: list[Run], out_dir: str | Path, baseline: str = DEFAULT_BASELINE,
                 absolute_targets: tuple[float, ...] = (),
                 baseline_fractions: tuple[float, ...] = DEFAULT_BASELINE_FRACTIONS) -> list[Path]:
    """Every figure of FIGURES; the options reach the figures that use them (time-to-target) and every sidecar."""
    out_dir = Path(out_dir)
    options = {"baseline": baseline, "targets": list(absolute_targets), "baseline_fractions": list(baseline_fractions)}
    builders = {name: (lambda rs, n=name: training_curves(rs, n)) for name in CURVE_AXES}
    builders.update(depth_schedule=depth_schedule, hsw_weights=hsw_weights, accuracy_by_step=accuracy_by_step,
                    halting_histogram=halting_histogram, speed_accuracy=speed_accuracy)
    builders.update({name: (lambda rs, b=build: b(rs, **options)) for name, build in ANALYSIS_FIGURES.items()})
    assert set(builders) == set(FIGURES), "cgar.report.FIGURES and the builders here must agree"
    made_from = provenance(runs, options)
    return [p for name in FIGURES for p in save(builders[name](runs), out_dir, name, made_from)]
