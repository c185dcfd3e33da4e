"""The Sudoku symmetry group and HRM/TRM-style augmentation, vectorised over batches, for any `GridShape`.

A symmetry of an n x n grid (boxes of box_rows x box_cols) is (transpose, row_perm, col_perm, digit_map):
- transpose (p = 0.5 in augmentation) is applied first, as in HRM's `shuffle_sudoku`; only square boxes allow
  it (transposing 6x6's 2x3 boxes gives 3x2 boxes, another shape), so elsewhere it is always False;
- row_perm permutes the bands (box_cols of them, box_rows rows each) and the rows inside each band; col_perm
  does the same with the stacks (box_rows of them, box_cols columns each) and their columns; output cell
  (r, c) takes the (possibly transposed) input's cell (row_perm[r], col_perm[c]);
- digit_map[0] = 0 keeps blanks blank; digit_map[1..n] is a permutation of 1..n, applied last.
9x9: 2 * 1296 * 1296 * 9! = 1,218,998,108,160 elements; 6x6: 48 * 72 * 6! = 2,488,320; 4x4: 2 * 8 * 8 * 4! =
3072. `random_symmetries` draws each factor uniformly, so every element is equally likely.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import permutations

import numpy as np

from cgar.sudoku.grid import SUDOKU_9, GridShape, shape_of


@lru_cache(maxsize=None)
def perms_table(k: int) -> np.ndarray:
    """int64[k!, k]: all permutations of range(k) in itertools order (the order the draws index into, so it
    is part of the bit-exact contract of `random_symmetries`)."""
    return np.array(list(permutations(range(k))), dtype=np.int64)


PERMS3 = perms_table(3)  # [6, 3]


@dataclass(frozen=True)
class Symmetries:
    """A batch of N group elements (of one shape: n = row_perm.shape[1])."""

    transpose: np.ndarray  # bool[N]
    row_perm: np.ndarray  # int64[N, n]
    col_perm: np.ndarray  # int64[N, n]
    digit_map: np.ndarray  # uint8[N, n + 1], digit_map[:, 0] == 0

    def __len__(self) -> int:
        return len(self.transpose)

    def source_index(self) -> np.ndarray:
        """int64[N, n*n]: output cell k takes input cell source_index[:, k] (before the digit map)."""
        n = self.row_perm.shape[1]
        r = self.row_perm[:, :, None]  # [N, n, 1]
        c = self.col_perm[:, None, :]  # [N, 1, n]
        plain = r * n + c  # cell (row_perm[r], col_perm[c]) of the untransposed grid
        transposed = c * n + r  # the same cell of the transposed grid
        src = np.where(self.transpose[:, None, None], transposed, plain)
        return src.reshape(-1, n * n)


def line_perms(rng: np.random.Generator, n: int, groups: int, size: int) -> np.ndarray:
    """int64[n, groups * size]: a uniform permutation of `groups` blocks of `size` lines (bands of rows or
    stacks of columns) composed with a uniform permutation inside each target block. For 9x9 (3, 3) these are
    the same two `integers` calls as ever, so 9x9 draws stay bit-identical for a given generator."""
    outer_t, inner_t = perms_table(groups), perms_table(size)
    outer = outer_t[rng.integers(0, len(outer_t), size=n)]  # [n, groups] which source block goes to target b
    inner = inner_t[rng.integers(0, len(inner_t), size=(n, groups))]  # [n, groups, size] order inside each
    return (outer[:, :, None] * size + inner).reshape(n, groups * size)


def random_symmetries(rng: np.random.Generator, n: int, shape: GridShape = SUDOKU_9) -> Symmetries:
    # Non-square boxes draw no transpose bits at all (rather than drawing and discarding): nothing depends on
    # the 6x6/4x4 streams yet, and the 9x9 call order is the one that must not change.
    transpose = rng.random(n) < 0.5 if shape.transposable else np.zeros(n, dtype=bool)
    row_perm = line_perms(rng, n, groups=shape.box_cols, size=shape.box_rows)  # bands of box_rows rows
    col_perm = line_perms(rng, n, groups=shape.box_rows, size=shape.box_cols)  # stacks of box_cols columns
    # argsort of uniform keys gives n independent uniform permutations of 1..n in one call
    digits = np.argsort(rng.random((n, shape.n)), axis=1).astype(np.uint8) + 1
    digit_map = np.concatenate([np.zeros((n, 1), dtype=np.uint8), digits], axis=1)
    return Symmetries(transpose, row_perm, col_perm, digit_map)


def grid_width(grids: np.ndarray) -> int:
    """Cells per grid of one grid (1-D) or a batch ([N, cells] or [N, n, n]); works for an empty batch too."""
    g = np.asarray(grids)
    return g.shape[0] if g.ndim == 1 else int(np.prod(g.shape[1:]))


def _as_batch(grids: np.ndarray, sym: Symmetries) -> np.ndarray:
    cells = sym.row_perm.shape[1] ** 2
    if grid_width(grids) != cells:
        raise ValueError(f"grids of {grid_width(grids)} cells, symmetries of a {cells}-cell shape")
    return np.asarray(grids, dtype=np.uint8).reshape(-1, cells)


def apply_symmetries(grids: np.ndarray, sym: Symmetries) -> np.ndarray:
    """Apply sym[i] to grids[i] (uint8[N, cells], the shape of `sym`); blanks stay blank."""
    g = _as_batch(grids, sym)
    moved = np.take_along_axis(g, sym.source_index(), axis=1)
    return np.take_along_axis(sym.digit_map, moved.astype(np.int64), axis=1)


def augment_pairs(
    puzzles: np.ndarray, solutions: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One independent random symmetry per pair, applied jointly to the puzzle and its solution; the group is
    the one of the puzzles' shape (told by their width)."""
    sym = random_symmetries(rng, len(puzzles), shape_of(grid_width(puzzles)))
    return apply_symmetries(puzzles, sym), apply_symmetries(solutions, sym)
