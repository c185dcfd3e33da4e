"""Equivalence-safe train/test split and leak check.

Sudoku-Extreme's card promises that no test puzzle is a symmetry (transpose, band/row/stack/column perms,
digit relabelling) of a training puzzle. `split_pool` makes that true by construction: it dedupes the pool by
exact question and then by canonical form (cgar.sudoku.canonical), and assigns whole equivalence classes to
one side. `check_leaks` verifies it for any pair of puzzle CSVs or built split directories.

Memory: questions are held as uint8[N, 81] and compared through 40-byte packed keys, so a 4M-row pool needs
about 1.5 GB; canonicalisation runs in batches behind a progress bar (stderr). Every file of a pool holds one grid,
the first file's: 9x9, or 6x6 / 4x4 (uint8[N, 36] / [N, 16]).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cgar.data.puzzle_csv import csv_shape, iter_puzzle_rows, read_header, write_puzzle_csv
from cgar.io_utils import DataError
from cgar.sudoku.canonical import KEY_WORDS, canonical_keys, group_ids, map_batches, pack_grids
from cgar.sudoku.grid import SUDOKU_9, format_grid, format_grids, parse_grids

READ_CHUNK = 1 << 16  # rows parsed per vectorised call while streaming a CSV


@dataclass
class Pool:
    """Rows of one or more puzzle CSVs, in file order then row order."""

    source_names: list[str]
    sources: np.ndarray  # int32[N], index into source_names
    questions: np.ndarray  # uint8[N, cells], 0 = blank
    answers: np.ndarray | None  # uint8[N, cells], or None when not read
    ratings: np.ndarray  # int64[N]
    lines: np.ndarray  # int64[N]: 1-based line of each row in its file
    header: list[str]  # the inputs' common header: the 4 standard columns, then the extra ones
    extra: np.ndarray  # bytes [N, len(header) - 4]: the extra columns' text, carried through unchanged

    def __len__(self) -> int:
        return len(self.ratings)


def read_pool(paths: list[str | os.PathLike], *, answers: bool = True, progress: bool = False) -> Pool:
    """Stream puzzle CSVs (assumed validated) into arrays, parsing READ_CHUNK rows at a time.

    Every input must have the same header and grid (the first file's); extra columns (class rating, our rating,
    ...) are kept as text."""
    names: dict[str, int] = {}
    srcs, qs, ans, ratings, lines, extras = [], [], [], [], [], []
    buf_q, buf_a, buf_x = [], [], []
    header = read_header(Path(paths[0])) if paths else ["source", "question", "answer", "rating"]
    n_extra = len(header) - 4
    shape = (csv_shape(paths[0]) if paths else None) or SUDOKU_9  # no rows at all: empty 9x9 arrays

    def flush():
        if buf_q:
            qs.append(parse_grids(buf_q, shape))
            if answers:
                ans.append(parse_grids(buf_a, shape))
            # fixed-width bytes: ~16 bytes a field instead of ~55 for a Python str
            extras.append(np.array(buf_x, dtype=np.bytes_).reshape(len(buf_q), n_extra))
            buf_q.clear()
            buf_a.clear()
            buf_x.clear()

    with tqdm(desc="read", unit="row", unit_scale=True, disable=not progress) as bar:
        for path in paths:
            if (other := read_header(Path(path))) != header:
                raise DataError(path, f"header {','.join(other)} differs from {paths[0]}'s {','.join(header)} "
                                      "(all pool files must have the same columns)", line=1)
            rows = iter_puzzle_rows(Path(path), shape=shape, shape_from=f"{paths[0]}'s first row")
            for line, source, question, answer, rating, extra in rows:
                srcs.append(names.setdefault(source, len(names)))
                ratings.append(rating)
                lines.append(line)
                buf_x.append([x.encode("utf-8") for x in extra])
                buf_q.append(question)
                if answers:
                    buf_a.append(answer)
                if len(buf_q) == READ_CHUNK:
                    flush()
                    bar.update(READ_CHUNK)
            bar.update(len(buf_q))
            flush()
    empty = np.zeros((0, shape.cells), dtype=np.uint8)
    return Pool(
        source_names=list(names),
        sources=np.array(srcs, dtype=np.int32),
        questions=np.concatenate(qs) if qs else empty,
        answers=(np.concatenate(ans) if ans else empty) if answers else None,
        ratings=np.array(ratings, dtype=np.int64),
        lines=np.array(lines, dtype=np.int64),
        header=header,
        extra=np.concatenate(extras) if extras else np.zeros((0, n_extra), dtype=np.bytes_),
    )


def first_of_each(ids: np.ndarray) -> np.ndarray:
    """Sorted indices of the first occurrence of each id."""
    return np.sort(np.unique(ids, return_index=True)[1])


def _test_count(n_classes: int, test_size: int | None, test_fraction: float | None, where: str) -> int:
    if (test_size is None) == (test_fraction is None):
        raise ValueError("give exactly one of test_size and test_fraction")
    if test_fraction is not None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        return int(round(test_fraction * n_classes))
    if test_size < 0:
        raise ValueError(f"test_size must be >= 0, got {test_size}")
    if test_size > n_classes:
        raise DataError(
            where,
            f"--test-size {test_size} exceeds the {n_classes} inequivalent puzzles in the pool "
            "(after removing exact and symmetry duplicates)",
        )
    return test_size


def _rows(pool: Pool, idx: np.ndarray):
    """Yield CSV rows (source, question, answer, rating, extra...) for pool rows idx, a chunk at a time."""
    for start in range(0, len(idx), READ_CHUNK):
        part = idx[start : start + READ_CHUNK]
        for i, q, a in zip(part, format_grids(pool.questions[part]), format_grids(pool.answers[part])):
            extra = [x.decode("utf-8") for x in pool.extra[i]]
            yield pool.source_names[pool.sources[i]], q, a, int(pool.ratings[i]), *extra


def _source_counts(pool: Pool, idx: np.ndarray) -> dict[str, int]:
    counts = Counter(pool.sources[idx].tolist())
    return {pool.source_names[s]: counts[s] for s in sorted(counts, key=lambda s: pool.source_names[s])}


def split_pool(
    inputs: list[str | os.PathLike],
    out_train: str | os.PathLike,
    out_test: str | os.PathLike,
    *,
    test_size: int | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Dedupe the pool (exact, then by symmetry class) and split whole classes into train/test CSVs.

    The first row of each class (in input order) is kept. A seeded permutation of the classes picks the test
    set; both files list their rows in input order and are written atomically. Returns a JSON-able summary.
    """
    pool = read_pool(inputs, progress=progress)
    where = ", ".join(str(p) for p in inputs)
    # Exact duplicates first (cheap, on the raw question), so the expensive canonicalisation sees fewer rows.
    exact_kept = first_of_each(group_ids(pack_grids(pool.questions)))
    class_ids = group_ids(canonical_keys(pool.questions[exact_kept], progress=progress))
    kept = exact_kept[first_of_each(class_ids)]  # one row per equivalence class
    n_test = _test_count(len(kept), test_size, test_fraction, where)

    on_test = np.zeros(len(kept), dtype=bool)
    on_test[np.random.default_rng(seed).permutation(len(kept))[:n_test]] = True
    train_idx, test_idx = kept[~on_test], kept[on_test]
    write_puzzle_csv(out_train, _rows(pool, train_idx), header=pool.header)
    write_puzzle_csv(out_test, _rows(pool, test_idx), header=pool.header)
    return {
        "inputs": [str(p) for p in inputs],
        "input_rows": len(pool),
        "exact_duplicates": len(pool) - len(exact_kept),
        "symmetry_duplicates": len(exact_kept) - len(kept),
        "classes": len(kept),
        "train_rows": len(train_idx),
        "test_rows": len(test_idx),
        "train_sources": _source_counts(pool, train_idx),
        "test_sources": _source_counts(pool, test_idx),
        "seed": seed,
        "train": str(out_train),
        "test": str(out_test),
    }


