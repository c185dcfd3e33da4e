"""Throwaway check: the shape-generic solver vs the 9x9-only one it replaced (old module copied to OLD_DIR).

Usage: PYTHONPATH=. python bench/solver_shape_compare.py /tmp/shapesolver_wt
Compares solve_batch (limit 1 and 2) and rate_batch on generated puzzles of all sources plus randomly blanked
grids (many with several solutions), then times old and new side by side (min of interleaved repeats)."""

import sys
import time

import numpy as np

sys.path.insert(0, sys.argv[1])
import old_solver  # noqa: E402

from cgar.sudoku import solver  # noqa: E402
from cgar.sudoku.generate import SourceMix, generate_chunk  # noqa: E402
from cgar.sudoku.grid import parse_grids  # noqa: E402

t0 = time.time()
mix = SourceMix(kaggle_like=0.1, unbiased_like=0.45, lowclue=0.1, hard=0.35)
rows = generate_chunk(21, 0, 1000, mix, hard_threshold=10)
q = parse_grids([r[1] for r in rows])
a = parse_grids([r[2] for r in rows])
rng = np.random.default_rng(0)
blanked = np.repeat(a, 2, axis=0)[:2000].copy()
for g in blanked:  # 25..60 givens kept: from heavily multi-solution to unique
    g[rng.choice(81, size=81 - int(rng.integers(25, 61)), replace=False)] = 0
holes = q.copy()  # generated puzzles minus 1-3 clues: a few solutions each
for g in holes:
    g[rng.choice(np.flatnonzero(g), size=int(rng.integers(1, 4)), replace=False)] = 0
wrong = q[:500].copy()  # one blank filled with a digit other than the answer's: no solution
for g, s in zip(wrong, a[:500]):
    c = rng.choice(np.flatnonzero(g == 0))
    g[c] = 1 + (s[c] + int(rng.integers(0, 8))) % 9
puzzles = np.concatenate([q, blanked, holes, wrong])
print(f"{len(puzzles)} puzzles ({len(q)} generated, {len(blanked)} blanked, {len(holes)} holed, {len(wrong)} wrong), "
      f"built in {time.time() - t0:.0f} s")

ok = True
for limit in (1, 2, 3):
    new, old = solver.solve_batch(puzzles, limit=limit), old_solver.solve_batch(puzzles, limit=limit)
    same = [bool((x == y).all()) for x, y in zip(new, old)]
    ok &= all(same)
    print(f"limit {limit}: solutions/counts/guesses identical: {same}; counts {np.bincount(new[1]).tolist()}")
same = bool((solver.rate_batch(puzzles) == old_solver.rate_batch(puzzles)).all())
ok &= same
print(f"rate_batch identical: {same}; guesses>0: {(solver.rate_batch(puzzles) > 0).sum()}")


def best(fn, reps=5):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


for limit in (1, 2):
    t_new, t_old = [], []
    for _ in range(6):  # interleaved so load from other workers hits both alike
        t_old.append(best(lambda: old_solver.solve_batch(puzzles, limit=limit)))
        t_new.append(best(lambda: solver.solve_batch(puzzles, limit=limit)))
    print(f"limit {limit}: old {min(t_old) * 1e3:.1f} ms, new {min(t_new) * 1e3:.1f} ms, "
          f"new/old {min(t_new) / min(t_old):.3f}")
print("ALL IDENTICAL" if ok else "MISMATCH")
