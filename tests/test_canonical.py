"""Canonical form: invariant under the group, exact (equal to a brute-force minimum), and a group image."""

from itertools import permutations, product

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgar.sudoku.canonical import canonical_form, canonical_forms, canonical_keys, group_ids, pack_grids
from cgar.sudoku.grid import SUDOKU_4, SUDOKU_6, num_givens, valid_solutions
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries
from tests.conftest import pattern_grid, random_pairs


def puzzle_from_seed(seed: int, givens: int) -> np.ndarray:
    """A random symmetry of the pattern grid with all but `givens` cells blanked."""
    rng = np.random.default_rng(seed)
    grid = apply_symmetries(pattern_grid()[None], random_symmetries(rng, 1))[0]
    grid[rng.choice(81, size=81 - givens, replace=False)] = 0
    return grid


def random_images(puzzle: np.ndarray, n: int, seed: int) -> np.ndarray:
    return apply_symmetries(np.tile(puzzle, (n, 1)), random_symmetries(np.random.default_rng(seed), n))


# ---- brute force: the same key minimised over all 2 * 1296 * 1296 cell permutations, written independently.

_P3 = list(permutations(range(3)))
LINE_PERMS = np.array(
    [[o[b] * 3 + inner[b][i] for b in range(3) for i in range(3)] for o in _P3 for inner in product(_P3, repeat=3)],
    dtype=np.int64,
)


@numba.njit(cache=True)
def brute_force_canonical(puzzle, line_perms):
    """Key = (given-or-blank per cell, blank first; then digits relabelled by first appearance), row-major."""
    best = np.full(162, 255, dtype=np.uint8)
    key = np.empty(162, dtype=np.uint8)
    label = np.empty(10, dtype=np.uint8)
    src = np.empty(81, dtype=np.int64)
    for t in range(2):
        for a in range(line_perms.shape[0]):
            for b in range(line_perms.shape[0]):
                for r in range(9):
                    for c in range(9):
                        rr, cc = line_perms[a, r], line_perms[b, c]
                        src[r * 9 + c] = cc * 9 + rr if t == 1 else rr * 9 + cc
                # Pattern part first, stopping at the first cell where it is already worse.
                state = 0  # 0 = tied so far, 1 = smaller, 2 = larger
                for i in range(81):
                    key[i] = 1 if puzzle[src[i]] != 0 else 0
                    if state == 0 and key[i] != best[i]:
                        state = 1 if key[i] < best[i] else 2
                        if state == 2:
                            break
                if state == 2:
                    continue
                label[:] = 0
                nxt = 1
                for i in range(81):
                    d = puzzle[src[i]]
                    if d != 0:
                        if label[d] == 0:
                            label[d] = nxt
                            nxt += 1
                        d = label[d]
                    key[81 + i] = d
                    if state == 0 and key[81 + i] != best[81 + i]:
                        state = 1 if key[81 + i] < best[81 + i] else 2
                if state == 1:
                    best[:] = key
    return best[81:].copy()


def exactness_cases() -> dict[str, np.ndarray]:
    grid = pattern_grid()
    cases = {"typical_25": puzzle_from_seed(1, 25), "sparse_17": puzzle_from_seed(2, 17)}
    empty_rows = puzzle_from_seed(3, 40)
    empty_rows[27:54] = 0  # band 1 empty: all its row orders tie on the pattern
    empty_rows[[0, 9]] = 0
    cases["empty_rows"] = empty_rows
    r, c = np.divmod(np.arange(81), 9)
    sym = grid.copy()
    sym[~((r + c) % 4 == 0)] = 0  # pattern closed under transpose and other line maps: nontrivial automorphisms
    cases["symmetric_pattern"] = sym
    few = np.zeros(81, dtype=np.uint8)
    few[[0, 40, 80]] = grid[[0, 40, 80]]  # tiny puzzle: thousands of pattern-minimal states
    cases["three_givens"] = few
    cases["complete_grid"] = puzzle_from_seed(4, 81)
    return cases


def test_matches_brute_force():
    for name, puzzle in exactness_cases().items():
        fast = canonical_form(puzzle)
        slow = brute_force_canonical(puzzle, LINE_PERMS)
        np.testing.assert_array_equal(fast, slow, err_msg=name)


# ---- invariance, idempotence, group image


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(17, 81), st.integers(0, 2**32 - 1))
def test_invariant_under_random_symmetry(puzzle_seed, givens, sym_seed):
    puzzle = puzzle_from_seed(puzzle_seed, givens)
    image = random_images(puzzle, 1, sym_seed)[0]
    np.testing.assert_array_equal(canonical_form(image), canonical_form(puzzle))


