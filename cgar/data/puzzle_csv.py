"""The puzzle CSV format shared by the generator, the importer and the split: Sudoku-Extreme's own.

Header `source,question,answer,rating`; question and answer are 81 characters row-major, '.' for a blank;
rating is an integer. Files written here are exactly what HRM/TRM's `build_sudoku_dataset.py` reads.
"""

from __future__ import annotations

import csv
import os
from typing import Iterable, Sequence

from cgar.io_utils import atomic_write

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
