"""Read finished run directories into one tidy table (one row per run) and per-run detail frames.

A run directory `results/runs/{exp}/seed{seed}/` holds run_config.json, metrics.jsonl (cgar.train), flops.json
(cgar.flops) and eval.json (cgar.evaluate). The experiment name is the parent folder's name (experiment names
come from the workflow config, so they cannot be derived from the run config); the seed is the run config's
train.seed and must agree with a `seed{N}` folder name.

Optional files (OPTIONAL_FILES; runs cached before they existed, or trained with train.eval_every /
grad_stats_every = 0, lack them): eval_best.json (the best-by-validation snapshot on the full test set),
eval_act.json (ACT inference with batch compaction), eval_curve.jsonl (in-training evaluations),
grad_stats.jsonl (gradient statistics) and trace.json (one puzzle per supervision step, cgar.trace). An absent one gives NaN columns and empty frames; a present but
malformed one is an error like any other.

Every key this module reads from flops.json, eval*.json, eval_curve.jsonl and grad_stats.jsonl is named in
FLOPS_KEYS / EVAL_KEYS / EVAL_BEST_KEYS / EVAL_ACT_KEYS / CURVE_KEYS / CURVE_SPLIT_KEYS / GRAD_KEYS, so a change
in those writers is a change here in one place. A missing or malformed file raises DataError naming the file
(and the line or key).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cgar.io_utils import DataError, atomic_write_text
from cgar.sudoku.grid import shape_of

RUN_FILES = ("run_config.json", "metrics.jsonl", "flops.json", "eval.json")
METRIC_COLUMNS = ("step", "T", "n", "exact_accuracy", "lm_loss", "q_halt_loss", "wall_s", "flops")  # required per metrics line
FINAL_WINDOW = 5  # training "final" metrics: mean of the last logged entries (one entry is noisy)

# summary column -> key path in flops.json (cgar/flops.py `run_flops`)
FLOPS_KEYS = {
    "train_flops": ("train_flops",),  # fwd + bwd over the run's actual schedule, all ops (fvcore)
    "train_flops_reduction_vs_full": ("reduction_vs_full_depth", "train_flops"),  # vs the same run at full depth
    "fwd_depth_mean": ("mean_effective_depth",),  # step-weighted mean of T(n+1)·layers
    "fwd_depth_full": ("full_depth_baseline", "mean_effective_depth"),
    "fwd_depth_reduction": ("reduction_vs_full_depth", "effective_depth"),  # the paper's 41.4% accounting
    "fwd_depth_flops": ("forward_effective_depth_flops",),
    "inference_flops_per_puzzle": ("inference_flops_per_puzzle",),
}
# summary column -> key path in eval.json (cgar/evaluate.py + cgar/eval_metrics.py, `--mode full`)
EVAL_KEYS = {
    "num_puzzles": ("num_puzzles",),
    "exact_accuracy": ("overall", "exact_accuracy"),  # all 16 supervision steps: the paper's metric
    "token_accuracy": ("overall", "token_accuracy"),  # every label cell, the givens included
    "blank_token_accuracy": ("overall", "blank_token_accuracy"),  # the cells blank in the puzzle only
    "q_halt_accuracy": ("overall", "q_halt_accuracy"),  # TRM's (q_halt >= 0) == solved, at step 16
    "act_exact_accuracy": ("overall", "act", "exact_accuracy"),  # answer at the first step with q_halt > 0
    "act_mean_steps": ("overall", "act", "mean_halt_step"),
    "act_step_reduction": ("overall", "act", "step_reduction"),  # 1 - mean halt step / 16
    "halting_accuracy": ("overall", "act", "halting_accuracy"),
}
# summary column -> key path in eval_best.json (cgar.evaluate --checkpoint model_best.pt --stem eval_best)
EVAL_BEST_KEYS = {
    "best_exact_accuracy": ("overall", "exact_accuracy"),
    "best_token_accuracy": ("overall", "token_accuracy"),
    "best_blank_token_accuracy": ("overall", "blank_token_accuracy"),
    "best_step": ("step",),  # optimizer step of the selected snapshot
}
# summary column -> key path in eval_act.json (cgar.evaluate --mode act: steps really stop at the halt)
EVAL_ACT_KEYS = {
    "actrun_num_puzzles": ("num_puzzles",),
    "actrun_exact_accuracy": ("overall", "act", "exact_accuracy"),  # answer at the halting step
    "actrun_mean_steps": ("overall", "act", "mean_halt_step"),
    "actrun_halting_accuracy": ("overall", "act", "halting_accuracy"),  # HALTING_ACCURACY_DEFINITION
    "actrun_halted_by_q": ("overall", "act", "halted_by_q"),  # share halted on q_halt > 0, not the step cap
    "actrun_halt_precision": ("overall", "act", "halt_precision"),  # solved share of those (null if none)
}
# eval_curve.jsonl (cgar.train, train.eval_every): column -> key path, per line
CURVE_KEYS = {"step": ("step",), "stage": ("stage",), "T": ("T",), "n": ("n",),
              "train_wall_s": ("train_wall_s",),  # excludes evaluation and gradient-statistics time
              "eval_wall_s": ("eval_wall_s",), "flops": ("flops",),
              "flops_fwd_effective": ("flops_fwd_effective",)}  # the paper's accounting
CURVE_SPLITS = ("test", "val")  # val is absent when the dataset has no val split
CURVE_SPLIT_KEYS = {"num_puzzles": ("num_puzzles",), "exact_accuracy": ("exact_accuracy",),
                    "token_accuracy": ("token_accuracy",), "blank_token_accuracy": ("blank_token_accuracy",),
                    "act_exact_accuracy": ("act", "exact_accuracy"), "act_mean_steps": ("act", "mean_halt_step"),
                    "act_halting_accuracy": ("act", "halting_accuracy")}  # -> columns "{split}_{name}"
# grad_stats.jsonl (cgar.train, train.grad_stats_every): scalar columns, and the per-supervision-step lists
GRAD_KEYS = {k: (k,) for k in ("step", "stage", "T", "n", "var_weighted", "var_unweighted", "var_weighted_rel",
                               "var_unweighted_rel", "variance_reduction")}
GRAD_LISTS = ("slots_by_step", "grad_norm_by_step")  # [S] each; grad_norm null where no slot was at step t
# trace.json (python -m cgar.trace): n*n digits each (81 for 9x9, 36 for 6x6, 16 for 4x4), per supervision step for
# the lists of lists
TRACE_GRIDS = ("puzzle", "solution")
TRACE_STEPS = ("predictions", "cells_correct", "q_halt")
OPTIONAL_KEYS = ("blank_token_accuracy", "best_blank_token_accuracy")  # cached older eval*.json lack them: NaN
OPTIONAL_FILES = ("eval_best.json", "eval_act.json", "eval_curve.jsonl", "grad_stats.jsonl", "trace.json")

EVAL_BY_STEP = ("overall", "exact_accuracy_by_step")  # list, index 0 = supervision step 1
EVAL_HALT_HIST = ("overall", "act", "halt_step_histogram")  # list: puzzles halting at steps 1..S
EVAL_GROUPS = {"difficulty": ("by_rating",), "source": ("by_source",)}  # {group: {n, exact_accuracy, ...}}
EVAL_GROUP_COUNT = "n"

SUMMARY_COLUMNS = (
    "exp", "seed", "run_dir", "pdc_enabled", "hsw_enabled", "hsw_mode", "hsw_decay", "n_layers",
    "final_step", "train_hours", *FLOPS_KEYS, *EVAL_KEYS,
    "train_exact_accuracy_final", "train_loss_final", "train_steps_final", "train_q_halt_accuracy_final",
    *EVAL_BEST_KEYS, *EVAL_ACT_KEYS, "grad_variance_reduction",
)


@dataclass
class Run:
    path: Path
    exp: str
    seed: int
    config: dict
    metrics: pd.DataFrame
    flops: dict
    eval: dict
    eval_best: dict | None = None  # OPTIONAL_FILES: None when absent
    eval_act: dict | None = None
    eval_curve: pd.DataFrame | None = None  # one row per evaluation point (CURVE_KEYS, "{split}_..." columns)
    grad_stats: pd.DataFrame | None = None  # one row per measurement (GRAD_KEYS, GRAD_LISTS as arrays)
    trace: dict | None = None  # trace.json (read_trace)


# ----------------------------------------------------------------------------- reading files

def read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg})", line=e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read ({e})") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object at the top level, got {type(data).__name__}")
    return data


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """A JSON-lines file -> its objects (blank lines skipped); each must hold the `required` top-level keys."""
    if not path.is_file():
        raise DataError(path, "missing")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"not valid JSON ({e.msg})", line=line_no) from None
        if not isinstance(rec, dict):
            raise DataError(path, "expected a JSON object", line=line_no)
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataError(path, f"missing key(s) {', '.join(missing)}", line=line_no)
        rows.append(rec)
    return rows


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.jsonl -> one row per logged step, sorted by step; every line must be an object with METRIC_COLUMNS."""
    rows = read_jsonl(path, METRIC_COLUMNS)
    if not rows:
        raise DataError(path, "no logged steps")
    df = pd.DataFrame(rows).sort_values("step", kind="stable").reset_index(drop=True)
    # train.py's `loss` carries the HSW weight, so it is not comparable across experiments; this is TRM's loss
    df["loss_unweighted"] = df["lm_loss"] + 0.5 * df["q_halt_loss"]
    return df


