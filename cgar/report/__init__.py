"""Tables and figures from finished runs: collect -> summary CSV -> tables (CSV/Markdown/LaTeX) and figures (PNG/SVG).

    python -m cgar.report collect --runs results/runs/*/seed* --out results/summary/runs.csv
    python -m cgar.report tables  --summary results/summary/runs.csv --runs ... --out-dir results/tables
    python -m cgar.report figures --runs ... --out-dir results/figures

The output names are fixed and listed here so the Snakemake rules can declare them without importing pandas or
matplotlib (this module stays import-light for that reason).
"""

from __future__ import annotations

# results/tables/{name}.{csv,md,tex}
TABLES = ("main_results", "ablation", "inference", "difficulty", "time_to_target", "claims", "halting")
TABLE_FORMATS = ("csv", "md", "tex")

# results/figures/{name}.{png,svg,json}
FIGURES = (
    "curves_vs_step",  # exact accuracy and loss vs optimizer step
    "curves_vs_time",  # ... vs training wall-clock hours
    "curves_vs_flops",  # ... vs cumulative training FLOPs
    "depth_schedule",  # T, n and effective depth over training (PDC)
    "hsw_weights",  # HSW weights per supervision step, paper and released modes
    "accuracy_by_step",  # test exact accuracy after each supervision step 1..16
    "halting_histogram",  # distribution of ACT halting steps on the test set
    "speed_accuracy",  # training hours vs test exact accuracy, one point per run
    "eval_curves",  # in-training test exact accuracy vs wall-clock / FLOPs / step (eval_curve.jsonl)
    "time_to_target",  # hours to each target accuracy per experiment
    "grad_norm_by_step",  # gradient norm of each supervision step's slots (grad_stats.jsonl), per PDC stage
    "grad_variance",  # minibatch gradient variance with and without the HSW weights, and its reduction
    "puzzle_trace",  # one test puzzle's predicted grid after each supervision step (trace.json)
)
FIGURE_FORMATS = ("png", "svg")
FIGURE_CONFIG_EXT = "json"  # beside each figure: the runs and options it was drawn from

DEFAULT_BASELINE = "baseline"
DEFAULT_BASELINE_FRACTIONS = (0.95, 0.99)  # time-to-target at these fractions of the baseline's final accuracy


def table_files(out_dir: str = "results/tables") -> list[str]:
    return [f"{out_dir}/{t}.{ext}" for t in TABLES for ext in TABLE_FORMATS]


def figure_files(out_dir: str = "results/figures") -> list[str]:
    return [f"{out_dir}/{f}.{ext}" for f in FIGURES for ext in (*FIGURE_FORMATS, FIGURE_CONFIG_EXT)]
