import csv
import math

import numpy as np
import pytest

from cgar.sudoku import solver
from cgar.sudoku.generate import SourceMix, generate_chunk, write_chunk
from cgar.sudoku.grid import givens_consistent, num_givens, parse_grids, valid_solutions

ONLY = {name: SourceMix(**{f: float(f == name) for f in ("kaggle_like", "unbiased_like", "lowclue", "hard")})
        for name in ("kaggle_like", "unbiased_like", "lowclue", "hard")}


@pytest.fixture(scope="module")
def chunk():
    mix = SourceMix(kaggle_like=0.2, unbiased_like=0.4, lowclue=0.1, hard=0.3)
    return generate_chunk(3, 0, 120, mix, hard_threshold=10)


@pytest.fixture(scope="module")
def hard_rows():
    return generate_chunk(5, 0, 80, ONLY["hard"])  # the default threshold: the target is checked as shipped


def check_rows(rows):
    q = parse_grids([r[1] for r in rows])
    a = parse_grids([r[2] for r in rows])
    assert valid_solutions(a).all() and givens_consistent(q, a).all()
    sols, counts, ratings = solver.solve_batch(q, limit=2)
    assert (counts == 1).all() and (sols == a).all()
    assert ratings.tolist() == [r[3] for r in rows]  # rating = rate() of the stored string
    assert len({r[1] for r in rows}) == len(rows)  # no exact duplicates
    return q, a


def test_chunk_rows_are_valid_unique_and_mixed(chunk):
    q, _ = check_rows(chunk)
    labels = [r[0] for r in chunk]
    assert {k: labels.count(k) for k in set(labels)} == {
        "gen_kaggle_like": 24, "gen_unbiased_like": 48, "gen_lowclue": 12, "gen_hard": 36}
    assert labels[:36] != ["gen_kaggle_like"] * 24 + ["gen_unbiased_like"] * 12  # rows are shuffled
    g = num_givens(q)
    src = np.array(labels)
    assert ((g[src == "gen_kaggle_like"] >= 30) & (g[src == "gen_kaggle_like"] <= 36)).all()
    assert (g[src == "gen_lowclue"] <= 22).all()


def test_minimal_sources_are_minimal(chunk):
    for label in ("gen_unbiased_like", "gen_lowclue", "gen_hard"):
        q = parse_grids([r[1] for r in chunk if r[0] == label][:10])
        variants = []
        for p in q:
            for c in np.flatnonzero(p):
                v = p.copy()
                v[c] = 0
                variants.append(v)
        assert (solver.solve_batch(np.array(variants), limit=2)[1] == 2).all(), label


def test_hard_puzzles_need_guessing(hard_rows):
    check_rows(hard_rows)
    ratings = np.array([r[3] for r in hard_rows])
    assert (ratings >= 1).mean() >= 0.95
    assert np.median(ratings) >= 10


def test_determinism_and_chunk_independence():
    mix = SourceMix(kaggle_like=0.25, unbiased_like=0.25, lowclue=0.0, hard=0.5)
    a = generate_chunk(9, 0, 16, mix, hard_threshold=5)
    assert a == generate_chunk(9, 0, 16, mix, hard_threshold=5)
    b = generate_chunk(9, 1, 16, mix, hard_threshold=5)
    assert not {r[1] for r in a} & {r[1] for r in b}
    assert not {r[1] for r in a} & {r[1] for r in generate_chunk(10, 0, 16, mix, hard_threshold=5)}


def test_source_mix_validation_and_counts():
    with pytest.raises(ValueError, match="kaggle_like"):
        SourceMix(kaggle_like=-0.1, unbiased_like=0.333, hard=0.755)
    with pytest.raises(ValueError, match="hard"):
        SourceMix(hard=math.nan)
    with pytest.raises(ValueError, match="sum to"):
        SourceMix(hard=0.5)
    assert SourceMix().counts(1000) == {
        "gen_kaggle_like": 23, "gen_unbiased_like": 230, "gen_lowclue": 12, "gen_hard": 735}
    # 7 * shares = 0.161, 1.61, 0.084, 5.145 -> floors 0, 1, 0, 5 and one left for the largest remainder (0.61)
    assert SourceMix().counts(7) == {"gen_kaggle_like": 0, "gen_unbiased_like": 2, "gen_lowclue": 0, "gen_hard": 5}
    for size in range(0, 50):
        assert sum(SourceMix().counts(size).values()) == size
    with pytest.raises(ValueError, match="seed"):
        generate_chunk(-1, 0, 5)


def test_write_chunk(tmp_path):
    path = tmp_path / "chunk.csv"
    stats = write_chunk(path, 1, 2, 10, ONLY["unbiased_like"], progress=True)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["source", "question", "answer", "rating"] and len(rows) == 11
    assert stats["sources"]["gen_unbiased_like"]["count"] == 10
    assert sum(stats["all"]["givens_hist"].values()) == 10
    assert stats["all"]["rating_mean"] == pytest.approx(np.mean([int(r[3]) for r in rows[1:]]))
    assert [tuple(r[:3]) for r in rows[1:]] == [r[:3] for r in generate_chunk(1, 2, 10, ONLY["unbiased_like"])]
