"""Evaluation: metrics on hand-built arrays, ACT compaction == the ACT view of the full pass, full depth whatever
PDC did, 1 rank == 2 ranks through the CLI, clear errors for bad checkpoints."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from cgar.config import config_from_dict, config_to_dict
from cgar.data.build import BuildConfig, build_dataset
from cgar.data.loader import eval_batches, load_split
from cgar.eval_metrics import halt_steps, rating_labels, summarize, summarize_all
from cgar.eval_results import Results, read_table, to_arrow
from cgar.evaluate import evaluate_act, evaluate_full, load_checkpoint, local_count
from cgar.io_utils import DataError
from cgar.model import TRM, TRMConfig

S = 6  # supervision steps of the tiny model
TINY = TRMConfig(hidden_size=32, num_heads=2, halt_max_steps=S, H_cycles=2, L_cycles=2)
N_TEST = 13  # with batch 4: a last batch of 1 row, so rank 1 of 2 gets only padding there


# ----------------------------------------------------------------------------- metrics on hand-built arrays

def test_metrics_hand_computed():
    # 4 puzzles, 3 steps, 2 label cells each (n_cells = 2); solved = cells == 2
    cells = np.array([[2, 2, 2],    # solved from step 1
                      [1, 2, 1],    # solved at step 2 only
                      [0, 1, 1],    # never solved
                      [1, 1, 2]],   # solved at step 3
                     np.uint8)
    n_cells = np.full(4, 2, np.uint8)
    q = np.array([[1.0, 1.0, 1.0],      # halts at 1, solved: agrees
                  [-1.0, -1.0, -1.0],   # runs to 3 (cap), unsolved there, no fire: agrees
                  [-1.0, 0.5, 0.5],     # halts at 2, unsolved: premature halt, disagrees
                  [-1.0, -1.0, 0.0]],   # runs to 3, solved but q = 0 does not fire: disagrees
                 np.float32)
    steps_run = np.full(4, 3, np.uint8)
    assert halt_steps(q, steps_run).tolist() == [1, 3, 2, 3]
    m = summarize(cells, n_cells, q, steps_run)
    assert m["n"] == 4
    assert m["exact_accuracy"] == 0.5  # puzzles 0 and 3 at step 3
    assert m["token_accuracy"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    # TRM's q_halt_accuracy at the last step uses q >= 0: [T==T, F==F, T==F, T==T] -> 3/4
    assert m["q_halt_accuracy"] == 0.75
    assert m["exact_accuracy_by_step"] == [0.25, 0.5, 0.5]
    assert m["solved_at_any_step"] == 0.75 and m["mean_first_solved_step"] == pytest.approx((1 + 2 + 3) / 3)
    act = m["act"]
    assert act["exact_accuracy"] == 0.5  # solved at the halting step: puzzles 0 (step 1) and 3 (step 3)
    assert act["token_accuracy"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert act["mean_halt_step"] == pytest.approx(9 / 4) and act["step_reduction"] == pytest.approx(1 - 9 / 12)
    assert act["halt_step_histogram"] == [1, 1, 2]
    assert act["halting_accuracy"] == 0.5  # puzzles 0 and 1
    assert act["halted_by_q"] == 0.5 and act["halt_precision"] == 0.5

    # the same puzzles evaluated in ACT mode: steps after the halt never ran (NaN q, no cells)
    run = halt_steps(q, steps_run).astype(np.uint8)
    q_act = np.where(np.arange(3) < run[:, None], q, np.nan).astype(np.float32)
    cells_act = np.where(np.arange(3) < run[:, None], cells, 0).astype(np.uint8)
    m_act = summarize(cells_act, n_cells, q_act, run)
    assert m_act["act"] == act and m_act["exact_accuracy"] is None and m_act["exact_accuracy_by_step"] is None

    # groups: per rating bucket and per source
    assert rating_labels(np.array([0, 1, 2, 3, 9, 10, 29, 30, 99, 100, 5000])).tolist() == \
        ["0", "1-2", "1-2", "3-9", "3-9", "10-29", "10-29", "30-99", "30-99", "100+", "100+"]
    groups = summarize_all(cells, n_cells, q, steps_run, ratings=np.array([0, 0, 50, 50]),
                           sources=np.array(["a", "b", "a", "b"], dtype=object))
    assert list(groups["by_rating"]) == ["0", "30-99"]  # empty buckets left out
    assert groups["by_rating"]["0"]["exact_accuracy"] == 0.5 and groups["by_rating"]["0"]["n"] == 2
    assert groups["by_rating"]["30-99"]["act"]["halting_accuracy"] == 0.0
    assert groups["by_source"]["a"]["act"]["halt_step_histogram"] == [1, 1, 0]
    assert groups["overall"] == m


def test_blank_cell_accuracy_hand_computed():
    # 3 puzzles, 2 steps, 4 label cells each; the givens (2, 1 and all 4) are always right
    n_cells, n_blank = np.full(3, 4, np.uint8), np.array([2, 3, 0], np.uint8)
    blank = np.array([[0, 1],    # 1 of its 2 blanks right at step 2
                      [1, 3],    # all 3 blanks right at step 2
                      [0, 0]],   # no blank cell: left out of the blank accuracy, not counted as 0
                     np.uint8)
    cells = blank + (n_cells - n_blank)[:, None]
    q = np.array([[1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]], np.float32)  # puzzle 0 halts at step 1
    steps_run = np.full(3, 2, np.uint8)
    m = summarize(cells, n_cells, q, steps_run, blank, n_blank)
    assert m["token_accuracy"] == pytest.approx((3 / 4 + 1 + 1) / 3)  # the givens count: higher
    assert m["blank_token_accuracy"] == pytest.approx((1 / 2 + 3 / 3) / 2)
    assert m["act"]["token_accuracy"] == pytest.approx((2 / 4 + 1 + 1) / 3)
    assert m["act"]["blank_token_accuracy"] == pytest.approx((0 / 2 + 3 / 3) / 2)  # puzzle 0 at its halt, step 1
    assert summarize(cells, n_cells, q, steps_run)["blank_token_accuracy"] is None  # no blank counts: None
    g = summarize_all(cells, n_cells, q, steps_run, ratings=np.array([0, 0, 5]),
                      sources=np.array(["a", "b", "a"], dtype=object), blank_cells=blank, n_blank=n_blank)
    assert g["by_source"]["a"]["blank_token_accuracy"] == pytest.approx(1 / 2)
    assert g["by_source"]["b"]["blank_token_accuracy"] == 1.0
    assert g["by_rating"]["0"]["blank_token_accuracy"] == pytest.approx(3 / 4)
    assert g["by_rating"]["3-9"]["blank_token_accuracy"] is None  # only the all-given puzzle


def _hand_results() -> Results:
    res = Results.empty(3, 2)
    res.add(np.array([0, 1, 2]))
    res.cells[:], res.n_cells[:], res.steps_run[:] = [[2, 3], [2, 4], [4, 4]], 4, 2
    res.q_halt[:] = [[1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]]
    res.blank_cells[:], res.n_blank[:] = [[0, 1], [1, 3], [0, 0]], [2, 3, 0]
    return res


def test_blank_columns_round_trip_and_old_tables(tmp_path):
    import pyarrow.parquet as pq

    from cgar.eval_results import write_outputs

    res = _hand_results()
    pq.write_table(to_arrow(res, None, None), tmp_path / "new.parquet")
    back = Results.from_table(read_table(tmp_path / "new.parquet"))
    for name in ("example", "cells", "n_cells", "q_halt", "steps_run", "blank_cells", "n_blank"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name), err_msg=name)
    assert back.summary() == res.summary()
    assert back.summary()["overall"]["blank_token_accuracy"] == pytest.approx(0.75)
    # a table written before the blank columns existed (cached results): loads and summarises, blank accuracy None
    pq.write_table(to_arrow(res, None, None).drop(["n_blank", "blank_cells_correct"]), tmp_path / "old.parquet")
    old = Results.from_table(read_table(tmp_path / "old.parquet"))
    assert old.blank_cells is None and old.n_blank is None
    s_old, s_new = old.summary()["overall"], res.summary()["overall"]
    assert s_old["blank_token_accuracy"] is None and s_old["act"]["blank_token_accuracy"] is None
    assert s_old["token_accuracy"] == s_new["token_accuracy"]
    assert Results.merge([back, old]).blank_cells is None  # old and new shards: merged without blank counts
    rec = write_outputs(tmp_path, "eval", Results.merge([old]), None, None, {})  # as the shard merge does
    assert rec["overall"]["blank_token_accuracy"] is None and "n_blank" not in read_table(tmp_path / "eval.parquet")


def test_local_count_matches_eval_batches(tmp_path):
    for n, gb, world in ((13, 4, 2), (8, 4, 4), (3, 8, 2), (768 * 3 + 5, 768, 4)):
        starts = range(0, n, gb)
        for r in range(world):
            want = sum(len(np.arange(b, min(b + gb, n))[r * gb // world:(r + 1) * gb // world]) for b in starts)
            assert local_count(n, gb, r, world) == want


# ----------------------------------------------------------------------------- a tiny dataset and checkpoint

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from cgar.data.puzzle_csv import write_puzzle_csv
    from cgar.sudoku.grid import format_grid
    from tests.conftest import random_pairs

    root = tmp_path_factory.mktemp("eval_data")
    for name, n, seed in (("train.csv", 4, 1), ("test.csv", N_TEST, 2)):
        p, s = random_pairs(n, seed)
        rows = [("src_a" if i % 3 else "src_b", format_grid(a), format_grid(b), i * 9) for i, (a, b) in
                enumerate(zip(p, s))]  # ratings 0..108 cover every bucket
        write_puzzle_csv(root / name, rows)
    build_dataset(root / "train.csv", root / "test.csv", root / "ds", BuildConfig(subsample_size=None, num_aug=0))
    return root / "ds"


def tiny_model(seed: int = 0) -> TRM:
    """Random TRM whose q_head reads y (the init has weight 0, bias -5: never halts), so halting is spread."""
    torch.manual_seed(seed)
    model = TRM(TINY)
    with torch.no_grad():
        model.q_head.weight.normal_(0, 3 * TINY.hidden_size**-0.5)
        model.q_head.bias.fill_(-1.5)
    return model


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory):
    """model.pt in cgar.train's export format, from a run config with PDC on (shallow stages)."""
    run = config_from_dict({"data_dir": str(data_dir), "pdc": {"enabled": True, "stages": [[0.0, 1, 1]]},
                            "model": {k: getattr(TINY, k) for k in ("hidden_size", "num_heads", "halt_max_steps",
                                                                    "H_cycles", "L_cycles")}})
    payload = {"model_config": dataclasses.asdict(TINY), "run_config": config_to_dict(run),
               "state_dict": tiny_model().state_dict(), "step": 123, "weights": "ema"}
    path = tmp_path_factory.mktemp("run") / "model.pt"
    torch.save(payload, path)
    return path


