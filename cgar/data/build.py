"""Build the training/evaluation arrays from puzzle CSVs, in the HRM/TRM reference layout.

Mirrors `build_sudoku_dataset.py` of HRM/TRM (spec §2.2), with three deliberate differences:
- subsampling and augmentation are seeded (the reference script is not), so a build is reproducible;
- augmentation is vectorised (1M pairs in seconds instead of minutes);
- a `manifest.json` records row counts, seeds, the build config and the sha256 of every file.

Validation split (`val_size` > 0): that many puzzles are drawn from the training CSV *before* the training
subsample, which then draws from the rest; training puzzles equivalent (by canonical form) to a val puzzle are
dropped, so val is disjoint from train by construction (and from test, as the training CSV is). Val is written
like test: never augmented, one example per group. "Best snapshot" selection uses it, never test.

Layout of `<out>/`: `identifiers.json`, `manifest.json`, and for each split `<out>/{train,val,test}/`:
`all__inputs.npy` uint8[N, L], `all__labels.npy` uint8[N, L], `all__puzzle_identifiers.npy` int32[N],
`all__puzzle_indices.npy` int32[N+1], `all__group_indices.npy` int32[G+1], `dataset.json`, and two sidecars the
reference does not have (its loaders ignore them): `all__ratings.npy` int32[N] and `all__source_ids.npy` int16[N]
indexing `sources.json`, so evaluation can report accuracy per difficulty and per source. The difficulty is the
column `BuildConfig.difficulty` names ("auto": the class rating when the CSV has it, else `rating`), rounded to an
integer in the sidecar; `min_difficulty` filters on the same column and the manifest records which. Stored values are
digit + 1, so 0 = pad, 1 = blank, 2..n+1 = digits 1..n. Each group is one original puzzle followed by its
`num_aug` augmentations; each example is its own "puzzle". The test split is never augmented.

Grid: the CSVs' question length tells it (cgar.sudoku.grid: 81 cells for 9x9, 36 for 6x6, 16 for 4x4), the same for
train and test; L = the cells, and dataset.json's seq_len / vocab_size follow (81 / 11 for 9x9, 36 / 8 for 6x6).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cgar import __version__
from cgar.data.loader import grid_dims
from cgar.data.puzzle_csv import csv_shape, iter_puzzle_rows, read_header, resolve_difficulty
from cgar.io_utils import DataError, atomic_directory, atomic_write_json, sha256_file
from cgar.sudoku.grid import (SUDOKU_9, GridShape, givens_consistent, grid_problem, num_givens, parse_grids, shape_of,
                              valid_solutions)
from cgar.sudoku.symmetry import augment_pairs

SPLITS = ("train", "val", "test")  # val only when BuildConfig.val_size > 0
ARRAY_FILES = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
AUG_CHUNK = 1 << 16  # pairs augmented per vectorised call: bounds the int64 index temporaries to ~40 MB
DIFFICULTY_COLUMNS = ("auto", "rating", "class_rating")


@dataclass(frozen=True)
class BuildConfig:
    subsample_size: int | None = 1000  # training puzzles kept (None = all)
    num_aug: int = 1000  # augmentations per training puzzle
    min_difficulty: float | None = None  # keep rows with difficulty >= this, in both splits (as the reference)
    seed: int = 0
    difficulty: str = "auto"  # the column min_difficulty and the ratings sidecar use (DIFFICULTY_COLUMNS)
    val_size: int = 0  # validation puzzles carved from the training CSV before subsampling (0 = no val split)

    def __post_init__(self):
        if self.val_size < 0:
            raise ValueError(f"val_size must be >= 0, got {self.val_size}")
        if self.subsample_size is not None and self.subsample_size < 1:
            raise ValueError(f"subsample_size must be >= 1 or None, got {self.subsample_size}")
        if self.num_aug < 0:
            raise ValueError(f"num_aug must be >= 0, got {self.num_aug}")
        if self.difficulty not in DIFFICULTY_COLUMNS:
            raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTY_COLUMNS)}, got {self.difficulty!r}")


@dataclass
class PuzzleTable:
    """Rows of a puzzle CSV as arrays (digits 0..n, 0 = blank)."""

    sources: np.ndarray  # object[N]
    questions: np.ndarray  # uint8[N, cells]
    answers: np.ndarray  # uint8[N, cells]
    ratings: np.ndarray  # float64[N]: the difficulty column (integers for `rating`)

    def __len__(self) -> int:
        return len(self.ratings)

    def take(self, idx: np.ndarray) -> "PuzzleTable":
        return PuzzleTable(self.sources[idx], self.questions[idx], self.answers[idx], self.ratings[idx])

    @property
    def shape(self) -> GridShape:
        return shape_of(self.questions.shape[1])


def read_puzzle_csv(
    path: str | os.PathLike,
    *,
    min_difficulty: float | None = None,
    keep: np.ndarray | None = None,
    difficulty: str = "rating",
) -> PuzzleTable:
    """Read a puzzle CSV (streaming), keeping rows with rating >= min_difficulty.

    `keep`, if given, is a sorted array of indices into the filtered rows: only those rows are materialised,
    so subsampling 1000 puzzles from a 3.8M-row file needs memory for 1000 rows, not 3.8M.
    """
    path = Path(path)
    shape = csv_shape(path) or SUDOKU_9  # a file without rows gives empty 9x9 arrays
    sources, questions, answers, ratings, lines = [], [], [], [], []
    k = 0  # index among filtered rows
    j = 0  # position in `keep`
    for line_no, source, question, answer, rating, _ in iter_puzzle_rows(path, difficulty, shape):
        if min_difficulty is not None and rating < min_difficulty:
            continue
        if keep is None or (j < len(keep) and keep[j] == k):
            for name, text, blanks in (("question", question, True), ("answer", answer, False)):
                problem = grid_problem(text, allow_blanks=blanks, shape=shape)
                if problem is not None:
                    raise DataError(path, f"{name}: {problem}", line=line_no)
            sources.append(source)
            questions.append(question)
            answers.append(answer)
            ratings.append(rating)
            lines.append(line_no)
            j += 1
        k += 1
    table = PuzzleTable(
        np.array(sources, dtype=object),
        parse_grids(questions, shape),
        parse_grids(answers, shape),
        np.array(ratings, dtype=np.float64),
    )
    bad = ~(valid_solutions(table.answers) & givens_consistent(table.questions, table.answers))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(path, "answer is not a valid grid consistent with the question's givens", line=lines[i])
    return table


def count_rows(path: str | os.PathLike, *, min_difficulty: float | None = None, difficulty: str = "rating") -> int:
    return sum(1 for *_, r, _ in iter_puzzle_rows(Path(path), difficulty)
               if min_difficulty is None or r >= min_difficulty)


def _read_rows(path: Path, cfg: BuildConfig, rows: np.ndarray) -> PuzzleTable:
    """The filtered rows `rows` (indices, in the given order) of a puzzle CSV, reading only those."""
    order = np.argsort(rows)
    table = read_puzzle_csv(path, min_difficulty=cfg.min_difficulty, keep=rows[order], difficulty=cfg.difficulty)
    return table.take(np.argsort(order))  # back to the given order


def subsample(path: str | os.PathLike, cfg: BuildConfig, rng: np.random.Generator,
              val_rng: np.random.Generator | None = None) -> tuple[PuzzleTable, PuzzleTable | None]:
    """(training subsample, validation puzzles or None): seeded draws without replacement, in the drawn (random)
    order like the reference's np.random.choice. The val rows (cfg.val_size, from `val_rng`) are drawn first and
    taken out of the pool the training subsample draws from; with val_size 0 the subsample is the old one."""
    path = Path(path)
    n = count_rows(path, min_difficulty=cfg.min_difficulty, difficulty=cfg.difficulty)
    if n == 0:
        raise DataError(path, f"no rows left after min_difficulty={cfg.min_difficulty}")
    if cfg.val_size >= n:
        raise DataError(path, f"data.build.val_size {cfg.val_size} leaves no training rows of the {n} available")
    val_rows = np.sort(val_rng.choice(n, size=cfg.val_size, replace=False)) if cfg.val_size else None
    pool = np.arange(n) if val_rows is None else np.setdiff1d(np.arange(n), val_rows)
    if cfg.subsample_size is None or cfg.subsample_size >= len(pool):
        chosen = pool
    else:
        chosen = pool[rng.choice(len(pool), size=cfg.subsample_size, replace=False)]
    val = None if val_rows is None else _read_rows(path, cfg, val_rows)
    if len(chosen) == n:  # the whole file, in file order
        return read_puzzle_csv(path, min_difficulty=cfg.min_difficulty, difficulty=cfg.difficulty), val
    return _read_rows(path, cfg, chosen), val


def drop_equivalent(train: PuzzleTable, val: PuzzleTable, progress: bool = False) -> tuple[PuzzleTable, int]:
    """Training rows with no symmetry-equivalent (canonical form) in val, and how many were dropped."""
    from cgar.sudoku.canonical import canonical_keys, group_ids

    ids = group_ids(np.concatenate([canonical_keys(train.questions, progress=progress),
                                    canonical_keys(val.questions, progress=progress)]))
    leaked = np.isin(ids[: len(train)], ids[len(train):])
    return train.take(np.flatnonzero(~leaked)), int(leaked.sum())


def expand_groups(
    table: PuzzleTable, num_aug: int, rng: np.random.Generator, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each puzzle followed by `num_aug` augmented copies -> (inputs, labels uint8[G*(1+num_aug), L], group sizes)."""
    g = len(table)
    per = 1 + num_aug
    inputs = np.repeat(table.questions, per, axis=0)
    labels = np.repeat(table.answers, per, axis=0)
    aug_rows = np.flatnonzero(np.arange(g * per) % per != 0)  # every row but each group's first (the original)
    with tqdm(total=len(aug_rows), desc="augment", unit="pair", disable=not progress, unit_scale=True) as bar:
        for start in range(0, len(aug_rows), AUG_CHUNK):
            rows = aug_rows[start : start + AUG_CHUNK]
            inputs[rows], labels[rows] = augment_pairs(inputs[rows], labels[rows], rng)
            bar.update(len(rows))
    return inputs, labels, np.full(g, per, dtype=np.int64)