def get_key(data: dict, keys: tuple[str, ...], path: Path, optional: bool = False):
    """data[k0][k1]...; a missing key raises DataError naming the file and the dotted key (optional: gives None)."""
    node = data
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            if optional:
                return None
            raise DataError(path, f"missing key {'.'.join(keys[:i + 1])}")
        node = node[k]
    return node


def _number(data: dict, keys: tuple[str, ...], path: Path, line: int | None = None,
            nullable: bool = False, optional: bool = False) -> float:
    """A finite number at `keys`; with nullable, JSON null gives NaN (a metric undefined for an empty group); with
    optional, null or a missing key (one the writer added later, OPTIONAL_KEYS)."""
    value = get_key(data, keys, path, optional) if line is None else _line_key(data, keys, path, line)
    if (nullable or optional) and value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, f"{'.'.join(keys)} must be a finite number, got {value!r}", line=line)
    return float(value)


def _line_key(data: dict, keys: tuple[str, ...], path: Path, line: int):
    try:
        return get_key(data, keys, path)
    except DataError as e:
        raise DataError(path, e.message, line=line) from None


def read_eval_curve(path: Path) -> pd.DataFrame:
    """eval_curve.jsonl -> one row per evaluation point: CURVE_KEYS and "{split}_{name}" for each split present
    on every line (CURVE_SPLIT_KEYS); steps must increase."""
    recs = read_jsonl(path, (*CURVE_KEYS, "test"))
    splits = [s for s in CURVE_SPLITS if recs and all(s in r for r in recs)]
    rows = []
    for line, rec in enumerate(recs, 1):
        row = {col: _number(rec, keys, path, line) for col, keys in CURVE_KEYS.items()}
        for split in splits:
            row.update({f"{split}_{col}": _number(rec, (split, *keys), path, line, nullable=True)
                        for col, keys in CURVE_SPLIT_KEYS.items()})
        if rows and row["step"] <= rows[-1]["step"]:
            raise DataError(path, f"step {row['step']:.0f} does not follow step {rows[-1]['step']:.0f}", line=line)
        rows.append(row)
    columns = [*CURVE_KEYS, *(f"{s}_{c}" for s in splits or ["test"] for c in CURVE_SPLIT_KEYS)]
    return pd.DataFrame(rows, columns=columns)


