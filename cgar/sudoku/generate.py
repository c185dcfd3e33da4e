"""Offline generator of Sudoku-Extreme look-alike puzzles (design: shared/reference/sudoku_data.md §3-§5).

Sources (labels and default shares mirror Sudoku-Extreme's mix, see `SourceMix`):
- `gen_kaggle_like`: random full grid, clues removed in random order while the solution stays unique, stopped
  at a random 30..36 givens (almost always solvable by singles, like the Kaggle set);
- `gen_unbiased_like`: random minimal puzzle (every clue is needed), like tdoku's `puzzles1_unbiased`;
- `gen_lowclue`: random minimal puzzles with <= 22 givens (rejection sampling), a cheap stand-in for 17-clue;
- `gen_hard`: a pool-based {-d,+?} hill climber on the rating (tdoku's `generate` / the forum's method): take
  a pool member, drop 1-2 clues, re-constrain to a unique puzzle (each added clue comes from a randomized
  limit-2 search, at a cell where the two solutions differ), minimise, score, replace the weakest pool member if
  better. A candidate is accepted when its score reaches `hard_threshold`.

Every puzzle is stored under a uniformly random symmetry and its `rating` is `solver.rate` of that stored string.
The hard score is the mean rating over `hard_copies` random symmetry copies whose first copy IS the stored one
(one copy is noisy, and a climber fed noisy scores fills its pool with lucky draws). The pool starts from the
hardest of a few hundred random minimal puzzles and parents are picked by binary tournament, so a fresh chain
warms up in ~2 s. Trade-off of `hard_threshold` (our scale, about 2.2-3.7x tdoku's, see the doc): the default 20
gives puzzles that all need guessing, tdoku-"moderately hard" (magictour-like, tdoku mean ~12), at ~50 accepted
per second per core; 80 gets close to the forum sets' tdoku ~25 but is about 10x slower.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

import numpy as np
from numba import njit
from tqdm import tqdm

from cgar.data.puzzle_csv import write_puzzle_csv
from cgar.sudoku.grid import N_CELLS, format_grids
from cgar.sudoku.solver import new_workspace, rate_batch, search
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries

DEFAULT_HARD_THRESHOLD = 20
DEFAULT_HARD_COPIES = 3
POOL_SIZE = 32
KAGGLE_GIVENS = (30, 36)
LOWCLUE_MAX_GIVENS = 22


@dataclass(frozen=True)
class SourceMix:
    """Share of each source in a chunk; defaults follow Sudoku-Extreme's train.csv (doc §1.1)."""

    kaggle_like: float = 0.023
    unbiased_like: float = 0.23
    lowclue: float = 0.012
    hard: float = 0.735

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"SourceMix.{f.name} must be a finite number >= 0, got {v!r}")
        total = sum(self.shares().values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"SourceMix shares ({', '.join(f.name for f in fields(self))}) sum to {total}, not 1")

    def shares(self) -> dict[str, float]:
        """{source label: share}, in the fixed generation order."""
        return {f"gen_{f.name}": float(getattr(self, f.name)) for f in fields(self)}

    def counts(self, size: int) -> dict[str, int]:
        """Per-source counts summing to size: floor of size*share, the rest by largest remainder (ties: order)."""
        exact = {k: size * s for k, s in self.shares().items()}
        counts = {k: int(np.floor(v)) for k, v in exact.items()}
        by_remainder = sorted(exact, key=lambda k: -(exact[k] - counts[k]))  # stable sort keeps field order
        for k in by_remainder[: size - sum(counts.values())]:
            counts[k] += 1
        return counts


# --------------------------------------------------------------------------------------------- numba kernels


@njit(cache=True)
def _has_other_solution(puzzle, c, v, ws, excl, sols):
    """Is there a solution of `puzzle` with cell c != v? (c is blank in puzzle; one excluded-value search)."""
    excl[c] = 1 << (v - 1)
    count = search(puzzle, excl, 1, False, ws, sols)[0]
    excl[c] = 0
    return count > 0


