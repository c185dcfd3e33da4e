"""The grid flows from the puzzle CSV to the model: a 6x6 dataset is built, loaded, trained on, evaluated and traced
at seq_len 36 / vocab 8; mixed-grid CSVs and inconsistent dataset.json files are refused naming the line / field.

The 6x6 puzzles are made here without the solver (valid solutions, not necessarily unique), so these tests need
no shape-generic generator; the ones that augment or canonicalise 36-cell grids skip until cgar.sudoku.symmetry /
canonical take a shape (their branches)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cgar.config import config_from_dict
from cgar.data.build import BuildConfig, build_dataset
from cgar.data.loader import load_split
from cgar.data.puzzle_csv import write_puzzle_csv
from cgar.io_utils import DataError
from cgar.sudoku.grid import SUDOKU_6, format_grid, valid_solutions
from cgar.sudoku.symmetry import random_symmetries
from tests.conftest import random_pairs

SYMMETRY_TAKES_A_SHAPE = "shape" in inspect.signature(random_symmetries).parameters
needs_generic_symmetry = pytest.mark.skipif(
    not SYMMETRY_TAKES_A_SHAPE, reason="augment_pairs / canonical_keys on 6x6 need the shape-generic symmetry branch")


def pairs_6x6(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n valid 6x6 (puzzle, solution) pairs: the pattern grid (3 (r % 2) + r // 2 + c) % 6 + 1, digits relabelled
    and rows shuffled within their bands (both keep it valid), 14..22 cells blanked."""
    rng = np.random.default_rng(seed)
    r, c = np.divmod(np.arange(36), 6)
    base = ((3 * (r % 2) + r // 2 + c) % 6 + 1).reshape(6, 6)
    solutions, puzzles = [], []
    for _ in range(n):
        rows = np.concatenate([band * 2 + rng.permutation(2) for band in range(3)])  # bands of 2 rows
        grid = np.concatenate([[0], rng.permutation(6) + 1])[base[rows]].reshape(-1).astype(np.uint8)
        puzzle = grid.copy()
        puzzle[rng.choice(36, size=rng.integers(14, 23), replace=False)] = 0
        solutions.append(grid)
        puzzles.append(puzzle)
    solutions, puzzles = np.array(solutions), np.array(puzzles)
    assert valid_solutions(solutions).all()
    return puzzles, solutions


def write_6x6_csv(path, n: int, seed: int):
    p, s = pairs_6x6(n, seed)
    write_puzzle_csv(path, [("src_a" if i % 2 else "src_b", format_grid(a), format_grid(b), i)
                            for i, (a, b) in enumerate(zip(p, s))])
    return path


@pytest.fixture(scope="module")
def data_6x6(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid6")
    train, test = write_6x6_csv(root / "train.csv", 40, 1), write_6x6_csv(root / "test.csv", 8, 2)
    build_dataset(train, test, root / "ds", BuildConfig(subsample_size=None, num_aug=0))
    return root / "ds"


def test_build_and_load_a_6x6_dataset(data_6x6):
    meta = json.loads((data_6x6 / "train" / "dataset.json").read_text())
    assert (meta["seq_len"], meta["vocab_size"], meta["grid"]) == (36, 8, "6x6")
    for name in ("train", "test"):
        split = load_split(data_6x6, name)
        assert split.shape == SUDOKU_6 and (split.seq_len, split.vocab_size) == (36, 8)
        assert split.inputs.shape[1] == 36 and split.inputs.max() <= 7 and split.labels.min() >= 2


def test_9x9_dataset_json_has_no_grid_field(data_dir):
    """9x9 builds stay byte-identical to the reference layout (and to earlier builds): no `grid` field."""
    meta = json.loads((data_dir / "train" / "dataset.json").read_text())
    assert "grid" not in meta and (meta["seq_len"], meta["vocab_size"]) == (81, 11)
    assert load_split(data_dir, "train").seq_len == 81


@needs_generic_symmetry
def test_6x6_build_with_augmentation_and_val_split(tmp_path):
    train, test = write_6x6_csv(tmp_path / "train.csv", 30, 3), write_6x6_csv(tmp_path / "test.csv", 6, 4)
    build_dataset(train, test, tmp_path / "ds", BuildConfig(subsample_size=None, num_aug=2, val_size=4))
    split = load_split(tmp_path / "ds", "train")
    labels = split.labels.astype(int) - 1
    assert split.seq_len == 36 and valid_solutions(labels).all() and split.num_examples == 3 * split.num_groups


@needs_generic_symmetry
def test_6x6_split_and_leak_check(tmp_path):
    from cgar.data.split import check_leaks, split_pool

    write_6x6_csv(tmp_path / "pool.csv", 30, 5)
    summary = split_pool([tmp_path / "pool.csv"], tmp_path / "tr.csv", tmp_path / "te.csv", test_size=5)
    assert summary["train_rows"] + summary["test_rows"] == summary["classes"] and summary["test_rows"] == 5
    assert check_leaks(tmp_path / "tr.csv", tmp_path / "te.csv")["leaks"] == 0
    assert check_leaks(tmp_path / "te.csv", tmp_path / "te.csv")["leaks"] == 5


def test_pool_files_must_share_the_first_files_grid(tmp_path, write_pairs_csv):
    from cgar.data.split import read_pool

    write_6x6_csv(tmp_path / "a.csv", 3, 0)
    nine, _, _ = write_pairs_csv("b.csv", 2, seed=0)
    with pytest.raises(DataError, match=r"b.csv:2: question has 81 characters, expected 36: the 6x6 grid of .*a.csv"):
        read_pool([tmp_path / "a.csv", nine])
    assert read_pool([tmp_path / "a.csv"]).questions.shape == (3, 36)


def test_mixed_grids_are_refused_naming_the_line(tmp_path):
    p6, s6 = pairs_6x6(2, 0)
    p9, s9 = random_pairs(1, 0)
    rows = [("x", format_grid(p6[0]), format_grid(s6[0]), 0), ("x", format_grid(p9[0]), format_grid(s9[0]), 0)]
    write_puzzle_csv(tmp_path / "mixed.csv", rows)
    write_6x6_csv(tmp_path / "test.csv", 3, 1)
    with pytest.raises(DataError, match=r"mixed.csv:3: question has 81 characters, expected 36: the 6x6 grid"):
        build_dataset(tmp_path / "mixed.csv", tmp_path / "test.csv", tmp_path / "ds", BuildConfig(num_aug=0))
    # a 9x9 test CSV for a 6x6 training CSV: one build, one grid
    write_puzzle_csv(tmp_path / "test9.csv", [("x", format_grid(p9[0]), format_grid(s9[0]), 0)])
    with pytest.raises(DataError, match=r"test9.csv: holds 9x9 grids, the training CSV .* 6x6 ones"):
        build_dataset(tmp_path / "test.csv", tmp_path / "test9.csv", tmp_path / "ds", BuildConfig(num_aug=0))
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("edit, match", [
    ({"vocab_size": 11}, r"vocab_size is 11, expected 8 for seq_len 36 \(a 6x6 grid"),
    ({"seq_len": 40}, r"seq_len is 40, expected the cells of a supported grid: 81 \(9x9\), 36 \(6x6\) or 16 \(4x4\)"),
    ({"grid": "9x9"}, r"grid is '9x9', but seq_len 36 is a 6x6 grid"),
])
def test_inconsistent_dataset_json_is_refused_naming_the_field(data_6x6, tmp_path, edit, match):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(data_6x6, ds)
    meta_path = ds / "test" / "dataset.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), **edit}))
    with pytest.raises(DataError, match=match) as e:
        load_split(ds, "test")
    assert e.value.where == str(meta_path)


def test_train_evaluate_and_trace_on_6x6(data_6x6, tmp_path):
    from cgar.engine import compute_init
    from cgar.flops import run_flops
    from cgar.report.analysis_figures import _grid
    from cgar.report.collect import read_trace
    from cgar.report.plotting import plt
    from cgar.trace import main as trace_main
    from cgar.train import Trainer

    torch.set_num_threads(1)
    cfg = config_from_dict({
        "data_dir": str(data_6x6),
        "model": {"hidden_size": 32, "num_heads": 2, "halt_max_steps": 2, "H_cycles": 1, "L_cycles": 1},
        "train": {"global_batch_size": 8, "epochs": 4, "epochs_per_iter": 1, "max_steps": 4, "lr_warmup_steps": 1,
                  "log_every": 2, "checkpoint_every": 1000, "device": "cpu", "tensorboard": False}})
    run = tmp_path / "run"
    Trainer(cfg, run, compute_init("cpu")).run()
    payload = torch.load(run / "model.pt", weights_only=False)
    assert (payload["model_config"]["seq_len"], payload["model_config"]["vocab_size"]) == (36, 8)
    assert run_flops(cfg, 4)["model"]["seq_len"] == 36  # FLOPs of the model the data asks for

    env = {k: v for k, v in os.environ.items()  # the Trainer's process group set these in this process
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", "cgar.evaluate", "--checkpoint", str(run / "model.pt"), "--data",
                        str(data_6x6), "--out-dir", str(run), "--batch-size", "4", "--device", "cpu"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((run / "eval.json").read_text())
    assert rec["num_puzzles"] == 8

    assert trace_main(["--checkpoint", str(run / "model.pt"), "--data", str(data_6x6), "--index", "1",
                       "--out", str(run / "trace.json")]) == 0
    trace = read_trace(run / "trace.json")  # the report's check accepts 36-cell grids
    assert len(trace["puzzle"]) == 36 and all(len(p) == 36 and max(p) <= 6 for p in trace["predictions"])
    fig, ax = plt.subplots()
    _grid(ax, trace, 1)
    assert ax.get_title().endswith("/36") and len(ax.lines) == 4 + 3  # box lines: 4 horizontal, 3 vertical
    plt.close(fig)


def test_a_9x9_model_on_6x6_data_is_refused(data_6x6, data_dir, tmp_path):
    """A checkpoint of another grid is refused naming it, before torch fails on the shapes."""
    import dataclasses

    from cgar.model import TRM, TRMConfig
    from cgar.trace import main as trace_main

    mcfg = TRMConfig(hidden_size=32, num_heads=2, halt_max_steps=2, H_cycles=1, L_cycles=1)  # 81 / 11
    path = tmp_path / "m9.pt"
    torch.save({"model_config": dataclasses.asdict(mcfg), "state_dict": TRM(mcfg).state_dict()}, path)
    assert trace_main(["--checkpoint", str(path), "--data", str(data_6x6), "--out", str(tmp_path / "t.json")]) == 2
    with pytest.raises(DataError, match=r"m9.pt: model has seq_len 81 / vocab_size 11, but .* holds 6x6 grids"):
        load_split(data_6x6, "test").fitting(TRM(mcfg), path)