def read_grad_stats(path: Path) -> pd.DataFrame:
    """grad_stats.jsonl -> one row per measurement: GRAD_KEYS, and GRAD_LISTS as float arrays of one length S
    (null grad norms -> NaN)."""
    rows = []
    for line, rec in enumerate(read_jsonl(path, (*GRAD_KEYS, *GRAD_LISTS)), 1):
        row = {col: _number(rec, keys, path, line) for col, keys in GRAD_KEYS.items()}
        for key in GRAD_LISTS:
            values = rec[key]
            if not isinstance(values, list) or not values or any(
                    isinstance(v, bool) or not (v is None or isinstance(v, (int, float))) for v in values):
                raise DataError(path, f"{key} must be a non-empty list of numbers", line=line)
            row[key] = np.array([np.nan if v is None else v for v in values], dtype=float)
        if len(row["slots_by_step"]) != len(row["grad_norm_by_step"]):
            raise DataError(path, "slots_by_step and grad_norm_by_step differ in length", line=line)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*GRAD_KEYS, *GRAD_LISTS])


def read_trace(path: Path) -> dict:
    """trace.json, checked: TRACE_GRIDS of n*n digits 0..n (a grid of cgar.sudoku.grid, told by the puzzle's
    length), TRACE_STEPS of one length S, predictions [S][n*n] digits."""
    rec = read_json(path)
    for key in (*TRACE_GRIDS, *TRACE_STEPS):
        get_key(rec, (key,), path)
    try:
        shape = shape_of(len(rec["puzzle"]) if isinstance(rec["puzzle"], list) else -1)
    except ValueError as e:
        raise DataError(path, f"puzzle: {e}") from None
    grids = [rec["puzzle"], rec["solution"], *rec["predictions"]]
    if any(not isinstance(g, list) or len(g) != shape.cells
           or any(not isinstance(v, int) or not 0 <= v <= shape.n for v in g) for g in grids):
        raise DataError(path, f"puzzle, solution and every prediction must be {shape.cells} digits 0..{shape.n} "
                        f"(a {shape.name} grid, as the puzzle)")
    if len({len(rec[k]) for k in TRACE_STEPS}) != 1 or not rec["predictions"]:
        raise DataError(path, f"{', '.join(TRACE_STEPS)} must have one entry per supervision step each")
    return rec


