"""Generator throughput and difficulty per source, one process, one core.

Usage: python bench/generate_bench.py [--n 1000] [--seed 0] [--hard-threshold 20] [--hard-copies 3]
Generates --n puzzles of each source separately (a chunk with that source's share set to 1) after a tiny warm-up
call that loads the numba cache, and prints puzzles/s, the rating distribution (our +LC scale, NOT tdoku's) and
the givens distribution. Hard throughput includes the chain's warm-up, as every chunk pays it.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from cgar.sudoku.generate import DEFAULT_HARD_COPIES, DEFAULT_HARD_THRESHOLD, SourceMix, generate_chunk  # noqa: E402
from cgar.sudoku.grid import parse_grids  # noqa: E402

FIELDS = ("kaggle_like", "unbiased_like", "lowclue", "hard")


def only(name: str) -> SourceMix:
    return SourceMix(**{f: float(f == name) for f in FIELDS})


def run(n: int, seed: int, hard_threshold: float, hard_copies: int) -> list[dict]:
    generate_chunk(seed, 10**6, 4, SourceMix(0.25, 0.25, 0.25, 0.25), hard_threshold=1)  # load/compile numba
    results = []
    for name in FIELDS:
        t0 = time.perf_counter()
        rows = generate_chunk(seed, 0, n, only(name), hard_threshold=hard_threshold, hard_copies=hard_copies)
        seconds = time.perf_counter() - t0
        ratings = np.array([r[3] for r in rows])
        answers = {r[2] for r in rows}
        givens = (parse_grids([r[1] for r in rows]) > 0).sum(axis=1)
        results.append({"source": f"gen_{name}", "n": n, "seconds": seconds, "ratings": ratings,
                        "givens": givens, "distinct_solutions": len(answers) / n})
    return results


def print_tables(results: list[dict]) -> None:
    q = (10, 25, 50, 75, 90, 99)
    print(f"{'source':<18} {'n':>5} {'s':>6} {'puz/s':>7}  {'mean':>6} "
          + " ".join(f"q{k:<3}" for k in q) + f"  {'max':>4}  {'>=1':>6} {'>=5':>6} {'>=10':>6} {'>=20':>6}")
    for r in results:
        g = r["ratings"]
        qs = " ".join(f"{v:<4.0f}" for v in np.percentile(g, q))
        shares = " ".join(f"{(g >= k).mean():>6.1%}" for k in (1, 5, 10, 20))
        print(f"{r['source']:<18} {r['n']:>5} {r['seconds']:>6.2f} {r['n'] / r['seconds']:>7.1f}  "
              f"{g.mean():>6.2f} {qs}  {g.max():>4}  {shares}")
    print("\ngivens per source (share of puzzles), distinct solution grids")
    for r in results:
        values, counts = np.unique(r["givens"], return_counts=True)
        hist = " ".join(f"{v}:{c / r['n']:.1%}" for v, c in zip(values, counts))
        distinct = f"distinct answers {r['distinct_solutions']:.1%}"
        print(f"{r['source']:<18} mean {r['givens'].mean():5.2f}  {distinct}  {hist}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="puzzles per source")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hard-threshold", type=float, default=DEFAULT_HARD_THRESHOLD)
    ap.add_argument("--hard-copies", type=int, default=DEFAULT_HARD_COPIES)
    a = ap.parse_args()
    print(f"generate_bench: n={a.n} per source, seed={a.seed}, hard_threshold={a.hard_threshold}, "
          f"hard_copies={a.hard_copies}, 1 process (ratings: our +LC guess count, ~2.2x+ tdoku's scale)\n")
    print_tables(run(a.n, a.seed, a.hard_threshold, a.hard_copies))


if __name__ == "__main__":
    main()
