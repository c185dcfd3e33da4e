"""Exact canonical form for the small shapes (6x6 with 2x3 boxes, 4x4): every cell permutation of the group.

Same definition as canonical.py's 9x9 one: for each cell permutation pi of the group (transpose when the
boxes are square, x band/row perms x stack/column perms) key(pi(p)) = (pattern, digits relabelled 1, 2, ... by
first appearance, row-major); the form is the relabelled grid of the smallest key. The groups are small
(4x4: 2 * 8 * 8 = 128 cell permutations; 6x6: 48 * 72 = 3456, no transpose), so instead of 9x9's level-wise
search the kernel scans them all: row masks (column 0 as the most significant bit) permuted through a
[2^n, column perms] table, compared row by row with an early exit, keep the pattern-minimal permutations,
then minimise the relabelled digits over those, again stopping a candidate at its first larger cell.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product

import numba
import numpy as np

from cgar.sudoku.grid import GridShape
from cgar.sudoku.symmetry import perms_table


def all_line_perms(groups: int, size: int) -> np.ndarray:
    """int64[groups! * size!^groups, groups * size]: every block perm composed with every in-block perm, in
    the convention of symmetry.line_perms (entry c = source line of target line c)."""
    outer_t, inner_t = perms_table(groups), perms_table(size)
    return np.array([[o[b] * size + inner[b][i] for b in range(groups) for i in range(size)]
                     for o in outer_t for inner in product(inner_t, repeat=groups)], dtype=np.int64)


@lru_cache(maxsize=None)
def group_tables(shape: GridShape) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(transposes 1 or 2, row perms [R, n], column perms [C, n], PM [2^n, C]): PM[m, b] = row mask m with
    its columns permuted by column perm b (target column c takes source column col_perms[b, c])."""
    n = shape.n
    rows = all_line_perms(shape.box_cols, shape.box_rows)  # box_cols bands of box_rows rows
    cols = all_line_perms(shape.box_rows, shape.box_cols)  # box_rows stacks of box_cols columns
    masks = np.arange(1 << n)[:, None]
    pm = np.zeros((1 << n, len(cols)), dtype=np.int64)
    for c in range(n):
        pm |= ((masks >> (n - 1 - cols[:, c])) & 1) << (n - 1 - c)
    return (2 if shape.transposable else 1), rows, cols, pm


@numba.njit(cache=True, inline="always")
def keep_if_smaller(puzzle, n, t, row_perms, a, col_perms, b, label, cand, out):
    """Relabel the digits of the permuted puzzle (target cell (r, c) takes source (row_perms[a, r],
    col_perms[b, c]) of the puzzle, transposed if t) 1, 2, ... in order of first appearance, row-major, and
    overwrite `out` when the result is smaller. (Tables and indices rather than row views: a view is built at
    every call, which cost the 9x9 worst case ~25%.) Cells are built lazily in that order, so a losing candidate stops at its first larger cell
    (with millions of tied candidates, e.g. a complete 9x9 grid, most stop within the first row or two).
    Shared by the 9x9 search (canonical.py) and the small shapes' scan."""
    label[:] = 0
    next_label = 1
    smaller = False
    for r in range(n):
        sr = row_perms[a, r]
        for c in range(n):
            sc = col_perms[b, c]
            d = puzzle[sc * n + sr] if t else puzzle[sr * n + sc]
            if d != 0:
                if label[d] == 0:
                    label[d] = next_label
                    next_label += 1
                d = label[d]
            j = r * n + c
            cand[j] = d
            if not smaller:  # still tied with the best so far: compare this cell
                if d > out[j]:
                    return
                if d < out[j]:
                    smaller = True
    if smaller:
        out[:] = cand


@numba.njit(cache=True)
def _small_one(puzzle, out, n, n_t, row_perms, col_perms, pm):
    """Write the canonical form of puzzle (uint8[n*n]) into out."""
    n_rows, n_cols = row_perms.shape[0], col_perms.shape[0]
    masks = np.zeros((2, n), dtype=np.int64)  # row masks of the puzzle (t=0) and of its transpose (t=1)
    for i in range(n * n):
        if puzzle[i] != 0:
            r, c = i // n, i % n
            masks[0, r] |= 1 << (n - 1 - c)
            masks[1, c] |= 1 << (n - 1 - r)
    # Pattern: the permutations (t, a, b) reaching the smallest sequence of permuted row masks.
    best = np.full(n, 1 << n, dtype=np.int64)  # larger than any mask: the first permutation always wins
    ties = np.empty(n_t * n_rows * n_cols, dtype=np.int64)
    n_ties = 0
    for t in range(n_t):
        for a in range(n_rows):
            for b in range(n_cols):
                state = 0  # 0 = tied so far, -1 = smaller (then best is overwritten as we go), 1 = larger
                for r in range(n):
                    v = pm[masks[t, row_perms[a, r]], b]
                    if state == 0:
                        if v > best[r]:
                            state = 1
                            break
                        if v < best[r]:
                            state = -1
                    if state == -1:
                        best[r] = v
                if state == 1:
                    continue
                if state == -1:
                    n_ties = 0
                ties[n_ties] = (t * n_rows + a) * n_cols + b
                n_ties += 1
    # Digits: the smallest relabelled grid among the pattern-minimal permutations.
    out[:] = 255  # larger than any relabelled digit, so the first candidate always wins
    cand = np.empty(n * n, dtype=np.uint8)
    label = np.empty(n + 1, dtype=np.uint8)
    for i in range(n_ties):
        code = ties[i]
        b = code % n_cols
        a = (code // n_cols) % n_rows
        t = code // (n_cols * n_rows)
        keep_if_smaller(puzzle, n, t, row_perms, a, col_perms, b, label, cand, out)


@numba.njit(cache=True, parallel=True)
def _small_batch(puzzles, out, n, n_t, row_perms, col_perms, pm):
    # Each puzzle is independent and writes only its own row, so the result does not depend on threading.
    for i in numba.prange(puzzles.shape[0]):
        _small_one(puzzles[i], out[i], n, n_t, row_perms, col_perms, pm)


def canonical_forms_small(puzzles: np.ndarray, shape: GridShape) -> np.ndarray:
    """uint8[N, n*n] (C-contiguous, of `shape`) -> their canonical forms."""
    out = np.empty_like(puzzles)
    if len(puzzles):
        _small_batch(puzzles, out, shape.n, *group_tables(shape))
    return out
