"""In-training evaluation (cgar/train_eval.py), the validation split, snapshots and model_best.pt, the schedule home."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from cgar.data.build import BuildConfig, build_dataset
from cgar.data.loader import load_split
from cgar.data.puzzle_csv import write_puzzle_csv
from cgar.data.split import check_leaks
from cgar.evaluate import Results, load_checkpoint, read_checkpoint
from cgar.schedule import net_macs, step_flops, step_flops_fwd_effective
from cgar.sudoku.grid import format_grid
from cgar.sudoku.symmetry import apply_symmetries, random_symmetries
from cgar.train_eval import TIMING_KEYS, evaluate_split, is_eval_step, point_metrics, subsample_indices
from tests.conftest import random_pairs
from tests.test_train import TINY_MODEL

# ----------------------------------------------------------------------------- pure helpers


def test_eval_steps_are_the_multiples_and_the_last():
    assert [s for s in range(1, 24) if is_eval_step(s, 23, 5)] == [5, 10, 15, 20, 23]
    assert [s for s in range(1, 21) if is_eval_step(s, 20, 5)] == [5, 10, 15, 20]  # the last is a multiple
    assert not any(is_eval_step(s, 20, 0) for s in range(1, 21))  # 0 = off, not even the last step


def test_eval_subsample_is_fixed_sorted_and_whole_when_small():
    a = subsample_indices(100, 10)
    assert len(a) == len(set(a.tolist())) == 10 and (np.diff(a) > 0).all() and a.max() < 100
    np.testing.assert_array_equal(a, subsample_indices(100, 10))  # seed 0 always: same puzzles for every run
    assert not np.array_equal(a, subsample_indices(100, 10, seed=1))
    np.testing.assert_array_equal(subsample_indices(7, 10), np.arange(7))


def test_point_metrics_by_hand():
    # 2 puzzles, 2 steps; at the last step: puzzle 0 has 81/81 right (blanks 50/50), puzzle 1 has 71/81 (blanks 40/50)
    res = Results.empty(2, 2)
    res.add(np.array([0, 1]))
    res.cells[:] = [[70, 81], [60, 71]]
    res.n_cells[:] = 81
    res.blank_cells[:] = [[39, 50], [29, 40]]
    res.n_blank[:] = 50
    res.q_halt[:] = [[-1.0, 2.0], [-1.0, -3.0]]
    res.steps_run[:] = 2
    m = point_metrics(res)
    assert m["num_puzzles"] == 2 and m["exact_accuracy"] == 0.5
    assert m["token_accuracy"] == pytest.approx((81 + 71) / 162)
    assert m["blank_token_accuracy"] == pytest.approx(90 / 100)
    # ACT: puzzle 0 halts at step 2 (q > 0) solved; puzzle 1 runs to the cap unsolved without firing: both agree
    assert m["act"] == {"exact_accuracy": 0.5, "mean_halt_step": 2.0, "halting_accuracy": 1.0}


def test_schedule_is_the_one_home_and_flops_no_longer_imports_train():
    code = "import sys, cgar.flops; assert 'cgar.train' not in sys.modules, 'cgar.flops imported cgar.train'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from cgar import flops, train
    from cgar.model import TRMConfig

    assert flops.step_flops is step_flops and train.depth_for is flops.depth_for
    cfg = TRMConfig(hidden_size=32, halt_max_steps=4)
    # forward net applications only: T (n + 1) per sample, 2 FLOPs per MAC
    assert step_flops_fwd_effective(cfg, 2, 3, 5) == 2 * 5 * 2 * 4 * net_macs(cfg)
    assert step_flops_fwd_effective(cfg, 2, 3, 5) < step_flops(cfg, 2, 3, 5, backward=False)  # no heads


# ----------------------------------------------------------------------------- the validation split


def _csv(path, puzzles, solutions):
    write_puzzle_csv(path, [("x", format_grid(p), format_grid(s), 0) for p, s in zip(puzzles, solutions)])


def test_val_split_is_carved_before_subsampling_and_disjoint_by_canonical_form(tmp_path):
    p, s = random_pairs(30, seed=3)
    # rows 30..33 are symmetry copies of rows 0..3: whichever lands in val, its twin must not stay in train
    rng = np.random.default_rng(0)
    syms = random_symmetries(rng, 4)
    p = np.concatenate([p, apply_symmetries(p[:4], syms)])
    s = np.concatenate([s, apply_symmetries(s[:4], syms)])
    _csv(tmp_path / "train.csv", p, s)
    tp, ts = random_pairs(6, seed=4)
    _csv(tmp_path / "test.csv", tp, ts)
    dropped = 0
    for seed in range(4):  # several draws, so that some val puzzle has its twin in the pool
        out = tmp_path / f"ds{seed}"
        m = build_dataset(tmp_path / "train.csv", tmp_path / "test.csv", out,
                          BuildConfig(subsample_size=None, num_aug=2, seed=seed, val_size=10))
        val = load_split(out, "val")
        assert val.num_examples == 10 and val.num_groups == 10  # never augmented
        assert m["splits"]["val"]["examples"] == 10
        assert check_leaks(out / "train", out / "val", all_examples=True)["leaks"] == 0
        assert check_leaks(out / "test", out / "val")["leaks"] == 0
        d = m["splits"]["val"]["train_rows_dropped_as_equivalent"]
        assert m["splits"]["train"]["groups"] == 34 - 10 - d  # the whole rest of the pool, less the twins
        dropped += d
    assert dropped > 0
    # the leak checker does see a val puzzle that IS a symmetry of a training puzzle
    one = random_symmetries(rng, 1)
    _csv(tmp_path / "bad_val.csv", apply_symmetries(p[5:6], one), apply_symmetries(s[5:6], one))
    assert check_leaks(tmp_path / "train.csv", tmp_path / "bad_val.csv")["leaks"] == 1


def test_val_size_zero_keeps_the_old_subsample(tmp_path):
    p, s = random_pairs(20, seed=5)
    _csv(tmp_path / "train.csv", p, s)
    _csv(tmp_path / "test.csv", p[:3], s[:3])
    a = build_dataset(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "a", BuildConfig(subsample_size=5))
    b = build_dataset(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "b",
                      BuildConfig(subsample_size=5, val_size=3))
    assert "val" not in a["splits"] and not (tmp_path / "a" / "val").exists()
    assert a["files"]["train/all__inputs.npy"] != b["files"]["train/all__inputs.npy"]
    va = load_split(tmp_path / "b", "val")
    train_b = load_split(tmp_path / "b", "train")
    originals = train_b.inputs[train_b.group_indices[:-1]]
    assert not {r.tobytes() for r in va.inputs} & {r.tobytes() for r in originals}


def test_check_cli_covers_val(tmp_path):
    p, s = random_pairs(20, seed=6)
    _csv(tmp_path / "train.csv", p, s)
    _csv(tmp_path / "test.csv", *random_pairs(4, seed=7))
    build_dataset(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "ds",
                  BuildConfig(subsample_size=None, num_aug=1, val_size=4))
    cmd = [sys.executable, "-m", "cgar.data", "check", "--quiet", "--train", str(tmp_path / "ds/train"),
           "--test", str(tmp_path / "ds/test"), "--val", str(tmp_path / "ds/val")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["leaks"] == 0 and rep["val_vs_train"]["test_puzzles"] == 4 and rep["val_vs_test"]["leaks"] == 0
    _csv(tmp_path / "leaky_val.csv", p[:2], s[:2])  # two training puzzles posing as val
    r = subprocess.run(cmd[:-1] + [str(tmp_path / "leaky_val.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and json.loads(r.stdout)["val_vs_train"]["leaks"] == 2 and "val puzzle" in r.stderr


# ----------------------------------------------------------------------------- training with evaluation


@pytest.fixture(scope="module")
def val_data(tmp_path_factory):
    """46 puzzles in the train CSV (6 become val), 8 test puzzles."""
    root = tmp_path_factory.mktemp("val_data")
    _csv(root / "train.csv", *random_pairs(46, 1))
    _csv(root / "test.csv", *random_pairs(8, 2))
    build_dataset(root / "train.csv", root / "test.csv", root / "ds",
                  BuildConfig(subsample_size=None, num_aug=7, val_size=6))
    return root / "ds"


def eval_run_config(data_dir, **train) -> dict:
    return {"data_dir": str(data_dir), "model": dict(TINY_MODEL),
            "train": {"global_batch_size": 16, "epochs": 8, "epochs_per_iter": 4, "lr": 3e-3, "lr_warmup_steps": 5,
                      "checkpoint_every": 7, "log_every": 5, "device": "cpu", "seed": 0, "eval_every": 4,
                      "eval_subsample": 5, "eval_batch_size": 4, "keep_snapshots": 2, "grad_stats_every": 3,
                      "grad_stats_chunks": 4, **train}}


def train_cli(cfg: dict, out, kill_at: int = 0, nproc: int = 1) -> subprocess.CompletedProcess:
    cfg_path = out.with_suffix(".yaml")
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CGAR_FAULT_KILL_AT_STEP")}
    env.update(OMP_NUM_THREADS="1", **({"CGAR_FAULT_KILL_AT_STEP": str(kill_at)} if kill_at else {}))
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    return subprocess.run([sys.executable, *launch, "-m", "cgar.train", "--config", str(cfg_path), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)


def read_jsonl(path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in (*TIMING_KEYS, "grad_stats_wall_s", "wall_s")} for r in records]


@pytest.fixture(scope="module")
def eval_run(val_data, tmp_path_factory):
    """One uninterrupted run: 2 iterations (8 epochs / 4 per iteration) x floor(4 x 40 / 16) = 20 steps."""
    out = tmp_path_factory.mktemp("eval_run") / "run"
    r = train_cli(eval_run_config(val_data), out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_eval_curve_points_snapshots_and_best(eval_run, val_data):
    curve = read_jsonl(eval_run / "eval_curve.jsonl")
    steps = [r["step"] for r in curve]
    metrics = read_jsonl(eval_run / "metrics.jsonl")
    total = metrics[-1]["step"]
    assert steps == [s for s in range(1, total + 1) if s % 4 == 0 or s == total]
    by_step = {m["step"]: m for m in metrics}
    for r in curve:
        assert r["test"]["num_puzzles"] == 5 and r["val"]["num_puzzles"] == 6
        for part in ("test", "val"):
            for key in ("exact_accuracy", "token_accuracy", "blank_token_accuracy"):
                assert 0.0 <= r[part][key] <= 1.0
            assert 1.0 <= r[part]["act"]["mean_halt_step"] <= TINY_MODEL["halt_max_steps"]
        assert r["eval_wall_s"] > 0 and r["flops_fwd_effective"] > 0
        if r["step"] in by_step:  # same accounting as metrics.jsonl
            assert r["flops"] == by_step[r["step"]]["flops"]
    walls = [r["train_wall_s"] for r in curve]
    assert walls == sorted(walls) and walls[-1] <= metrics[-1]["wall_s"] + 1e-6
    # retention 2: the two newest plus the best by val (ties: earliest step)
    best = max(curve, key=lambda r: (r["val"]["exact_accuracy"], -r["step"]))["step"]
    kept = sorted(int(p.stem[4:]) for p in (eval_run / "snapshots").glob("step*.pt"))
    assert kept == sorted({*steps[-2:], best})
    mb = read_checkpoint(eval_run / "model_best.pt")
    assert mb["selected_on"] == "val" and mb["selection_metric"] == "exact_accuracy" and mb["step"] == best
    final = read_checkpoint(eval_run / "model.pt")
    snap = read_checkpoint(eval_run / "snapshots" / f"step{total:07d}.pt")
    assert all(torch.equal(final["state_dict"][k], v) for k, v in snap["state_dict"].items())
    # the finished run keeps only its final outputs (what a same-config rerun re-exports) and its run tag
    assert sorted(p.name for p in (eval_run / "ckpt").iterdir()) == ["final", "run_tag"]
    kept = sorted(p.name for p in (eval_run / "ckpt" / "final").iterdir())
    assert kept == ["eval_curve.jsonl", "grad_stats.jsonl", "metrics.jsonl", "model.pt", "model_best.pt", "snapshots"], kept
    assert (eval_run / "ckpt" / "final" / "eval_curve.jsonl").read_bytes() == (eval_run / "eval_curve.jsonl").read_bytes()


def test_eval_point_equals_an_evaluation_of_its_snapshot(eval_run, val_data):
    """The in-training numbers are what cgar.evaluate's loop gives on the saved snapshot, in another batching."""
    curve = read_jsonl(eval_run / "eval_curve.jsonl")
    last = curve[-1]
    model = load_checkpoint(eval_run / "snapshots" / f"step{last['step']:07d}.pt")
    val = load_split(val_data, "val")
    assert evaluate_split(model, val, batch_size=3, rank=0, world=1) == last["val"]