def _full(model, split, batch=4):
    res = Results.empty(split.num_examples, S)
    return evaluate_full(model, eval_batches(split, batch), res)


def test_compaction_equals_full_pass(data_dir, checkpoint):
    torch.set_num_threads(1)
    split = load_split(data_dir, "test")
    model = load_checkpoint(checkpoint, "cpu")
    full = _full(model, split)
    act = evaluate_act(model, eval_batches(split, 8), Results.empty(N_TEST, S), slots=3)
    act = Results.merge([act])
    assert act.example.tolist() == list(range(N_TEST))
    h = halt_steps(full.q_halt, full.steps_run)
    assert len(set(h.tolist())) >= 3, f"halting not spread enough to test anything: {h}"
    assert act.steps_run.tolist() == h.tolist()  # each puzzle computed exactly up to its halting step
    ran = np.arange(S) < h[:, None]
    np.testing.assert_array_equal(act.cells[ran], full.cells[ran])
    np.testing.assert_allclose(act.q_halt[ran], full.q_halt[ran], rtol=1e-5, atol=1e-5)
    assert np.isnan(act.q_halt[~ran]).all()
    np.testing.assert_array_equal(act.blank_cells[ran], full.blank_cells[ran])
    inputs, labels = (np.asarray(split.inputs[:N_TEST]), np.asarray(split.labels[:N_TEST]))
    np.testing.assert_array_equal(full.n_blank, ((inputs == 1) & (labels != -100)).sum(1))  # 1: the blank token
    assert (full.blank_cells <= full.cells).all() and (0 < full.n_blank).all() and (full.n_blank < full.n_cells).all()
    m_full, m_act = (r.summary()["overall"]["act"] for r in (full, act))
    assert m_act == m_full


