import numpy as np
import pytest

from cgar.data.puzzle_csv import write_puzzle_csv
from cgar.sudoku.grid import SUDOKU_9, GridShape, format_grid
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries


def pattern_grid(shape: GridShape = SUDOKU_9) -> np.ndarray:
    """A valid solution grid: grid[r][c] = (box_cols * (r % box_rows) + r // box_rows + c) % n + 1 (for 9x9 the
    same grid as (3r + r//3 + c) % 9 + 1)."""
    r, c = np.divmod(np.arange(shape.cells), shape.n)
    return ((shape.box_cols * (r % shape.box_rows) + r // shape.box_rows + c) % shape.n + 1).astype(np.uint8)


def random_pairs(n: int, seed: int, blanks: tuple[int, int] | None = None, shape: GridShape = SUDOKU_9):
    """n (puzzle, solution) pairs: random symmetries of the pattern grid with random cells blanked (blanks
    defaults to (45, 60) for 9x9, the same share of the cells otherwise).

    Valid and consistent, not necessarily uniquely solvable (fine for layout and augmentation tests).
    """
    if blanks is None:
        blanks = (shape.cells * 45 // 81, shape.cells * 60 // 81)
    rng = np.random.default_rng(seed)
    solutions = apply_symmetries(np.tile(pattern_grid(shape), (n, 1)), random_symmetries(rng, n, shape))
    puzzles = solutions.copy()
    for i in range(n):
        k = rng.integers(blanks[0], blanks[1] + 1)
        puzzles[i, rng.choice(shape.cells, size=k, replace=False)] = 0
    return puzzles, solutions


@pytest.fixture
def write_pairs_csv(tmp_path):
    """Factory: write n random pairs as a puzzle CSV with ratings 0..n-1 and two sources."""

    def make(name: str, n: int, seed: int):
        puzzles, solutions = random_pairs(n, seed)
        rows = [
            ("src_a" if i % 2 else "src_b", format_grid(p), format_grid(s), i)
            for i, (p, s) in enumerate(zip(puzzles, solutions))
        ]
        path = tmp_path / name
        write_puzzle_csv(path, rows)
        return path, puzzles, solutions

    return make


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tiny built dataset shared by the training, fault-injection and SLURM tests (read-only):
    40 training puzzles x (1 + 7 augmentations), 8 test puzzles."""
    from cgar.data.build import BuildConfig, build_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    for name, n, seed in (("train.csv", 40, 1), ("test.csv", 8, 2)):
        p, s = random_pairs(n, seed)
        write_puzzle_csv(root / name, [("x", format_grid(a), format_grid(b), 0) for a, b in zip(p, s)])
    build_dataset(root / "train.csv", root / "test.csv", root / "ds", BuildConfig(subsample_size=None, num_aug=7))
    return root / "ds"


def final_state(out):
    """What a finished training run leaves to compare: (EMA state_dict of model.pt, metrics.jsonl records
    without the wall-clock field)."""
    import json

    import torch

    payload = torch.load(out / "model.pt", weights_only=False)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("wall_s")
    return payload["state_dict"], recs