def test_kill_and_resume_reproduces_the_eval_curve(eval_run, val_data, tmp_path):
    out = tmp_path / "run"
    r = train_cli(eval_run_config(val_data), out, kill_at=10)  # after the eval at 8, past the checkpoint at 7
    assert r.returncode != 0 and (out / "ckpt" / "eval_curve.jsonl").is_file(), r.stderr[-2000:]
    assert [p["step"] for p in read_jsonl(out / "ckpt" / "eval_curve.jsonl")] == [4, 8]
    r = train_cli(eval_run_config(val_data), out)
    assert r.returncode == 0 and "resumed at step 7" in r.stdout, r.stderr[-3000:]
    for name in ("eval_curve.jsonl", "grad_stats.jsonl", "metrics.jsonl"):
        assert untimed(read_jsonl(out / name)) == untimed(read_jsonl(eval_run / name)), name
    a, b = read_checkpoint(out / "model_best.pt"), read_checkpoint(eval_run / "model_best.pt")
    assert a["step"] == b["step"] and all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == sorted(
        p.name for p in (eval_run / "snapshots").iterdir())


def test_without_val_model_best_is_the_final_model(data_dir, tmp_path):
    out = tmp_path / "run"
    (out / "snapshots").mkdir(parents=True)  # left by an earlier run with evaluation in this folder
    (out / "eval_curve.jsonl").write_text('{"step": 1}\n')
    r = train_cli(eval_run_config(data_dir, epochs=4, eval_every=0), out)
    assert r.returncode == 0, r.stderr[-3000:]
    mb, final = read_checkpoint(out / "model_best.pt"), read_checkpoint(out / "model.pt")
    assert mb["selected_on"] == "final" and mb["step"] == final["step"]
    assert all(torch.equal(final["state_dict"][k], v) for k, v in mb["state_dict"].items())
    assert not (out / "eval_curve.jsonl").exists() and not (out / "snapshots").exists()


