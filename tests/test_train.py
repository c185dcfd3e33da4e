"""Training loop: every variant learns, kill + resume equals an uninterrupted run, 1 rank equals 2 ranks."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from cgar.config import config_from_dict, config_to_dict
from cgar.engine import compute_init
from cgar.train import Trainer, depth_for, total_steps
from tests.conftest import final_state

TINY_MODEL = {"hidden_size": 32, "num_heads": 2, "halt_max_steps": 4, "H_cycles": 2, "L_cycles": 2}
VARIANTS = {
    "baseline": {},
    "pdc": {"pdc": {"enabled": True, "stages": [[0.0, 1, 1], [0.5, 2, 2]]}},
    "hsw": {"hsw": {"enabled": True}},
    "cgar": {"pdc": {"enabled": True, "stages": [[0.0, 1, 1], [0.5, 2, 2]]}, "hsw": {"enabled": True}},
}


def run_config(data_dir, **sections) -> dict:
    cfg = {"data_dir": str(data_dir), "model": dict(TINY_MODEL),
           "train": {"global_batch_size": 16, "epochs": 24, "epochs_per_iter": 4, "lr": 3e-3, "lr_warmup_steps": 5,
                     "checkpoint_every": 1000, "log_every": 5, "device": "cpu", "seed": 0}}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


def test_schedule_length_and_depths(data_dir):
    cfg = config_from_dict(run_config(data_dir, **VARIANTS["pdc"]))
    from cgar.data.loader import TrainStream, load_split

    stream = TrainStream(load_split(data_dir, "train"), 16, 0, 4)
    assert stream.batches_per_iter == 10 and total_steps(cfg, stream) == 60  # 6 iterations x floor(160/16)
    assert [depth_for(cfg, s, 60)[1:] for s in (1, 30, 31, 60)] == [(1, 1), (1, 1), (2, 2), (2, 2)]
    base = config_from_dict(run_config(data_dir))
    assert depth_for(base, 1, 60)[1:] == (2, 2)  # no PDC: full depth from the first step


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_learns(variant, data_dir, tmp_path):
    torch.set_num_threads(1)
    rt = compute_init("cpu")
    cfg = config_from_dict(run_config(data_dir, train={"epochs": 80}, **VARIANTS[variant]))
    Trainer(cfg, tmp_path, rt).run()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 200 and (tmp_path / "model.pt").is_file()
    first = sum(r["lm_loss"] for r in recs[:3]) / 3
    last = sum(r["lm_loss"] for r in recs[-3:]) / 3
    assert last < 0.8 * first, f"{variant}: lm loss {first:.3f} -> {last:.3f}"
    assert recs[-1]["accuracy"] > 0.2  # well above the 1/9 of guessing digits
    if variant in ("pdc", "cgar"):
        assert {r["T"] for r in recs} == {1, 2}
    if variant in ("hsw", "cgar"):
        assert all(r["hsw_weight"] < 1 for r in recs)


def _train_cli(cfg: dict, out, tmp_path, nproc: int = 1, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    cfg_path = tmp_path / f"cfg_{out.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)  # each run sets up its own process group
    if nproc == 1:
        cmd = [sys.executable, "-m", "cgar.train"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cgar.train"]
    return subprocess.run(cmd + ["--config", str(cfg_path), "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("accum", [1, 2])
def test_kill_and_resume_equals_uninterrupted(data_dir, tmp_path, accum):
    # checkpoints (every 10) fall between log lines (every 4): the metric sums since the last line are resumed too;
    # with 2 micro-batches per step, DeepSpeed's accumulation counter is resumed as well
    cfg = run_config(data_dir, train={"checkpoint_every": 10, "log_every": 4, "grad_accum_steps": accum},
                     **VARIANTS["cgar"])
    ref = _train_cli(cfg, tmp_path / "ref", tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = _train_cli(cfg, tmp_path / "run", tmp_path, env_extra={"CGAR_FAULT_KILL_AT_STEP": "35"})
    assert killed.returncode == -9  # SIGKILL, 5 steps after the step-30 checkpoint
    assert not (tmp_path / "run/model.pt").exists()
    assert (tmp_path / "run/ckpt/latest").read_text().strip() == "step0000030"
    resumed = _train_cli(cfg, tmp_path / "run", tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at step 30" in resumed.stdout
    want, want_recs = final_state(tmp_path / "ref")
    got, got_recs = final_state(tmp_path / "run")
    assert got_recs == want_recs
    for k in want:
        assert torch.equal(got[k], want[k]), k  # bitwise: CPU, one thread, same schedule


def test_one_rank_equals_two_ranks(data_dir, tmp_path):
    cfg = run_config(data_dir, train={"epochs": 8}, **VARIANTS["cgar"])
    one = _train_cli(cfg, tmp_path / "one", tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _train_cli(cfg, tmp_path / "two", tmp_path, nproc=2)
    assert two.returncode == 0, two.stderr[-2000:]
    a, a_recs = final_state(tmp_path / "one")
    b, b_recs = final_state(tmp_path / "two")
    for k in a:
        if k == "puzzle_emb.weight":
            # sign-SGD is discontinuous at 0: a gradient component within float noise of 0, summed in another
            # order over 2 ranks, may take the other sign. Allow that for at most 2 of the 32 components, each
            # off by at most a couple of steps of size lr (here <= 3e-3).
            diff = (b[k] - a[k]).abs()
            assert (diff > 1e-6).sum() <= 2 and diff.max() <= 2 * 2 * 3e-3, diff
        else:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
    for ra, rb in zip(a_recs, b_recs):
        assert ra.keys() == rb.keys() and ra["count"] == rb["count"] and ra["steps"] == rb["steps"]
        assert rb["lm_loss"] == pytest.approx(ra["lm_loss"], rel=1e-4)


def test_crash_then_edited_config_moves_the_checkpoint_aside(data_dir, tmp_path):
    """Issue 11 items 2 and 4: a crashed run's ckpt/ of another model shape is moved to ckpt.stale-<tag>/ (not
    refused, not reported as corrupt), run_config.json is rewritten only once the run may go on, and it starts at 0."""
    cfg = run_config(data_dir, train={"epochs": 4, "checkpoint_every": 5})
    out = tmp_path / "r"
    assert _train_cli(cfg, out, tmp_path, env_extra={"CGAR_FAULT_KILL_AT_STEP": "6"}).returncode == -9
    old_tag = (out / "ckpt/run_tag").read_text().strip()
    assert (out / "ckpt/step0000005").is_dir()
    assert json.loads((out / "run_config.json").read_text()) == config_to_dict(config_from_dict(cfg))
    cfg["model"]["hidden_size"] = 64  # another model shape: the old checkpoint cannot even be loaded
    res = _train_cli(cfg, out, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"moved it to {out}/ckpt.stale-{old_tag}" in res.stdout and "starting step 0/10" in res.stdout
    assert (out / f"ckpt.stale-{old_tag}/step0000005").is_dir()  # the old state is kept aside, not deleted
    assert json.loads((out / "run_config.json").read_text())["model"]["hidden_size"] == 64
    assert torch.load(out / "model.pt", weights_only=False)["model_config"]["hidden_size"] == 64


def test_zero_stages_1_and_2_match_stage_0(data_dir, tmp_path):
    torch.set_num_threads(1)
    rt = compute_init("cpu")
    finals = []
    for stage in (0, 1, 2):
        cfg = config_from_dict(run_config(data_dir, train={"epochs": 8, "zero_stage": stage}, **VARIANTS["cgar"]))
        Trainer(cfg, tmp_path / f"z{stage}", rt).run()
        finals.append(torch.load(tmp_path / f"z{stage}/model.pt", weights_only=False)["state_dict"])
    for other in finals[1:]:
        for k, v in finals[0].items():
            torch.testing.assert_close(other[k], v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"train": {"ema_rate": 2.0}}, r"train.ema_rate: must be in \[0, 1\), got 2.0"),
        ({"train": {"epochs": 0}}, r"train.epochs: must be >= 1, got 0"),
        ({"train": {"global_batch_size": 1024}}, r"train.global_batch_size: 1024 exceeds the 4 x 40 examples"),
        ({"pdc": {"enabled": True, "stages": [[0.0, 5, 5]]}}, r"pdc.stages: stage depth \[\(5, 5\)\] exceeds"),
        pytest.param({"train": {"device": "cuda"}}, r"train.device: 'cuda' requested but no GPU is visible",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ],
)
def test_user_errors_exit_2_with_one_line(data_dir, tmp_path, edit, match):
    """Issue 11: a bad value stops cgar.train with exit 2 and one line naming the key, never a traceback (or, as
    epochs: 0 did, rc 0 and an untrained model.pt)."""
    cfg = run_config(data_dir)
    for section, values in edit.items():
        cfg.setdefault(section, {}).update(values)
    res = _train_cli(cfg, tmp_path / "r", tmp_path)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert re.search(match, errors[0]), errors[0]
    assert not (tmp_path / "r/model.pt").exists()


def test_fast_step_trains_bit_for_bit_as_the_plain_step(data_dir, tmp_path):
    """The fast step (no 1-rank all-reduce, foreach EMA, NaN check, HSW range check and HSW-weight read deferred to
    log lines) must not change a bit: same EMA weights, same live weights and optimizer moments, same metrics.jsonl
    lines."""
    torch.set_num_threads(1)
    rt = compute_init("cpu")
    # PDC + HSW: both depths and the per-sample weights; log lines (every 4) fall between checkpoints (every 10)
    cfg = config_from_dict(run_config(data_dir, train={"epochs": 12, "log_every": 4, "checkpoint_every": 10},
                                      **VARIANTS["cgar"]))
    runs = {}
    for fast in (False, True):
        tr = Trainer(cfg, tmp_path / f"fast{fast}", rt, fast_step=fast)
        assert tr.engine.enable_backward_allreduce is not fast  # the paths really differ
        tr.run()
        runs[fast] = tr
    (plain_state, plain_recs), (fast_state, fast_recs) = (final_state(tmp_path / f"fast{f}") for f in (False, True))
    assert len(plain_recs) == 8 and fast_recs == plain_recs  # 30 steps: lines at 4, 8, ..., 28 and 30
    for k in plain_state:
        assert torch.equal(fast_state[k], plain_state[k]), k
    plain, fast = runs[False], runs[True]
    for (name, p), q in zip(plain.model.named_parameters(), fast.model.parameters()):
        assert torch.equal(p, q), name
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(plain.engine.optimizer.state[p][key], fast.engine.optimizer.state[q][key]), name
    assert torch.equal(plain.model.puzzle_emb.weight, fast.model.puzzle_emb.weight)
