"""Class rating: a difficulty that belongs to a puzzle's equivalence class, not to one of its strings.

`solver.rate` (the dataset protocol: one run on the stored string) depends heavily on which symmetric copy is
stored: on hard puzzles two random copies of the same puzzle rank-correlate at only ~0.1. Sorting or
thresholding by it (`min_difficulty`, the per-difficulty table, the generator's acceptance) sorts by noise.

The class rating of a puzzle p is the mean (and the standard deviation) of `solver.rate` over k symmetric
copies g_1(c), ..., g_k(c) of c = canonical_form(p), where g_1..g_k are drawn from a generator seeded by the
bytes of c (and k). Two symmetric copies of a puzzle have the same canonical form, hence rate the same k
strings: their class ratings are identical by construction, not just close. The copies are uniform over the
group, so the mean estimates the puzzle's expected single-copy rating, with a standard error of sd / sqrt(k).
Cost: one canonical form (~15-30 us) plus k ratings (each ~0.03 ms on hard puzzles) per puzzle.
Any shape (9x9, 6x6, 4x4, told by the width): the copies are drawn from the input shape's group.
"""

from __future__ import annotations

import numpy as np

from cgar.sudoku.canonical import canonical_forms
from cgar.sudoku.grid import shape_of
from cgar.sudoku.solver import as_puzzles, rate_batch
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries

DEFAULT_CLASS_COPIES = 16
CLASS_COLUMNS = ("class_rating", "class_rating_sd")  # the CSV columns written next to `rating`
_SEED_TAG = 0xC1A55  # separates these streams from any other use of the canonical bytes as a seed


def copy_seed(canonical: np.ndarray, k: int) -> np.random.SeedSequence:
    """The seed of a class's copies: a function of the canonical form's cells and k only."""
    return np.random.SeedSequence([_SEED_TAG, int(k), *np.asarray(canonical, dtype=np.uint32).tolist()])


def class_copies(puzzles, k: int = DEFAULT_CLASS_COPIES) -> np.ndarray:
    """uint8[N, k, cells]: the k symmetric copies each puzzle's class rating is measured on."""
    if int(k) < 1:
        raise ValueError(f"class rating copies k must be >= 1, got {k}")
    canon = canonical_forms(as_puzzles(puzzles))
    shape = shape_of(canon.shape[1])
    out = np.empty((len(canon), k, shape.cells), dtype=np.uint8)
    for i, c in enumerate(canon):
        sym = random_symmetries(np.random.default_rng(copy_seed(c, k)), k, shape)
        out[i] = apply_symmetries(np.broadcast_to(c, (k, shape.cells)), sym)
    return out


def class_copy_ratings(puzzles, k: int = DEFAULT_CLASS_COPIES, parallel: bool = False) -> np.ndarray:
    """int32[N, k]: the rating of each of the k class copies (`class_copies`) of each puzzle."""
    copies = class_copies(puzzles, k)
    return rate_batch(copies.reshape(-1, copies.shape[2]), parallel=parallel).reshape(len(copies), k)


def class_ratings(puzzles, k: int = DEFAULT_CLASS_COPIES, parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean float64[N], sd float64[N]) of the rating over each puzzle's k class copies (sd: population, ddof 0)."""
    return summarize_copies(class_copy_ratings(puzzles, k, parallel))


def summarize_copies(ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sd) over the last axis of per-copy ratings [N, k]."""
    r = np.asarray(ratings, dtype=np.float64)
    if len(r) == 0:
        return np.zeros(0), np.zeros(0)
    return r.mean(axis=1), r.std(axis=1)


def format_class_rating(mean: float, sd: float) -> tuple[str, str]:
    """CSV text of a class rating (mean, sd), two decimals each."""
    return f"{mean:.2f}", f"{sd:.2f}"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (average ranks for ties); nan when either side is constant."""
    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=r)
        return sums[inverse] / counts[inverse]

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


__all__ = ["DEFAULT_CLASS_COPIES", "CLASS_COLUMNS", "class_copies", "class_copy_ratings", "class_ratings",
           "summarize_copies", "format_class_rating", "spearman"]
