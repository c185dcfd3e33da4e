"""`python -m cgar.data {generate,import,split,build,check}`: the data steps of the pipeline.

Each subcommand is a thin wrapper over a function in `cgar.data` / `cgar.sudoku`; Snakemake rules call these.
Bad input exits with status 2 and a one-line message naming the file, line or option and what was wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cgar.io_utils import DataError, atomic_write_json


def _mix(text: str):
    """'hard=0.7,unbiased_like=0.3' (or gen_hard=...) -> SourceMix; unlisted sources get share 0."""
    from dataclasses import fields

    from cgar.sudoku.generate import SourceMix

    if not text:
        return SourceMix()
    valid = [f.name for f in fields(SourceMix)]
    shares = dict.fromkeys(valid, 0.0)
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip().removeprefix("gen_")
        if not sep or name not in valid:
            raise argparse.ArgumentTypeError(f"expected name=share with name in {valid}, got {item!r}")
        try:
            shares[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"share of {name!r} is not a number: {value!r}") from None
    try:
        return SourceMix(**shares)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_generate(a: argparse.Namespace) -> dict:
    from cgar.sudoku.generate import write_chunk
    from cgar.sudoku.grid import grid_shape

    targets = {k: v for k, v in (("hard_threshold", a.hard_threshold), ("extreme_threshold", a.extreme_threshold),
                                 ("class_copies", a.class_copies)) if v is not None}
    return write_chunk(a.out, seed=a.seed, chunk=a.chunk, size=a.size, mix=a.mix, progress=not a.quiet,
                       shape=grid_shape(a.grid), **targets)


def cmd_import(a: argparse.Namespace) -> dict:
    from cgar.data.importer import import_puzzles, skipped_text

    summary = import_puzzles(
        a.src, a.out, format=a.format, source=a.source, on_error=a.on_error,
        check_unique=not a.no_check_unique, class_copies=a.class_copies, summary_path=None, progress=not a.quiet,
    )
    # the per-reason counts always reach the log, even with --quiet (an all-rejected file raises with them)
    print(f"import {a.src}: {summary['rows_written']}/{summary['rows_read']} rows written; skipped: "
          f"{skipped_text(summary['skipped'])}", file=sys.stderr)
    return summary


def cmd_split(a: argparse.Namespace) -> dict:
    from cgar.data.split import split_pool

    return split_pool(
        a.inputs, a.train, a.test, test_size=a.test_size, test_fraction=a.test_fraction, seed=a.seed,
        progress=not a.quiet,
    )


def cmd_build(a: argparse.Namespace) -> dict:
    from cgar.data.build import BuildConfig, build_dataset

    cfg = BuildConfig(
        subsample_size=a.subsample_size or None, num_aug=a.num_aug, min_difficulty=a.min_difficulty, seed=a.seed,
        difficulty=a.difficulty, val_size=a.val_size,
    )
    return build_dataset(a.train, a.test, a.out, cfg, progress=not a.quiet)


def cmd_check(a: argparse.Namespace) -> dict:
    from cgar.data.build import verify_manifest
    from cgar.data.split import check_leaks

    report = {}
    if a.verify_manifest:
        for d in (a.train, a.test, *([a.val] if a.val else [])):
            for candidate in (Path(d), Path(d).parent):  # a split dir or the dataset dir holding it
                if (candidate / "manifest.json").is_file():
                    verified = report.setdefault("manifests_verified", [])
                    if str(candidate) not in verified:  # train/ and test/ usually share one dataset manifest
                        verify_manifest(candidate)
                        verified.append(str(candidate))
                    break
            else:
                raise DataError(d, "--verify-manifest: no manifest.json here or in the parent folder")
    report.update(check_leaks(a.train, a.test, all_examples=a.all_examples, progress=not a.quiet))
    if report["leaks"]:
        print(f"LEAK: {report['leaks']} test puzzle(s) are symmetries of train puzzles", file=sys.stderr)
    if a.val:  # the validation split must be inequivalent to both: val vs train, and val vs test
        for other, key in ((a.train, "val_vs_train"), (a.test, "val_vs_test")):
            sub = check_leaks(other, a.val, all_examples=a.all_examples, progress=not a.quiet)
            report[key] = sub
            if sub["leaks"]:
                print(f"LEAK: {sub['leaks']} val puzzle(s) are symmetries of {key[7:]} puzzles", file=sys.stderr)
        report["leaks"] += report["val_vs_train"]["leaks"] + report["val_vs_test"]["leaks"]
    return report


def build_parser() -> argparse.ArgumentParser:
    from cgar.sudoku.grid import SHAPES

    p = argparse.ArgumentParser(prog="python -m cgar.data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--summary", type=Path, help="also write the summary as JSON to this path")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    g = sub.add_parser("generate", help="generate one deterministic chunk of Sudoku-Extreme-like puzzles")
    g.add_argument("--seed", type=int, required=True, help="dataset seed (use different seeds for unrelated sets)")
    g.add_argument("--chunk", type=int, required=True, help="chunk index; chunk k of seed s is always the same")
    g.add_argument("--size", type=int, required=True, help="puzzles in this chunk")
    g.add_argument("--mix", type=_mix, default="", help="source shares summing to 1, e.g. extreme=0.735,unbiased_like=0.23,kaggle_like=0.023,lowclue=0.012 (sources: kaggle_like, unbiased_like, lowclue, hard, extreme)")
    g.add_argument("--hard-threshold", type=float, default=None,
                   help="gen_hard acceptance: minimum class rating (mean over the class copies; default 20)")
    g.add_argument("--extreme-threshold", type=float, default=None,
                   help="gen_extreme acceptance: minimum median rating over the class copies (default 60)")
    g.add_argument("--class-copies", type=int, default=None,
                   help="symmetric copies per class rating, stored for every row (default 16)")
    g.add_argument("--out", type=Path, required=True,
                   help="output CSV (source,question,answer,rating,class_rating,class_rating_sd)")
    g.add_argument("--grid", choices=tuple(SHAPES), default="9x9",
                   help="grid: 9x9 (default, the paper's), 6x6 (2x3 boxes) or 4x4 (2x2 boxes) for CPU-scale runs")
    common(g)
    g.set_defaults(func=cmd_generate)

    from cgar.data.formats import FORMATS
    from cgar.sudoku.rating import DEFAULT_CLASS_COPIES

    i = sub.add_parser("import", help="validate and import Sudoku-Extreme CSVs and other puzzle files "
                                      "(.gz/.bz2/.xz/.zst too; 9x9 only: no --grid)")
    i.add_argument("src", type=Path)
    i.add_argument("--out", type=Path, required=True, help="normalised output CSV")
    i.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                   help="auto (default: from the first line), csv/tsv (source,question,answer,rating), kaggle "
                        "(quizzes,solutions or puzzle,solution), tdoku (puzzle:count:solution), list (one per line)")
    i.add_argument("--class-copies", type=int, default=DEFAULT_CLASS_COPIES,
                   help="symmetric copies rated for the class rating (0 = none; needs the solver)")
    i.add_argument("--source", default=None,
                   help="source label for formats without a source column (default: the file name up to its first dot)")
    i.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="fail at the first bad row (default) or skip bad rows and count them")
    i.add_argument("--no-check-unique", action="store_true", help="skip the solver (uniqueness, answer check)")
    common(i)
    i.set_defaults(func=cmd_import)

    s = sub.add_parser("split", help="dedupe by symmetry class and split train/test so no test puzzle leaks")
    s.add_argument("inputs", nargs="+", type=Path, help="puzzle CSVs forming the pool")
    s.add_argument("--train", type=Path, required=True)
    s.add_argument("--test", type=Path, required=True)
    size = s.add_mutually_exclusive_group(required=True)
    size.add_argument("--test-size", type=int)
    size.add_argument("--test-fraction", type=float)
    s.add_argument("--seed", type=int, default=0)
    common(s)
    s.set_defaults(func=cmd_split)

    b = sub.add_parser("build", help="subsample, augment and write the TRM/HRM array layout + manifest")
    b.add_argument("--train", type=Path, required=True, help="train puzzle CSV")
    b.add_argument("--test", type=Path, required=True, help="test puzzle CSV (used in full, never augmented)")
    b.add_argument("--out", type=Path, required=True, help="dataset directory")
    b.add_argument("--subsample-size", type=int, default=1000, help="training puzzles kept (0 = all)")
    b.add_argument("--num-aug", type=int, default=1000, help="augmentations per training puzzle")
    b.add_argument("--min-difficulty", type=float, default=None,
                   help="keep rows with difficulty >= this (both splits)")
    b.add_argument("--difficulty", choices=("auto", "rating", "class_rating"), default="auto",
                   help="difficulty column for --min-difficulty and the ratings sidecar (auto: class_rating if "
                        "the CSV has it, else rating)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--val-size", type=int, default=0,
                   help="validation puzzles carved from the train CSV before subsampling, written as val/ (0 = none)")
    common(b)
    b.set_defaults(func=cmd_build)

    c = sub.add_parser("check", help="verify that no test puzzle is a symmetry of a train puzzle")
    c.add_argument("--train", type=Path, required=True, help="train CSV or built split dir (…/train)")
    c.add_argument("--test", type=Path, required=True, help="test CSV or built split dir (…/test)")
    c.add_argument("--val", type=Path, default=None,
                   help="validation CSV or split dir (…/val): also checked against --train and --test")
    c.add_argument("--all-examples", action="store_true", help="canonicalise every row, not one per group")
    c.add_argument("--verify-manifest", action="store_true", help="also check sha256 sums against manifest.json")
    common(c)
    c.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = args.func(args)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # missing or unreadable input: name the file, no traceback
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.summary is not None:
        atomic_write_json(args.summary, summary)
    print(json.dumps(summary, indent=2, default=str))
    if args.command == "check" and summary.get("leaks"):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