@njit(cache=True)
def _reduce(puzzle, target_givens, ws, excl, sols):
    """Remove clues in random order while the solution stays unique, until `target_givens` are left.

    The puzzle must be unique on entry. target_givens=0 tries every clue once, leaving a minimal puzzle."""
    givens = 0
    for c in range(N_CELLS):
        givens += puzzle[c] != 0
    for c in np.random.permutation(N_CELLS):
        if givens <= target_givens:
            break
        v = puzzle[c]
        if v == 0:
            continue
        puzzle[c] = 0
        if _has_other_solution(puzzle, c, v, ws, excl, sols):
            puzzle[c] = v  # this clue is needed
        else:
            givens -= 1


@njit(cache=True)
def _constrain(puzzle, solution, ws, excl, sols2):
    """Add clues until the solution is unique; writes it to `solution`. False if the puzzle has none.

    Each round runs one randomized limit-2 search and adds the first solution's digit at a random cell where the
    two solutions differ, so the solution can drift away from the parent's (good for diversity)."""
    while True:
        count = search(puzzle, excl, 2, True, ws, sols2)[0]
        if count < 2:
            solution[:] = sols2[0]
            return count == 1
        n_diff = 0
        for c in range(N_CELLS):
            n_diff += sols2[0, c] != sols2[1, c]
        k = np.random.randint(0, n_diff)
        for c in range(N_CELLS):
            if sols2[0, c] != sols2[1, c]:
                if k == 0:
                    puzzle[c] = sols2[0, c]
                    break
                k -= 1


@njit(cache=True)
def _easy_batch(seed, n, lo, hi, max_givens, out_q, out_a):
    """n unique puzzles: random grid, then `_reduce` to a random target in lo..hi (0 = minimal); puzzles with
    more than max_givens givens are rejected and redrawn."""
    np.random.seed(seed)
    ws = new_workspace()
    excl = np.zeros(N_CELLS, dtype=np.int32)
    sols = np.empty((2, N_CELLS), dtype=np.uint8)
    empty = np.zeros(N_CELLS, dtype=np.uint8)
    for i in range(n):
        while True:
            search(empty, excl, 1, True, ws, sols)  # random full grid: random value order
            out_a[i] = sols[0]
            out_q[i] = sols[0]
            _reduce(out_q[i], lo + np.random.randint(0, hi - lo + 1), ws, excl, sols)
            if np.count_nonzero(out_q[i]) <= max_givens:
                break


@njit(cache=True)
def _permute(grid, src, digit_map, out):
    """out = symmetry (src cell index, digit map) applied to grid; the numba twin of `apply_symmetries`."""
    for k in range(N_CELLS):
        out[k] = digit_map[grid[src[k]]]


