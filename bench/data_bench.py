"""All data-side throughput figures of the data issue in one run (CPU; one core unless stated).

Usage: python bench/data_bench.py [--n 1000] [--canonical 2000]
Prints: generation puzzles/s per source per core with the rating and givens distributions of what it
generated; augmentation pairs/s for 1,001,000 examples (target <= 10 s); canonical forms/s.
Each part is also a script of its own (generate_bench.py, augment_bench.py, canonical_bench.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import augment_bench  # noqa: E402
import canonical_bench  # noqa: E402
import generate_bench  # noqa: E402

from cgar.sudoku.canonical import canonical_forms  # noqa: E402
from cgar.sudoku.generate import DEFAULT_HARD_COPIES, DEFAULT_HARD_THRESHOLD  # noqa: E402
from cgar.sudoku.grid import parse_grids  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="puzzles generated per source")
    ap.add_argument("--canonical", type=int, default=2000, help="puzzles canonicalised")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    print(f"== generation ({a.n} puzzles per source, 1 process, hard threshold {DEFAULT_HARD_THRESHOLD})")
    results = generate_bench.run(a.n, a.seed, DEFAULT_HARD_THRESHOLD, DEFAULT_HARD_COPIES)
    generate_bench.print_tables(results)

    print("\n== augmentation (1000 puzzles x 1000 augmentations, the paper's training set)")
    aug = augment_bench.run(1000, 1000, a.seed)
    print(f"{aug['examples']:,} examples in {aug['seconds']:.2f} s = {aug['pairs_per_s']:,.0f} pairs/s (target <= 10 s)")

    print(f"\n== canonical forms ({a.canonical} generated puzzles, default mix)")
    from cgar.sudoku.generate import generate_chunk

    rows = generate_chunk(a.seed + 1, 0, a.canonical)
    puzzles = parse_grids([r[1] for r in rows])
    canonical_forms(puzzles[:10])  # compile / load the cache outside the timing
    print(f"generated (mixed sources): {canonical_bench.rate(puzzles, 3):,.0f} canonical forms/s")
    blanked = canonical_bench.blanked_puzzles(a.canonical, 17, 36, a.seed)
    print(f"random blanked grids, 17-36 givens: {canonical_bench.rate(blanked, 3):,.0f} canonical forms/s")


if __name__ == "__main__":
    main()
