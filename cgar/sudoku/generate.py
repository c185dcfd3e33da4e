"""Offline generator of Sudoku-Extreme look-alike puzzles (design: shared/reference/sudoku_data.md §3-§5).

Sources (labels and default shares mirror Sudoku-Extreme's mix, see `SourceMix`):
- `gen_kaggle_like`: random full grid, clues removed in random order while the solution stays unique, stopped
  at a random 30..36 givens (almost always solvable by singles, like the Kaggle set);
- `gen_unbiased_like`: random minimal puzzle (every clue is needed), like tdoku's `puzzles1_unbiased`;
- `gen_lowclue`: random minimal puzzles with <= 22 givens (rejection sampling), a cheap stand-in for 17-clue
  (these givens counts are 9x9's; `EASY_GIVENS` holds every shape's);
- `gen_hard`: a pool-based {-d,+?} hill climber on the rating (tdoku's `generate` / the forum's method): take
  a pool member, drop 1-2 clues, re-constrain to a unique puzzle (each added clue comes from a randomized
  limit-2 search, at a cell where the two solutions differ), minimise, score, replace the weakest pool member if
  better. Cheap: accepted at class rating >= `hard_threshold` (default 20), far easier than the forum sets;
- `gen_extreme`: the same climber aimed at the forum sets' difficulty, measured as the median rating over the
  class copies (>= `extreme_threshold`). The climb is scored on the geometric mean of `EXTREME_PROXY_COPIES`
  copies (cheap); a candidate gets the full class copies only once that proxy reaches `EXTREME_PROXY_FRACTION`
  of the threshold. Median and geometric mean, not the mean: on climbed puzzles the rating over copies is
  heavy-tailed (a few orientations cost hundreds of guesses, most a handful), and a climb on the mean finds
  exactly those (measured: class mean median 155, fresh single-copy median 12.5).

Every puzzle is stored under a fresh uniformly random symmetry and its `rating` is `solver.rate` of that stored
string (the dataset protocol; the copy is not one the acceptance looked at, so the stored rating is unbiased).
Every row also carries its class rating (`cgar.sudoku.rating`, k = `class_copies`), which is what the hard
sources' acceptance uses: one copy is noisy, and a climber fed noisy scores fills its pool with lucky draws.
The pool starts from the hardest of a few hundred random minimal puzzles and parents are picked by binary
tournament. Measured costs and difficulties are in bench/data_bench.py and config/README.md.

Grid shapes: `generate_chunk(..., shape=SUDOKU_6)` (or 4x4) runs the easy sources on the smaller grid. The
hill-climbed sources are 9x9 only: few random minimal 6x6 puzzles need a guess (~5%; no 4x4 one does), and there
is no forum difficulty to aim at there.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

import numpy as np
from tqdm import tqdm

from cgar.data.puzzle_csv import HEADER, write_puzzle_csv
from cgar.sudoku.generate_kernels import climb, easy_batch
from cgar.sudoku.grid import SUDOKU_4, SUDOKU_6, SUDOKU_9, GridShape, format_grids
from cgar.sudoku.rating import (CLASS_COLUMNS, DEFAULT_CLASS_COPIES, class_copy_ratings, format_class_rating,
                                summarize_copies)
from cgar.sudoku.solver import rate_batch, tables
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries

DEFAULT_HARD_THRESHOLD = 20
DEFAULT_HARD_COPIES = 3  # gen_hard's climb score: mean over this many copies
DEFAULT_EXTREME_THRESHOLD = 60  # median of the class copies' ratings
EXTREME_PROXY_COPIES = 4  # gen_extreme's climb score: geometric mean over this many copies
EXTREME_FULL_COPIES = 16  # ... and over this many once it would enter the pool or pass
EXTREME_PROXY_FRACTION = 0.75  # candidates whose proxy reaches this share of the threshold get the class rating
EXTREME_POOL_CAP = 4.0  # gen_extreme's pool scores stop at this multiple of the threshold
POOL_SIZE = 32
KAGGLE_GIVENS = (30, 36)  # 9x9's, kept as names: 37-44% of the cells
LOWCLUE_MAX_GIVENS = 22  # 27% of the cells; random minimal 9x9 puzzles have about 24
# shape -> ((kaggle_like givens lo, hi), lowclue max givens). kaggle_like: 9x9's share of the cells, rounded.
# lowclue: the low tail of random minimal puzzles, as 22 is for 9x9 (measured, seed 1: 4% of 9x9 minimal
# puzzles have <= 22 givens; 19% of 6x6 ones <= 9, the mean being 10.1 and 8 only 0.5%; 69% of 4x4 ones have
# the fewest possible, 4), so the rejection sampling wastes at most ~25 draws per puzzle
EASY_GIVENS = {
    SUDOKU_9: (KAGGLE_GIVENS, LOWCLUE_MAX_GIVENS),
    SUDOKU_6: ((13, 16), 9),
    SUDOKU_4: ((6, 7), 4),
}
CLIMBED = ("gen_hard", "gen_extreme")
CHUNK_HEADER = HEADER + CLASS_COLUMNS


@dataclass(frozen=True)
class SourceMix:
    """Share of each source in a chunk; defaults follow Sudoku-Extreme's train.csv (doc §1.1) with the cheap hard
    source (the paper config swaps it for `extreme`)."""

    kaggle_like: float = 0.023
    unbiased_like: float = 0.23
    lowclue: float = 0.012
    hard: float = 0.735
    extreme: float = 0.0

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


@dataclass(frozen=True)
class Targets:
    """What the hard sources accept, and how many copies the class rating of every row uses."""

    hard_threshold: float = DEFAULT_HARD_THRESHOLD
    hard_copies: int = DEFAULT_HARD_COPIES
    extreme_threshold: float = DEFAULT_EXTREME_THRESHOLD
    class_copies: int = DEFAULT_CLASS_COPIES

    def __post_init__(self):
        if self.hard_copies < 1 or self.class_copies < 1:
            raise ValueError(f"hard_copies and class_copies must be >= 1, got {self.hard_copies}, "
                             f"{self.class_copies}")
        if not (self.hard_threshold >= 0 and self.extreme_threshold >= 0):
            raise ValueError(f"thresholds must be >= 0, got {self.hard_threshold}, {self.extreme_threshold}")

    def climb(self, label: str) -> tuple[float, int, int, bool, float, float]:
        """(proxy threshold, proxy copies, full copies, proxy is a geometric mean, pool cap, class threshold) of
        a hill-climbed source (see `generate_kernels.climb`)."""
        if label == "gen_hard":
            return self.hard_threshold, self.hard_copies, self.hard_copies, False, np.inf, self.hard_threshold
        return (self.extreme_threshold * EXTREME_PROXY_FRACTION, EXTREME_PROXY_COPIES, EXTREME_FULL_COPIES, True,
                self.extreme_threshold * EXTREME_POOL_CAP, self.extreme_threshold)


# ---------------------------------------------------------------------------------------------- Python side


def _numba_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**32))


def _easy_source(label: str, n: int, rng: np.random.Generator, shape: GridShape = SUDOKU_9):
    """(base puzzles uint8[n, C], solutions) of an easy source on `shape`."""
    kaggle, lowclue = EASY_GIVENS[shape]
    lo, hi, max_givens = {
        "gen_kaggle_like": (*kaggle, shape.cells),
        "gen_unbiased_like": (0, 0, shape.cells),
        "gen_lowclue": (0, 0, lowclue),
    }[label]
    q = np.empty((n, shape.cells), dtype=np.uint8)
    a = np.empty((n, shape.cells), dtype=np.uint8)
    easy_batch(_numba_seed(rng), n, lo, hi, max_givens, q, a, tables(shape))
    return q, a


class _Climber:
    """One hill-climbing chain; `next_batch(n)` returns up to n candidates whose proxy score passed."""

    SYMS_PER_CALL = 4096
    SEED_FACTOR = 8

    def __init__(self, rng: np.random.Generator, threshold: float, copies: int, full_copies: int, log_score: bool,
                 cap: float):
        self.rng, self.threshold, self.log_score, self.cap = rng, float(threshold), bool(log_score), float(cap)
        self.copies, self.full_copies = int(copies), int(full_copies)
        # warm start: the hardest (one copy) of SEED_FACTOR x POOL_SIZE random minimal puzzles
        q, a = (np.empty((POOL_SIZE * self.SEED_FACTOR, SUDOKU_9.cells), dtype=np.uint8) for _ in range(2))
        easy_batch(_numba_seed(rng), len(q), 0, 0, SUDOKU_9.cells, q, a, tables(SUDOKU_9))
        scores = rate_batch(apply_symmetries(q, random_symmetries(rng, len(q)))).astype(np.float64)
        best = np.argsort(-scores, kind="stable")[:POOL_SIZE]
        self.pool, self.pool_sol, self.pool_score = q[best].copy(), a[best].copy(), scores[best]
        self.tried = 0

    def next_batch(self, n: int):
        sym = random_symmetries(self.rng, self.SYMS_PER_CALL)
        base, sol = (np.empty((n, SUDOKU_9.cells), dtype=np.uint8) for _ in range(2))
        score = np.empty(n, dtype=np.float64)
        got, _, tried = climb(
            _numba_seed(self.rng), self.pool, self.pool_sol, self.pool_score, sym.source_index(), sym.digit_map,
            self.threshold, self.copies, self.full_copies, self.log_score, self.cap, n, base, sol, score,
            tables(SUDOKU_9),
        )
        self.tried += tried
        return base[:got], sol[:got]


def _source_rows(label, n, rng, seen, bar, targets: Targets, shape: GridShape = SUDOKU_9, max_rounds=10_000):
    """n distinct rows of one source; `seen` holds the base (unpermuted) strings already emitted in the chunk."""
    rows: list[tuple] = []
    climbed = label in CLIMBED
    if climbed and n:
        *climb_args, class_threshold = targets.climb(label)
        climber = _Climber(rng, *climb_args)
    for _ in range(max_rounds):
        if len(rows) >= n:
            return rows
        want = n - len(rows)
        base, sol = climber.next_batch(want) if climbed else _easy_source(label, want, rng, shape)
        per_copy = class_copy_ratings(base, targets.class_copies)
        mean, sd = summarize_copies(per_copy)
        if climbed:  # acceptance on the class copies: a property of the puzzle, not of one lucky copy
            ok = (mean if label == "gen_hard" else np.median(per_copy, axis=1)) >= class_threshold
            base, sol, mean, sd = base[ok], sol[ok], mean[ok], sd[ok]
        sym = random_symmetries(rng, len(base), shape)  # the stored copy: fresh, never looked at by the acceptance
        q, a = apply_symmetries(base, sym), apply_symmetries(sol, sym)
        ratings = rate_batch(q)
        # exact duplicates are dropped; for climbed puzzles also re-finds of the same base puzzle
        for qs, as_, rating, bs, m, s in zip(format_grids(q), format_grids(a), ratings, format_grids(base),
                                             mean, sd):
            if qs in seen or bs in seen or len(rows) >= n:
                continue
            seen.update((qs, bs))
            rows.append((label, qs, as_, int(rating), *format_class_rating(m, s)))
            bar.update(1)
    raise RuntimeError(f"{label}: only {len(rows)}/{n} puzzles after {max_rounds} rounds "
                       f"(the threshold {targets.climb(label)[-1] if climbed else ''} may be unreachable)")


def generate_chunk(seed: int, chunk: int, size: int, mix: SourceMix = SourceMix(), progress: bool = False,
                   targets: Targets = Targets(), shape: GridShape = SUDOKU_9, **target_kwargs) -> list[tuple]:
    """`size` rows (source, question, answer, rating, class_rating, class_rating_sd) of `shape` in shuffled order;
    chunk k of seed s is always the same. `target_kwargs` (hard_threshold=..., ...) override fields of `targets`.

    Each source draws from its own child of SeedSequence([seed, chunk]), so chunks are independent and a source's
    puzzles do not depend on the other sources' counts."""
    if seed < 0 or chunk < 0 or size < 0:
        raise ValueError(f"seed, chunk and size must be >= 0, got {seed}, {chunk}, {size}")
    if shape not in EASY_GIVENS:
        raise ValueError(f"unknown grid shape {shape!r}")
    climbed_shares = {k: v for k, v in mix.shares().items() if k in CLIMBED and v > 0}
    if shape != SUDOKU_9 and climbed_shares:
        raise ValueError(f"{shape.name} grid: the hill-climbed sources (hard, extreme) are 9x9 only, got shares "
                         f"{climbed_shares}; use the easy sources (kaggle_like, unbiased_like, lowclue)")
    if target_kwargs:
        targets = Targets(**{**targets.__dict__, **target_kwargs})
    counts = mix.counts(size)
    *source_seeds, shuffle_seed = np.random.SeedSequence([seed, chunk]).spawn(len(counts) + 1)
    rows: list[tuple] = []
    seen: set[str] = set()
    with tqdm(total=size, disable=not progress, file=sys.stderr, unit="puzzle", desc=f"chunk {chunk}") as bar:
        for (label, n), ss in zip(counts.items(), source_seeds):
            rows += _source_rows(label, n, np.random.default_rng(ss), seen, bar, targets, shape)
    order = np.random.default_rng(shuffle_seed).permutation(len(rows))
    return [rows[i] for i in order]


