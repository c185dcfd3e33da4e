"""The puzzle CSV format shared by the generator, the importer, the split and the build: Sudoku-Extreme's own.

Header `source,question,answer,rating`; question and answer are n*n characters row-major, '.' for a blank (81 for
the paper's 9x9; 36 / 16 for the 6x6 / 4x4 grids of `cgar.sudoku.grid`); rating is an integer. Every row of a file
holds the same grid, the first row's: the length tells it. Files written here are exactly what HRM/TRM's
`build_sudoku_dataset.py` reads (for 9x9).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Sequence

from cgar.io_utils import DataError, atomic_write
from cgar.sudoku.grid import GridShape, grid_problem, shape_of

HEADER = ("source", "question", "answer", "rating")


def write_puzzle_csv(
    path: str | os.PathLike,
    rows: Iterable[Sequence],
    header: Sequence[str] = HEADER,
) -> int:
    """Write rows (source, question, answer, rating[, extra...]) atomically; returns the row count."""
    n = 0
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for row in rows:
            w.writerow(row)
            n += 1
    return n


def _check_utf8(path: Path, row: list[str], line_no: int) -> None:
    """Bytes that are not UTF-8 arrive as lone surrogates (errors="surrogateescape"); name their line."""
    text = ",".join(row)
    if text.isascii():  # the fast path: every valid puzzle CSV row
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        byte = ord(text[e.start]) - 0xDC00
        raise DataError(path, f"not valid UTF-8 (byte 0x{byte:02x})", line=line_no) from None


def read_header(path: Path) -> list[str]:
    """The header of a puzzle CSV: source,question,answer,rating, then any extra columns (kept by split)."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        header = next(csv.reader(f), None)
    if header is None:
        raise DataError(path, "empty file (expected a header source,question,answer,rating)")
    _check_utf8(path, header, 1)
    if header[:4] != ["source", "question", "answer", "rating"]:
        raise DataError(path, f"wrong header {header!r}; expected source,question,answer,rating", line=1)
    return header


def iter_puzzle_rows(path: Path, difficulty: str = "rating", shape: GridShape | None = None,
                     shape_from: str = "the file's first row"):
    """Yield (line_no, source, question, answer, difficulty value, extra columns) of a puzzle CSV.

    difficulty: 'rating' (int), 'class_rating' (float; the column must exist and be filled) or 'auto' (the class
    rating when the header has it, else the rating). Every question and answer must have the length of `shape`'s
    grid (None: the first row's; `shape_from` says where a given one comes from, for the error); the characters
    are checked by the readers that parse them."""
    header = read_header(path)
    column = resolve_difficulty(path, header, difficulty)
    col = header.index(column)
    parse = int if column == "rating" else float
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        next(reader)
        for line_no, row in enumerate(reader, start=2):
            _check_utf8(path, row, line_no)
            if len(row) != len(header):
                raise DataError(path, f"expected {len(header)} columns ({','.join(header)}), got {len(row)}",
                                line=line_no)
            if shape is None:
                shape = _first_shape(path, row[1], line_no)
            for name, text in (("question", row[1]), ("answer", row[2])):
                if len(text) != shape.cells:  # a 9x9 row in a 6x6 file: one grid per file
                    raise DataError(path, f"{name} has {len(text)} characters, expected {shape.cells}: the "
                                    f"{shape.name} grid of {shape_from} (every row must hold the same grid)",
                                    line=line_no)
            try:
                value = parse(row[col])
            except ValueError:
                kind = "an integer" if parse is int else "a number"
                raise DataError(path, f"{column} {row[col]!r} is not {kind}", line=line_no) from None
            yield line_no, row[0], row[1], row[2], value, row[4:]


def resolve_difficulty(path: Path, header: list[str], difficulty: str) -> str:
    """The column name `difficulty` stands for in a file with this header."""
    if difficulty == "auto":
        return "class_rating" if "class_rating" in header else "rating"
    if difficulty not in header:
        raise DataError(path, f"difficulty column {difficulty!r} is not in the header {','.join(header)}", line=1)
    return difficulty


def _first_shape(path: Path, question: str, line_no: int) -> GridShape:
    try:
        return shape_of(len(question))
    except ValueError:
        raise DataError(path, f"question: {grid_problem(question, allow_blanks=True)}", line=line_no) from None


def csv_shape(path: str | os.PathLike) -> GridShape | None:
    """The grid of a puzzle CSV, told by its first row's question length (None for a file without rows)."""
    for _, _, question, *_ in iter_puzzle_rows(Path(path)):
        return shape_of(len(question))
    return None
