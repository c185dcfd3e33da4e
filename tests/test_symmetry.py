"""Augmentation: validity preserved, HRM semantics reproduced, every factor of the group exercised, per shape."""

import hashlib

import numpy as np
import pytest

from cgar.sudoku.grid import SHAPES, SUDOKU_4, SUDOKU_6, SUDOKU_9, givens_consistent, num_givens, valid_solutions
from cgar.sudoku.symmetry import Symmetries, apply_symmetries, augment_pairs, random_symmetries
from tests.conftest import pattern_grid, random_pairs

ALL_SHAPES = pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))


def hrm_shuffle(board: np.ndarray, sym: Symmetries, i: int) -> np.ndarray:
    """HRM's `shuffle_sudoku` written per puzzle with explicit loops, driven by the same sampled factors."""
    n = sym.row_perm.shape[1]
    x = board.reshape(n, n)
    if sym.transpose[i]:
        x = x.T
    out = np.empty((n, n), dtype=np.uint8)
    for r in range(n):
        for c in range(n):
            out[r, c] = sym.digit_map[i, x[sym.row_perm[i, r], sym.col_perm[i, c]]]
    return out.reshape(n * n)


@ALL_SHAPES
def test_matches_reference_semantics(shape):
    puzzles, _ = random_pairs(50, seed=1, shape=shape)
    sym = random_symmetries(np.random.default_rng(2), 50, shape)
    got = apply_symmetries(puzzles, sym)
    for i in range(50):
        np.testing.assert_array_equal(got[i], hrm_shuffle(puzzles[i], sym, i))


@ALL_SHAPES
def test_augmentation_preserves_validity(shape):
    puzzles, solutions = random_pairs(500, seed=3, shape=shape)
    p2, s2 = augment_pairs(puzzles, solutions, np.random.default_rng(4))  # draws for the input's shape
    assert valid_solutions(s2).all()
    assert givens_consistent(p2, s2).all()
    np.testing.assert_array_equal(num_givens(p2), num_givens(puzzles))
    # 9x9: with 1.2e12 elements no pair stays put; the 4x4 group (3072) can fix a puzzle now and then
    assert (p2 == puzzles).all(axis=1).mean() <= (0 if shape is SUDOKU_9 else 0.02)


@ALL_SHAPES
def test_factors_are_group_elements_and_uniform(shape):
    n = shape.n
    sym = random_symmetries(np.random.default_rng(5), 20_000, shape)
    for perm, size in ((sym.row_perm, shape.box_rows), (sym.col_perm, shape.box_cols)):
        assert (np.sort(perm, axis=1) == np.arange(n)).all()
        blocks = perm.reshape(len(perm), -1, size) // size  # lines of one target band come from one source band
        assert (blocks == blocks[:, :, :1]).all()
        assert np.allclose(np.bincount(perm[:, 0], minlength=n) / len(perm), 1 / n, atol=0.015)
    assert (sym.digit_map[:, 0] == 0).all()
    assert (np.sort(sym.digit_map[:, 1:], axis=1) == np.arange(1, n + 1)).all()
    if shape.transposable:
        assert abs(sym.transpose.mean() - 0.5) < 0.02
    else:
        assert not sym.transpose.any()  # 6x6: transposing 2x3 boxes leaves the shape


@pytest.mark.parametrize("shape, size, draws", [(SUDOKU_4, 2 * 8 * 8, 3000), (SUDOKU_6, 48 * 72, 60_000)])
def test_draws_cover_the_whole_cell_group(shape, size, draws):
    """Every cell permutation of the group shows up (the factors are all checked to be group elements above,
    so `size` distinct ones are the whole group)."""
    src = random_symmetries(np.random.default_rng(6), draws, shape).source_index()
    distinct = np.unique(src, axis=0)
    assert len(distinct) == size
    for s in distinct[:: max(1, size // 64)]:  # and they are symmetries: a valid solution stays valid
        assert valid_solutions(pattern_grid(shape)[s][None]).all()


def test_9x9_draws_are_bit_identical_to_the_frozen_stream():
    """Augmentation and generated data depend on the exact 9x9 stream: digest of the pre-GridShape module's
    output for this seed."""
    s = random_symmetries(np.random.default_rng(2024), 64)
    digest = hashlib.sha256(b"".join(getattr(s, f).tobytes()
                                     for f in ("transpose", "row_perm", "col_perm", "digit_map"))).hexdigest()
    assert digest == "724b835063f66517059037bbf654f8456a6064605cab6ee448c6fbde07b8e371"


@ALL_SHAPES
def test_same_seed_same_bytes(shape):
    puzzles, solutions = random_pairs(100, seed=6, shape=shape)
    a = augment_pairs(puzzles, solutions, np.random.default_rng(7))
    b = augment_pairs(puzzles, solutions, np.random.default_rng(7))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


@ALL_SHAPES
def test_identity_element(shape):
    ident = Symmetries(
        transpose=np.zeros(1, dtype=bool),
        row_perm=np.arange(shape.n)[None],
        col_perm=np.arange(shape.n)[None],
        digit_map=np.arange(shape.n + 1, dtype=np.uint8)[None],
    )
    g = pattern_grid(shape)[None]
    np.testing.assert_array_equal(apply_symmetries(g, ident), g)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="36 cells"):
        apply_symmetries(pattern_grid(SUDOKU_6)[None], random_symmetries(np.random.default_rng(0), 1, SUDOKU_4))
