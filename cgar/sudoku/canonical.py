"""Exact canonical form of a Sudoku puzzle (blanks allowed) under the full symmetry group.

canon(p) == canon(q) iff q = g(p) for some g in the group (transpose x band/row perms x stack/column perms x
digit relabelling, 1,218,998,108,160 elements). Used to dedupe a pool and to split it so that no test puzzle
is a symmetry of a training puzzle.

Definition. For a cell permutation pi (transpose, row perm, column perm: 2 * 1296 * 1296 of them) let
Q = pi(p). Its key is (pattern of Q, digits of Q relabelled 1, 2, ... in order of first appearance,
row-major). The canonical form is the relabelled Q of the smallest key. Relabelling by first appearance makes
the key blind to digit permutations, and the cell permutations form a group, so equivalent puzzles minimise
over the same set of keys: the form is invariant, and it is itself a group image of p, hence exact.

Algorithm (pattern first, then digits):
- The pattern is 9 row masks, column 0 as the most significant bit, so comparing the masks as integers row
  by row is comparing the 81 cells lexicographically with blank < given.
- Pattern minimisation is a level-wise search over target rows k = 0..8. A partial state is
  (transpose t, column perm p, source rows of target rows 0..k). Target row k belongs to target band k // 3,
  whose source band is fixed by its first row, so the row must come from that band and be unused (or from any
  unused band when k % 3 == 0). Each level keeps only the states reaching the smallest mask PM[row, p]. Every
  prefix extends to a full row permutation, so the survivors of level 8 are exactly the pattern-minimal cell
  permutations.
- Among those, the relabelled digit grid is minimised directly, abandoning a candidate at its first larger cell.
States are packed into one int64 (column perm as its 4 factors: 12 bits, t: 1 bit, source rows: 4 bits each) in
buffers that double when full: counts range from a few hundred (typical puzzles) to 3.4M (everything ties, as
in a complete grid, which therefore takes ~0.3 s; typical puzzles take ~15-30 us).

The small shapes (6x6, 4x4) have the same definition over their own, much smaller, groups; canonical_small.py
scans all of their cell permutations. The public functions tell the shape from the width and dispatch.
"""

from __future__ import annotations

from itertools import permutations, product

import numba
import numpy as np
from tqdm import tqdm

from cgar.sudoku.canonical_small import canonical_forms_small, keep_if_smaller
from cgar.sudoku.grid import N_CELLS, SUDOKU_9, shape_of
from cgar.sudoku.symmetry import grid_width

# ---------------------------------------------------------------------------------------------------------
# Tables over the 1296 column permutations (stack perm x a perm inside each stack), built once at import.

