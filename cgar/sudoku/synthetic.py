"""Synthetic (puzzle, solution) pairs without a solver: symmetries of one pattern grid with random cells blanked.

Valid and consistent, not necessarily uniquely solvable: for tests of layout and augmentation, and for benchmarks
whose cost does not depend on the puzzles (`bench/gpu_check.py`). Never training data for a result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cgar.data.puzzle_csv import write_puzzle_csv
from cgar.sudoku.grid import SUDOKU_9, GridShape, format_grid
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries


def pattern_grid(shape: GridShape = SUDOKU_9) -> np.ndarray:
    """A valid solution grid: grid[r][c] = (box_cols * (r % box_rows) + r // box_rows + c) % n + 1 (for 9x9 the
    same grid as (3r + r//3 + c) % 9 + 1)."""
    r, c = np.divmod(np.arange(shape.cells), shape.n)
    return ((shape.box_cols * (r % shape.box_rows) + r // shape.box_rows + c) % shape.n + 1).astype(np.uint8)


def random_pairs(n: int, seed: int, blanks: tuple[int, int] | None = None, shape: GridShape = SUDOKU_9):
    """n (puzzle, solution) pairs: random symmetries of the pattern grid with random cells blanked (blanks
    defaults to (45, 60) for 9x9, the same share of the cells otherwise)."""
    if blanks is None:
        blanks = (shape.cells * 45 // 81, shape.cells * 60 // 81)
    rng = np.random.default_rng(seed)
    solutions = apply_symmetries(np.tile(pattern_grid(shape), (n, 1)), random_symmetries(rng, n, shape))
    puzzles = solutions.copy()
    for i in range(n):
        k = rng.integers(blanks[0], blanks[1] + 1)
        puzzles[i, rng.choice(shape.cells, size=k, replace=False)] = 0
    return puzzles, solutions


def write_pairs_csv(path: Path, n: int, seed: int, shape: GridShape = SUDOKU_9, source: str = "x") -> Path:
    """`random_pairs` as a puzzle CSV (rating 0)."""
    p, s = random_pairs(n, seed, shape=shape)
    write_puzzle_csv(path, [(source, format_grid(a), format_grid(b), 0) for a, b in zip(p, s)])
    return path