def _dataset_json(total_groups: int, shape: GridShape) -> dict:
    # Field for field what HRM/TRM's build script writes (TRM adds total_puzzles = number of groups), plus `grid`
    # for the other shapes only: a 9x9 dataset stays byte-identical to the reference's (and to earlier builds,
    # whose manifest hashes tag existing checkpoints); the loader tells the grid from seq_len either way.
    return {
        "pad_id": 0,
        "ignore_label_id": 0,
        "blank_identifier_id": 0,
        **grid_dims(shape),  # vocab_size, seq_len
        "num_puzzle_identifiers": 1,
        "total_groups": total_groups,
        "mean_puzzle_examples": 1,
        "total_puzzles": total_groups,
        "sets": ["all"],
        **({} if shape == SUDOKU_9 else {"grid": shape.name}),
    }


def write_split(out: Path, inputs: np.ndarray, labels: np.ndarray, group_sizes: np.ndarray,
                table: PuzzleTable) -> None:
    """Write one split directory in the reference layout (values stored +1: 0 pad, 1 blank, 2..n+1 digits).

    `table` holds the groups' original puzzles; every example of a group inherits its source and rating.
    """
    out.mkdir(parents=True, exist_ok=True)
    n = len(inputs)
    sources = sorted(set(table.sources.tolist()))
    source_ids = np.searchsorted(np.array(sources, dtype=object), table.sources).astype(np.int16)
    arrays = {
        "inputs": (inputs + 1).astype(np.uint8),
        "labels": (labels + 1).astype(np.uint8),
        "puzzle_identifiers": np.zeros(n, dtype=np.int32),
        "puzzle_indices": np.arange(n + 1, dtype=np.int32),
        "group_indices": np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32),
        "ratings": np.repeat(np.rint(table.ratings), group_sizes).astype(np.int32),  # class means rounded
        "source_ids": np.repeat(source_ids, group_sizes),
    }
    for name, arr in arrays.items():
        np.save(out / f"all__{name}.npy", arr, allow_pickle=False)
    atomic_write_json(out / "sources.json", sources)
    atomic_write_json(out / "dataset.json", _dataset_json(len(group_sizes), table.shape))


