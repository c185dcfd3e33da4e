"""Generator throughput and difficulty per source, one process, one core.

Usage: python bench/generate_bench.py [--n 1000] [--n-extreme 300] [--seed 0] [--hard-threshold 20]
                                      [--extreme-threshold 60]
Generates --n puzzles of each source separately (a chunk with that source's share set to 1; --n-extreme for
gen_extreme, which is far slower) after a tiny warm-up call that loads the numba cache, and prints puzzles per
CPU-second (process time, so other load on the machine does not count), the rating distribution on the stored
fresh random copies (our +LC scale, NOT tdoku's), the class rating, and the givens. Climbed sources include
the chain's warm-up, as every chunk pays it.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from cgar.sudoku.generate import DEFAULT_EXTREME_THRESHOLD, DEFAULT_HARD_THRESHOLD, SourceMix, generate_chunk  # noqa: E402
from cgar.sudoku.grid import parse_grids  # noqa: E402

FIELDS = ("kaggle_like", "unbiased_like", "lowclue", "hard", "extreme")


def only(name: str) -> SourceMix:
    return SourceMix(**{f: float(f == name) for f in FIELDS})


def run(n: int, seed: int, hard_threshold: float, extreme_threshold: float, n_extreme: int | None = None,
        sources=FIELDS) -> list[dict]:
    generate_chunk(seed, 10**6, 5, SourceMix(0.2, 0.2, 0.2, 0.2, 0.2), hard_threshold=1, extreme_threshold=1)
    results = []
    for name in sources:
        size = n_extreme if (name == "extreme" and n_extreme is not None) else n
        wall, cpu = time.perf_counter(), time.process_time()
        rows = generate_chunk(seed, 0, size, only(name), hard_threshold=hard_threshold,
                              extreme_threshold=extreme_threshold)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        results.append({"source": f"gen_{name}", "n": size, "seconds": wall, "cpu_seconds": cpu, "rows": rows,
                        "ratings": np.array([r[3] for r in rows]),
                        "class_means": np.array([float(r[4]) for r in rows]),
                        "givens": (parse_grids([r[1] for r in rows]) > 0).sum(axis=1),
                        "distinct_solutions": len({r[2] for r in rows}) / size})
    return results


def print_tables(results: list[dict]) -> None:
    q = (10, 25, 50, 75, 90, 99)
    print(f"{'source':<18} {'n':>5} {'cpu s':>7} {'puz/cpu-s':>9}  {'mean':>6} "
          + " ".join(f"q{k:<3}" for k in q) + f"  {'max':>4}  {'>=1':>6} {'>=10':>6} {'>=57':>6}  class mean q50")
    for r in results:
        g = r["ratings"]
        qs = " ".join(f"{v:<4.0f}" for v in np.percentile(g, q))
        shares = " ".join(f"{(g >= k).mean():>6.1%}" for k in (1, 10, 57))
        print(f"{r['source']:<18} {r['n']:>5} {r['cpu_seconds']:>7.1f} {r['n'] / r['cpu_seconds']:>9.2f}  "
              f"{g.mean():>6.1f} {qs}  {g.max():>4}  {shares}  {np.median(r['class_means']):.1f}")
    print("\ngivens per source (share of puzzles), distinct solution grids")
    for r in results:
        values, counts = np.unique(r["givens"], return_counts=True)
        hist = " ".join(f"{v}:{c / r['n']:.1%}" for v, c in zip(values, counts))
        print(f"{r['source']:<18} mean {r['givens'].mean():5.2f}  distinct answers {r['distinct_solutions']:.1%}  "
              f"{hist}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="puzzles per source")
    ap.add_argument("--n-extreme", type=int, default=300, help="gen_extreme puzzles")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hard-threshold", type=float, default=DEFAULT_HARD_THRESHOLD)
    ap.add_argument("--extreme-threshold", type=float, default=DEFAULT_EXTREME_THRESHOLD)
    a = ap.parse_args()
    print(f"generate_bench: n={a.n} per source ({a.n_extreme} gen_extreme), seed={a.seed}, hard_threshold="
          f"{a.hard_threshold}, extreme_threshold={a.extreme_threshold}, 1 process (ratings: our +LC guess "
          "count on the stored fresh copy, ~2.2x+ tdoku's scale)\n")
    print_tables(run(a.n, a.seed, a.hard_threshold, a.extreme_threshold, a.n_extreme))


if __name__ == "__main__":
    main()
