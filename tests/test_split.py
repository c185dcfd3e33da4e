"""Equivalence-safe split: planted symmetric copies are deduped, no leaks, deterministic; the checker finds leaks."""

import numpy as np
import pytest

from cgar.data.build import PuzzleTable, write_split
from cgar.data.puzzle_csv import write_puzzle_csv
from cgar.data.split import check_leaks, read_pool, split_pool
from cgar.io_utils import DataError
from cgar.sudoku.canonical import canonical_keys
from cgar.sudoku.grid import format_grid
from cgar.sudoku.symmetry import augment_pairs
from tests.conftest import random_pairs


def write_csv(path, puzzles, solutions, sources):
    rows = [(s, format_grid(p), format_grid(a), i) for i, (p, a, s) in enumerate(zip(puzzles, solutions, sources))]
    write_puzzle_csv(path, rows)
    return path


@pytest.fixture
def pool(tmp_path):
    """Two CSVs: 120 random pairs, 20 symmetric copies of the first 20 and 5 exact repeats (145 rows)."""
    puzzles, solutions = random_pairs(120, seed=1)
    copy_p, copy_s = augment_pairs(puzzles[:20], solutions[:20], np.random.default_rng(2))
    a = write_csv(tmp_path / "a.csv", puzzles[:70], solutions[:70], ["src_a"] * 70)
    b = write_csv(
        tmp_path / "b.csv",
        np.concatenate([puzzles[70:], copy_p, puzzles[[5, 80, 80, 90, 100]]]),
        np.concatenate([solutions[70:], copy_s, solutions[[5, 80, 80, 90, 100]]]),
        ["src_b"] * 75,
    )
    return [a, b]


def test_split_dedupes_and_leaks_nothing(pool, tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    s = split_pool(pool, train, test, test_size=30, seed=0)
    assert (s["input_rows"], s["exact_duplicates"], s["symmetry_duplicates"]) == (145, 5, 20)
    assert (s["classes"], s["train_rows"], s["test_rows"]) == (120, 90, 30)
    assert sum(s["train_sources"].values()) == 90 and sum(s["test_sources"].values()) == 30
    assert set(s["train_sources"]) | set(s["test_sources"]) == {"src_a", "src_b"}
    # Only originals survive (each class keeps its first row), with their answers and ratings.
    rows = read_pool([train, test])
    original = read_pool(pool)
    assert sorted(rows.ratings.tolist()) == sorted([*range(70), *range(50)])
    assert {q.tobytes() for q in rows.questions} == {q.tobytes() for q in original.questions[:120]}
    report = check_leaks(train, test)
    assert report["leaks"] == 0 and report["test_puzzles"] == 30 and report["train_classes"] == 90
    keys = canonical_keys(rows.questions)
    assert len({k.tobytes() for k in keys}) == 120


def test_same_seed_same_bytes(pool, tmp_path):
    outs = []
    for run, seed in (("a", 7), ("b", 7), ("c", 8)):
        train, test = tmp_path / f"train_{run}.csv", tmp_path / f"test_{run}.csv"
        split_pool(pool, train, test, test_fraction=0.25, seed=seed)
        outs.append((train.read_bytes(), test.read_bytes()))
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]
    assert outs[0][1].count(b"\n") == 1 + 30  # header + round(0.25 * 120)


def test_test_size_too_large(pool, tmp_path):
    with pytest.raises(DataError, match=r"--test-size 121 exceeds the 120 inequivalent"):
        split_pool(pool, tmp_path / "tr.csv", tmp_path / "te.csv", test_size=121, seed=0)
    with pytest.raises(ValueError, match="exactly one"):
        split_pool(pool, tmp_path / "tr.csv", tmp_path / "te.csv", seed=0)