def summarize(rows) -> dict:
    """Per-source and overall stats: count, rating and class-rating mean/median, share needing guessing, givens."""
    def stats(sel) -> dict:
        ratings = np.array([r[3] for r in sel], dtype=np.int64)
        classes = np.array([float(r[4]) for r in sel], dtype=np.float64)
        givens = np.array([len(r[1]) - r[1].count(".") for r in sel], dtype=np.int64)
        hist = dict(zip(*(v.tolist() for v in np.unique(givens, return_counts=True))))
        nan = float("nan")
        return {
            "count": len(sel),
            "rating_mean": float(ratings.mean()) if len(sel) else nan,
            "rating_median": float(np.median(ratings)) if len(sel) else nan,
            "class_rating_mean": float(classes.mean()) if len(sel) else nan,
            "class_rating_median": float(np.median(classes)) if len(sel) else nan,
            "share_guessing": float((ratings >= 1).mean()) if len(sel) else nan,
            "givens_hist": hist,
        }

    labels = sorted({r[0] for r in rows})
    return {"all": stats(rows), "sources": {k: stats([r for r in rows if r[0] == k]) for k in labels}}


def write_chunk(path, seed: int, chunk: int, size: int, mix: SourceMix = SourceMix(),
                shape: GridShape = SUDOKU_9, **kwargs) -> dict:
    """Generate a chunk of `shape` (see `generate_chunk`; kwargs pass through), write it atomically as a puzzle
    CSV with the class-rating columns and return `summarize` of it."""
    rows = generate_chunk(seed, chunk, size, mix, shape=shape, **kwargs)
    write_puzzle_csv(path, rows, header=CHUNK_HEADER)
    return summarize(rows)


__all__ = ["SourceMix", "Targets", "generate_chunk", "write_chunk", "summarize", "CHUNK_HEADER", "EASY_GIVENS"]
