"""Numba kernels of the generator (`cgar.sudoku.generate`): grids, clue removal, re-constraining, hill climbing.

All randomness comes from numba's own generator, seeded at the start of each batch kernel, so a kernel call is a
pure function of its seed and arguments. The kernels work on every grid shape: sizes come from the arrays, and
the batch kernels take the shape's `solver.Tables` (`tab`) to build their search workspace.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cgar.sudoku.solver import search, workspace


@njit(cache=True)
def has_other_solution(puzzle, c, v, ws, excl, sols):
    """Is there a solution of `puzzle` with cell c != v? (c is blank in puzzle; one excluded-value search)."""
    excl[c] = 1 << (v - 1)
    count = search(puzzle, excl, 1, False, ws, sols)[0]
    excl[c] = 0
    return count > 0


@njit(cache=True)
def reduce_clues(puzzle, target_givens, ws, excl, sols):
    """Remove clues in random order while the solution stays unique, until `target_givens` are left.

    The puzzle must be unique on entry. target_givens=0 tries every clue once, leaving a minimal puzzle."""
    givens = 0
    for c in range(len(puzzle)):
        givens += puzzle[c] != 0
    for c in np.random.permutation(len(puzzle)):
        if givens <= target_givens:
            break
        v = puzzle[c]
        if v == 0:
            continue
        puzzle[c] = 0
        if has_other_solution(puzzle, c, v, ws, excl, sols):
            puzzle[c] = v  # this clue is needed
        else:
            givens -= 1


@njit(cache=True)
def constrain(puzzle, solution, ws, excl, sols2):
    """Add clues until the solution is unique; writes it to `solution`. False if the puzzle has none.

    Each round runs one randomized limit-2 search and adds the first solution's digit at a random cell where the
    two solutions differ, so the solution can drift away from the parent's (good for diversity)."""
    while True:
        count = search(puzzle, excl, 2, True, ws, sols2)[0]
        if count < 2:
            solution[:] = sols2[0]
            return count == 1
        n_diff = 0
        for c in range(len(puzzle)):
            n_diff += sols2[0, c] != sols2[1, c]
        k = np.random.randint(0, n_diff)
        for c in range(len(puzzle)):
            if sols2[0, c] != sols2[1, c]:
                if k == 0:
                    puzzle[c] = sols2[0, c]
                    break
                k -= 1


@njit(cache=True)
def easy_batch(seed, n, lo, hi, max_givens, out_q, out_a, tab):
    """n unique puzzles (uint8[n, C] out_q, solutions out_a) of the shape of `tab`: random grid, then
    `reduce_clues` to a random target in lo..hi (0 = minimal); puzzles with more than max_givens givens are
    rejected and redrawn."""
    np.random.seed(seed)
    ws = workspace(tab)
    cells = out_q.shape[1]
    excl = np.zeros(cells, dtype=np.int32)
    sols = np.empty((2, cells), dtype=np.uint8)
    empty = np.zeros(cells, dtype=np.uint8)
    for i in range(n):
        while True:
            search(empty, excl, 1, True, ws, sols)  # random full grid: random value order
            out_a[i] = sols[0]
            out_q[i] = sols[0]
            reduce_clues(out_q[i], lo + np.random.randint(0, hi - lo + 1), ws, excl, sols)
            if np.count_nonzero(out_q[i]) <= max_givens:
                break


@njit(cache=True)
def permute(grid, src, digit_map, out):
    """out = symmetry (src cell index, digit map) applied to grid; the numba twin of `apply_symmetries`."""
    for k in range(len(out)):
        out[k] = digit_map[grid[src[k]]]


@njit(cache=True)
def climb(seed, pool, pool_sol, pool_score, sym_src, sym_map, threshold, copies, full_copies, log_score, cap,
          max_out, out_base, out_sol, out_score, tab):
    """Run the hill climber until `max_out` candidates scored >= threshold or the symmetries run out.

    Pool (uint8[P, C] puzzles, solutions, float64[P] scores) is updated in place. A candidate's score is its mean
    rating over `copies` symmetric copies, or with `log_score` their geometric mean exp(mean(log(1 + g))) - 1,
    which tracks the median copy instead of the few orientations that blow up (symmetries: int64[M, C] source
    indices, uint8[M, 10] digit maps, consumed in order). A candidate whose score on `copies` would enter the pool
    or pass the threshold is rated on `full_copies` (>= copies) in all and scored on those: pool members then
    carry a less lucky score, so the pool does not fill with puzzles that merely drew hard copies.
    Pool scores are capped at `cap`: a candidate at the cap replaces a random member once every member is there,
    so a warm chain keeps turning over near its target instead of climbing on to puzzles that are harder (and
    slower to rate) than asked for. Accepted candidates are written unpermuted (puzzle, solution, score): the caller stores
    them under a fresh symmetry, so the stored string's rating is not one the selection looked at.
    Returns (accepted, symmetries used, candidates tried)."""
    np.random.seed(seed)
    ws = workspace(tab)
    cells = pool.shape[1]
    excl = np.zeros(cells, dtype=np.int32)
    sols = np.empty((2, cells), dtype=np.uint8)
    puzzle = np.empty(cells, dtype=np.uint8)
    solution = np.empty(cells, dtype=np.uint8)
    copy = np.empty(cells, dtype=np.uint8)
    n_pool = len(pool)
    used = 0
    n_out = 0
    tried = 0
    while n_out < max_out and used + full_copies <= len(sym_src):
        a, b = np.random.randint(0, n_pool), np.random.randint(0, n_pool)  # binary tournament: climbs faster
        puzzle[:] = pool[a if pool_score[a] >= pool_score[b] else b]
        for _ in range(1 + np.random.randint(0, 2)):  # {-1, -2} clues, then {+?} by constrain
            clues = np.flatnonzero(puzzle)
            puzzle[clues[np.random.randint(0, len(clues))]] = 0
        if not constrain(puzzle, solution, ws, excl, sols):
            continue
        reduce_clues(puzzle, 0, ws, excl, sols)
        tried += 1
        total = 0.0
        n = copies
        j = 0
        weakest = np.argmin(pool_score)
        while j < n:  # rating is cheap next to constrain + minimise, so always denoise
            permute(puzzle, sym_src[used + j], sym_map[used + j], copy)
            g = search(copy, excl, 1, False, ws, sols)[2]
            total += np.log1p(g) if log_score else g
            j += 1
            if j == copies and n < full_copies:
                proxy = np.expm1(total / j) if log_score else total / j
                if proxy >= threshold or proxy > pool_score[weakest]:
                    n = full_copies
        used += n
        score = np.expm1(total / n) if log_score else total / n
        if score >= threshold:
            out_base[n_out] = puzzle
            out_sol[n_out] = solution
            out_score[n_out] = score
            n_out += 1
        entry = min(score, cap)
        if entry >= cap and pool_score[weakest] >= cap:
            weakest = np.random.randint(0, n_pool)  # the whole pool is at the cap: turn over a random member
        if entry > pool_score[weakest] or entry >= cap:
            fresh = True
            for p in range(n_pool):
                if (pool[p] == puzzle).all():
                    fresh = False
                    break
            if fresh:
                pool[weakest] = puzzle
                pool_sol[weakest] = solution
                pool_score[weakest] = entry
    return n_out, used, tried
