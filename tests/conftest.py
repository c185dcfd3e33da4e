import numpy as np
import pytest

from cgar.data.puzzle_csv import write_puzzle_csv
from cgar.sudoku.grid import format_grid
from cgar.sudoku.synthetic import pattern_grid, random_pairs  # noqa: F401  (tests import them from here)


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

