"""Augmentation: validity preserved, HRM semantics reproduced, every factor of the group exercised."""

import numpy as np

from cgar.sudoku.grid import givens_consistent, num_givens, valid_solutions
from cgar.sudoku.symmetry import Symmetries, apply_symmetries, augment_pairs, random_symmetries
from tests.conftest import pattern_grid, random_pairs


def hrm_shuffle(board: np.ndarray, sym: Symmetries, i: int) -> np.ndarray:
    """HRM's `shuffle_sudoku` written per puzzle with explicit loops, driven by the same sampled factors."""
    x = board.reshape(9, 9)
    if sym.transpose[i]:
        x = x.T
    out = np.empty((9, 9), dtype=np.uint8)
    for r in range(9):
        for c in range(9):
            out[r, c] = sym.digit_map[i, x[sym.row_perm[i, r], sym.col_perm[i, c]]]
    return out.reshape(81)


def test_matches_reference_semantics():
    puzzles, _ = random_pairs(50, seed=1)
    sym = random_symmetries(np.random.default_rng(2), 50)
    got = apply_symmetries(puzzles, sym)
    for i in range(50):
        np.testing.assert_array_equal(got[i], hrm_shuffle(puzzles[i], sym, i))


def test_augmentation_preserves_validity():
    puzzles, solutions = random_pairs(500, seed=3)
    p2, s2 = augment_pairs(puzzles, solutions, np.random.default_rng(4))
    assert valid_solutions(s2).all()
    assert givens_consistent(p2, s2).all()
    np.testing.assert_array_equal(num_givens(p2), num_givens(puzzles))
    assert not (p2 == puzzles).all(axis=1).any()  # with 1.2e12 elements, no pair stays put


def test_factors_are_group_elements_and_uniform():
    sym = random_symmetries(np.random.default_rng(5), 20_000)
    for perm in (sym.row_perm, sym.col_perm):
        assert (np.sort(perm, axis=1) == np.arange(9)).all()
        bands = perm.reshape(-1, 3, 3) // 3  # rows of one target band come from one source band
        assert (bands == bands[:, :, :1]).all()
        assert np.allclose(np.bincount(perm[:, 0], minlength=9) / len(perm), 1 / 9, atol=0.015)
    assert (sym.digit_map[:, 0] == 0).all()
    assert (np.sort(sym.digit_map[:, 1:], axis=1) == np.arange(1, 10)).all()
    assert abs(sym.transpose.mean() - 0.5) < 0.02


def test_same_seed_same_bytes():
    puzzles, solutions = random_pairs(100, seed=6)
    a = augment_pairs(puzzles, solutions, np.random.default_rng(7))
    b = augment_pairs(puzzles, solutions, np.random.default_rng(7))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_identity_element():
    ident = Symmetries(
        transpose=np.zeros(1, dtype=bool),
        row_perm=np.arange(9)[None],
        col_perm=np.arange(9)[None],
        digit_map=np.arange(10, dtype=np.uint8)[None],
    )
    g = pattern_grid()[None]
    np.testing.assert_array_equal(apply_symmetries(g, ident), g)
