"""Import real Sudoku-Extreme CSVs and plain puzzle lists into our puzzle CSV, validating every row.

Inputs:
- CSV: header exactly `source,question,answer,rating` (question 81 chars, '.' or '0' blank; answer 81 digits;
  integer rating). Output adds a 5th column `cgar_rating` (our rating) so both scales can be compared.
- Plain list: one 81-char puzzle per line ('.' or '0' blank); blank lines and `#` lines are ignored, and
  anything after whitespace on a puzzle line is a comment. The solver supplies the answer, the caller (or
  the file stem) the source, and our own rating fills the `rating` column.

Streaming: rows are read one at a time and checked cheaply (columns, lengths, characters, rating) as they
come; the grid and solver checks run on batches of `batch_size` rows, and validated rows go straight into
the output through `atomic_write`, so memory does not grow with the file except for the duplicate index
(12 bytes a row) and a failure or kill leaves no partial output.

`check_unique=False` (CSV only) skips the solver entirely: no solution count, no check that the answer is
the unique solution, and `cgar_rating` is left empty. Structural checks, the answer's validity and its
agreement with the givens still run. For a plain list the solver always runs (it is where the answer comes
from); `check_unique=False` then only stops it from looking for a second solution.

`on_error="fail"` raises a `DataError` (file:line: message) at the first bad row; `"skip"` drops bad rows
and counts them per kind in the summary, keeping the first few messages as examples. File-level problems
(empty file, wrong header, malformed CSV) always raise.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from cgar.data.puzzle_csv import HEADER, write_puzzle_csv
from cgar.io_utils import DataError, atomic_write_json
from cgar.sudoku.grid import N_CELLS, UNITS, grid_problem, parse_grids

EXAMPLES_PER_KIND = 3
_QUESTION_CHARS = ".0123456789"
_ANSWER_CHARS = "123456789"
_UNIT_NAMES = ("row", "column", "box")


def _cell(i: int) -> str:
    return f"r{i // 9 + 1}c{i % 9 + 1}"


def _first_clash(grids: np.ndarray) -> np.ndarray:
    """Per grid, the index of the first unit holding some digit twice, or -1 (blanks never clash)."""
    bits = np.left_shift(1, grids, dtype=np.uint16) >> 1  # digit d -> bit d-1, blank -> 0
    clash = np.empty((len(grids), len(UNITS)), dtype=bool)
    for u, cells in enumerate(UNITS):  # one unit at a time keeps the temporaries at [N, 9]
        unit = bits[:, cells]
        # Distinct digits sum to the same value as their OR; a repeated digit makes the sum larger.
        clash[:, u] = unit.sum(axis=1, dtype=np.uint32) != np.bitwise_or.reduce(unit, axis=1)
    return np.where(clash.any(axis=1), clash.argmax(axis=1), -1)


def _clash_text(grid: np.ndarray, unit: int) -> str:
    counts = np.bincount(grid[UNITS[unit]], minlength=10)[1:]
    digit = int(np.argmax(counts > 1)) + 1
    return f"digit {digit} appears {counts[digit - 1]} times in {_UNIT_NAMES[unit // 9]} {unit % 9 + 1}"


def _diff_text(what: str, differs: np.ndarray, name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> str:
    cell = int(np.argmax(differs))
    return f"{what} at {_cell(cell)}: {name_a} has {a[cell]}, {name_b} has {b[cell]}"


class _SeenQuestions:
    """8-byte question hashes with the line of their first occurrence, as sorted numpy runs.

    Runs merge like a binary counter (O(log n) runs, O(n log n) total), so 3.8M rows take ~46 MB instead of
    the ~400 MB a Python dict of ints would. A hash collision (p ~ 1e-6 at 4M rows) would flag a false dup.
    """

    def __init__(self):
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def first_lines(self, keys: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """Per key, the line where it was first seen (earlier calls first, then earlier in this call) or 0;
        the keys seen for the first time are recorded."""
        found = np.zeros(len(keys), dtype=np.int64)
        for run_keys, run_lines in self.runs:
            pos = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
            hit = run_keys[pos] == keys
            found[hit] = run_lines[pos[hit]]
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        repeat = (first[inverse] != np.arange(len(keys))) & (found == 0)
        found[repeat] = lines[first[inverse][repeat]]
        new = found == 0
        self._add(keys[new], lines[new].astype(np.uint32))
        return found

    def _add(self, keys: np.ndarray, lines: np.ndarray) -> None:
        if len(keys) == 0:
            return
        while self.runs and len(self.runs[-1][0]) <= len(keys):
            k, l = self.runs.pop()
            keys, lines = np.concatenate([k, keys]), np.concatenate([l, lines])
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], lines[order]))


def _hash(question: str) -> int:
    return int.from_bytes(hashlib.blake2b(question.encode("ascii"), digest_size=8).digest(), "little")


def _rating_stats(counts: Counter) -> dict | None:
    if not counts:
        return None
    values = np.array(sorted(counts), dtype=np.float64)
    weights = np.array([counts[v] for v in sorted(counts)], dtype=np.float64)
    cum = np.cumsum(weights) / weights.sum()
    q = {f"p{p}": int(values[np.searchsorted(cum, p / 100)]) for p in (10, 50, 90)}
    return {"min": int(values[0]), "max": int(values[-1]), "mean": float(values @ weights / weights.sum()), **q}


class _Importer:
    """One import run: per-row checks, batched grid/solver checks, error policy and the running summary."""

    def __init__(self, src: Path, fmt: str, *, source: str | None, on_error: str, check_unique: bool,
                 batch_size: int, progress: bool):
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        self.src, self.fmt, self.on_error, self.check_unique = src, fmt, on_error, check_unique
        self.source = source if source is not None else src.stem
        self.batch_size = batch_size
        self.use_solver = check_unique or fmt == "list"
        self.seen = _SeenQuestions()
        self.batch: list[tuple[int, str, str, str | None, int | None]] = []
        self.rows_read = self.rows_written = 0
        self.skipped: Counter = Counter()
        self.examples: dict[str, list[dict]] = {}
        self.sources: Counter = Counter()
        self.ratings: Counter = Counter()
        self.cgar_ratings: Counter = Counter()
        self.bar = tqdm(desc=f"import {src.name}", unit="rows", unit_scale=True, file=sys.stderr,
                        disable=not progress)

    def reject(self, line: int, kind: str, message: str) -> None:
        if self.on_error == "fail":
            raise DataError(self.src, message, line=line)
        self.skipped[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < EXAMPLES_PER_KIND:
            examples.append({"line": line, "message": message})

    def _grid_error(self, name: str, text: str, allowed: str, blanks: bool) -> tuple[str, str] | None:
        # str.strip runs in C: an empty remainder means every character is allowed (the common case).
        if len(text) == N_CELLS and not text.strip(allowed):
            return None
        kind = "wrong_length" if len(text) != N_CELLS else "bad_char"
        return kind, f"{name}: {grid_problem(text, allow_blanks=blanks)}"

    def _row_error(self, fields) -> tuple[str, str] | None:
        """The cheap checks of one row, in column order; None when it may go into the batch."""
        if self.fmt == "list":
            return self._grid_error("puzzle", fields, _QUESTION_CHARS, True)
        if len(fields) != len(HEADER):
            kind = "missing_columns" if len(fields) < len(HEADER) else "too_many_columns"
            return kind, f"{kind.replace('_', ' ')}: expected {len(HEADER)} ({','.join(HEADER)}), found {len(fields)}"
        source, question, answer, rating = fields
        if not source or not source.isprintable():
            return "bad_source", f"source {source!r} is empty or has unprintable/undecodable characters"
        error = self._grid_error("question", question, _QUESTION_CHARS, True)
        error = error or self._grid_error("answer", answer, _ANSWER_CHARS, False)
        if error is None:
            try:
                int(rating)
            except ValueError:
                error = "bad_rating", f"rating {rating!r} is not an integer"
        return error

    def rows(self, records: Iterable[tuple[int, object]]) -> Iterator[tuple]:
        """Output rows for (line, fields) records, in input order."""
        for line, fields in records:
            self.rows_read += 1
            error = self._row_error(fields)
            if error is not None:
                if self.on_error == "fail":
                    yield from self.flush()  # earlier rows of the batch must be judged first
                self.reject(line, *error)
                continue
            if self.fmt == "list":
                self.batch.append((line, self.source, fields.replace("0", "."), None, None))
            else:
                source, question, answer, rating = fields
                self.batch.append((line, source, question.replace("0", "."), answer, int(rating)))
            if len(self.batch) >= self.batch_size:
                yield from self.flush()
        yield from self.flush()
        if self.rows_read == 0:  # raised in here so that atomic_write leaves nothing behind
            what = " after the header" if self.fmt == "csv" else " (only blank or comment lines)"
            raise DataError(self.src, "empty file: no puzzle rows" + what)

    def flush(self) -> Iterator[tuple]:
        batch, self.batch = self.batch, []
        self.bar.update(self.rows_read - self.bar.n)
        if not batch:
            return
        lines = np.array([b[0] for b in batch], dtype=np.int64)
        questions = parse_grids([b[2] for b in batch])
        answers = parse_grids([b[3] for b in batch]) if self.fmt == "csv" else np.zeros_like(questions)
        ok = np.ones(len(batch), dtype=bool)
        errors: dict[int, tuple[str, str]] = {}

        def reject(mask, kind, message):
            for i in np.flatnonzero(mask & ok):
                errors[int(i)] = (kind, message(int(i)))
            ok[mask] = False

        clash = _first_clash(questions)
        reject(clash >= 0, "givens_conflict",
               lambda i: f"givens contradict each other: {_clash_text(questions[i], clash[i])}")
        if self.fmt == "csv":
            clash = _first_clash(answers)
            reject(clash >= 0, "invalid_answer",
                   lambda i: f"answer is not a valid Sudoku grid: {_clash_text(answers[i], clash[i])}")
            differs = (questions != 0) & (questions != answers)
            reject(differs.any(axis=1), "answer_contradicts_given",
                   lambda i: _diff_text("answer contradicts a given", differs[i], "question", questions[i],
                                        "answer", answers[i]))
        cgar = np.full(len(batch), -1, dtype=np.int64)  # our rating; -1 = not computed (solver off)
        if self.use_solver:
            self._solver_checks(questions, answers, ok, reject, cgar)
        keys = np.array([_hash(b[2]) for b, good in zip(batch, ok) if good], dtype=np.uint64)
        dup_of = np.zeros(len(batch), dtype=np.int64)
        dup_of[ok] = self.seen.first_lines(keys, lines[ok])
        reject(dup_of > 0, "duplicate", lambda i: f"duplicate question: same puzzle as line {dup_of[i]}")

        for i in sorted(errors):
            self.reject(int(lines[i]), *errors[i])
        answer_text = (answers + 48).astype(np.uint8)  # digits -> ASCII, for the list's solved answers
        for i in np.flatnonzero(ok):
            _, source, question, answer, rating = batch[i]
            self.sources[source] += 1
            self.rows_written += 1
            if self.fmt == "list":
                self.ratings[int(cgar[i])] += 1
                yield source, question, answer_text[i].tobytes().decode("ascii"), int(cgar[i])
            else:
                self.ratings[rating] += 1
                if cgar[i] >= 0:
                    self.cgar_ratings[int(cgar[i])] += 1
                yield source, question, answer, rating, int(cgar[i]) if cgar[i] >= 0 else ""

    def _solver_checks(self, questions, answers, ok, reject, rating) -> None:
        """Solution count, rating (and, for a list, the answer) from one solver pass over the rows still ok."""
        from cgar.sudoku.solver import solve_batch

        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return
        # parallel: numba threads over the batch (identical results); the solver dominates on hard puzzles.
        solutions, counts, guesses = solve_batch(questions[idx], limit=2 if self.check_unique else 1,
                                                 parallel=True)
        rating[idx] = guesses  # solve_batch's guesses are the limit=1 run's: rate_batch's value, no 2nd pass
        count = np.full(len(ok), -1, dtype=np.int64)
        count[idx] = counts
        what = "puzzle" if self.fmt == "list" else "question"
        reject(count == 0, "no_solution", lambda i: f"{what} has no solution")
        reject(count >= 2, "multiple_solutions",
               lambda i: f"{what} has more than one solution (a Sudoku needs exactly one)")
        if self.fmt == "list":
            answers[idx] = solutions  # the list's answers come from the solver
            return
        solved = answers.copy()
        solved[idx] = solutions
        # A valid answer that agrees with the givens of a unique puzzle is its solution, so this only fires if
        # the solver and the grid checks disagree: cheap insurance that the answer column is right.
        differs = solved != answers
        reject(differs.any(axis=1), "answer_not_solution",
               lambda i: _diff_text("answer differs from the unique solution", differs[i], "answer", answers[i],
                                    "solution", solved[i]))

    def summary(self, dst: Path, seconds: float) -> dict:
        return {
            "src": str(self.src), "dst": str(dst), "format": self.fmt, "check_unique": self.check_unique,
            "rows_read": self.rows_read, "rows_written": self.rows_written,
            "rows_skipped": sum(self.skipped.values()), "skipped": dict(self.skipped), "examples": self.examples,
            "sources": dict(sorted(self.sources.items())),
            "rating": _rating_stats(self.ratings), "cgar_rating": _rating_stats(self.cgar_ratings),
            "seconds": round(seconds, 3), "rows_per_s": round(self.rows_read / max(seconds, 1e-9), 1),
        }


def _csv_records(path: Path, f) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(f)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(path, f"empty file (expected the header {','.join(HEADER)})")
        if header != list(HEADER):
            raise DataError(path, f"wrong header: expected {','.join(HEADER)!r}, found {','.join(header)!r}", line=1)
        for row in reader:
            if row:  # csv yields [] for a blank line
                yield reader.line_num, row
    except csv.Error as e:
        raise DataError(path, f"malformed CSV: {e}", line=reader.line_num) from None


def _list_records(f) -> Iterator[tuple[int, str]]:
    for line_no, line in enumerate(f, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield line_no, text.split(None, 1)[0]


def _run(src, dst, fmt: str, *, source=None, on_error="fail", check_unique=True, summary_path=None,
         progress=False, batch_size=4096) -> dict:
    src, dst = Path(src), Path(dst)
    start = time.perf_counter()
    imp = _Importer(src, fmt, source=source, on_error=on_error, check_unique=check_unique,
                    batch_size=batch_size, progress=progress)
    header = HEADER + ("cgar_rating",) if fmt == "csv" else HEADER
    # surrogateescape: undecodable bytes become odd characters that the row checks report with a position.
    with open(src, newline="", encoding="utf-8-sig", errors="surrogateescape") as f, imp.bar:
        records = _csv_records(src, f) if fmt == "csv" else _list_records(f)
        write_puzzle_csv(dst, imp.rows(records), header=header)
    summary = imp.summary(dst, time.perf_counter() - start)
    if summary_path is not None:
        atomic_write_json(summary_path, summary)
    return summary


def import_csv(src: str | os.PathLike, dst: str | os.PathLike, *, on_error: str = "fail",
               check_unique: bool = True, summary_path=None, progress: bool = False, batch_size: int = 4096) -> dict:
    """Validate a Sudoku-Extreme CSV and write it normalised ('.' blanks) with a `cgar_rating` column."""
    return _run(src, dst, "csv", on_error=on_error, check_unique=check_unique, summary_path=summary_path,
                progress=progress, batch_size=batch_size)


def import_puzzle_list(src: str | os.PathLike, dst: str | os.PathLike, *, source: str | None = None,
                       on_error: str = "fail", check_unique: bool = True, summary_path=None,
                       progress: bool = False, batch_size: int = 4096) -> dict:
    """Solve and rate a plain puzzle list into our CSV; `source` defaults to the file stem."""
    return _run(src, dst, "list", source=source, on_error=on_error, check_unique=check_unique,
                summary_path=summary_path, progress=progress, batch_size=batch_size)


def sniff_format(src: str | os.PathLike) -> str:
    """'csv' if the first non-blank, non-comment line is the CSV header or contains a comma, else 'list'."""
    with open(src, encoding="utf-8-sig", errors="surrogateescape") as f:
        for line in f:
            text = line.strip()
            if text and not text.startswith("#"):
                return "csv" if text.startswith(",".join(HEADER)) or "," in text else "list"
    return "list"


def import_puzzles(src: str | os.PathLike, dst: str | os.PathLike, *, format: str = "auto",
                   source: str | None = None, **kwargs) -> dict:
    """`import_csv` or `import_puzzle_list` by `format` ('auto' sniffs it); `source` is used by lists only."""
    fmt = sniff_format(src) if format == "auto" else format
    if fmt == "csv":
        return import_csv(src, dst, **kwargs)
    if fmt == "list":
        return import_puzzle_list(src, dst, source=source, **kwargs)
    raise ValueError(f"format must be 'auto', 'csv' or 'list', got {format!r}")