# ----------------------------------------------------------------------------- runs

def expand_runs(patterns: list[str]) -> list[Path]:
    """Run directories from paths or glob patterns (quoted globs work too), in the order given, no duplicates."""
    out: list[Path] = []
    for pattern in patterns:
        matches = [pattern] if os.path.isdir(pattern) else sorted(glob.glob(pattern))
        dirs = [Path(m) for m in matches if os.path.isdir(m)]
        if not dirs:
            raise DataError(pattern, "no run directory matches")
        out += [d for d in dirs if d not in out]
    return out


def load_run(run_dir: str | os.PathLike) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "run directory does not exist")
    cfg_path = run_dir / "run_config.json"
    config = read_json(cfg_path)
    seed = int(_number(config, ("train", "seed"), cfg_path))
    m = re.fullmatch(r"seed(\d+)", run_dir.name)
    if m and int(m.group(1)) != seed:
        raise DataError(cfg_path, f"train.seed is {seed} but the run directory is {run_dir.name}")
    exp = run_dir.parent.name if m else run_dir.name

    def optional(name, reader):
        return reader(run_dir / name) if (run_dir / name).exists() else None

    return Run(run_dir, exp, seed, config, read_metrics(run_dir / "metrics.jsonl"),
               read_json(run_dir / "flops.json"), read_json(run_dir / "eval.json"),
               eval_best=optional("eval_best.json", read_json), eval_act=optional("eval_act.json", read_json),
               eval_curve=optional("eval_curve.jsonl", read_eval_curve),
               grad_stats=optional("grad_stats.jsonl", read_grad_stats), trace=optional("trace.json", read_trace))


def load_runs(run_dirs: list[str | os.PathLike]) -> list[Run]:
    runs = [load_run(d) for d in run_dirs]
    seen: dict[tuple[str, int], Path] = {}
    for r in runs:
        if (r.exp, r.seed) in seen:
            raise DataError(r.path, f"duplicate run {r.exp} seed {r.seed} (also {seen[r.exp, r.seed]})")
        seen[r.exp, r.seed] = r.path
    return runs


