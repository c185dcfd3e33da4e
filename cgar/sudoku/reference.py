"""Pure-Python reference solver with the same strategy as `cgar.sudoku.solver`, for cross-checking in tests.

Written for readability, not speed (roughly 25-50x slower than the numba solver): candidates are Python sets,
rules are applied one at a time until nothing changes, and the search is recursive. Because every rule is
monotone, the fixpoint is the same as the numba solver's bit-parallel passes reach, so solutions, solution
counts and guess counts must agree exactly. Any `GridShape` works; the puzzle's length tells which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from cgar.sudoku.grid import GridShape, shape_of


@dataclass(frozen=True)
class Layout:
    """A shape's units as Python lists."""

    n: int
    rows: list[list[int]]
    cols: list[list[int]]
    boxes: list[list[int]]
    peers: list[list[int]]
    units: list[list[int]]  # rows + cols + boxes


@lru_cache(maxsize=None)
def layout(shape: GridShape) -> Layout:
    units = [[int(c) for c in u] for u in shape.units]
    peers = [sorted({p for u in units if c in u for p in u} - {c}) for c in range(shape.cells)]
    n = shape.n
    return Layout(n, units[:n], units[n:2 * n], units[2 * n:], peers, units)


class Contradiction(Exception):
    pass


@dataclass
class State:
    grid: list[int]  # 0 = blank
    cand: list[set[int]]  # candidates of blank cells; empty once placed
    lay: Layout

    def copy(self) -> "State":
        return State(self.grid[:], [set(s) for s in self.cand], self.lay)

    def place(self, c: int, v: int) -> None:
        if v not in self.cand[c]:
            raise Contradiction
        self.grid[c] = v
        self.cand[c] = set()
        for p in self.lay.peers[c]:
            self.cand[p].discard(v)


def _naked_singles(s: State) -> bool:
    for c in range(len(s.grid)):
        if s.grid[c] == 0:
            if not s.cand[c]:
                raise Contradiction
            if len(s.cand[c]) == 1:
                s.place(c, next(iter(s.cand[c])))
                return True
    return False


def _hidden_singles(s: State) -> bool:
    for unit in s.lay.units:
        placed = {s.grid[c] for c in unit}
        for d in range(1, s.lay.n + 1):
            if d in placed:
                continue
            spots = [c for c in unit if d in s.cand[c]]
            if not spots:
                raise Contradiction
            if len(spots) == 1:
                s.place(spots[0], d)
                return True
    return False


def _locked_candidates(s: State) -> bool:
    """Pointing (a box's d all on one line -> not elsewhere on that line) and claiming (the reverse)."""
    changed = False
    for box in s.lay.boxes:
        for line in s.lay.rows + s.lay.cols:
            inter = set(box) & set(line)
            if not inter:
                continue
            for d in range(1, s.lay.n + 1):
                in_inter = any(d in s.cand[c] for c in inter)
                if not in_inter:
                    continue
                for confined_to, clear in ((box, line), (line, box)):
                    if all(d not in s.cand[c] for c in confined_to if c not in inter):
                        for c in clear:
                            if c not in inter and d in s.cand[c]:
                                s.cand[c].discard(d)
                                changed = True
    return changed


def propagate(s: State) -> None:
    """Apply the rules until none fires; raises Contradiction."""
    # the loop exits only after a full pass in which no rule fired, and those passes also check every cell
    # for an empty candidate set and every unit for a digit without a place
    while _naked_singles(s) or _hidden_singles(s) or _locked_candidates(s):
        pass


def initial_state(puzzle, excl=None) -> State:
    lay = layout(shape_of(len(puzzle)))
    s = State([0] * len(puzzle), [set(range(1, lay.n + 1)) for _ in range(len(puzzle))], lay)
    if excl is not None:
        for c, bad in excl.items():
            s.cand[c] -= set(bad)
    for c in range(len(puzzle)):
        if puzzle[c]:
            s.place(c, int(puzzle[c]))
    return s


@dataclass
class Result:
    solutions: list[list[int]] = field(default_factory=list)
    guesses: int = 0


def reference_solve(puzzle, limit: int = 1, excl: dict[int, set[int]] | None = None) -> Result:
    """Solutions (up to `limit`, in search order) and the guess count of the run.

    `excl` maps a cell to digits removed from it before the search (the numba solver's root exclusion masks).
    """
    res = Result()
    try:
        root = initial_state(puzzle, excl)
        propagate(root)
    except Contradiction:
        return res

    def dfs(s: State) -> bool:  # True once `limit` solutions are found
        blanks = [c for c in range(len(s.grid)) if s.grid[c] == 0]
        if not blanks:
            res.solutions.append(s.grid[:])
            return len(res.solutions) >= limit
        cell = min(blanks, key=lambda c: (len(s.cand[c]), c))  # MRV, lowest index among ties
        values = sorted(s.cand[cell])
        for k, v in enumerate(values):
            if k < len(values) - 1:  # every tried value but the last counts as a guess
                res.guesses += 1
            child = s.copy()
            try:
                child.place(cell, v)
                propagate(child)
            except Contradiction:
                continue
            if dfs(child):
                return True
        return False

    dfs(root)
    return res


def reference_rate(puzzle) -> int:
    return reference_solve(puzzle, limit=1).guesses
