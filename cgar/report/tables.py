"""The four result tables, each written as CSV (numbers), Markdown and LaTeX/booktabs (formatted text).

Statistics: every cell is the mean over seeds with a 95% confidence interval from the t-distribution
(half-width t_{0.975, n-1} * s / sqrt(n)); with one seed the cell shows the value and "n=1" and the CSV's ci95
is empty, since one run gives no spread to estimate. Comparisons with the baseline (speedup, FLOPs reduction,
accuracy delta, step reduction) are *paired by seed*: computed per seed against the baseline run with the same
seed, then averaged. Seeds share data order and initialization across experiments, so pairing removes that
shared variation; the CI is then the CI of the paired values. The baseline's own row shows "ref.".
The CSV holds `{stat}_mean` and `{stat}_ci95` (half-width) in raw units (fractions, hours, FLOPs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from cgar.io_utils import DataError, atomic_write_text
from cgar.report import DEFAULT_BASELINE, TABLE_FORMATS
from cgar.report.collect import Run, eval_groups

# The paper's reported numbers (spec §3.2), keyed by (PDC, HSW); None = not reported.
PAPER_CLAIMS = {
    (False, False): {"exact_accuracy": 0.8665, "speedup": 1.00},
    (True, False): {"exact_accuracy": 0.8547, "speedup": 2.26},
    (False, True): {"exact_accuracy": None, "speedup": 1.61},
    (True, True): {"exact_accuracy": 0.8602, "speedup": 1.71},
}


# ----------------------------------------------------------------------------- statistics

def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df, by the closed-form finite series (Abramowitz & Stegun 26.7.3/4).

    Written out because scipy is not a dependency; integer df is all a seed count needs.
    """
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        term, total = math.cos(theta), 0.0  # cos * (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...) up to cos^(df-2)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + s * total) if df > 1 else 2 / math.pi * theta
    term, total = 1.0, 0.0  # 1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided critical value t with P(|T| < t) = level, by bisection (12.706 for df=1, 2.776 for df=4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < level:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided_mass(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Stat:
    mean: float
    ci95: float  # half-width; NaN with fewer than 2 values
    n: int
    ref: bool = False  # the baseline compared with itself

    @classmethod
    def of(cls, values) -> "Stat":
        v = np.asarray([x for x in values if not pd.isna(x)], dtype=float)
        if len(v) == 0:
            return cls(float("nan"), float("nan"), 0)
        if len(v) == 1:
            return cls(float(v[0]), float("nan"), 1)
        return cls(float(v.mean()), t_quantile(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v)), len(v))

    def text(self, scale: float = 1.0, digits: int = 2) -> str:
        if self.ref:
            return "ref."
        if self.n == 0:
            return "–"
        value = f"{self.mean * scale:.{digits}f}"
        return f"{value} (n=1)" if self.n == 1 else f"{value} ± {self.ci95 * scale:.{digits}f}"


def paired(summary: pd.DataFrame, exp: str, baseline: str, col: str,
           fn: Callable[[float, float], float]) -> Stat:
    """fn(experiment value, baseline value) per seed present in both, then mean and CI over those seeds."""
    if exp == baseline:  # fn(x, x) is the identity value: speedup 1, reduction 0, difference 0
        return Stat(fn(1.0, 1.0), 0.0, int((summary.exp == baseline).sum()), ref=True)
    a = summary[summary.exp == exp].set_index("seed")[col]
    b = summary[summary.exp == baseline].set_index("seed")[col]
    seeds = a.index.intersection(b.index)
    return Stat.of([fn(a[s], b[s]) for s in seeds])


def speedup(x: float, base: float) -> float:
    return base / x


def reduction(x: float, base: float) -> float:
    return 1.0 - x / base


def difference(x: float, base: float) -> float:
    return x - base


# ----------------------------------------------------------------------------- table assembly

@dataclass
class Column:
    """One statistic: CSV columns {name}_mean/_ci95 and one formatted display column."""
    name: str
    label: str
    stat: Callable[[pd.DataFrame, str], Stat]  # (runs of this experiment, experiment name) -> Stat
    scale: float = 1.0
    digits: int = 2


@dataclass
class Table:
    name: str
    title: str
    data: pd.DataFrame  # numbers, for the CSV
    display: pd.DataFrame  # formatted text, for Markdown and LaTeX


