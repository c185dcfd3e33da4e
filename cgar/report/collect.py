"""Read finished run directories into one tidy table (one row per run) and per-run detail frames.

A run directory `results/runs/{exp}/seed{seed}/` holds run_config.json, metrics.jsonl (cgar.train), flops.json
(cgar.flops) and eval.json (cgar.evaluate). The experiment name is the parent folder's name (experiment names
come from the workflow config, so they cannot be derived from the run config); the seed is the run config's
train.seed and must agree with a `seed{N}` folder name.

Every key this module reads from flops.json and eval.json is named in FLOPS_KEYS / EVAL_KEYS, so a change in
those writers is a change here in one place. A missing or malformed file raises DataError naming the file
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

import pandas as pd

from cgar.io_utils import DataError, atomic_write_text

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
    "token_accuracy": ("overall", "token_accuracy"),
    "q_halt_accuracy": ("overall", "q_halt_accuracy"),  # TRM's (q_halt >= 0) == solved, at step 16
    "act_exact_accuracy": ("overall", "act", "exact_accuracy"),  # answer at the first step with q_halt > 0
    "act_mean_steps": ("overall", "act", "mean_halt_step"),
    "act_step_reduction": ("overall", "act", "step_reduction"),  # 1 - mean halt step / 16
    "halting_accuracy": ("overall", "act", "halting_accuracy"),
}
EVAL_BY_STEP = ("overall", "exact_accuracy_by_step")  # list, index 0 = supervision step 1
EVAL_HALT_HIST = ("overall", "act", "halt_step_histogram")  # list: puzzles halting at steps 1..S
EVAL_GROUPS = {"difficulty": ("by_rating",), "source": ("by_source",)}  # {group: {n, exact_accuracy, ...}}
EVAL_GROUP_COUNT = "n"

SUMMARY_COLUMNS = (
    "exp", "seed", "run_dir", "pdc_enabled", "hsw_enabled", "hsw_mode", "hsw_decay", "n_layers",
    "final_step", "train_hours", *FLOPS_KEYS, *EVAL_KEYS,
    "train_exact_accuracy_final", "train_loss_final", "train_steps_final", "train_q_halt_accuracy_final",
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


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.jsonl -> one row per logged step, sorted by step; every line must be an object with METRIC_COLUMNS."""
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
        missing = [k for k in METRIC_COLUMNS if k not in rec]
        if missing:
            raise DataError(path, f"missing key(s) {', '.join(missing)}", line=line_no)
        rows.append(rec)
    if not rows:
        raise DataError(path, "no logged steps")
    df = pd.DataFrame(rows).sort_values("step", kind="stable").reset_index(drop=True)
    # train.py's `loss` carries the HSW weight, so it is not comparable across experiments; this is TRM's loss
    df["loss_unweighted"] = df["lm_loss"] + 0.5 * df["q_halt_loss"]
    return df


def get_key(data: dict, keys: tuple[str, ...], path: Path):
    """data[k0][k1]...; a missing key raises DataError naming the file and the dotted key."""
    node = data
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            raise DataError(path, f"missing key {'.'.join(keys[:i + 1])}")
        node = node[k]
    return node


def _number(data: dict, keys: tuple[str, ...], path: Path) -> float:
    value = get_key(data, keys, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, f"{'.'.join(keys)} must be a finite number, got {value!r}")
    return float(value)


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
    return Run(run_dir, exp, seed, config, read_metrics(run_dir / "metrics.jsonl"),
               read_json(run_dir / "flops.json"), read_json(run_dir / "eval.json"))


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
    row.update({col: _number(run.eval, keys, eval_path) for col, keys in EVAL_KEYS.items()})
    for col, key in (("train_exact_accuracy_final", "exact_accuracy"), ("train_loss_final", "loss_unweighted"),
                     ("train_steps_final", "steps"), ("train_q_halt_accuracy_final", "q_halt_accuracy")):
        row[col] = float(tail[key].mean()) if key in tail else float("nan")
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