def test_batch_invariance_and_idempotence():
    puzzles, _ = random_pairs(300, seed=11, blanks=(45, 64))
    forms = canonical_forms(puzzles)
    images = apply_symmetries(puzzles, random_symmetries(np.random.default_rng(12), len(puzzles)))
    np.testing.assert_array_equal(canonical_forms(images), forms)
    np.testing.assert_array_equal(canonical_forms(forms), forms)
    np.testing.assert_array_equal(forms[7], canonical_form(puzzles[7]))


def test_output_is_a_group_image():
    puzzles, solutions = random_pairs(50, seed=13)
    forms = canonical_forms(puzzles)
    np.testing.assert_array_equal(num_givens(forms), num_givens(puzzles))
    # digit relabelling keeps the multiset of per-digit counts
    count = lambda g: np.sort(np.stack([(g == d).sum(axis=1) for d in range(1, 10)], axis=1), axis=1)  # noqa: E731
    np.testing.assert_array_equal(count(forms), count(puzzles))
    sol_forms = canonical_forms(solutions[:3])
    assert valid_solutions(sol_forms).all()
    assert (sol_forms[0] == sol_forms).all()  # all random_pairs solutions are images of one grid


# ---- distinctness


def test_inequivalent_puzzles_differ():
    base = puzzle_from_seed(21, 30)
    fewer = base.copy()
    fewer[np.flatnonzero(base)[0]] = 0
    assert not (canonical_form(fewer) == canonical_form(base)).all()
    # Same pattern, but one digit changed so that fewer distinct digits are used: not a symmetry.
    values, counts = np.unique(base[base > 0], return_counts=True)
    if (counts == 1).any():
        lone = values[counts == 1][0]
        other = base.copy()
        other[base == lone] = values[values != lone][0]
        assert not (canonical_form(other) == canonical_form(base)).all()


def test_random_pool_distinct_except_planted_copies():
    puzzles, _ = random_pairs(200, seed=31, blanks=(45, 64))
    copies = apply_symmetries(puzzles[:40], random_symmetries(np.random.default_rng(32), 40))
    pool = np.concatenate([puzzles, copies])
    ids = group_ids(canonical_keys(pool))
    assert ids.max() + 1 == 200  # 200 random puzzles are pairwise inequivalent; each copy joins its original
    np.testing.assert_array_equal(ids[200:], ids[:40])


def test_keys_and_group_ids():
    puzzles, _ = random_pairs(30, seed=41)
    grids = np.concatenate([puzzles, puzzles[[3, 0, 3]]])
    keys = pack_grids(grids)
    assert keys.shape == (33, 5)
    expected = {}
    want = [expected.setdefault(g.tobytes(), len(expected)) for g in grids]
    np.testing.assert_array_equal(group_ids(keys), want)
    assert len(group_ids(np.zeros((0, 5), dtype=np.uint64))) == 0


# ---- small shapes (6x6 with 2x3 boxes, 4x4): the same properties, and exactness against an enumeration.

SMALL = pytest.mark.parametrize("shape", [SUDOKU_6, SUDOKU_4], ids=["6x6", "4x4"])


