"""All data-side throughput and difficulty figures in one run (CPU; one core unless stated).

Usage: python bench/data_bench.py [--n 1000] [--n-extreme 300] [--k 16] [--canonical 2000] [--config config/config.yaml]
Prints:
- per source: puzzles per CPU-second, and the median / q90 rating on fresh random copies (the stored string,
  and a second independent copy);
- stability of the class rating: rank correlation between two independent k-copy means of the same puzzles
  (against the same for two single copies, the stored-rating protocol);
- the projected core-hours of the config's mix for its test set (423,168 in the paper config) and whole pool;
- augmentation pairs/s for 1,001,000 examples (target <= 10 s); canonical forms/s.
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
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from cgar.sudoku.canonical import canonical_forms  # noqa: E402
from cgar.sudoku.generate import DEFAULT_EXTREME_THRESHOLD, DEFAULT_HARD_THRESHOLD  # noqa: E402
from cgar.sudoku.grid import parse_grids  # noqa: E402
from cgar.sudoku.rating import spearman  # noqa: E402
from cgar.sudoku.solver import rate_batch  # noqa: E402
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries  # noqa: E402


def random_copy_means(puzzles: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Mean rating over k independent uniformly random copies of each puzzle (not the canonical-seeded ones)."""
    rep = np.repeat(puzzles, k, axis=0)
    return rate_batch(apply_symmetries(rep, random_symmetries(rng, len(rep)))).reshape(-1, k).mean(axis=1)


def fresh_and_stability(results: list[dict], k: int, seed: int) -> None:
    rng = np.random.default_rng(seed + 99)
    print(f"{'source':<18} {'n':>5}  fresh copy q50 / q90 (stored | another)   rank corr.: 1 vs 1 copy   "
          f"{k} vs {k} copies")
    for r in results:
        q = parse_grids([row[1] for row in r["rows"]])
        other = rate_batch(apply_symmetries(q, random_symmetries(rng, len(q))))
        stored = r["ratings"]
        one = spearman(stored, other)
        km = spearman(random_copy_means(q, k, rng), random_copy_means(q, k, rng))
        print(f"{r['source']:<18} {len(q):>5}  {np.median(stored):>6.1f} / {np.percentile(stored, 90):<6.0f} | "
              f"{np.median(other):>6.1f} / {np.percentile(other, 90):<6.0f}           {one:>6.3f}        "
              f"{km:>6.3f}")


def projection(results: list[dict], config: Path) -> None:
    g = yaml.safe_load(config.read_text())["data"]["generate"]
    cpu_per = {r["source"].removeprefix("gen_"): r["cpu_seconds"] / r["n"] for r in results}
    print(f"mix of {config}: {g['mix']}")
    for what, size in (("test set", int(g["test_size"])), ("test + train pool", int(g["test_size"]) +
                                                           int(g["train_pool_size"]))):
        per_source = {s: size * share * cpu_per[s] / 3600 for s, share in g["mix"].items() if share}
        total = sum(per_source.values())
        parts = ", ".join(f"{s} {h:,.1f}" for s, h in per_source.items())
        print(f"{what} ({size:,} puzzles): {total:,.1f} core-hours ({parts}); "
              f"{total / 16:,.1f} h on a 16-core node")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="puzzles generated per source")
    ap.add_argument("--n-extreme", type=int, default=300, help="gen_extreme puzzles generated")
    ap.add_argument("--k", type=int, default=16, help="copies per mean in the stability measurement")
    ap.add_argument("--canonical", type=int, default=2000, help="puzzles canonicalised")
    ap.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "config/config.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-aug", action="store_true", help="leave out augmentation and canonical forms")
    a = ap.parse_args()

    print(f"== generation ({a.n} puzzles per source, {a.n_extreme} gen_extreme, 1 process, thresholds hard "
          f"{DEFAULT_HARD_THRESHOLD} (class mean), extreme {DEFAULT_EXTREME_THRESHOLD} (class-copy median))")
    results = generate_bench.run(a.n, a.seed, DEFAULT_HARD_THRESHOLD, DEFAULT_EXTREME_THRESHOLD, a.n_extreme)
    generate_bench.print_tables(results)
    print(f"\n== fresh random copies and class-rating stability (our +LC scale; forum_hardest_1905_11+ has median 57, "
          "forum_hardest_1106 median 108 on it)")
    fresh_and_stability(results, a.k, a.seed)
    print("\n== projected generation cost (CPU-seconds per puzzle measured above)")
    projection(results, a.config)
    if a.skip_aug:
        return

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
