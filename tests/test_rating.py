"""Class rating: a property of the equivalence class (identical for symmetric copies), measured on k copies."""

import numpy as np
import pytest

from cgar.sudoku.canonical import canonical_forms
from cgar.sudoku.generate import SourceMix, generate_chunk
from cgar.sudoku.grid import SUDOKU_4, SUDOKU_6, parse_grid
from cgar.sudoku.rating import class_copies, class_ratings, spearman
from cgar.sudoku.solver import count_solutions, rate_batch
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries
from tests.conftest import random_pairs

# Arto Inkala's 2012 "hardest Sudoku" (unique; single copies rate from a few to ~100 guesses on our rater) and a
# generated random minimal puzzle.
INKALA = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."
HARD = [parse_grid(INKALA),
        parse_grid(generate_chunk(0, 0, 1, SourceMix(unbiased_like=1.0, kaggle_like=0, lowclue=0, hard=0))[0][1])]


def test_two_symmetric_copies_get_the_identical_class_rating():
    assert [count_solutions(p) for p in HARD] == [1, 1]
    rng = np.random.default_rng(0)
    base = np.stack(HARD)
    for _ in range(3):
        copies = apply_symmetries(base, random_symmetries(rng, len(base)))
        assert not (copies == base).all()
        single = rate_batch(np.concatenate([base, copies]))
        m0, s0 = class_ratings(base, k=8)
        m1, s1 = class_ratings(copies, k=8)
        assert m0.tolist() == m1.tolist() and s0.tolist() == s1.tolist()  # exact, by construction
    assert len(set(single.tolist())) > 1, "the fixture should show that single-string ratings differ"


def test_class_rating_is_mean_and_sd_over_k_symmetric_copies_of_the_class():
    copies = class_copies(np.stack(HARD), k=5)
    assert copies.shape == (2, 5, 81)
    for i, p in enumerate(HARD):  # every copy is a member of the puzzle's class
        assert (canonical_forms(copies[i]) == canonical_forms(p[None])[0]).all()
    assert len({c.tobytes() for c in copies[0]}) == 5  # distinct strings, not one string rated 5 times
    r = rate_batch(copies.reshape(-1, 81)).reshape(2, 5)
    mean, sd = class_ratings(np.stack(HARD), k=5)
    np.testing.assert_array_equal(mean, r.mean(axis=1))
    np.testing.assert_array_equal(sd, r.std(axis=1))
    assert (class_copies(np.stack(HARD), k=5) == copies).all()  # deterministic
    assert not (class_copies(np.stack(HARD), k=6)[:, :5] == copies).all()  # k is part of the seed


def test_class_rating_argument_checks_and_empty_input():
    with pytest.raises(ValueError, match="k must be >= 1"):
        class_ratings(np.stack(HARD), k=0)
    mean, sd = class_ratings(np.zeros((0, 81), dtype=np.uint8), k=4)
    assert mean.shape == sd.shape == (0,)


def test_spearman_hand_computed():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks 1.5,1.5,3 / y ranks 1,2,3 -> r = 0.866...
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("shape", [SUDOKU_6, SUDOKU_4], ids=["6x6", "4x4"])
def test_small_shape_class_copies_are_drawn_from_the_shapes_group(shape):
    puzzles, _ = random_pairs(6, seed=61, shape=shape)
    images = apply_symmetries(puzzles, random_symmetries(np.random.default_rng(62), 6, shape))
    copies = class_copies(puzzles, k=7)
    assert copies.shape == (6, 7, shape.cells)
    np.testing.assert_array_equal(class_copies(images, k=7), copies)  # a property of the class
    forms = canonical_forms(puzzles)
    for i in range(6):
        assert (canonical_forms(copies[i]) == forms[i]).all()  # every copy is a member of the class
    # the real (shape-generic) rater over the copies: mean and sd per puzzle, the same for a symmetric image
    mean, sd = class_ratings(puzzles, k=7)
    r = rate_batch(copies.reshape(-1, shape.cells)).reshape(6, 7)
    np.testing.assert_array_equal(mean, r.mean(axis=1))
    np.testing.assert_array_equal(sd, r.std(axis=1))
    np.testing.assert_array_equal(class_ratings(images, k=7)[0], mean)
    assert class_ratings(np.zeros((0, shape.cells), dtype=np.uint8), k=3)[0].shape == (0,)