_LABELS = {"experiment": "Experiment", "n_seeds": "Seeds", "pdc": "PDC", "hsw": "HSW",
           "paper_acc": "Paper acc. (%)", "paper_speedup": "Paper speedup (×)", "target": "Target",
           "target_acc": "Target acc. (%)"}


def experiments_in_order(summary: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(summary.exp))  # order of first appearance = the order the runs were given


def per_experiment(name: str, title: str, summary: pd.DataFrame, exps: list[str], columns: list[Column],
                   lead: Callable[[str], dict] = lambda e: {}) -> Table:
    """Rows = experiments; `lead` adds identity columns (same text in CSV and display)."""
    data, display = [], []
    for exp in exps:
        runs = summary[summary.exp == exp]
        base = {"experiment": exp, **lead(exp), "n_seeds": len(runs)}
        stats = {c.name: c.stat(runs, exp) for c in columns}
        data.append({**base, **{f"{k}_{f}": getattr(s, f) for k, s in stats.items() for f in ("mean", "ci95")}})
        display.append({**{_LABELS[k]: v for k, v in base.items()},
                        **{c.label: stats[c.name].text(c.scale, c.digits) for c in columns}})
    return Table(name, title, pd.DataFrame(data), pd.DataFrame(display))


def column(col: str, label: str, scale: float = 1.0, digits: int = 2) -> Column:
    return Column(col, label, lambda runs, exp: Stat.of(runs[col]), scale, digits)


def vs_baseline(summary: pd.DataFrame, baseline: str, name: str, col: str, fn, label: str,
                scale: float = 1.0, digits: int = 2) -> Column:
    return Column(name, label, lambda runs, exp: paired(summary, exp, baseline, col, fn), scale, digits)


def flops_unit(summary: pd.DataFrame) -> tuple[float, str]:
    peak = float(summary.train_flops.max())
    k = 3 * math.floor(math.log10(peak) / 3) if peak > 0 else 0
    return 10.0 ** -k, f"1e{k}"


def main_results(summary: pd.DataFrame, baseline: str) -> Table:
    scale, unit = flops_unit(summary)
    cols = [
        column("exact_accuracy", "Exact acc. final (%)", 100),  # eval.json: model.pt, the last step's EMA
        column("best_exact_accuracy", "Exact acc. best-val (%)", 100),  # eval_best.json: model_best.pt
        column("token_accuracy", "Token acc. (%)", 100),  # shows learning where exact accuracy is still 0
        column("blank_token_accuracy", "Blank-cell acc. (%)", 100),  # token acc. without the copied givens
        column("train_hours", "Train time (h)", 1, 3),
        vs_baseline(summary, baseline, "speedup", "train_hours", speedup, "Speedup (×)"),
        column("train_flops", f"Train FLOPs ({unit})", scale),
        vs_baseline(summary, baseline, "flops_reduction", "train_flops", reduction, "FLOPs red. (%)", 100, 1),
        column("fwd_depth_reduction", "Eff. depth red. (%)", 100, 1),
    ]
    return per_experiment("main_results", f"Main results (speedup and reductions vs {baseline}, paired by seed)",
                          summary, experiments_in_order(summary), cols)


def ablation(summary: pd.DataFrame, baseline: str) -> Table:
    flags = summary.groupby("exp", sort=False)[["pdc_enabled", "hsw_enabled"]].first().astype(bool)
    exps = sorted(experiments_in_order(summary), key=lambda e: (flags.loc[e, "hsw_enabled"], flags.loc[e, "pdc_enabled"]))

    def lead(exp):
        key = (bool(flags.loc[exp, "pdc_enabled"]), bool(flags.loc[exp, "hsw_enabled"]))
        claim = PAPER_CLAIMS[key]
        acc = claim["exact_accuracy"]
        return {"pdc": "✓" if key[0] else "–", "hsw": "✓" if key[1] else "–",
                "paper_acc": "–" if acc is None else f"{100 * acc:.2f}", "paper_speedup": f"{claim['speedup']:.2f}"}

    cols = [
        column("exact_accuracy", "Exact acc. (%)", 100),
        vs_baseline(summary, baseline, "delta_accuracy", "exact_accuracy", difference, "Δ acc. (pp)", 100),
        vs_baseline(summary, baseline, "speedup", "train_hours", speedup, "Speedup (×)"),
    ]
    return per_experiment("ablation", f"Ablation of PDC and HSW (Δ and speedup vs {baseline}; paper values for "
                          "reference)", summary, exps, cols, lead)