_P3 = list(permutations(range(3)))
# COL_PERMS[p, c] = source column of target column c (same convention as symmetry.py's col_perm).
COL_PERMS = np.array(
    [[outer[c // 3] * 3 + inner[c // 3][c % 3] for c in range(9)] for outer in _P3 for inner in product(_P3, repeat=3)],
    dtype=np.int64,
)  # [1296, 9]
_MASKS = np.arange(512)[:, None]
# PM[m, p] = row mask m with its columns permuted by p (target column c takes source column COL_PERMS[p, c]);
# column 0 is the most significant bit.
PM = np.zeros((512, 1296), dtype=np.uint16)
for _c in range(9):
    PM |= (((_MASKS >> (8 - COL_PERMS[:, _c])) & 1) << (8 - _c)).astype(np.uint16)
MIN_PM = PM.min(axis=1).astype(np.int64)  # [512] best a single row can do
# CSR list of the column perms reaching MIN_PM[m]: level 0 starts from these instead of all 1296.
_argmin = [np.flatnonzero(PM[m] == MIN_PM[m]) for m in range(512)]
ARGMIN_START = np.concatenate([[0], np.cumsum([len(a) for a in _argmin])]).astype(np.int64)  # [513]
ARGMIN_PERMS = np.concatenate(_argmin).astype(np.int64)

# A state packs the column perm as its 4 factors (stack perm index o, then the perm index inside each target
# stack), 3 bits each, so a permuted row mask is assembled from two tiny tables (always in L1 cache) rather
# than read from the 1.3 MB PM table, which serves only the precomputation above.
P3 = np.array(_P3, dtype=np.int64)  # [6, 3]
# T3[chunk, i] = 3-bit chunk (a stack's columns, first column as the high bit) after in-stack perm i.
T3 = np.array(
    [[sum(((ch >> (2 - P3[i, x])) & 1) << (2 - x) for x in range(3)) for i in range(6)] for ch in range(8)],
    dtype=np.int64,
)
_F_BITS = 12  # o, i0, i1, i2
_T_SHIFT = _F_BITS
_ROW_SHIFT = _F_BITS + 1  # source row of target row k sits at bits _ROW_SHIFT + 4k


# COL_PERMS row p = o * 216 + i0 * 36 + i1 * 6 + i2 (stack perm, then the inner perms): the state encoding.
ARGMIN_CODES = (
    ARGMIN_PERMS // 216 | (ARGMIN_PERMS // 36 % 6) << 3 | (ARGMIN_PERMS // 6 % 6) << 6 | (ARGMIN_PERMS % 6) << 9
)


@numba.njit(cache=True)
def _perm_index(s):
    """Row of COL_PERMS for the column perm of state s."""
    return (s & 7) * 216 + ((s >> 3) & 7) * 36 + ((s >> 6) & 7) * 6 + ((s >> 9) & 7)


@numba.njit(cache=True)
def _permuted_mask(chunks, t, r, s, p3, t3):
    """Row r of transpose t (given as 3 stack chunks) under the column perm of state s. Takes the whole
    chunks array and indexes it: a slice per call would create an array object in the hot loop."""
    o = s & 7
    return (
        (t3[chunks[t, r, p3[o, 0]], (s >> 3) & 7] << 6)
        | (t3[chunks[t, r, p3[o, 1]], (s >> 6) & 7] << 3)
        | t3[chunks[t, r, p3[o, 2]], (s >> 9) & 7]
    )


@numba.njit(cache=True)
def _src_row(s, k):
    return (s >> (_ROW_SHIFT + 4 * k)) & 15


@numba.njit(cache=True)
def _extend(cur, n_cur, k, chunks, p3, t3, nxt):
    """Level k: extend states cur[:n_cur] by target row k into nxt, keeping those with the smallest row mask.

    Returns the count kept, or -1 if nxt is too small (the caller doubles it and calls again). Growing here
    instead would reassign `nxt` inside the hot loop, which makes numba/LLVM reload it at every push (4x
    slower measured).
    """
    n_nxt = 0
    best = 1 << 10
    shift = _ROW_SHIFT + 4 * k
    first = (k // 3) * 3  # first target row of this band
    for i in range(n_cur):
        s = cur[i]
        t = (s >> _T_SHIFT) & 1
        if k == first:  # a new band: any row of a source band not used yet
            used = 1 << (_src_row(s, 0) // 3)
            if k == 6:
                used |= 1 << (_src_row(s, 3) // 3)
            lo, hi = 0, 9
        else:  # the band's source band is fixed by its first row
            used = 0
            lo = (_src_row(s, first) // 3) * 3
            hi = lo + 3
        for r in range(lo, hi):
            if (used >> (r // 3)) & 1:
                continue
            taken = False
            for j in range(first, k):
                if _src_row(s, j) == r:
                    taken = True
            if taken:
                continue
            v = _permuted_mask(chunks, t, r, s, p3, t3)
            if v < best:  # a better row value: every state kept so far at this level is beaten
                best = v
                n_nxt = 0
            if v == best:
                if n_nxt == nxt.shape[0]:
                    return -1
                nxt[n_nxt] = s | (r << shift)
                n_nxt += 1
    return n_nxt


@numba.njit(cache=True)
def _pattern_minimal_states(puzzle, min_pm, am_start, am_codes, p3, t3):
    """All cell permutations (packed states) giving the smallest pattern; returns (states, count)."""
    masks = np.zeros((2, 9), dtype=np.int64)  # row masks of the puzzle (t=0) and of its transpose (t=1)
    for i in range(N_CELLS):
        if puzzle[i] != 0:
            r, c = i // 9, i % 9
            masks[0, r] |= 1 << (8 - c)
            masks[1, c] |= 1 << (8 - r)
    chunks = np.empty((2, 9, 3), dtype=np.int64)  # the same masks split into 3-bit stack chunks
    for t in range(2):
        for r in range(9):
            for j in range(3):
                chunks[t, r, j] = (masks[t, r] >> (3 * (2 - j))) & 7

    # Level 0: only the rows whose best permuted mask is the global best, with the perms achieving it.
    best = 1 << 10
    for t in range(2):
        for r in range(9):
            best = min(best, min_pm[masks[t, r]])
    n_cur = 0
    for t in range(2):
        for r in range(9):
            if min_pm[masks[t, r]] == best:
                n_cur += am_start[masks[t, r] + 1] - am_start[masks[t, r]]
    cur = np.empty(max(n_cur, 1024), dtype=np.int64)
    n_cur = 0
    for t in range(2):
        for r in range(9):
            m = masks[t, r]
            if min_pm[m] == best:
                for j in range(am_start[m], am_start[m + 1]):
                    cur[n_cur] = am_codes[j] | (t << _T_SHIFT) | (r << _ROW_SHIFT)
                    n_cur += 1

    nxt = np.empty(cur.shape[0], dtype=np.int64)
    for k in range(1, 9):
        n_nxt = _extend(cur, n_cur, k, chunks, p3, t3, nxt)
        while n_nxt < 0:
            nxt = np.empty(2 * nxt.shape[0], dtype=np.int64)
            n_nxt = _extend(cur, n_cur, k, chunks, p3, t3, nxt)
        cur, nxt = nxt, cur
        n_cur = n_nxt
    return cur, n_cur


@numba.njit(cache=True)
def _canonical_one(puzzle, out, min_pm, am_start, am_codes, p3, t3, col_perms):
    """Write the canonical form of puzzle (uint8[81]) into out (uint8[81])."""
    states, n = _pattern_minimal_states(puzzle, min_pm, am_start, am_codes, p3, t3)
    out[:] = 255  # larger than any relabelled digit, so the first candidate always wins
    cand = np.empty(N_CELLS, dtype=np.uint8)
    label = np.empty(10, dtype=np.uint8)
    rows = np.empty((1, 9), dtype=np.int64)  # source row of each target row in state s
    for i in range(n):
        s = states[i]
        p = _perm_index(s)
        t = (s >> _T_SHIFT) & 1
        for r in range(9):
            rows[0, r] = _src_row(s, r)
        keep_if_smaller(puzzle, 9, t, rows, 0, col_perms, p, label, cand, out)


@numba.njit(cache=True, parallel=True)
def _canonical_batch(puzzles, out, min_pm, am_start, am_codes, p3, t3, col_perms):
    # Each puzzle is independent and writes only its own row, so the result does not depend on threading.
    for i in numba.prange(puzzles.shape[0]):
        _canonical_one(puzzles[i], out[i], min_pm, am_start, am_codes, p3, t3, col_perms)


def _tables():
    return MIN_PM, ARGMIN_START, ARGMIN_CODES, P3, T3, COL_PERMS


def _as_batch(puzzles: np.ndarray) -> np.ndarray:
    """C-contiguous uint8[N, cells] of one grid or a batch; the width must be a shape's (81, 36, 16)."""
    cells = shape_of(grid_width(puzzles)).cells
    return np.ascontiguousarray(puzzles, dtype=np.uint8).reshape(-1, cells)


def canonical_form(puzzle: np.ndarray) -> np.ndarray:
    """uint8[cells] (0 = blank; 81, 36 or 16 cells) -> its canonical form: digits relabelled 1..n, blanks 0."""
    p = _as_batch(puzzle)[0]
    if len(p) != N_CELLS:
        return canonical_forms_small(p[None], shape_of(len(p)))[0]
    out = np.empty(N_CELLS, dtype=np.uint8)
    _canonical_one(p, out, *_tables())
    return out


BATCH = 1 << 14  # puzzles per kernel call: granularity of the progress bar


def map_batches(items, out: np.ndarray, fn, progress: bool, desc: str = "canonicalise") -> np.ndarray:
    """out[i:j] = fn(items[i:j]) for batches of BATCH, behind a progress bar (stderr); returns out."""
    with tqdm(total=len(items), desc=desc, unit="puzzle", unit_scale=True, disable=not progress) as bar:
        for start in range(0, len(items), BATCH):
            stop = min(start + BATCH, len(items))
            out[start:stop] = fn(items[start:stop])
            bar.update(stop - start)
    return out


def _canonical_chunk(puzzles: np.ndarray) -> np.ndarray:
    shape = shape_of(puzzles.shape[1])
    if shape is not SUDOKU_9:
        return canonical_forms_small(puzzles, shape)
    out = np.empty_like(puzzles)
    _canonical_batch(puzzles, out, *_tables())
    return out


def canonical_forms(puzzles: np.ndarray, progress: bool = False) -> np.ndarray:
    """uint8[N, cells] -> uint8[N, cells] canonical forms (parallel over puzzles, deterministic)."""
    p = _as_batch(puzzles)
    return map_batches(p, np.empty_like(p), _canonical_chunk, progress)


# ---------------------------------------------------------------------------------------------------------
# Compact exact keys: 81 cells (values 0..9) as a base-10 number in 5 words of 17 digits (10**17 < 2**64),
# 40 bytes per puzzle instead of 81, and sortable/groupable with numpy for millions of rows. A smaller grid is
# packed as its cells followed by zeros up to 81: the same dtype and width for every shape, so the split code
# is shape-blind (keys of different shapes are never compared: a pool has one shape).

KEY_WORDS = 5
_DIGITS_PER_WORD = 17


@numba.njit(cache=True)
def _pack_kernel(grids, out):
    cells = grids.shape[1]
    for i in range(grids.shape[0]):
        for w in range(KEY_WORDS):
            v = np.uint64(0)
            for j in range(w * _DIGITS_PER_WORD, min((w + 1) * _DIGITS_PER_WORD, N_CELLS)):
                v = v * np.uint64(10) + (np.uint64(grids[i, j]) if j < cells else np.uint64(0))
            out[i, w] = v


def pack_grids(grids: np.ndarray) -> np.ndarray:
    """uint8[N, cells] (values 0..9) -> uint64[N, 5], injective within a shape: equal keys iff equal grids."""
    g = _as_batch(grids)
    out = np.empty((len(g), KEY_WORDS), dtype=np.uint64)
    _pack_kernel(g, out)
    return out


def canonical_keys(puzzles: np.ndarray, progress: bool = False) -> np.ndarray:
    """uint64[N, 5]: packed canonical forms, equal iff the puzzles are equivalent (row.tobytes() to hash).

    Packed batch by batch, so only the 40-byte keys of all N puzzles are held at once.
    """
    p = _as_batch(puzzles)
    out = np.empty((len(p), KEY_WORDS), dtype=np.uint64)
    return map_batches(p, out, lambda batch: pack_grids(_canonical_chunk(batch)), progress)


def group_ids(keys: np.ndarray) -> np.ndarray:
    """int64[N]: equal key rows share an id; ids count classes in order of first occurrence (0, 1, 2, ...)."""
    keys = np.asarray(keys)
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort(keys.T[::-1])  # stable, so each run lists its rows in input order
    sk = keys[order]
    new_run = np.concatenate([[True], (sk[1:] != sk[:-1]).any(axis=1)])
    run_of_sorted = np.cumsum(new_run) - 1
    first_row = order[new_run]  # first input row of each run
    rank = np.empty(len(first_row), dtype=np.int64)
    rank[np.argsort(first_row, kind="stable")] = np.arange(len(first_row))
    ids = np.empty(n, dtype=np.int64)
    ids[order] = rank[run_of_sorted]
    return ids
