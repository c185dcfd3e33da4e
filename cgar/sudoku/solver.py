"""Numba bitmask Sudoku solver, solution counter and rater.

State (one search level): `grid` uint8[81] (0 = blank), `cand` int32[81] (9-bit candidate mask of each blank
cell, 0 once placed) and `placed` int32[27] (digits placed in each row 0..8, column 9..17, box 18..26).
Eliminations made by locked candidates are applied to `cand` directly, so they are part of the copied search
state, exactly like the per-cell elimination mask of the reference design (sudoku_data.md §3).

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

import numpy as np
from numba import njit, prange

from cgar.sudoku.grid import BOX_OF, COL_OF, N_CELLS, ROW_OF, UNITS, parse_grid

ALL = 0x1FF  # all nine candidate bits; bit d-1 stands for digit d
MAX_LEVELS = N_CELLS + 1  # every level places at least one digit, so the stack never exceeds 82 states

# lookup tables (numba freezes module-level arrays into the compiled code)
POPCOUNT = np.array([bin(m).count("1") for m in range(512)], dtype=np.int64)
DIGIT_OF_BIT = np.zeros(512, dtype=np.int64)
for _d in range(9):
    DIGIT_OF_BIT[1 << _d] = _d + 1
CELL_UNITS = np.stack([ROW_OF, 9 + COL_OF, 18 + BOX_OF], axis=1)  # [81, 3]
PEERS = np.array(
    [sorted({int(p) for u in CELL_UNITS[c] for p in UNITS[u]} - {c}) for c in range(N_CELLS)], dtype=np.intp
)  # [81, 20]


def _segments() -> np.ndarray:
    """SEGMENTS[t, g, i, j] = the 3 cells where line i of band/stack g meets box j of it (t 0 = rows, 1 = cols)."""
    seg = np.zeros((2, 3, 3, 3, 3), dtype=np.intp)
    for g in range(3):
        for i in range(3):
            for j in range(3):
                for k in range(3):
                    seg[0, g, i, j, k] = (3 * g + i) * 9 + 3 * j + k  # row 3g+i, box columns 3j..3j+2
                    seg[1, g, i, j, k] = (3 * j + k) * 9 + 3 * g + i  # column 3g+i, box rows 3j..3j+2
    return seg


SEGMENTS = _segments()


@njit(cache=True)
def place(grid, cand, placed, c, v):
    """Put digit v in cell c and remove it from the candidates of the 20 peers."""
    bit = 1 << (v - 1)
    grid[c] = v
    cand[c] = 0
    for k in range(3):
        placed[CELL_UNITS[c, k]] |= bit
    for k in range(20):
        cand[PEERS[c, k]] &= ~bit


@njit(cache=True)
def _eliminate(cand, cells, mask):
    """Remove `mask` from the 3 cells; True if any candidate went away."""
    changed = False
    for k in range(3):
        c = cells[k]
        if cand[c] & mask:
            cand[c] &= ~mask
            changed = True
    return changed


@njit(cache=True)
def _locked_candidates(cand, seg):
    """Pointing and claiming over all 54 line/box intersections; True if anything was eliminated.

    seg[i*3+j] = union of candidates where line i meets box j. Masks computed before an elimination in the same
    pass may be stale, but only in the safe direction (a digit confined to a segment stays confined)."""
    changed = False
    for t in range(2):
        for g in range(3):
            for i in range(3):
                for j in range(3):
                    cells = SEGMENTS[t, g, i, j]
                    seg[i * 3 + j] = cand[cells[0]] | cand[cells[1]] | cand[cells[2]]
            for i in range(3):
                for j in range(3):
                    s = seg[i * 3 + j]
                    if s == 0:
                        continue
                    rest_of_box = seg[((i + 1) % 3) * 3 + j] | seg[((i + 2) % 3) * 3 + j]
                    rest_of_line = seg[i * 3 + (j + 1) % 3] | seg[i * 3 + (j + 2) % 3]
                    pointing = s & ~rest_of_box  # in box j these digits sit only on line i ...
                    if pointing:  # ... so the rest of line i cannot hold them
                        changed |= _eliminate(cand, SEGMENTS[t, g, i, (j + 1) % 3], pointing)
                        changed |= _eliminate(cand, SEGMENTS[t, g, i, (j + 2) % 3], pointing)
                    claiming = s & ~rest_of_line  # on line i these digits sit only in box j ...
                    if claiming:  # ... so the rest of box j cannot hold them
                        changed |= _eliminate(cand, SEGMENTS[t, g, (i + 1) % 3, j], claiming)
                        changed |= _eliminate(cand, SEGMENTS[t, g, (i + 2) % 3, j], claiming)
    return changed


@njit(cache=True)
def propagate(grid, cand, placed, seg):
    """Apply singles, hidden singles and locked candidates to a fixpoint. False on a contradiction."""
    while True:
        progress = False
        for c in range(N_CELLS):  # naked singles (cheapest, so they run first and again after any progress)
            if grid[c] == 0:
                m = cand[c]
                if m == 0:
                    return False
                if m & (m - 1) == 0:
                    place(grid, cand, placed, c, DIGIT_OF_BIT[m])
                    progress = True
        if progress:
            continue
        for u in range(27):  # hidden singles: digits seen exactly once in the unit
            once = 0
            twice = 0
            for k in range(9):
                m = cand[UNITS[u, k]]
                twice |= once & m
                once |= m
            if (once | placed[u]) != ALL:  # some digit has no place left in this unit
                return False
            hidden = once & ~twice
            if hidden:
                for k in range(9):
                    c = UNITS[u, k]
                    h = cand[c] & hidden
                    if h:
                        if h & (h - 1):  # two digits both need this cell
                            return False
                        place(grid, cand, placed, c, DIGIT_OF_BIT[h])
                        progress = True
        if progress:
            continue
        if not _locked_candidates(cand, seg):
            return True


@njit(cache=True)
def new_workspace():
    """Scratch for `search`: the stack of states plus branch bookkeeping. Reuse it across calls (no zeroing
    needed: every slot is written before it is read)."""
    grids = np.empty((MAX_LEVELS, N_CELLS), dtype=np.uint8)
    cands = np.empty((MAX_LEVELS, N_CELLS), dtype=np.int32)
    placed = np.empty((MAX_LEVELS, 27), dtype=np.int32)
    branch_cell = np.empty(MAX_LEVELS, dtype=np.int64)
    branch_left = np.empty(MAX_LEVELS, dtype=np.int64)
    seg = np.empty(9, dtype=np.int32)
    return grids, cands, placed, branch_cell, branch_left, seg


@njit(cache=True)
def _mrv_cell(grid, cand):
    """Blank cell with the fewest candidates (lowest index among ties); -1 when the grid is full."""
    best = -1
    best_n = 10
    for c in range(N_CELLS):
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
    """DFS for up to `limit` solutions of puzzle (uint8[81]) with excl (int32[81]) bits removed at the root.

    The first min(count, len(sols)) solutions are written to sols (uint8[k, 81]).
    Returns (count, guesses, guesses_at_first): count capped at limit; guesses_at_first is what a limit=1 run
    counts (the DFS is identical up to the first solution), or all guesses when there is no solution.
    """
    grids, cands, placed, branch_cell, branch_left, seg = ws
    grids[0, :] = 0
    placed[0, :] = 0
    for c in range(N_CELLS):
        cands[0, c] = ALL & ~excl[c]
    for c in range(N_CELLS):
        v = puzzle[c]
        if v != 0:
            if not (cands[0, c] >> (v - 1)) & 1:  # clashes with an earlier given or is excluded
                return 0, 0, 0
            place(grids[0], cands[0], placed[0], c, v)
    if not propagate(grids[0], cands[0], placed[0], seg):
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
            place(grids[nxt], cands[nxt], placed[nxt], branch_cell[depth], DIGIT_OF_BIT[bit])
            if propagate(grids[nxt], cands[nxt], placed[nxt], seg):
                depth = nxt
                break
        if depth < 0:
            break
    return count, guesses, (first if first >= 0 else guesses)


@njit(cache=True)
def _solve_range(puzzles, lo, hi, limit, sols, counts, guesses):
    ws = new_workspace()
    excl = np.zeros(N_CELLS, dtype=np.int32)
    for i in range(lo, hi):
        counts[i], _, guesses[i] = search(puzzles[i], excl, limit, False, ws, sols[i : i + 1])


@njit(cache=True)
def _solve_all(puzzles, limit, sols, counts, guesses):
    _solve_range(puzzles, 0, len(puzzles), limit, sols, counts, guesses)


_BLOCK = 64  # puzzles per parallel task: amortises the workspace allocation


@njit(cache=True, parallel=True)
def _solve_all_parallel(puzzles, limit, sols, counts, guesses):
    n = len(puzzles)
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        _solve_range(puzzles, b * _BLOCK, min(n, (b + 1) * _BLOCK), limit, sols, counts, guesses)


# ---------------------------------------------------------------------------------------------- Python API


def as_puzzles(puzzles) -> np.ndarray:
    """Validate and convert to a C-contiguous uint8[N, 81] with values 0..9 (a str or uint8[81] gives N = 1)."""
    if isinstance(puzzles, str):
        puzzles = parse_grid(puzzles)
    a = np.asarray(puzzles)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != N_CELLS:
        raise ValueError(f"expected puzzles of shape (81,) or (N, 81), got {np.asarray(puzzles).shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"expected an integer dtype, got {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 9):
        raise ValueError("puzzle values must be 0 (blank) or 1..9")
    return np.ascontiguousarray(a, dtype=np.uint8)


def solve_batch(puzzles, limit: int = 2, parallel: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve uint8[N, 81] puzzles in one compiled loop.

    Returns (solutions uint8[N, 81]: first solution found, zeros if none; counts int32[N]: solutions found,
    capped at `limit`; guesses int32[N]: the rating, i.e. the guesses of the limit=1 deterministic run).
    `parallel=True` spreads blocks of puzzles over numba threads; results are identical either way.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    p = as_puzzles(puzzles)
    n = len(p)
    sols = np.zeros((n, N_CELLS), dtype=np.uint8)
    counts = np.zeros(n, dtype=np.int32)
    guesses = np.zeros(n, dtype=np.int32)
    if n:
        (_solve_all_parallel if parallel else _solve_all)(p, int(limit), sols, counts, guesses)
    return sols, counts, guesses


def rate_batch(puzzles, parallel: bool = False) -> np.ndarray:
    """int32[N]: the rating (limit=1 guess count on the string as given) of each puzzle."""
    return solve_batch(puzzles, limit=1, parallel=parallel)[2]


def solve(puzzle) -> np.ndarray | None:
    """uint8[81] solution (the first one found), or None when the puzzle has none."""
    sols, counts, _ = solve_batch(puzzle, limit=1)
    return sols[0] if counts[0] else None


def count_solutions(puzzle, limit: int = 2) -> int:
    """Number of solutions, counted up to `limit` (2 answers "is it unique?")."""
    return int(solve_batch(puzzle, limit=limit)[1][0])


def rate(puzzle) -> int:
    """Guess count of one deterministic limit=1 run on the puzzle as given (see the module docstring)."""
    return int(rate_batch(puzzle)[0])