def test_check_leaks_finds_planted_leak_in_csvs(tmp_path):
    puzzles, solutions = random_pairs(40, seed=3)
    leak_p, leak_s = augment_pairs(puzzles[[4]], solutions[[4]], np.random.default_rng(4))
    train = write_csv(tmp_path / "train.csv", puzzles[:30], solutions[:30], ["x"] * 30)
    test = write_csv(
        tmp_path / "test.csv",
        np.concatenate([puzzles[30:], leak_p]),
        np.concatenate([solutions[30:], leak_s]),
        ["x"] * 11,
    )
    report = check_leaks(train, test)
    assert report["leaks"] == 1 and report["test_puzzles"] == 11
    # row 10 of the data is file line 12 (the header is line 1): the line importer errors would name
    assert report["examples"] == [{"test_line": 12, "question": format_grid(leak_p[0])}]


def _table(questions, answers) -> PuzzleTable:
    n = len(questions)
    return PuzzleTable(np.array(["x"] * n, dtype=object), questions, answers, np.zeros(n, dtype=np.int64))


def test_check_leaks_on_built_dirs(tmp_path):
    puzzles, solutions = random_pairs(30, seed=5)
    # Train: 10 groups of an original followed by 3 symmetric copies, as the build step lays them out.
    n_aug = 3
    inputs, labels = np.repeat(puzzles[:10], 1 + n_aug, axis=0), np.repeat(solutions[:10], 1 + n_aug, axis=0)
    aug = np.arange(len(inputs)) % (1 + n_aug) != 0
    inputs[aug], labels[aug] = augment_pairs(inputs[aug], labels[aug], np.random.default_rng(6))
    write_split(tmp_path / "train", inputs, labels, np.full(10, 1 + n_aug), _table(puzzles[:10], solutions[:10]))
    # Test: 20 unrelated puzzles, then a copy of train group 4's second example (itself a symmetry).
    leak = inputs[[4 * (1 + n_aug) + 1]]
    test_in = np.concatenate([puzzles[10:], leak])
    test_sol = np.concatenate([solutions[10:], labels[[17]]])
    write_split(tmp_path / "test", test_in, test_sol, np.ones(21, dtype=int), _table(test_in, test_sol))
    for all_examples in (False, True):
        report = check_leaks(tmp_path / "train", tmp_path / "test", all_examples=all_examples)
        assert report["leaks"] == 1 and report["train_classes"] == 10
        assert report["train_puzzles"] == (40 if all_examples else 10)
        assert report["examples"][0] == {"test_example": 20, "question": format_grid(leak[0])}
    clean = write_csv(tmp_path / "clean.csv", puzzles[10:], solutions[10:], ["x"] * 20)
    assert check_leaks(tmp_path / "train", clean)["leaks"] == 0  # a dir and a CSV mix
    with pytest.raises(DataError, match="not a puzzle CSV or a built split dir"):
        check_leaks(tmp_path, clean)


def test_split_keeps_every_column_and_refuses_mixed_headers(tmp_path):
    puzzles, solutions = random_pairs(12, seed=7)
    header = ("source", "question", "answer", "rating", "cgar_rating", "class_rating", "class_rating_sd")
    rows = [("s", format_grid(p), format_grid(a), i, 2 * i, f"{i / 4:.2f}", "0.50" if i % 2 else "")
            for i, (p, a) in enumerate(zip(puzzles, solutions))]
    pool = tmp_path / "pool.csv"
    write_puzzle_csv(pool, rows, header=header)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    split_pool([pool], train, test, test_size=4, seed=0)
    lines = [train.read_text().splitlines(), test.read_text().splitlines()]
    assert lines[0][0] == lines[1][0] == ",".join(header)
    expected = {",".join(map(str, r)) for r in rows}
    assert set(lines[0][1:]) | set(lines[1][1:]) == expected and len(lines[0]) + len(lines[1]) == 2 + 12
    plain = write_csv(tmp_path / "plain.csv", puzzles[:2], solutions[:2], ["s"] * 2)
    with pytest.raises(DataError, match=r"plain.csv:1: header source,question,answer,rating differs from"):
        split_pool([pool, plain], train, test, test_size=1, seed=0)