def test_evaluation_and_grad_stats_leave_training_bitwise_unchanged(eval_run, val_data, tmp_path):
    out = tmp_path / "plain"
    r = train_cli(eval_run_config(val_data, eval_every=0, grad_stats_every=0), out)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_checkpoint(out / "model.pt")["state_dict"], read_checkpoint(eval_run / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert untimed(read_jsonl(out / "metrics.jsonl")) == untimed(read_jsonl(eval_run / "metrics.jsonl"))
    assert not (out / "grad_stats.jsonl").exists()
    stats = read_jsonl(eval_run / "grad_stats.jsonl")
    assert [s["step"] for s in stats] == [3, 6, 9, 12, 15, 18]
    S = TINY_MODEL["halt_max_steps"]
    for s in stats:
        assert sum(s["slots_by_step"]) == 16 and len(s["grad_norm_by_step"]) == S
        assert all((v is None) == (c == 0) for v, c in zip(s["grad_norm_by_step"], s["slots_by_step"]))
        assert s["var_unweighted"] > 0 and s["var_unweighted_rel"] > 0
        assert s["variance_reduction"] == 0.0 and s["var_weighted"] == s["var_unweighted"]  # baseline: no weights


def test_tensorboard_events_hold_the_scalars(eval_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(eval_run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/exact_accuracy", "eval/test/exact_accuracy", "eval/val/act/mean_halt_step",
            "grad_stats/variance_reduction", "grad_norm_by_step/t01"} <= tags
    curve = read_jsonl(eval_run / "eval_curve.jsonl")
    events = acc.Scalars("eval/test/token_accuracy")
    assert [e.step for e in events] == [r["step"] for r in curve]
    assert [e.value for e in events] == pytest.approx([r["test"]["token_accuracy"] for r in curve], rel=1e-6)


def test_two_ranks_give_the_one_rank_curve_and_grad_stats(val_data, tmp_path):
    """Sharded evaluation and rank-summed gradient statistics (chunks that straddle or miss a rank's slots), on the
    CGAR variant: 2 ranks agree with 1 rank up to float summation order."""
    cfg = {**eval_run_config(val_data, epochs=4, grad_stats_every=2, keep_snapshots=0),
           "pdc": {"enabled": True, "stages": [[0.0, 1, 1], [0.5, 2, 2]]}, "hsw": {"enabled": True}}
    one, two = tmp_path / "one", tmp_path / "two"
    assert (r := train_cli(cfg, one)).returncode == 0, r.stderr[-3000:]
    assert (r := train_cli(cfg, two, nproc=2)).returncode == 0, r.stderr[-3000:]
    curve_a, curve_b = untimed(read_jsonl(one / "eval_curve.jsonl")), untimed(read_jsonl(two / "eval_curve.jsonl"))
    assert [r["step"] for r in curve_a] == [r["step"] for r in curve_b] == [4, 8, 10]
    # the sharded in-training evaluation is exactly a 1-rank evaluation of the same (EMA) weights ...
    for point in curve_b:
        model = load_checkpoint(two / "snapshots" / f"step{point['step']:07d}.pt")
        assert evaluate_split(model, load_split(val_data, "val"), 4, 0, 1) == point["val"], point["step"]
    # ... and the weights of 1 and 2 ranks agree to float summation order, which may flip a near-tied argmax:
    # allow 2 cells per split in token accuracies, 1 puzzle in puzzle-level ones
    for ra, rb in zip(curve_a, curve_b):
        for part in ("test", "val"):
            a, b, n = ra[part], rb[part], ra[part]["num_puzzles"]
            assert b["num_puzzles"] == n
            for key in ("token_accuracy", "blank_token_accuracy"):
                assert abs(b[key] - a[key]) <= 2 / (81 * n) + 1e-12, (ra["step"], part, key)
            for x, y in ((a["exact_accuracy"], b["exact_accuracy"]), (a["act"]["exact_accuracy"],
                                                                      b["act"]["exact_accuracy"])):
                assert abs(x - y) <= 1 / n + 1e-12, (ra["step"], part)
        assert rb["flops"] == ra["flops"] and rb["flops_fwd_effective"] == ra["flops_fwd_effective"]
    stats_a, stats_b = read_jsonl(one / "grad_stats.jsonl"), read_jsonl(two / "grad_stats.jsonl")
    assert [r["step"] for r in stats_a] == [r["step"] for r in stats_b] == [2, 4, 6, 8, 10]
    for ra, rb in zip(stats_a, stats_b):
        assert rb["slots_by_step"] == ra["slots_by_step"]
        for key in ("var_weighted", "var_unweighted", "var_weighted_rel", "var_unweighted_rel", "variance_reduction"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-3, abs=1e-6), key  # 0 up to rounding: uniform weights
        assert [x is None for x in rb["grad_norm_by_step"]] == [x is None for x in ra["grad_norm_by_step"]]
        assert [x for x in rb["grad_norm_by_step"] if x] == pytest.approx(
            [x for x in ra["grad_norm_by_step"] if x], rel=1e-3)
    # (here every slot is at the same supervision step, as no q_halt fires this early: uniform HSW weights, so no
    # variance reduction; tests/test_grad_stats.py measures a carry of mixed steps, where there is one)
