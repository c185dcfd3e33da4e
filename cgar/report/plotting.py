"""Shared plotting helpers of the report's figures: style, one color per experiment, and the atomic save that
writes each figure as PNG and SVG with the configuration that produced it beside it ({name}.json).

The JSON sidecar names the figure, the report options (baseline, targets) and every run drawn (experiment, seed,
folder and its run_config.json), so a figure found on its own can be traced to what made it. It has no
timestamps, so a rerun on the same runs writes the same bytes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the pipeline's machines
import matplotlib.pyplot as plt  # noqa: E402

from cgar.io_utils import atomic_write  # noqa: E402
from cgar.report import FIGURE_CONFIG_EXT, FIGURE_FORMATS  # noqa: E402
from cgar.report.collect import Run  # noqa: E402

plt.rcParams.update({"svg.hashsalt": "cgar", "figure.dpi": 100, "savefig.dpi": 150, "axes.grid": True,
                     "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
LINESTYLES = ("-", "--", "-.", ":")  # overlapping schedules (baseline and hsw) stay distinguishable


def by_exp(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.exp, []).append(r)
    return out


def colors(exps: list[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {e: cycle[i % len(cycle)] for i, e in enumerate(exps)}


def start(runs: list[Run], ncols: int, figsize: tuple[float, float]):
    """Runs grouped by experiment, one color each, and a fresh figure: what every builder begins with."""
    groups = by_exp(runs)
    fig, axes = plt.subplots(1, ncols, figsize=figsize)
    return groups, colors(list(groups)), fig, axes


def provenance(runs: list[Run], options: dict) -> dict:
    """What a figure is drawn from: the report options and each run with its training config."""
    return {"options": options, "runs": [{"exp": r.exp, "seed": r.seed, "run_dir": str(r.path),
                                          "run_config": r.config} for r in runs]}


def save(fig, out_dir: Path, name: str, made_from: dict | None = None) -> list[Path]:
    """PNG and SVG, each rendered in memory and renamed into place (no half-written figure on a crash), and the
    {name}.json sidecar with `made_from` (see `provenance`)."""
    paths = []
    for ext in FIGURE_FORMATS:
        buf = io.BytesIO()
        meta = {"Date": None} if ext == "svg" else {"Software": None}  # no timestamps: reruns give equal files
        fig.savefig(buf, format=ext, bbox_inches="tight", metadata=meta)
        path = out_dir / f"{name}.{ext}"
        with atomic_write(path) as f:
            f.write(buf.getvalue())
        paths.append(path)
    plt.close(fig)
    path = out_dir / f"{name}.{FIGURE_CONFIG_EXT}"
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump({"figure": name, **(made_from or {})}, f, indent=1, sort_keys=True)
    return paths + [path]


