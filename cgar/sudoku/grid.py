"""Grid shapes, encoding and validity checks.

A grid of shape n x n (boxes of box_rows x box_cols cells, n = box_rows * box_cols) is a uint8 array of n*n
cells in row-major order, 0 for a blank and 1..n for a digit; a batch of grids is an (N, n*n) array. Text form
is the Sudoku-Extreme CSV's: n*n characters, '.' for a blank ('0' is accepted on input).

Three shapes are supported (`SHAPES`): the paper's 9x9 (3x3 boxes) and, for minute-scale experiments on a CPU
(as nano-trm does), 6x6 with 2x3 boxes (2 rows x 3 columns) and 4x4 with 2x2 boxes. The cell count tells the
shape apart (81, 36, 16), so array functions infer it from the array's width and text functions from the
string's length; the module constants N_CELLS, UNITS, ROW_OF, COL_OF, BOX_OF are the 9x9 shape's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

BLANK_CHARS = frozenset(".0")


@dataclass(frozen=True)
class GridShape:
    """An n x n Sudoku of box_rows x box_cols boxes. Bands are groups of box_rows rows (n // box_rows = box_cols
    of them), stacks groups of box_cols columns (box_rows of them)."""

    box_rows: int
    box_cols: int

    @property
    def n(self) -> int:
        return self.box_rows * self.box_cols  # digits, and cells per row / column / box

    @property
    def cells(self) -> int:
        return self.n * self.n

    @property
    def name(self) -> str:
        return f"{self.n}x{self.n}"

    @property
    def transposable(self) -> bool:
        """Transposing maps the shape to itself only with square boxes (6x6's 2x3 boxes would become 3x2)."""
        return self.box_rows == self.box_cols

    @cached_property
    def row_of(self) -> np.ndarray:
        return (np.arange(self.cells) // self.n).astype(np.intp)

    @cached_property
    def col_of(self) -> np.ndarray:
        return (np.arange(self.cells) % self.n).astype(np.intp)

    @cached_property
    def box_of(self) -> np.ndarray:
        """Box index, row-major over boxes: band (row // box_rows) times the boxes per band, plus col // box_cols."""
        r, c = self.row_of, self.col_of
        return ((r // self.box_rows) * (self.n // self.box_cols) + c // self.box_cols).astype(np.intp)

    @cached_property
    def units(self) -> np.ndarray:
        """intp[3n, n]: the cells of rows 0..n-1, columns n..2n-1, boxes 2n..3n-1."""
        r, c, b = self.row_of, self.col_of, self.box_of
        return np.array([np.flatnonzero(r == i) for i in range(self.n)]
                        + [np.flatnonzero(c == i) for i in range(self.n)]
                        + [np.flatnonzero(b == i) for i in range(self.n)], dtype=np.intp)

    @cached_property
    def peers(self) -> np.ndarray:
        """intp[cells, 3n - box_rows - box_cols - 1]: the other cells sharing a row, column or box (20 for 9x9)."""
        cell_units = np.stack([self.row_of, self.n + self.col_of, 2 * self.n + self.box_of], axis=1)
        return np.array([sorted({int(p) for u in cell_units[c] for p in self.units[u]} - {c})
                         for c in range(self.cells)], dtype=np.intp)

    def digit_chars(self) -> frozenset[str]:
        return frozenset(str(d) for d in range(1, self.n + 1))


SUDOKU_9 = GridShape(3, 3)
SUDOKU_6 = GridShape(2, 3)
SUDOKU_4 = GridShape(2, 2)
SHAPES = {s.name: s for s in (SUDOKU_9, SUDOKU_6, SUDOKU_4)}  # "9x9", "6x6", "4x4"
_BY_CELLS = {s.cells: s for s in SHAPES.values()}


def grid_shape(name: str) -> GridShape:
    """'9x9' / '6x6' / '4x4' -> its shape; ValueError naming the valid names."""
    if name not in SHAPES:
        raise ValueError(f"unknown grid {name!r} (valid: {', '.join(SHAPES)})")
    return SHAPES[name]


def shape_of(cells: int) -> GridShape:
    """The shape with this many cells (81, 36 or 16); ValueError otherwise."""
    if cells not in _BY_CELLS:
        raise ValueError(f"a grid has 81, 36 or 16 cells (9x9, 6x6, 4x4), got {cells}")
    return _BY_CELLS[cells]


# 9x9 constants, the paper's shape (kept as module names: most of the package is about it)
N_CELLS = SUDOKU_9.cells
UNITS = SUDOKU_9.units
ROW_OF = SUDOKU_9.row_of
COL_OF = SUDOKU_9.col_of
BOX_OF = SUDOKU_9.box_of

# Byte lookup table for fast parsing: '.'/'0' -> 0, '1'..'9' -> 1..9, anything else -> 255.
_PARSE = np.full(256, 255, dtype=np.uint8)
_PARSE[ord(".")] = 0
for _d in range(10):
    _PARSE[ord("0") + _d] = _d


def grid_problem(text: str, *, allow_blanks: bool, shape: GridShape | None = None) -> str | None:
    """Why `text` is not a grid (None when it is). `shape` None: any supported shape, told by the length.
    Used to build located error messages."""
    if shape is None:
        if len(text) not in _BY_CELLS:
            return f"expected 81 characters (or 36 / 16 for a 6x6 / 4x4 grid), got {len(text)}"
        shape = _BY_CELLS[len(text)]
    elif len(text) != shape.cells:
        return f"expected {shape.cells} characters (a {shape.name} grid), got {len(text)}"
    digits = shape.digit_chars()
    allowed = digits | BLANK_CHARS if allow_blanks else digits
    for i, ch in enumerate(text):
        if ch not in allowed:
            top = shape.n
            kind = f"a digit 1-{top} or '.'/'0'" if allow_blanks else f"a digit 1-{top} (no blanks in an answer)"
            return f"bad character {ch!r} at position {i + 1} (expected {kind})"
    return None


def parse_grid(text: str, *, allow_blanks: bool = True, shape: GridShape | None = None) -> np.ndarray:
    """n*n-character string -> uint8[n*n]. Raises ValueError naming the problem."""
    problem = grid_problem(text, allow_blanks=allow_blanks, shape=shape)
    if problem is not None:
        raise ValueError(problem)
    return _PARSE[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]


def parse_grids(texts: list[str], shape: GridShape = SUDOKU_9) -> np.ndarray:
    """Many already-validated strings of one shape -> uint8[N, cells] in one vectorised pass."""
    if not texts:
        return np.zeros((0, shape.cells), dtype=np.uint8)
    cells = len(texts[0])
    raw = np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8)
    if raw.size != cells * len(texts):
        raise ValueError("parse_grids: the strings differ in length")
    out = _PARSE[raw.reshape(len(texts), cells)]
    if (out == 255).any():
        raise ValueError("parse_grids: input contains characters other than digits and '.'")
    return out


def format_grid(grid: np.ndarray) -> str:
    """uint8[cells] -> string with '.' for blanks."""
    g = np.asarray(grid, dtype=np.uint8).reshape(-1)
    return "".join("." if v == 0 else chr(48 + int(v)) for v in g)


def format_grids(grids: np.ndarray) -> list[str]:
    """uint8[N, cells] -> list of strings, vectorised."""
    g = np.asarray(grids, dtype=np.uint8)
    g = g.reshape(1, -1) if g.ndim == 1 else g if g.ndim == 2 else g.reshape(len(g), -1)
    cells = g.shape[1]
    chars = np.where(g == 0, ord("."), g + 48).astype(np.uint8)
    flat = chars.tobytes().decode("ascii")
    return [flat[i * cells : (i + 1) * cells] for i in range(len(g))]


def _batch(grids: np.ndarray) -> tuple[np.ndarray, GridShape]:
    """(uint8-like [N, cells], its shape) from one grid or a batch; the width tells the shape."""
    g = np.asarray(grids)
    g = g.reshape(1, -1) if g.ndim == 1 else g if g.ndim == 2 else g.reshape(len(g), -1)
    return g, shape_of(g.shape[1])


def valid_solutions(grids: np.ndarray) -> np.ndarray:
    """bool[N]: each grid is a complete, valid Sudoku solution (every unit holds 1..n exactly once)."""
    g, shape = _batch(grids)
    units = g[:, shape.units]  # [N, 3n, n]
    complete = (g >= 1).all(axis=1) & (g <= shape.n).all(axis=1)
    sorted_units = np.sort(units, axis=2)
    return complete & (sorted_units == np.arange(1, shape.n + 1, dtype=g.dtype)).all(axis=(1, 2))


def givens_consistent(puzzles: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """bool[N]: every given of the puzzle equals the solution's digit in that cell."""
    p, _ = _batch(puzzles)
    s, _ = _batch(solutions)
    return ((p == 0) | (p == s)).all(axis=1)


def puzzle_conflicts(puzzle: np.ndarray) -> bool:
    """True when two givens clash in a row, column or box (the puzzle then has no solution)."""
    g, shape = _batch(puzzle)
    for u in g[0][shape.units]:
        digits = u[u > 0]
        if len(digits) != len(np.unique(digits)):
            return True
    return False


def is_valid_solution(grid: np.ndarray) -> bool:
    return bool(valid_solutions(grid)[0])


def num_givens(grids: np.ndarray) -> np.ndarray:
    g, _ = _batch(grids)
    return (g > 0).sum(axis=1)
