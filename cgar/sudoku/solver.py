"""Numba bitmask Sudoku solver, solution counter and rater, for every `GridShape` (9x9, 6x6, 4x4).

State (one search level) of an n x n grid with C = n*n cells: `grid` uint8[C] (0 = blank), `cand` int32[C]
(n-bit candidate mask of each blank cell, 0 once placed) and `placed` int32[3n] (digits placed in each row
0..n-1, column n..2n-1, box 2n..3n-1). Eliminations made by locked candidates are applied to `cand` directly, so
they are part of the copied search state, exactly like the per-cell elimination mask of the reference design
(sudoku_data.md §3).

The kernels are table-driven: a shape's tables (`Tables`: cell -> units, peers, units, line/box segments; built
once per shape) travel inside the workspace, and loop bounds come from the tables' sizes, so one compiled version
serves every shape; 9x9 results (solutions, counts, guess counts) are bit-identical to the 9x9-only kernels this
replaced. The small helpers are inlined: an out-of-line call taking the table arrays pays reference-count
updates on each, which made 9x9 solving ~30% slower (inlining costs ~5 s more on a cold numba cache). Array
entry points infer the shape from the array width; `new_workspace` takes it as an argument.

Strategy (shared, rule for rule, with the pure-Python `cgar.sudoku.reference`):
- propagation to a fixpoint of naked singles, hidden singles (one bit-parallel "seen once / seen twice" pass
  per unit) and locked candidates (pointing and claiming, rows and columns). Every rule is monotone, so the
  fixpoint (or the contradiction) does not depend on the order the rules fire in, and two implementations
  that apply them to exhaustion agree exactly;
- branching on the MRV cell (fewest candidates, lowest index among ties), values ascending (random order when
  building random grids), iterative DFS over an explicit stack of state copies (no recursion);
- root-level "excluded value" masks (`excl[c]` bits are removed from cell c before the search), so "is there a
  solution with cell c != v" is one search;
- guesses are counted tdoku-style: a branch on a cell with k candidates counts one guess per value tried,
  except the last remaining value (trying it is forced, like the negative side of a binary branch);
- the search stops after `limit` solutions (1 = solve / rate, 2 = uniqueness).

RATING of a puzzle = the guess count of one deterministic run (limit=1, lowest-index MRV, values ascending)
on the string exactly as stored. This follows Sudoku-Extreme's protocol (one run on the permuted string) but it
is NOT tdoku's scale: tdoku's triad propagation is stronger, and on real forum puzzles our rating is about
2.2x tdoku's (more for hill-climbed puzzles), so thresholds such as HRM's `min_difficulty` do not transfer.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from cgar.sudoku.grid import SUDOKU_9, GridShape, parse_grid, shape_of

MAX_DIGITS = 9  # the lookup tables below cover masks of up to 9 bits (bit d-1 stands for digit d)

# shape-independent lookup tables (numba freezes module-level arrays into the compiled code)
POPCOUNT = np.array([bin(m).count("1") for m in range(1 << MAX_DIGITS)], dtype=np.int64)
DIGIT_OF_BIT = np.zeros(1 << MAX_DIGITS, dtype=np.int64)
for _d in range(MAX_DIGITS):
    DIGIT_OF_BIT[1 << _d] = _d + 1


class Tables(NamedTuple):
    """A shape's index tables, in the form the kernels read them."""

    cell_units: np.ndarray  # intp[C, 3]: the row, column and box unit of each cell
    peers: np.ndarray  # intp[C, P]: the other cells sharing a unit (P = 20 for 9x9)
    units: np.ndarray  # intp[3n, n]
    row_segments: np.ndarray  # intp[bands, K, K, n // K], K = box_rows: row i of band g meets its box j
    col_segments: np.ndarray  # intp[stacks, K, K, n // K], K = box_cols: column i of stack g meets its box j