def _stats(table: PuzzleTable) -> dict:
    givens = num_givens(table.questions)
    per_source = {}
    for src in sorted(set(table.sources.tolist())):
        m = table.sources == src
        r = table.ratings[m]
        per_source[src] = {
            "rows": int(m.sum()),
            "rating_mean": float(r.mean()),
            "rating_median": float(np.median(r)),
            "share_rating_ge_1": float((r >= 1).mean()),
            "givens_mean": float(givens[m].mean()),
        }
    hist = np.bincount(givens, minlength=table.shape.cells + 1)
    return {
        "puzzles": len(table),
        "givens_histogram": {str(k): int(v) for k, v in enumerate(hist) if v},
        "rating_mean": float(table.ratings.mean()) if len(table) else None,
        "per_source": per_source,
    }


def _file_entry(path: Path) -> dict:
    entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        entry.update(shape=list(arr.shape), dtype=str(arr.dtype))
    return entry


def build_dataset(
    train_csv: str | os.PathLike,
    test_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: BuildConfig = BuildConfig(),
    progress: bool = False,
) -> dict:
    """Build `<out_dir>/{train,test}` + manifest atomically; returns the manifest."""
    train_csv, test_csv, out_dir = Path(train_csv), Path(test_csv), Path(out_dir)
    # Independent streams for the subsample and the augmentation: changing num_aug keeps the same puzzles.
    ss_sub, ss_aug, ss_val = np.random.SeedSequence([cfg.seed, 2025]).spawn(3)  # spawn(k) extends spawn(k - 1)
    train, val = subsample(train_csv, cfg, np.random.default_rng(ss_sub), np.random.default_rng(ss_val))
    val_dropped = 0
    if val is not None:
        train, val_dropped = drop_equivalent(train, val, progress)
        if len(train) == 0:
            raise DataError(train_csv, "every training row is equivalent to a validation puzzle")
    test = read_puzzle_csv(test_csv, min_difficulty=cfg.min_difficulty, difficulty=cfg.difficulty)
    if len(test) == 0:
        raise DataError(test_csv, f"no test rows (min_difficulty={cfg.min_difficulty})")
    if test.shape != train.shape:  # one model reads both: one grid
        raise DataError(test_csv, f"holds {test.shape.name} grids, the training CSV {train_csv} {train.shape.name} "
                        "ones (train and test of one build must have the same grid)")
    with atomic_directory(out_dir) as tmp:
        inputs, labels, sizes = expand_groups(train, cfg.num_aug, np.random.default_rng(ss_aug), progress)
        write_split(tmp / "train", inputs, labels, sizes, train)
        del inputs, labels
        write_split(tmp / "test", test.questions, test.answers, np.ones(len(test), dtype=np.int64), test)
        if val is not None:  # like test: never augmented, one example per group
            write_split(tmp / "val", val.questions, val.answers, np.ones(len(val), dtype=np.int64), val)
        atomic_write_json(tmp / "identifiers.json", ["<blank>"])
        files = {
            str(p.relative_to(tmp)): _file_entry(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {
            "format": "cgar-sudoku-dataset/1",
            "cgar_version": __version__,
            "config": asdict(cfg),
            "difficulty_column": {  # what `difficulty: auto` resolved to, per split
                "train": resolve_difficulty(train_csv, read_header(train_csv), cfg.difficulty),
                "test": resolve_difficulty(test_csv, read_header(test_csv), cfg.difficulty),
            },
            "inputs": {
                "train_csv": {"path": str(train_csv), "sha256": sha256_file(train_csv)},
                "test_csv": {"path": str(test_csv), "sha256": sha256_file(test_csv)},
            },
            "splits": {
                "train": {"groups": len(train), "examples": int(sizes.sum()), "stats": _stats(train)},
                "test": {"groups": len(test), "examples": len(test), "stats": _stats(test)},
                **({} if val is None else {"val": {"groups": len(val), "examples": len(val), "stats": _stats(val),
                                                   "train_rows_dropped_as_equivalent": val_dropped}}),
            },
            "files": files,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def verify_manifest(data_dir: str | os.PathLike, split: str | None = None) -> dict:
    """Recompute every file's sha256 (only those of `split`, if given) against manifest.json; raise DataError
    naming the first mismatch."""
    data_dir = Path(data_dir)
    mpath = data_dir / "manifest.json"
    if not mpath.is_file():
        raise DataError(mpath, "missing manifest.json: not a dataset built by `python -m cgar.data build`")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"].items()
    except (json.JSONDecodeError, KeyError, AttributeError) as e:
        raise DataError(mpath, f"not a valid manifest ({type(e).__name__}: {e})") from None
    for rel, entry in files:
        if split is not None and not rel.startswith(f"{split}/"):
            continue
        p = data_dir / rel
        if not p.is_file():
            raise DataError(p, "listed in manifest.json but missing")
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            raise DataError(p, f"sha256 {digest[:12]}... does not match manifest.json ({entry['sha256'][:12]}...)")
    return manifest


def verify_split_files(data_dir: str | os.PathLike, split: str) -> None:
    """What train/evaluate check before reading a split: its files still have the manifest's sha256 (a dataset
    changed after check_dataset ran). Datasets built by HRM/TRM's own script have no manifest; they are skipped."""
    if (Path(data_dir) / "manifest.json").is_file():
        verify_manifest(data_dir, split)
