"""Augmentation throughput at paper scale: 1000 puzzles x (1 + 1000 augmentations) = 1,001,000 examples.

Usage: python bench/augment_bench.py [--puzzles 1000] [--num-aug 1000]
Runs the same `expand_groups` the dataset build uses, on one core (numpy is single-threaded here), and
prints pairs/s. Target from the data issue: <= 10 s for 1,001,000 examples.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from cgar.data.build import PuzzleTable, expand_groups  # noqa: E402
from cgar.sudoku.grid import valid_solutions  # noqa: E402
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries  # noqa: E402


def run(puzzles: int = 1000, num_aug: int = 1000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    r, c = np.divmod(np.arange(81), 9)
    base = ((3 * r + r // 3 + c) % 9 + 1).astype(np.uint8)
    solutions = apply_symmetries(np.tile(base, (puzzles, 1)), random_symmetries(rng, puzzles))
    questions = np.where(rng.random(solutions.shape) < 0.69, 0, solutions).astype(np.uint8)
    table = PuzzleTable(np.array(["x"] * puzzles, dtype=object), questions, solutions, np.zeros(puzzles, np.int64))
    t0 = time.perf_counter()
    inputs, labels, _ = expand_groups(table, num_aug, np.random.default_rng(seed + 1))
    seconds = time.perf_counter() - t0
    assert valid_solutions(labels[:: max(1, len(labels) // 10_000)]).all()
    n = len(inputs)
    return {"examples": n, "augmented_pairs": puzzles * num_aug, "seconds": seconds, "pairs_per_s": puzzles * num_aug / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--puzzles", type=int, default=1000)
    ap.add_argument("--num-aug", type=int, default=1000)
    a = ap.parse_args()
    res = run(a.puzzles, a.num_aug)
    print(f"augmentation: {res['examples']:,} examples ({res['augmented_pairs']:,} augmented pairs) "
          f"in {res['seconds']:.2f} s = {res['pairs_per_s']:,.0f} pairs/s (1 core; target <= 10 s)")


if __name__ == "__main__":
    main()