@njit(cache=True)
def _climb(seed, pool, pool_sol, pool_score, sym_src, sym_map, threshold, copies, max_out,
           out_base, out_q, out_a, out_rating):
    """Run the hill climber until `max_out` candidates scored >= threshold or the symmetries run out.

    Pool (uint8[P, 81] puzzles, solutions, float64[P] scores) is updated in place. Symmetries (int64[M, 81]
    source indices, uint8[M, 10] digit maps) are consumed in order; a candidate's first one is its stored form.
    Returns (accepted, symmetries used, candidates tried)."""
    np.random.seed(seed)
    ws = new_workspace()
    excl = np.zeros(N_CELLS, dtype=np.int32)
    sols = np.empty((2, N_CELLS), dtype=np.uint8)
    puzzle = np.empty(N_CELLS, dtype=np.uint8)
    solution = np.empty(N_CELLS, dtype=np.uint8)
    copy = np.empty(N_CELLS, dtype=np.uint8)
    n_pool = len(pool)
    used = 0
    n_out = 0
    tried = 0
    while n_out < max_out and used + copies <= len(sym_src):
        a, b = np.random.randint(0, n_pool), np.random.randint(0, n_pool)  # binary tournament: climbs faster
        puzzle[:] = pool[a if pool_score[a] >= pool_score[b] else b]
        for _ in range(1 + np.random.randint(0, 2)):  # {-1, -2} clues, then {+?} by constrain
            clues = np.flatnonzero(puzzle)
            puzzle[clues[np.random.randint(0, len(clues))]] = 0
        if not _constrain(puzzle, solution, ws, excl, sols):
            continue
        _reduce(puzzle, 0, ws, excl, sols)
        tried += 1
        first = used
        total = 0.0
        for j in range(copies):  # rating is cheap next to constrain + minimise, so always denoise
            _permute(puzzle, sym_src[first + j], sym_map[first + j], copy)
            g = search(copy, excl, 1, False, ws, sols)[2]
            total += g
            if j == 0:
                rating = g
        used += copies
        score = total / copies
        if score >= threshold:
            out_base[n_out] = puzzle
            _permute(puzzle, sym_src[first], sym_map[first], out_q[n_out])
            _permute(solution, sym_src[first], sym_map[first], out_a[n_out])
            out_rating[n_out] = rating
            n_out += 1
        weakest = np.argmin(pool_score)
        if score > pool_score[weakest]:
            fresh = True
            for p in range(n_pool):
                if (pool[p] == puzzle).all():
                    fresh = False
                    break
            if fresh:
                pool[weakest] = puzzle
                pool_sol[weakest] = solution
                pool_score[weakest] = score
    return n_out, used, tried


# ---------------------------------------------------------------------------------------------- Python side


def _numba_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**32))


def _easy_source(label: str, n: int, rng: np.random.Generator):
    """(questions uint8[n, 81], answers, ratings int32[n], base forms) of an easy source, stored under random
    symmetries. The base form used for de-duplication is the stored question itself."""
    lo, hi, max_givens = {
        "gen_kaggle_like": (*KAGGLE_GIVENS, N_CELLS),
        "gen_unbiased_like": (0, 0, N_CELLS),
        "gen_lowclue": (0, 0, LOWCLUE_MAX_GIVENS),
    }[label]
    q = np.empty((n, N_CELLS), dtype=np.uint8)
    a = np.empty((n, N_CELLS), dtype=np.uint8)
    _easy_batch(_numba_seed(rng), n, lo, hi, max_givens, q, a)
    sym = random_symmetries(rng, n)
    q, a = apply_symmetries(q, sym), apply_symmetries(a, sym)
    return q, a, rate_batch(q), q


class _HardClimber:
    """One hill-climbing chain; `next_batch(n)` returns up to n accepted puzzles (stored form + base form)."""

    SYMS_PER_CALL = 4096
    SEED_FACTOR = 8

    def __init__(self, rng: np.random.Generator, threshold: float, copies: int):
        self.rng, self.threshold, self.copies = rng, float(threshold), int(copies)
        # warm start: the hardest (one copy) of SEED_FACTOR x POOL_SIZE random minimal puzzles
        q, a = (np.empty((POOL_SIZE * self.SEED_FACTOR, N_CELLS), dtype=np.uint8) for _ in range(2))
        _easy_batch(_numba_seed(rng), len(q), 0, 0, N_CELLS, q, a)
        scores = rate_batch(apply_symmetries(q, random_symmetries(rng, len(q)))).astype(np.float64)
        best = np.argsort(-scores, kind="stable")[:POOL_SIZE]
        self.pool, self.pool_sol, self.pool_score = q[best].copy(), a[best].copy(), scores[best]
        self.tried = 0

    def next_batch(self, n: int):
        sym = random_symmetries(self.rng, self.SYMS_PER_CALL)
        base, q, a = (np.empty((n, N_CELLS), dtype=np.uint8) for _ in range(3))
        ratings = np.empty(n, dtype=np.int32)
        got, _, tried = _climb(
            _numba_seed(self.rng), self.pool, self.pool_sol, self.pool_score, sym.source_index(), sym.digit_map,
            self.threshold, self.copies, n, base, q, a, ratings,
        )
        self.tried += tried
        return q[:got], a[:got], ratings[:got], base[:got]


