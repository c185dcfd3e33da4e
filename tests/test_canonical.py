"""Canonical form: invariant under the group, exact (equal to a brute-force minimum), and a group image."""

from itertools import permutations, product

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cgar.sudoku.canonical import canonical_form, canonical_forms, canonical_keys, group_ids, pack_grids
from cgar.sudoku.grid import num_givens, valid_solutions
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