def band_perms(n: int, size: int) -> np.ndarray:
    """Every permutation of n lines that keeps blocks of `size` together, by filtering all n! (written
    independently of the module's construction)."""
    return np.array([p for p in permutations(range(n))
                     if all(len({p[b + i] // size for i in range(size)}) == 1 for b in range(0, n, size))])


def cell_group(shape) -> np.ndarray:
    """int64[G, cells]: every cell permutation of the shape's group (source cell of each target cell)."""
    n = shape.n
    rows, cols = band_perms(n, shape.box_rows), band_perms(n, shape.box_cols)
    src = rows[:, None, :, None] * n + cols[None, :, None, :]  # [R, C, n, n]
    src = src.reshape(-1, n * n)
    if shape.transposable:
        r, c = np.divmod(src, n)
        src = np.concatenate([src, c * n + r])
    return src


def brute_force_small(puzzle: np.ndarray, group: np.ndarray) -> np.ndarray:
    """The definition, vectorised over all cell permutations: smallest (pattern, first-appearance digits)."""
    q = puzzle[group].astype(np.int64)  # [G, cells]
    n = int(np.sqrt(q.shape[1]))
    present = q[:, None, :] == np.arange(1, n + 1)[None, :, None]  # [G, n digits, cells]
    first = np.where(present.any(axis=2), present.argmax(axis=2), q.shape[1])  # first cell of each digit
    label = np.zeros((len(q), n + 1), dtype=np.int64)
    label[:, 1:] = np.argsort(np.argsort(first, axis=1, kind="stable"), axis=1) + 1  # absent digits never used
    relabelled = np.take_along_axis(label, q, axis=1)
    keys = np.concatenate([q > 0, relabelled], axis=1)
    return relabelled[np.lexsort(keys.T[::-1])[0]].astype(np.uint8)


def small_cases(shape, seed: int) -> np.ndarray:
    """Random puzzles of every density, plus the all-tie extremes: empty, one given, complete."""
    rng = np.random.default_rng(seed)
    sols = apply_symmetries(np.tile(pattern_grid(shape), (40, 1)), random_symmetries(rng, 40, shape))
    for i, g in enumerate(sols):
        g[rng.random(shape.cells) < i / 40] = 0
    one = np.zeros(shape.cells, dtype=np.uint8)
    one[7] = 3
    return np.concatenate([sols, np.zeros((1, shape.cells), dtype=np.uint8), one[None]])


@SMALL
def test_small_matches_brute_force(shape):
    group = cell_group(shape)
    assert len(group) == {36: 3456, 16: 128}[shape.cells] == len(np.unique(group, axis=0))
    cases = small_cases(shape, seed=51)
    forms = canonical_forms(cases)
    for puzzle, form in zip(cases, forms):
        np.testing.assert_array_equal(form, brute_force_small(puzzle, group))
        np.testing.assert_array_equal(canonical_form(puzzle), form)


def test_4x4_exact_over_whole_orbits():
    """4x4 has 3072 elements: enumerate them. Every image of a puzzle has its form, and two puzzles share a form
    iff one is in the other's orbit (classes by canonical key == classes by the orbit's smallest image)."""
    group = cell_group(SUDOKU_4)
    digit_maps = np.array([(0, *p) for p in permutations(range(1, 5))], dtype=np.uint8)  # [24, 5]
    rng = np.random.default_rng(52)
    base = pattern_grid(SUDOKU_4)
    puzzles = []
    for _ in range(60):  # few givens from one solution grid: many equivalent pairs and many inequivalent ones
        g = base.copy()
        g[rng.random(16) < 0.7] = 0
        puzzles.append(g)
    puzzles = np.stack(puzzles)
    orbit_min = []
    for i, p in enumerate(puzzles):
        orbit = digit_maps[:, None, :][:, :, p[group]].reshape(-1, 16)  # digit map of each cell image: [3072, 16]
        if i < 8:
            assert (canonical_forms(orbit) == canonical_form(p)).all()
        orbit_min.append(orbit[np.lexsort(orbit.T[::-1])[0]])
    by_orbit = group_ids(pack_grids(np.stack(orbit_min)))
    by_form = group_ids(canonical_keys(puzzles))
    np.testing.assert_array_equal(by_form, by_orbit)
    assert 5 < by_form.max() + 1 < 55  # the fixture has both equivalent and inequivalent pairs


@SMALL
def test_small_invariance_idempotence_and_group_image(shape):
    puzzles, solutions = random_pairs(300, seed=53, shape=shape)
    forms = canonical_forms(puzzles)
    images = apply_symmetries(puzzles, random_symmetries(np.random.default_rng(54), len(puzzles), shape))
    np.testing.assert_array_equal(canonical_forms(images), forms)
    np.testing.assert_array_equal(canonical_forms(forms), forms)
    np.testing.assert_array_equal(num_givens(forms), num_givens(puzzles))
    def count(g):  # digit relabelling keeps the multiset of per-digit counts
        return np.sort(np.stack([(g == d).sum(axis=1) for d in range(1, shape.n + 1)], axis=1), axis=1)

    np.testing.assert_array_equal(count(forms), count(puzzles))
    # a form is a group image: some cell permutation of the puzzle has the form's pattern, and the form is a
    # relabelling (first appearance: digit k first shows up before digit k + 1)
    group = cell_group(shape)
    for p, f in zip(puzzles[:20], forms[:20]):
        assert ((p[group] > 0) == (f > 0)).all(axis=1).any()
        firsts = [np.flatnonzero(f == d)[0] for d in range(1, f.max() + 1)]
        assert firsts == sorted(firsts)
    sol_forms = canonical_forms(solutions[:5])
    assert valid_solutions(sol_forms).all() and (sol_forms[0] == sol_forms).all()


@SMALL
def test_small_keys_equal_iff_forms_equal(shape):
    puzzles, _ = random_pairs(100, seed=55, shape=shape)
    copies = apply_symmetries(puzzles[:20], random_symmetries(np.random.default_rng(56), 20, shape))
    pool = np.concatenate([puzzles, copies])
    keys = canonical_keys(pool)
    assert keys.shape == (120, 5) and keys.dtype == np.uint64
    group = cell_group(shape)
    brute = np.stack([brute_force_small(p, group) for p in pool])
    np.testing.assert_array_equal(group_ids(keys), group_ids(pack_grids(brute)))
    np.testing.assert_array_equal(group_ids(keys)[100:], group_ids(keys)[:20])
    # a small grid's key is that of its cells followed by zeros up to 81 cells
    padded = np.zeros((120, 81), dtype=np.uint8)
    padded[:, : shape.cells] = brute
    np.testing.assert_array_equal(keys, pack_grids(padded))
