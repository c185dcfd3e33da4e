"""python -m cgar.report {collect,tables,figures}: the summary CSV, the result tables and the figures.

    python -m cgar.report collect --runs results/runs/*/seed* --out results/summary/runs.csv
    python -m cgar.report tables  --summary results/summary/runs.csv --runs results/runs/*/seed* \\
                                  [--baseline baseline] [--targets 0.5 ...] [--baseline-fractions 0.95 0.99]
                                  --out-dir results/tables
    python -m cgar.report figures --runs results/runs/*/seed* [--baseline ...] [--targets ...] --out-dir results/figures

--runs takes run directories or glob patterns (quoted or expanded by the shell); experiments appear in tables
and legends in the order their runs are given. Exit status 2 on a missing or malformed input (the message names
the file), 0 on success.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cgar.io_utils import DataError
from cgar.report import DEFAULT_BASELINE, DEFAULT_BASELINE_FRACTIONS, FIGURES, TABLE_FORMATS, TABLES


def _runs(patterns: list[str]):
    from cgar.report.collect import expand_runs, load_runs

    return load_runs(expand_runs(patterns))


def cmd_collect(a) -> None:
    from cgar.report.collect import collect, expand_runs

    df = collect(expand_runs(a.runs), a.out)
    print(f"wrote {a.out}: {len(df)} runs of {df.exp.nunique()} experiment(s)")


def cmd_tables(a) -> None:
    from cgar.report.build import all_tables
    from cgar.report.collect import read_summary
    from cgar.report.tables import write_tables

    summary, runs = read_summary(a.summary), _runs(a.runs)
    in_summary = set(zip(summary.exp, summary.seed.astype(int)))
    given = {(r.exp, r.seed) for r in runs}
    if in_summary != given:  # a stale summary would silently mix old and new runs
        raise DataError(a.summary, f"runs differ from --runs (only in summary: {sorted(in_summary - given)}, "
                                   f"only in --runs: {sorted(given - in_summary)}); rerun collect")
    tables = all_tables(summary, runs, a.baseline, tuple(a.targets), tuple(a.baseline_fractions))
    paths = write_tables(tables, a.out_dir)
    print(f"wrote {len(paths)} files to {a.out_dir}")


def cmd_figures(a) -> None:
    from cgar.report.figures import make_figures

    runs = _runs(a.runs)
    if a.baseline not in {r.exp for r in runs}:
        raise DataError("--baseline", f"experiment {a.baseline!r} is not among the runs")
    paths = make_figures(runs, a.out_dir, a.baseline, tuple(a.targets), tuple(a.baseline_fractions))
    print(f"wrote {len(paths)} files to {a.out_dir}")


def accuracy(text: str) -> float:
    """An accuracy fraction in (0, 1] (argparse type: a bad value names the option)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in (0, 1]")
    return value


def comparison_options(p: argparse.ArgumentParser) -> None:
    """The baseline and the time-to-target targets (tables and figures take the same)."""
    p.add_argument("--baseline", default=DEFAULT_BASELINE,
                   help=f"experiment that speedups and deltas are relative to (default: {DEFAULT_BASELINE})")
    p.add_argument("--targets", nargs="*", type=accuracy, default=[], metavar="ACC",
                   help="absolute test exact-accuracy targets (fractions) for time-to-target (report.targets)")
    fractions = " ".join(map(str, DEFAULT_BASELINE_FRACTIONS))
    p.add_argument("--baseline-fractions", nargs="*", type=accuracy, default=list(DEFAULT_BASELINE_FRACTIONS),
                   metavar="F", help="targets as fractions of the baseline's final exact accuracy "
                                     f"(report.baseline_fractions; default: {fractions})")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cgar.report", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    sub = ap.add_subparsers(dest="command", required=True)
    runs_help = "run directories results/runs/{exp}/seed{seed} or glob patterns"

    c = sub.add_parser("collect", help="one row per run -> summary CSV")
    c.add_argument("--runs", nargs="+", required=True, help=runs_help)
    c.add_argument("--out", type=Path, required=True, help="summary CSV to write")
    c.set_defaults(fn=cmd_collect)

    t = sub.add_parser("tables", help=f"tables {', '.join(TABLES)} as {'/'.join(TABLE_FORMATS)}")
    t.add_argument("--summary", type=Path, required=True, help="summary CSV from `collect`")
    t.add_argument("--runs", nargs="+", required=True, help=runs_help + " (for the per-difficulty table)")
    comparison_options(t)
    t.add_argument("--out-dir", type=Path, required=True, help="folder for {table}.{csv,md,tex}")
    t.set_defaults(fn=cmd_tables)

    f = sub.add_parser("figures", help=f"figures {', '.join(FIGURES)} as PNG and SVG")
    f.add_argument("--runs", nargs="+", required=True, help=runs_help)
    comparison_options(f)
    f.add_argument("--out-dir", type=Path, required=True, help="folder for {figure}.{png,svg,json}")
    f.set_defaults(fn=cmd_figures)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        a.fn(a)
    except DataError as e:  # names the file (or the option) at fault
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