def summarize(run: Run) -> dict:
    """One summary row: identity and config, training cost, test metrics, final training metrics."""
    cfg_path, flops_path, eval_path = (run.path / f for f in ("run_config.json", "flops.json", "eval.json"))
    last = run.metrics.iloc[-1]
    tail = run.metrics.tail(FINAL_WINDOW)
    row = {
        "exp": run.exp, "seed": run.seed, "run_dir": str(run.path),
        "pdc_enabled": bool(get_key(run.config, ("pdc", "enabled"), cfg_path)),
        "hsw_enabled": bool(get_key(run.config, ("hsw", "enabled"), cfg_path)),
        "hsw_mode": str(get_key(run.config, ("hsw", "mode"), cfg_path)),
        "hsw_decay": _number(run.config, ("hsw", "decay"), cfg_path),
        "n_layers": int(_number(run.config, ("model", "n_layers"), cfg_path)),
        "final_step": int(last["step"]),
        "train_hours": float(last["wall_s"]) / 3600.0,
    }
    row.update({col: _number(run.flops, keys, flops_path) for col, keys in FLOPS_KEYS.items()})
    row.update({col: _number(run.eval, keys, eval_path, optional=col in OPTIONAL_KEYS)
                for col, keys in EVAL_KEYS.items()})
    for col, key in (("train_exact_accuracy_final", "exact_accuracy"), ("train_loss_final", "loss_unweighted"),
                     ("train_steps_final", "steps"), ("train_q_halt_accuracy_final", "q_halt_accuracy")):
        row[col] = float(tail[key].mean()) if key in tail else float("nan")
    for data, name, keys_map in ((run.eval_best, "eval_best.json", EVAL_BEST_KEYS),
                                 (run.eval_act, "eval_act.json", EVAL_ACT_KEYS)):
        row.update({col: float("nan") if data is None else _number(data, keys, run.path / name, nullable=True,
                                                                   optional=col in OPTIONAL_KEYS)
                    for col, keys in keys_map.items()})
    # per run: the mean over its measurements (each one batch), so every seed counts once in the CI
    row["grad_variance_reduction"] = (float(run.grad_stats.variance_reduction.mean())
                                      if run.grad_stats is not None and len(run.grad_stats) else float("nan"))
    return row


def summary_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([summarize(r) for r in runs], columns=list(SUMMARY_COLUMNS))


def collect(run_dirs: list[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    df = summary_frame(load_runs(run_dirs))
    atomic_write_text(out, df.to_csv(index=False))
    return df


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing (run `python -m cgar.report collect` first)")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(path, f"not a readable CSV ({e})") from None
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}")
    return df


# ----------------------------------------------------------------------------- eval.json details

def eval_by_step(run: Run) -> pd.DataFrame:
    """Test exact accuracy after each supervision step: columns step (1-based), exact_accuracy."""
    path = run.path / "eval.json"
    values = get_key(run.eval, EVAL_BY_STEP, path)
    if not isinstance(values, list) or not values:
        raise DataError(path, f"{'.'.join(EVAL_BY_STEP)} must be a non-empty list")
    return pd.DataFrame({"step": range(1, len(values) + 1), "exact_accuracy": [float(v) for v in values]})


def eval_halting_histogram(run: Run) -> pd.Series:
    """Number of test puzzles halting at each supervision step (index: step)."""
    path = run.path / "eval.json"
    hist = get_key(run.eval, EVAL_HALT_HIST, path)
    if isinstance(hist, list):  # a list is indexed by step - 1
        hist = {i + 1: v for i, v in enumerate(hist)}
    if not isinstance(hist, dict):
        raise DataError(path, f"{'.'.join(EVAL_HALT_HIST)} must be a mapping step -> count")
    try:
        return pd.Series({int(k): float(v) for k, v in hist.items()}).sort_index()
    except (TypeError, ValueError):
        raise DataError(path, f"{'.'.join(EVAL_HALT_HIST)} must map integer steps to counts") from None


def eval_groups(run: Run) -> pd.DataFrame:
    """Exact accuracy per difficulty bucket and per source: columns breakdown, group, count, exact_accuracy."""
    path = run.path / "eval.json"
    rows = []
    for breakdown, keys in EVAL_GROUPS.items():
        groups = get_key(run.eval, keys, path)
        if not isinstance(groups, dict):
            raise DataError(path, f"{'.'.join(keys)} must be a mapping group -> metrics")
        for group in groups:
            rows.append({"breakdown": breakdown, "group": str(group),
                         "count": _number(run.eval, (*keys, group, EVAL_GROUP_COUNT), path),
                         "exact_accuracy": _number(run.eval, (*keys, group, "exact_accuracy"), path)})
    return pd.DataFrame(rows, columns=["breakdown", "group", "count", "exact_accuracy"])
