"""The Sudoku symmetry group and HRM/TRM-style augmentation, vectorised over batches.

A symmetry is (transpose, row_perm, col_perm, digit_map):
- transpose (p = 0.5 in augmentation) is applied first, as in HRM's `shuffle_sudoku`;
- row_perm permutes the 3 bands and the 3 rows inside each band; col_perm does the same with stacks/columns;
  output cell (r, c) takes the (possibly transposed) input's cell (row_perm[r], col_perm[c]);
- digit_map[0] = 0 keeps blanks blank; digit_map[1..9] is a permutation of 1..9, applied last.
The group has 2 * 1296 * 1296 * 9! = 1,218,998,108,160 elements; `random_symmetries` draws each factor
uniformly, so every element is equally likely.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from cgar.sudoku.grid import N_CELLS

PERMS3 = np.array(list(permutations(range(3))), dtype=np.int64)  # [6, 3]


@dataclass(frozen=True)
class Symmetries:
    """A batch of N group elements."""

    transpose: np.ndarray  # bool[N]
    row_perm: np.ndarray  # int64[N, 9]
    col_perm: np.ndarray  # int64[N, 9]
    digit_map: np.ndarray  # uint8[N, 10], digit_map[:, 0] == 0

    def __len__(self) -> int:
        return len(self.transpose)

    def source_index(self) -> np.ndarray:
        """int64[N, 81]: output cell k takes input cell source_index[:, k] (before the digit map)."""
        r = self.row_perm[:, :, None]  # [N, 9, 1]
        c = self.col_perm[:, None, :]  # [N, 1, 9]
        plain = r * 9 + c  # cell (row_perm[r], col_perm[c]) of the untransposed grid
        transposed = c * 9 + r  # the same cell of the transposed grid
        src = np.where(self.transpose[:, None, None], transposed, plain)
        return src.reshape(-1, N_CELLS)


def _line_perms(rng: np.random.Generator, n: int) -> np.ndarray:
    """int64[n, 9]: a uniform band (or stack) permutation composed with a uniform permutation inside each."""
    outer = PERMS3[rng.integers(0, 6, size=n)]  # [n, 3] which source band goes to target band b
    inner = PERMS3[rng.integers(0, 6, size=(n, 3))]  # [n, 3, 3] row order inside each target band
    return (outer[:, :, None] * 3 + inner).reshape(n, 9)


def random_symmetries(rng: np.random.Generator, n: int) -> Symmetries:
    transpose = rng.random(n) < 0.5
    row_perm = _line_perms(rng, n)
    col_perm = _line_perms(rng, n)
    # argsort of uniform keys gives n independent uniform permutations of 1..9 in one call
    digits = np.argsort(rng.random((n, 9)), axis=1).astype(np.uint8) + 1
    digit_map = np.concatenate([np.zeros((n, 1), dtype=np.uint8), digits], axis=1)
    return Symmetries(transpose, row_perm, col_perm, digit_map)


def apply_symmetries(grids: np.ndarray, sym: Symmetries) -> np.ndarray:
    """Apply sym[i] to grids[i] (uint8[N, 81]); blanks stay blank."""
    g = np.asarray(grids, dtype=np.uint8).reshape(-1, N_CELLS)
    moved = np.take_along_axis(g, sym.source_index(), axis=1)
    return np.take_along_axis(sym.digit_map, moved.astype(np.int64), axis=1)


def augment_pairs(
    puzzles: np.ndarray, solutions: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One independent random symmetry per pair, applied jointly to the puzzle and its solution."""
    sym = random_symmetries(rng, len(puzzles))
    return apply_symmetries(puzzles, sym), apply_symmetries(solutions, sym)