def test_full_depth_regardless_of_pdc(data_dir, checkpoint, monkeypatch):
    assert torch.load(checkpoint, weights_only=True)["run_config"]["pdc"]["enabled"]
    split = load_split(data_dir, "test")
    model = load_checkpoint(checkpoint, "cpu")
    depths, recur = [], TRM.recur

    def spy(self, y, z, inputs, puzzle_identifiers, depth=None, slots=None):
        depths.append(depth)
        return recur(self, y, z, inputs, puzzle_identifiers, depth, slots)

    monkeypatch.setattr(TRM, "recur", spy)
    res = _full(model, split)
    assert depths and all(d in (None, (TINY.H_cycles, TINY.L_cycles)) for d in depths)
    # and the numbers are those of a hand-written 16-step loop at explicit full depth
    batch = next(eval_batches(split, N_TEST))[0]
    with torch.inference_mode():
        carry = model.initial_carry(N_TEST)
        for k in range(S):
            carry, out = model(carry, batch, depth=(TINY.H_cycles, TINY.L_cycles))
            np.testing.assert_allclose(res.q_halt[:, k], out.q_halt.numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- CLI, ranks, errors

def _cli(args, tmp_path, nproc=1):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc_per_node={nproc}"]
    return subprocess.run(launch + ["-m", "cgar.evaluate", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)


def _outputs(out, stem):
    rec = json.loads((out / f"{stem}.json").read_text())
    for k in ("wall_s", "puzzles_per_s", "world_size", "checkpoint"):
        rec.pop(k)
    return rec, read_table(out / f"{stem}.parquet")


def test_cli_one_rank_equals_two_ranks(data_dir, checkpoint, tmp_path):
    common = ["--checkpoint", checkpoint, "--data", data_dir, "--batch-size", 4, "--device", "cpu"]
    for name, nproc, mode in (("one", 1, "full"), ("two", 2, "full"), ("act2", 2, "act")):
        r = _cli(common + ["--out-dir", tmp_path / name, "--mode", mode], tmp_path, nproc)
        assert r.returncode == 0, r.stderr[-3000:]
    one, t1 = _outputs(tmp_path / "one", "eval")
    two, t2 = _outputs(tmp_path / "two", "eval")
    assert one["num_puzzles"] == N_TEST and one["step"] == 123 and one["depth"] == [2, 2]
    assert one == two
    assert t1.keys() == t2.keys() and t1["example"].tolist() == list(range(N_TEST))
    for k in t1:
        np.testing.assert_allclose(t2[k], t1[k], rtol=1e-5) if k == "q_halt" else \
            np.testing.assert_array_equal(t2[k], t1[k], err_msg=k)
    assert set(one["by_rating"]) == {"0", "3-9", "10-29", "30-99", "100+"}
    assert set(one["by_source"]) == {"src_a", "src_b"}
    assert sum(g["n"] for g in one["by_source"].values()) == N_TEST
    # ACT mode over 2 ranks with compaction: the same ACT metrics, and compute = sum of halting steps
    act, ta = _outputs(tmp_path / "act2", "eval_act")
    assert act["overall"]["act"] == one["overall"]["act"]
    assert act["by_rating"]["100+"]["act"] == one["by_rating"]["100+"]["act"]
    assert act["row_steps"] == int(t1["halt_step"].sum()) < one["row_steps"] == N_TEST * S
    np.testing.assert_array_equal(ta["halt_step"], t1["halt_step"])
    assert act["overall"]["exact_accuracy"] is None  # step-S metrics need the full pass


def test_bad_checkpoints(tmp_path, checkpoint, data_dir):
    with pytest.raises(DataError, match="checkpoint missing"):
        load_checkpoint(tmp_path / "nope.pt")
    good = checkpoint.read_bytes()
    for name, data in (("truncated.pt", good[: len(good) // 2]), ("garbage.pt", b"\x80not a checkpoint" * 10)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=f"{name}: unreadable or corrupt checkpoint"):
            load_checkpoint(tmp_path / name)
    torch.save({"state_dict": {}, "step": 1}, tmp_path / "nokeys.pt")
    with pytest.raises(DataError, match="lacks model_config"):
        load_checkpoint(tmp_path / "nokeys.pt")
    payload = torch.load(checkpoint, weights_only=True)
    torch.save({**payload, "model_config": {**payload["model_config"], "hidden_size": 64}}, tmp_path / "shape.pt")
    with pytest.raises(DataError, match="do not fit TRM"):
        load_checkpoint(tmp_path / "shape.pt")
    r = _cli(["--checkpoint", tmp_path / "truncated.pt", "--data", data_dir, "--out-dir", tmp_path / "o"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "truncated.pt" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_refuses_bad_input_at_once(tmp_path, checkpoint, data_dir):
    """Issue 11: bad arguments, an unwritable --out-dir, non-finite weights, an empty split and a changed dataset
    are refused with exit 2 before any evaluation, and nothing is written."""
    import shutil

    base = ["--checkpoint", checkpoint, "--data", data_dir, "--device", "cpu"]

    def refused(args, match):
        r = _cli(args, tmp_path)
        err = r.stderr.strip()
        assert r.returncode == 2 and re.search(match, err) and "Traceback" not in err, err[-2000:]
        return err

    for flag in ("--batch-size", "--limit"):
        refused(base + ["--out-dir", tmp_path / "o", flag, "0"], rf"argument {flag}: 0 must be >= 1")
    (tmp_path / "a_file").write_text("")
    err = refused(base + ["--out-dir", tmp_path / "a_file/sub"], r"a_file/sub: --out-dir is not writable")
    assert err.count("\n") == 0
    payload = torch.load(checkpoint, weights_only=True)
    state = dict(payload["state_dict"])
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone().fill_(float("nan"))
    torch.save({**payload, "state_dict": state}, tmp_path / "nan.pt")
    refused(["--checkpoint", tmp_path / "nan.pt", "--data", data_dir, "--out-dir", tmp_path / "o"],
            rf"nan.pt: non-finite weights in {re.escape(key)}")
    empty = tmp_path / "empty_ds"
    shutil.copytree(data_dir, empty)
    (empty / "manifest.json").unlink()  # as a dataset built by HRM/TRM's script: nothing to verify against
    for name, shape, dtype in (("inputs", (0, 81), np.uint8), ("labels", (0, 81), np.uint8),
                               ("puzzle_identifiers", (0,), np.int32), ("puzzle_indices", (1,), np.int32),
                               ("group_indices", (1,), np.int32), ("ratings", (0,), np.int32),
                               ("source_ids", (0,), np.int16)):
        np.save(empty / f"test/all__{name}.npy", np.zeros(shape, dtype))
    refused(["--checkpoint", checkpoint, "--data", empty, "--out-dir", tmp_path / "o"], r"test: has no puzzles")
    changed = tmp_path / "changed_ds"
    shutil.copytree(data_dir, changed)
    labels = changed / "test/all__labels.npy"
    raw = bytearray(labels.read_bytes())
    raw[-1] ^= 1
    labels.write_bytes(bytes(raw))
    refused(["--checkpoint", checkpoint, "--data", changed, "--out-dir", tmp_path / "o"],
            r"all__labels.npy: sha256 .* does not match manifest.json")
    assert not (tmp_path / "o").exists()  # nothing of the refused runs was written