def _segments(line_of: np.ndarray, k: int, n: int) -> np.ndarray:
    """intp[n // k, k, k, n // k]: [g, i, j] = the cells where line i of group g (lines k*g .. k*g+k-1) meets
    the j-th box along it. A line crosses k boxes, n // k cells each (k = box_rows for rows, box_cols for
    columns), and a band / stack of k lines covers the same k boxes."""
    seg = np.empty((n // k, k, k, n // k), dtype=np.intp)
    for line in range(n):
        seg[line // k, line % k] = np.flatnonzero(line_of == line).reshape(k, n // k)
    return seg


@lru_cache(maxsize=None)
def tables(shape: GridShape) -> Tables:
    """The shape's tables, built once per shape."""
    n = shape.n
    cell_units = np.stack([shape.row_of, n + shape.col_of, 2 * n + shape.box_of], axis=1)
    return Tables(cell_units, shape.peers, shape.units, _segments(shape.row_of, shape.box_rows, n),
                  _segments(shape.col_of, shape.box_cols, n))


@njit(cache=True, inline="always")
def place(grid, cand, placed, c, v, tab):
    """Put digit v in cell c and remove it from the candidates of its peers."""
    bit = 1 << (v - 1)
    grid[c] = v
    cand[c] = 0
    for k in range(3):
        placed[tab.cell_units[c, k]] |= bit
    peers = tab.peers
    for k in range(peers.shape[1]):
        cand[peers[c, k]] &= ~bit


@njit(cache=True, inline="always")
def _eliminate(cand, segments, g, i, j, mask):
    """Remove `mask` from the cells of segments[g, i, j]; True if any candidate went away. (Indexed in full
    rather than through a view of the segment, which would be built at every call.)"""
    changed = False
    for k in range(segments.shape[3]):
        c = segments[g, i, j, k]
        if cand[c] & mask:
            cand[c] &= ~mask
            changed = True
    return changed


@njit(cache=True, inline="always")
def _locked_lines(cand, segments, seg):
    """Pointing and claiming over the line/box intersections of every band (or stack) in `segments`
    [groups, K, K, S]; True if anything was eliminated.

    seg[i*K+j] = union of candidates where line i meets box j. Masks computed before an elimination in the same
    pass may be stale, but only in the safe direction (a digit confined to a segment stays confined).
    The other lines / boxes are visited in cyclic order i+1, i+2, ... (wrapping without a modulo: this loop is
    the hottest part of propagation)."""
    changed = False
    n_groups, kk, _, width = segments.shape
    for g in range(n_groups):
        for i in range(kk):
            for j in range(kk):
                m = 0
                for s in range(width):
                    m |= cand[segments[g, i, j, s]]
                seg[i * kk + j] = m
        for i in range(kk):
            for j in range(kk):
                s = seg[i * kk + j]
                if s == 0:
                    continue
                rest_of_box = 0
                rest_of_line = 0
                for o in range(kk):
                    if o != i:
                        rest_of_box |= seg[o * kk + j]
                    if o != j:
                        rest_of_line |= seg[i * kk + o]
                pointing = s & ~rest_of_box  # in box j these digits sit only on line i ...
                if pointing:  # ... so the rest of line i cannot hold them
                    o = j
                    for _ in range(kk - 1):
                        o = o + 1 if o + 1 < kk else 0
                        changed |= _eliminate(cand, segments, g, i, o, pointing)
                claiming = s & ~rest_of_line  # on line i these digits sit only in box j ...
                if claiming:  # ... so the rest of box j cannot hold them
                    o = i
                    for _ in range(kk - 1):
                        o = o + 1 if o + 1 < kk else 0
                        changed |= _eliminate(cand, segments, g, o, j, claiming)
    return changed


@njit(cache=True)
def propagate(grid, cand, placed, seg, tab):
    """Apply singles, hidden singles and locked candidates to a fixpoint. False on a contradiction."""
    units = tab.units
    n_units, n = units.shape
    full = (1 << n) - 1
    while True:
        progress = False
        for c in range(grid.shape[0]):  # naked singles (cheapest, so they run first and again after any progress)
            if grid[c] == 0:
                m = cand[c]
                if m == 0:
                    return False
                if m & (m - 1) == 0:
                    place(grid, cand, placed, c, DIGIT_OF_BIT[m], tab)
                    progress = True
        if progress:
            continue
        for u in range(n_units):  # hidden singles: digits seen exactly once in the unit
            once = 0
            twice = 0
            for k in range(n):
                m = cand[units[u, k]]
                twice |= once & m
                once |= m
            if (once | placed[u]) != full:  # some digit has no place left in this unit
                return False
            hidden = once & ~twice
            if hidden:
                for k in range(n):
                    c = units[u, k]
                    h = cand[c] & hidden
                    if h:
                        if h & (h - 1):  # two digits both need this cell
                            return False
                        place(grid, cand, placed, c, DIGIT_OF_BIT[h], tab)
                        progress = True
        if progress:
            continue
        changed = _locked_lines(cand, tab.row_segments, seg)
        changed |= _locked_lines(cand, tab.col_segments, seg)
        if not changed:
            return True


class Workspace(NamedTuple):
    """Scratch for `search`: the stack of states, branch bookkeeping and the shape's tables."""

    grids: np.ndarray  # uint8[C + 1, C]: every level places at least one digit, so C + 1 levels suffice
    cands: np.ndarray  # int32[C + 1, C]
    placed: np.ndarray  # int32[C + 1, 3n]
    branch_cell: np.ndarray  # int64[C + 1]
    branch_left: np.ndarray  # int64[C + 1]
    seg: np.ndarray  # int32[K * K]: segment masks of one band/stack
    tab: Tables


@njit(cache=True)
def _stack(tab):
    """The search stack and scratch arrays of a workspace for the tables' shape."""
    cells = tab.peers.shape[0]
    levels = cells + 1
    k = max(tab.row_segments.shape[1], tab.col_segments.shape[1])
    return (np.empty((levels, cells), dtype=np.uint8), np.empty((levels, cells), dtype=np.int32),
            np.empty((levels, tab.units.shape[0]), dtype=np.int32), np.empty(levels, dtype=np.int64),
            np.empty(levels, dtype=np.int64), np.empty(k * k, dtype=np.int32))


@njit(cache=True)
def workspace(tab):
    """A `Workspace` for the tables' shape, for use inside compiled code (Python calls `new_workspace`). Reuse it
    across calls (no zeroing needed: every slot is written before it is read)."""
    grids, cands, placed, branch_cell, branch_left, seg = _stack(tab)
    return Workspace(grids, cands, placed, branch_cell, branch_left, seg, tab)


def new_workspace(shape: GridShape = SUDOKU_9) -> Workspace:
    """Scratch for `search` on puzzles of `shape`. Assembled on the Python side: numba (seen with 0.68) can crash
    boxing a cached function's NamedTuple result once another compiled function has called it."""
    tab = tables(shape)
    return Workspace(*_stack(tab), tab)


@njit(cache=True)
def _mrv_cell(grid, cand):
    """Blank cell with the fewest candidates (lowest index among ties); -1 when the grid is full."""
    best = -1
    best_n = MAX_DIGITS + 1
    for c in range(grid.shape[0]):
        if grid[c] == 0:
            n = POPCOUNT[cand[c]]
            if n < best_n:
                best, best_n = c, n
                if n == 2:  # after propagation no blank has fewer than 2 candidates
                    break
    return best


@njit(cache=True)
def _pick_bit(mask, randomize):
    """Lowest set bit, or a uniformly random set bit."""
    if not randomize:
        return mask & -mask
    k = np.random.randint(0, POPCOUNT[mask])
    while k > 0:
        mask &= mask - 1
        k -= 1
    return mask & -mask


@njit(cache=True)
def search(puzzle, excl, limit, randomize, ws, sols):
    """DFS for up to `limit` solutions of puzzle (uint8[C]) with excl (int32[C]) bits removed at the root; `ws`
    is a workspace of the puzzle's shape.

    The first min(count, len(sols)) solutions are written to sols (uint8[k, C]).
    Returns (count, guesses, guesses_at_first): count capped at limit; guesses_at_first is what a limit=1 run
    counts (the DFS is identical up to the first solution), or all guesses when there is no solution.
    """
    grids, cands, placed, branch_cell, branch_left, seg, tab = ws
    cells = grids.shape[1]
    full = (1 << tab.units.shape[1]) - 1
    grids[0, :] = 0
    placed[0, :] = 0
    for c in range(cells):
        cands[0, c] = full & ~excl[c]
    for c in range(cells):
        v = puzzle[c]
        if v != 0:
            if not (cands[0, c] >> (v - 1)) & 1:  # clashes with an earlier given or is excluded
                return 0, 0, 0
            place(grids[0], cands[0], placed[0], c, v, tab)
    if not propagate(grids[0], cands[0], placed[0], seg, tab):
        return 0, 0, 0
    count = 0
    guesses = 0
    first = -1
    depth = 0
    while True:
        # level `depth` is propagated and consistent: record a solution or open a branch on it
        c = _mrv_cell(grids[depth], cands[depth])
        if c < 0:
            if count < sols.shape[0]:
                sols[count, :] = grids[depth, :]
            count += 1
            if count == 1:
                first = guesses
            if count >= limit:
                break
            depth -= 1  # resume the parent's branch
        else:
            branch_cell[depth] = c
            branch_left[depth] = cands[depth, c]
        # descend into the next value that survives propagation, backtracking as needed
        while depth >= 0:
            left = branch_left[depth]
            if left == 0:
                depth -= 1
                continue
            bit = _pick_bit(left, randomize)
            left ^= bit
            branch_left[depth] = left
            if left != 0:  # the last remaining value is forced, not a guess
                guesses += 1
            nxt = depth + 1
            grids[nxt, :] = grids[depth, :]
            cands[nxt, :] = cands[depth, :]
            placed[nxt, :] = placed[depth, :]
            place(grids[nxt], cands[nxt], placed[nxt], branch_cell[depth], DIGIT_OF_BIT[bit], tab)
            if propagate(grids[nxt], cands[nxt], placed[nxt], seg, tab):
                depth = nxt
                break
        if depth < 0:
            break
    return count, guesses, (first if first >= 0 else guesses)


@njit(cache=True)
def _solve_range(puzzles, lo, hi, limit, sols, counts, guesses, tab):
    ws = workspace(tab)
    excl = np.zeros(puzzles.shape[1], dtype=np.int32)
    for i in range(lo, hi):
        counts[i], _, guesses[i] = search(puzzles[i], excl, limit, False, ws, sols[i : i + 1])


@njit(cache=True)
def _solve_all(puzzles, limit, sols, counts, guesses, tab):
    _solve_range(puzzles, 0, len(puzzles), limit, sols, counts, guesses, tab)


_BLOCK = 64  # puzzles per parallel task: amortises the workspace allocation


@njit(cache=True, parallel=True)
def _solve_all_parallel(puzzles, limit, sols, counts, guesses, tab):
    n = len(puzzles)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        _solve_range(puzzles, b * _BLOCK, min(n, (b + 1) * _BLOCK), limit, sols, counts, guesses, tab)


# ---------------------------------------------------------------------------------------------- Python API


def as_puzzles(puzzles) -> np.ndarray:
    """Validate and convert to a C-contiguous uint8[N, C] with values 0..n (a str or uint8[C] gives N = 1);
    C = 81, 36 or 16 tells the shape (`grid.shape_of`)."""
    if isinstance(puzzles, str):
        puzzles = parse_grid(puzzles)
    a = np.asarray(puzzles)
    if a.ndim == 1:
        a = a[None, :]
    try:
        shape = shape_of(a.shape[1]) if a.ndim == 2 else None
    except ValueError:
        shape = None
    if shape is None:
        raise ValueError(f"expected puzzles of shape (C,) or (N, C) with C = 81, 36 or 16 cells, "
                         f"got {np.asarray(puzzles).shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"expected an integer dtype, got {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > shape.n):
        raise ValueError(f"puzzle values must be 0 (blank) or 1..{shape.n}")
    return np.ascontiguousarray(a, dtype=np.uint8)


def solve_batch(puzzles, limit: int = 2, parallel: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve uint8[N, C] puzzles (any shape, told by C) in one compiled loop.

    Returns (solutions uint8[N, C]: first solution found, zeros if none; counts int32[N]: solutions found,
    capped at `limit`; guesses int32[N]: the rating, i.e. the guesses of the limit=1 deterministic run).
    `parallel=True` spreads blocks of puzzles over numba threads; results are identical either way.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    p = as_puzzles(puzzles)
    n = len(p)
    sols = np.zeros(p.shape, dtype=np.uint8)
    counts = np.zeros(n, dtype=np.int32)
    guesses = np.zeros(n, dtype=np.int32)
    if n:
        tab = tables(shape_of(p.shape[1]))
        (_solve_all_parallel if parallel else _solve_all)(p, int(limit), sols, counts, guesses, tab)
    return sols, counts, guesses


def rate_batch(puzzles, parallel: bool = False) -> np.ndarray:
    """int32[N]: the rating (limit=1 guess count on the string as given) of each puzzle."""
    return solve_batch(puzzles, limit=1, parallel=parallel)[2]


def solve(puzzle) -> np.ndarray | None:
    """uint8[C] solution (the first one found), or None when the puzzle has none."""
    sols, counts, _ = solve_batch(puzzle, limit=1)
    return sols[0] if counts[0] else None


def count_solutions(puzzle, limit: int = 2) -> int:
    """Number of solutions, counted up to `limit` (2 answers "is it unique?")."""
    return int(solve_batch(puzzle, limit=limit)[1][0])


def rate(puzzle) -> int:
    """Guess count of one deterministic limit=1 run on the puzzle as given (see the module docstring)."""
    return int(rate_batch(puzzle)[0])