def _source_rows(label, n, rng, seen, bar, hard_threshold, hard_copies, max_rounds=10_000):
    """n distinct rows of one source; `seen` holds question and base strings already emitted in the chunk."""
    rows: list[tuple[str, str, str, int]] = []
    climber = _HardClimber(rng, hard_threshold, hard_copies) if label == "gen_hard" and n else None
    for _ in range(max_rounds):
        if len(rows) >= n:
            return rows
        want = n - len(rows)
        q, a, r, base = climber.next_batch(want) if climber else _easy_source(label, want, rng)
        # exact duplicates are dropped; for hard puzzles also re-finds of the same base puzzle
        for qs, as_, rating, bs in zip(format_grids(q), format_grids(a), r, format_grids(base)):
            if qs in seen or bs in seen or len(rows) >= n:
                continue
            seen.update((qs, bs))
            rows.append((label, qs, as_, int(rating)))
            bar.update(1)
    raise RuntimeError(f"{label}: only {len(rows)}/{n} puzzles after {max_rounds} rounds "
                       f"(hard_threshold={hard_threshold} may be unreachable)")


def generate_chunk(seed: int, chunk: int, size: int, mix: SourceMix = SourceMix(),
                   hard_threshold: float = DEFAULT_HARD_THRESHOLD, progress: bool = False,
                   hard_copies: int = DEFAULT_HARD_COPIES) -> list[tuple[str, str, str, int]]:
    """`size` rows (source, question, answer, rating) in shuffled order; chunk k of seed s is always the same.

    Each source draws from its own child of SeedSequence([seed, chunk]), so chunks are independent and a source's
    puzzles do not depend on the other sources' counts."""
    if seed < 0 or chunk < 0 or size < 0:
        raise ValueError(f"seed, chunk and size must be >= 0, got {seed}, {chunk}, {size}")
    if hard_copies < 1:
        raise ValueError(f"hard_copies must be >= 1, got {hard_copies}")
    counts = mix.counts(size)
    *source_seeds, shuffle_seed = np.random.SeedSequence([seed, chunk]).spawn(len(counts) + 1)
    rows: list[tuple[str, str, str, int]] = []
    seen: set[str] = set()
    with tqdm(total=size, disable=not progress, file=sys.stderr, unit="puzzle", desc=f"chunk {chunk}") as bar:
        for (label, n), ss in zip(counts.items(), source_seeds):
            rows += _source_rows(label, n, np.random.default_rng(ss), seen, bar, hard_threshold, hard_copies)
    order = np.random.default_rng(shuffle_seed).permutation(len(rows))
    return [rows[i] for i in order]


def summarize(rows) -> dict:
    """Per-source and overall stats: count, rating mean/median, share needing guessing, givens histogram."""
    def stats(sel) -> dict:
        ratings = np.array([r[3] for r in sel], dtype=np.int64)
        givens = np.array([N_CELLS - r[1].count(".") for r in sel], dtype=np.int64)
        hist = dict(zip(*(v.tolist() for v in np.unique(givens, return_counts=True))))
        return {
            "count": len(sel),
            "rating_mean": float(ratings.mean()) if len(sel) else float("nan"),
            "rating_median": float(np.median(ratings)) if len(sel) else float("nan"),
            "share_guessing": float((ratings >= 1).mean()) if len(sel) else float("nan"),
            "givens_hist": hist,
        }

    labels = sorted({r[0] for r in rows})
    return {"all": stats(rows), "sources": {k: stats([r for r in rows if r[0] == k]) for k in labels}}


def write_chunk(path, seed: int, chunk: int, size: int, mix: SourceMix = SourceMix(), **kwargs) -> dict:
    """Generate a chunk (see `generate_chunk`; kwargs pass through), write it atomically as a puzzle CSV and
    return `summarize` of it."""
    rows = generate_chunk(seed, chunk, size, mix, **kwargs)
    write_puzzle_csv(path, rows)
    return summarize(rows)


__all__ = ["SourceMix", "generate_chunk", "write_chunk", "summarize"]