# ---------------------------------------------------------------------------------------------------------
# Leak check


def _stored_keys(path: Path, all_examples: bool, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Built split dir -> (canonical keys uint64[M, 5], their example rows int64[M], inputs memmap [N, L])."""
    inputs_path = path / "all__inputs.npy"
    groups_path = path / "all__group_indices.npy"
    if not inputs_path.is_file() or not groups_path.is_file():
        raise DataError(
            path, "not a puzzle CSV or a built split dir (expected all__inputs.npy, all__group_indices.npy)"
        )
    inputs = np.load(inputs_path, mmap_mode="r")  # values stored +1: 0 pad, 1 blank, 2..n+1 digits
    if all_examples:
        rows = np.arange(len(inputs), dtype=np.int64)
    else:  # a group is one original plus its symmetries: its first example stands for the whole class
        first_puzzle = np.load(groups_path)[:-1].astype(np.int64)
        pi_path = path / "all__puzzle_indices.npy"
        rows = np.load(pi_path)[first_puzzle].astype(np.int64) if pi_path.is_file() else first_puzzle

    def keys_of(part):
        return canonical_keys(np.maximum(np.asarray(inputs[part]), 1) - 1)  # back to 0 = blank, 1..n digits

    keys = np.empty((len(rows), KEY_WORDS), dtype=np.uint64)
    map_batches(rows, keys, keys_of, progress, desc=f"canonicalise {path.name}")
    return keys, rows, inputs


def _puzzle_keys(path: str | os.PathLike, all_examples: bool, progress: bool):
    """(keys, row index of each key, a getter row -> puzzle string, file lines or None) for a puzzle CSV or a
    built split dir (whose rows are example indices, with no file lines)."""
    path = Path(path)
    if path.is_dir():
        keys, rows, inputs = _stored_keys(path, all_examples, progress)
        return keys, rows, lambda i: format_grid(np.maximum(inputs[i], 1) - 1), None
    pool = read_pool([path], answers=False, progress=progress)
    keys = canonical_keys(pool.questions, progress=progress)
    return keys, np.arange(len(pool), dtype=np.int64), lambda i: format_grid(pool.questions[i]), pool.lines


def check_leaks(
    train: str | os.PathLike,
    test: str | os.PathLike,
    *,
    all_examples: bool = False,
    progress: bool = False,
    max_examples: int = 5,
) -> dict:
    """Count test puzzles that are symmetries of some train puzzle. train/test: puzzle CSVs or split dirs.

    For split dirs only the first example of each group is canonicalised unless all_examples=True. Each example
    names the leaked test row: `test_line` (1-based file line, as importer errors give it) for a CSV,
    `test_example` (0-based example index into all__inputs.npy) for a split dir.
    """
    train_keys, _, _, _ = _puzzle_keys(train, all_examples, progress)
    test_keys, test_rows, test_puzzle, test_lines = _puzzle_keys(test, all_examples, progress)
    ids = group_ids(np.concatenate([train_keys, test_keys]))
    train_ids, test_ids = ids[: len(train_keys)], ids[len(train_keys) :]
    leaked = np.flatnonzero(np.isin(test_ids, train_ids))
    return {
        "train": str(train),
        "test": str(test),
        "train_puzzles": len(train_keys),
        "train_classes": len(np.unique(train_ids)),
        "test_puzzles": len(test_keys),
        "leaks": len(leaked),
        "examples": [
            {("test_example" if test_lines is None else "test_line"):
                int(test_rows[i] if test_lines is None else test_lines[test_rows[i]]),
             "question": test_puzzle(test_rows[i])} for i in leaked[:max_examples]
        ],
    }
