"""Import real Sudoku-Extreme CSVs and the puzzle files people have into our puzzle CSV, validating every row.

Input kinds and their detection are in `cgar.data.formats` (Sudoku-Extreme CSV/TSV including this project's
own output, Kaggle `quizzes,solutions` / `puzzle,solution`, tdoku `puzzle:count:solution`, plain lists;
gzip/bzip2/xz/zstd compressed or not). Question '.' or '0' blank; answer 81 digits when the format has one.

Output header: `source,question,answer,rating,cgar_rating` plus `class_rating,class_rating_sd` when the class
rating is computed (`class_copies` > 0, see `cgar.sudoku.rating`). `rating` is the file's own (tdoku) rating
where the format has one, else ours; `cgar_rating` is always ours (one run on the stored string). For formats
without a source column the caller (or the file name) gives the source; without an answer the solver supplies it.

Streaming: rows are read one at a time and checked cheaply (columns, lengths, characters, rating) as they
come; the grid and solver checks run on batches of `batch_size` rows, and validated rows go straight into
the output through `atomic_write`, so memory does not grow with the file except for the duplicate index
(12 bytes a row) and a failure or kill leaves no partial output.

`check_unique=False` on a file with answers skips the solver entirely: no solution count, no check that the
answer is the unique solution, and `cgar_rating` and the class rating are left empty. Structural checks, the
answer's validity and its agreement with the givens still run. Without answers the solver always runs (it is
where the answer comes from); `check_unique=False` then only stops it from looking for a second solution.

`on_error="fail"` raises a `DataError` (file:line: message) at the first bad row; `"skip"` drops bad rows
and counts them per kind in the summary, keeping the first few messages as examples, and still raises when no
valid row remains (the output is then not written). File-level problems (empty file, wrong header, malformed
CSV, an undetectable format) always raise.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from cgar.data.formats import FORMATS, RowError, detect_format, open_text, records
from cgar.data.puzzle_csv import HEADER, write_puzzle_csv
from cgar.io_utils import DataError, atomic_write_json
from cgar.sudoku.grid import N_CELLS, SUDOKU_9, UNITS, grid_problem, parse_grids
from cgar.sudoku.rating import CLASS_COLUMNS, DEFAULT_CLASS_COPIES, class_ratings, format_class_rating

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
                 batch_size: int, progress: bool, class_copies: int):
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        if class_copies < 0:
            raise ValueError(f"class_copies must be >= 0 (0 = no class rating), got {class_copies}")
        self.src, self.fmt, self.on_error, self.check_unique = src, fmt, on_error, check_unique
        self.source = source if source is not None else src.name.split(".", 1)[0]
        self.batch_size = batch_size
        self.has_answers = fmt in ("csv", "tsv", "kaggle")  # tdoku lines may have one too: per row
        self.use_solver = check_unique or not self.has_answers
        self.class_copies = class_copies if self.use_solver else 0
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
        return kind, f"{name}: {grid_problem(text, allow_blanks=blanks, shape=SUDOKU_9)}"  # Sudoku-Extreme: 9x9

    @property
    def header(self) -> tuple[str, ...]:
        return HEADER + ("cgar_rating",) + (CLASS_COLUMNS if self.class_copies else ())

    def _row_error(self, fields) -> tuple[str, str] | None:
        """The cheap checks of one row, in column order; None when it may go into the batch."""
        if isinstance(fields, RowError):
            return fields
        source, question, answer, rating = fields
        if not source or not source.isprintable():
            return "bad_source", f"source {source!r} is empty or has unprintable/undecodable characters"
        error = self._grid_error("question" if self.has_answers else "puzzle", question, _QUESTION_CHARS, True)
        if error is None and answer is not None:
            error = self._grid_error("answer", answer, _ANSWER_CHARS, False)
        if error is None and rating is not None:
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
            source, question, answer, rating = fields
            self.batch.append((line, source, question.replace("0", "."), answer,
                               None if rating is None else int(rating)))
            if len(self.batch) >= self.batch_size:
                yield from self.flush()
        yield from self.flush()
        # raised in here so that atomic_write leaves nothing behind
        if self.rows_read == 0:
            what = " after the header" if self.fmt in ("csv", "tsv", "kaggle") else " (only blank or comment lines)"
            raise DataError(self.src, "empty file: no puzzle rows" + what)
        if self.rows_written == 0:
            raise DataError(self.src, f"no valid rows: all {self.rows_read} rows were rejected "
                                      f"({skipped_text(self.skipped)}); nothing written")

    def flush(self) -> Iterator[tuple]:
        batch, self.batch = self.batch, []
        self.bar.update(self.rows_read - self.bar.n)
        if not batch:
            return
        lines = np.array([b[0] for b in batch], dtype=np.int64)
        questions = parse_grids([b[2] for b in batch])
        given = np.array([b[3] is not None for b in batch], dtype=bool)  # rows that come with an answer
        answers = np.zeros_like(questions)
        if given.any():
            answers[given] = parse_grids([b[3] for b in batch if b[3] is not None])
        ok = np.ones(len(batch), dtype=bool)
        errors: dict[int, tuple[str, str]] = {}

        def reject(mask, kind, message):
            for i in np.flatnonzero(mask & ok):
                errors[int(i)] = (kind, message(int(i)))
            ok[mask] = False

        clash = _first_clash(questions)
        reject(clash >= 0, "givens_conflict",
               lambda i: f"givens contradict each other: {_clash_text(questions[i], clash[i])}")
        if given.any():
            clash = np.where(given, _first_clash(answers), -1)
            reject(clash >= 0, "invalid_answer",
                   lambda i: f"answer is not a valid Sudoku grid: {_clash_text(answers[i], clash[i])}")
            differs = given[:, None] & (questions != 0) & (questions != answers)
            reject(differs.any(axis=1), "answer_contradicts_given",
                   lambda i: _diff_text("answer contradicts a given", differs[i], "question", questions[i],
                                        "answer", answers[i]))
        cgar = np.full(len(batch), -1, dtype=np.int64)  # our rating; -1 = not computed (solver off)
        if self.use_solver:
            self._solver_checks(questions, answers, given, ok, reject, cgar)
        keys = np.array([_hash(b[2]) for b, good in zip(batch, ok) if good], dtype=np.uint64)
        dup_of = np.zeros(len(batch), dtype=np.int64)
        dup_of[ok] = self.seen.first_lines(keys, lines[ok])
        reject(dup_of > 0, "duplicate", lambda i: f"duplicate question: same puzzle as line {dup_of[i]}")

        for i in sorted(errors):
            self.reject(int(lines[i]), *errors[i])
        keep = np.flatnonzero(ok)
        if self.class_copies and len(keep):
            mean, sd = class_ratings(questions[keep], self.class_copies, parallel=True)
            classes = dict(zip(keep.tolist(), map(format_class_rating, mean, sd)))
        answer_text = (answers + 48).astype(np.uint8)  # digits -> ASCII, for solved answers
        for i in keep:
            _, source, question, answer, rating = batch[i]
            self.sources[source] += 1
            self.rows_written += 1
            ours = int(cgar[i]) if cgar[i] >= 0 else None
            rating = ours if rating is None else rating  # formats without a rating get ours
            self.ratings[rating] += 1
            if ours is not None:
                self.cgar_ratings[ours] += 1
            answer = answer_text[i].tobytes().decode("ascii") if answer is None else answer
            yield (source, question, answer, rating, "" if ours is None else ours,
                   *(classes[i] if self.class_copies else ()))

    def _solver_checks(self, questions, answers, given, ok, reject, rating) -> None:
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
        what = "question" if self.has_answers else "puzzle"
        reject(count == 0, "no_solution", lambda i: f"{what} has no solution")
        reject(count >= 2, "multiple_solutions",
               lambda i: f"{what} has more than one solution (a Sudoku needs exactly one)")
        solved = answers.copy()
        solved[idx] = solutions
        answers[~given] = solved[~given]  # rows without an answer get the solver's
        # A valid answer that agrees with the givens of a unique puzzle is its solution, so this only fires if
        # the solver and the grid checks disagree: cheap insurance that the answer column is right.
        differs = solved != answers
        reject(differs.any(axis=1), "answer_not_solution",
               lambda i: _diff_text("answer differs from the unique solution", differs[i], "answer", answers[i],
                                    "solution", solved[i]))

    def summary(self, dst: Path, seconds: float) -> dict:
        return {
            "src": str(self.src), "dst": str(dst), "format": self.fmt, "check_unique": self.check_unique,
            "class_copies": self.class_copies,
            "rows_read": self.rows_read, "rows_written": self.rows_written,
            "rows_skipped": sum(self.skipped.values()), "skipped": dict(self.skipped), "examples": self.examples,
            "sources": dict(sorted(self.sources.items())),
            "rating": _rating_stats(self.ratings), "cgar_rating": _rating_stats(self.cgar_ratings),
            "seconds": round(seconds, 3), "rows_per_s": round(self.rows_read / max(seconds, 1e-9), 1),
        }


def skipped_text(skipped: Counter | dict) -> str:
    """'kind=n, ...' per rejection reason (most frequent first), or 'none'."""
    return ", ".join(f"{k}={n}" for k, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def import_puzzles(src: str | os.PathLike, dst: str | os.PathLike, *, format: str = "auto",
                   source: str | None = None, on_error: str = "fail", check_unique: bool = True,
                   class_copies: int = DEFAULT_CLASS_COPIES, summary_path=None, progress: bool = False,
                   batch_size: int = 4096) -> dict:
    """Validate any supported puzzle file (`format`: 'auto' detects it, see `cgar.data.formats`) into our CSV.

    `source` labels the rows of formats without a source column (default: the file name up to its first dot).
    """
    src, dst = Path(src), Path(dst)
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {', '.join(FORMATS)}, got {format!r}")
    fmt = detect_format(src) if format == "auto" else format
    start = time.perf_counter()
    imp = _Importer(src, fmt, source=source, on_error=on_error, check_unique=check_unique,
                    batch_size=batch_size, progress=progress, class_copies=class_copies)
    with open_text(src) as f, imp.bar:
        write_puzzle_csv(dst, imp.rows(records(src, f, fmt, imp.source)), header=imp.header)
    summary = imp.summary(dst, time.perf_counter() - start)
    if summary_path is not None:
        atomic_write_json(summary_path, summary)
    return summary


def import_csv(src: str | os.PathLike, dst: str | os.PathLike, **kwargs) -> dict:
    """A Sudoku-Extreme CSV (`import_puzzles` with format='csv')."""
    return import_puzzles(src, dst, format="csv", **kwargs)


def import_puzzle_list(src: str | os.PathLike, dst: str | os.PathLike, **kwargs) -> dict:
    """A plain puzzle list, solved and rated (`import_puzzles` with format='list')."""
    return import_puzzles(src, dst, format="list", **kwargs)
