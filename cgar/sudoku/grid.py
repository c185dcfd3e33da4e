"""Grid encoding and validity checks.

A grid is a uint8 array of 81 cells in row-major order, 0 for a blank and 1..9 for a digit; a batch of grids
is an (N, 81) array. Text form is the Sudoku-Extreme CSV's: 81 characters, '.' for a blank ('0' is accepted
on input).
"""

from __future__ import annotations

import numpy as np

N_CELLS = 81
BLANK_CHARS = frozenset(".0")
_DIGIT_CHARS = frozenset("123456789")

# UNITS[u] = the 9 cell indices of unit u: rows 0..8, columns 9..17, boxes 18..26.
_r, _c = np.divmod(np.arange(N_CELLS), 9)
UNITS = np.array(
    [np.flatnonzero(_r == i) for i in range(9)]
    + [np.flatnonzero(_c == i) for i in range(9)]
    + [np.flatnonzero((_r // 3) * 3 + _c // 3 == i) for i in range(9)],
    dtype=np.intp,
)
ROW_OF = _r.astype(np.intp)
COL_OF = _c.astype(np.intp)
BOX_OF = ((_r // 3) * 3 + _c // 3).astype(np.intp)

# Byte lookup table for fast parsing: '.'/'0' -> 0, '1'..'9' -> 1..9, anything else -> 255.
_PARSE = np.full(256, 255, dtype=np.uint8)
_PARSE[ord(".")] = 0
for _d in range(10):
    _PARSE[ord("0") + _d] = _d


def grid_problem(text: str, *, allow_blanks: bool) -> str | None:
    """Why `text` is not an 81-cell grid (None when it is). Used to build located error messages."""
    if len(text) != N_CELLS:
        return f"expected 81 characters, got {len(text)}"
    allowed = _DIGIT_CHARS | BLANK_CHARS if allow_blanks else _DIGIT_CHARS
    for i, ch in enumerate(text):
        if ch not in allowed:
            kind = "a digit 1-9 or '.'/'0'" if allow_blanks else "a digit 1-9 (no blanks in an answer)"
            return f"bad character {ch!r} at position {i + 1} (expected {kind})"
    return None


def parse_grid(text: str, *, allow_blanks: bool = True) -> np.ndarray:
    """81-character string -> uint8[81]. Raises ValueError naming the problem."""
    problem = grid_problem(text, allow_blanks=allow_blanks)
    if problem is not None:
        raise ValueError(problem)
    return _PARSE[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]


def parse_grids(texts: list[str]) -> np.ndarray:
    """Many already-validated 81-character strings -> uint8[N, 81] in one vectorised pass."""
    if not texts:
        return np.zeros((0, N_CELLS), dtype=np.uint8)
    raw = np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8).reshape(len(texts), N_CELLS)
    out = _PARSE[raw]
    if (out == 255).any():
        raise ValueError("parse_grids: input contains characters other than digits and '.'")
    return out


def format_grid(grid: np.ndarray) -> str:
    """uint8[81] -> 81-character string with '.' for blanks."""
    g = np.asarray(grid, dtype=np.uint8).reshape(N_CELLS)
    return "".join("." if v == 0 else chr(48 + int(v)) for v in g)


def format_grids(grids: np.ndarray) -> list[str]:
    """uint8[N, 81] -> list of 81-character strings, vectorised."""
    g = np.asarray(grids, dtype=np.uint8).reshape(-1, N_CELLS)
    chars = np.where(g == 0, ord("."), g + 48).astype(np.uint8)
    flat = chars.tobytes().decode("ascii")
    return [flat[i * N_CELLS : (i + 1) * N_CELLS] for i in range(len(g))]


def valid_solutions(grids: np.ndarray) -> np.ndarray:
    """bool[N]: each grid is a complete, valid Sudoku solution (every unit holds 1..9 exactly once)."""
    g = np.asarray(grids).reshape(-1, N_CELLS)
    units = g[:, UNITS]  # [N, 27, 9]
    complete = (g >= 1).all(axis=1) & (g <= 9).all(axis=1)
    sorted_units = np.sort(units, axis=2)
    return complete & (sorted_units == np.arange(1, 10, dtype=g.dtype)).all(axis=(1, 2))


def givens_consistent(puzzles: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """bool[N]: every given of the puzzle equals the solution's digit in that cell."""
    p = np.asarray(puzzles).reshape(-1, N_CELLS)
    s = np.asarray(solutions).reshape(-1, N_CELLS)
    return ((p == 0) | (p == s)).all(axis=1)


def puzzle_conflicts(puzzle: np.ndarray) -> bool:
    """True when two givens clash in a row, column or box (the puzzle then has no solution)."""
    units = np.asarray(puzzle).reshape(N_CELLS)[UNITS]
    for u in units:
        digits = u[u > 0]
        if len(digits) != len(np.unique(digits)):
            return True
    return False


def is_valid_solution(grid: np.ndarray) -> bool:
    return bool(valid_solutions(grid)[0])


def num_givens(grids: np.ndarray) -> np.ndarray:
    return (np.asarray(grids).reshape(-1, N_CELLS) > 0).sum(axis=1)