def inference(summary: pd.DataFrame, baseline: str) -> Table:
    cols = [
        column("act_mean_steps", "Mean halt step (test)"),
        vs_baseline(summary, baseline, "steps_reduction", "act_mean_steps", reduction, "Step red. (%)", 100, 1),
        column("halting_accuracy", "Halting acc. (%)", 100),
        column("act_exact_accuracy", "Acc. at halt (%)", 100),
        column("exact_accuracy", "Acc. all steps (%)", 100),
        column("train_steps_final", "Mean halt step (train)"),
        vs_baseline(summary, baseline, "train_steps_reduction", "train_steps_final", reduction,
                    "Train step red. (%)", 100, 1),
        column("train_q_halt_accuracy_final", "Halting acc. train (%)", 100),
    ]
    return per_experiment("inference", f"Inference efficiency with ACT halting (reductions vs {baseline})",
                          summary, experiments_in_order(summary), cols)


def difficulty(summary: pd.DataFrame, runs: list[Run]) -> Table:
    """Rows = (breakdown, group) in eval.json's order; one mean ± CI column per experiment."""
    long = pd.concat([eval_groups(r).assign(exp=r.exp, seed=r.seed) for r in runs], ignore_index=True)
    exps = experiments_in_order(summary)
    data, display = [], []
    for (breakdown, group), rows in long.groupby(["breakdown", "group"], sort=False):
        base = {"breakdown": breakdown, "group": group, "n_puzzles": int(rows["count"].max())}
        stats = {e: Stat.of(rows[rows.exp == e].exact_accuracy) for e in exps}
        data.append({**base, **{f"{e}_{f}": getattr(s, f) for e, s in stats.items() for f in ("mean", "ci95")}})
        display.append({"Breakdown": breakdown, "Group": group, "Puzzles": base["n_puzzles"],
                        **{e: s.text(100) for e, s in stats.items()}})
    # explicit columns, so a dataset without rating/source sidecars still gives a (header-only) table
    data_cols = ["breakdown", "group", "n_puzzles", *(f"{e}_{f}" for e in exps for f in ("mean", "ci95"))]
    return Table("difficulty", "Test exact accuracy (%) per difficulty bucket (the build's difficulty column: class "
                 "rating when the data has it, else the CSV rating) and per source",
                 pd.DataFrame(data, columns=data_cols),
                 pd.DataFrame(display, columns=["Breakdown", "Group", "Puzzles", *exps]))


def build_tables(summary: pd.DataFrame, runs: list[Run], baseline: str = DEFAULT_BASELINE) -> dict[str, Table]:
    present = experiments_in_order(summary)
    if baseline not in present:
        raise DataError("--baseline", f"experiment {baseline!r} is not among the runs ({', '.join(present)})")
    tables = [main_results(summary, baseline), ablation(summary, baseline), inference(summary, baseline),
              difficulty(summary, runs)]
    return {t.name: t for t in tables}


# ----------------------------------------------------------------------------- writers

def to_markdown(t: Table) -> str:
    d = t.display.astype(str)
    lines = [f"**{t.title}**", "", "| " + " | ".join(d.columns) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(d.columns))) + "|"]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in d.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": r"$\pm$", "×": r"$\times$", "Δ": r"$\Delta$", "✓": r"\checkmark{}", "–": "--"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(t: Table) -> str:
    """A booktabs table body (needs \\usepackage{booktabs} and amssymb for \\checkmark)."""
    d = t.display
    spec = "ll" + "r" * (len(d.columns) - 2)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(t.title)}}}", rf"\label{{tab:{t.name}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(tex_escape(c) for c in d.columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(tex_escape(v) for v in row) + r" \\" for row in d.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(tables: dict[str, Table], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for name, t in tables.items():
        texts = {"csv": t.data.to_csv(index=False), "md": to_markdown(t), "tex": to_latex(t)}
        for ext in TABLE_FORMATS:
            path = out_dir / f"{name}.{ext}"
            atomic_write_text(path, texts[ext])
            written.append(path)
    return written
