"""Fault tolerance of a training run, locally (no SLURM): SIGKILL at many points, NaN loss, corrupt inputs.

A run killed at any point and restarted with the same --out must end bit-identical (CPU, one thread) to an
uninterrupted run, and no half-written file may ever be taken as complete. Faults are injected without touching
cgar/: the training CLI runs under a small wrapper (`INJECT` below, `python -c`) that patches a library function
to SIGKILL the process at an exact point - e.g. halfway through writing a checkpoint file - and then runs
`cgar.train` with runpy, exactly as `python -m cgar.train` would.

Kill points (one chained run; every restart continues the previous one):
  1. between steps, before any checkpoint exists (CGAR_FAULT_KILL_AT_STEP=3)
  2. while writing the per-rank state file of the FIRST checkpoint (.tmp-step0000010/rank0.pt half written)
  3. after a checkpoint directory was renamed into place but before `latest` was replaced (latest half written)
  4. while DeepSpeed writes the model/optimizer states of a checkpoint (mp_rank_00_model_states.pt half written)
  5. between steps (CGAR_FAULT_KILL_AT_STEP=47)
  6. at start-up of a restart, while writing run_config.json (half written)
  7. while exporting the final model.pt into ckpt/final/ (half written; nothing is published yet)
Then five SIGKILLs at seeded random wall-clock times (wherever they land), restart after each, same end.
Separately: a truncated last line in the live metrics log (what a node crash mid-append can leave; a SIGKILL cannot
split the single small write) is dropped on resume.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cgar.data.build import verify_manifest
from cgar.io_utils import DataError
from tests.conftest import final_state

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

TINY_MODEL = {"hidden_size": 32, "num_heads": 2, "halt_max_steps": 4, "H_cycles": 2, "L_cycles": 2}
TIMINGS: dict[str, float] = {}

# Runs in the child process: python -c INJECT --config ... --out ...; env CGAR_TEST_FAULT="<kind>:<arg>".
INJECT = r'''
import io, json, os, runpy, signal, sys
import torch

kind, _, arg = os.environ.get("CGAR_TEST_FAULT", "").partition(":")

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def half_write(path, data):
    with open(path, "wb") as f:          # what a process killed in the middle of a large write leaves behind
        f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
    die()

if kind in ("ckpt_rank_file", "ckpt_ds_file", "export"):
    real_save = torch.save
    def save(obj, f, *a, **k):
        name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else str(getattr(f, "name", ""))
        hit = {"ckpt_rank_file": f"/.tmp-{arg}/rank0.pt" in name,
               "ckpt_ds_file": f"/.tmp-{arg}/" in name and "model_states" in name,
               "export": "/.model.pt." in name}[kind]
        if hit:
            buf = io.BytesIO(); real_save(obj, buf, *a, **k)
            half_write(name, buf.getvalue())
        return real_save(obj, f, *a, **k)
    torch.save = save
elif kind == "enospc":  # disk full while writing the per-rank file of checkpoint `arg`
    import errno
    real_save = torch.save
    def save(obj, f, *a, **k):
        if f"/.tmp-{arg}/rank0.pt" in os.fspath(f):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(f))
        return real_save(obj, f, *a, **k)
    torch.save = save
elif kind == "latest":
    import cgar.engine
    real_awt = cgar.engine.atomic_write_text
    def awt(path, text):
        if os.path.basename(str(path)) == "latest" and text.strip() == arg:
            half_write(os.path.join(os.path.dirname(str(path)), ".latest.killed.tmp"), text.encode())
        return real_awt(path, text)
    cgar.engine.atomic_write_text = awt
elif kind == "run_config":
    import cgar.io_utils  # patched at the source: runpy re-executes cgar.train, which imports it from there
    real_awj = cgar.io_utils.atomic_write_json
    def awj(path, obj):
        if os.path.basename(str(path)) == "run_config.json":
            half_write(os.path.join(os.path.dirname(str(path)), ".run_config.json.killed.tmp"),
                       json.dumps(obj).encode())
        return real_awj(path, obj)
    cgar.io_utils.atomic_write_json = awj
elif kind == "metrics_line":
    real_dumps = json.dumps
    def dumps(obj, *a, **k):
        s = real_dumps(obj, *a, **k)
        if isinstance(obj, dict) and obj.get("step") == int(arg) and "wall_s" in obj:
            with open(os.path.join(os.environ["CGAR_TEST_OUT"], "ckpt", "metrics.jsonl"), "a") as f:
                f.write(s[: len(s) // 2]); f.flush()
            die()
        return s
    json.dumps = dumps
elif kind == "nan_loss":
    import cgar.losses
    real_loss, calls = cgar.losses.act_loss, [0]
    def act_loss(*a, **k):
        loss, sums = real_loss(*a, **k)
        calls[0] += 1
        return (loss * float("nan") if calls[0] == int(arg) else loss), sums
    cgar.losses.act_loss = act_loss

sys.argv = ["cgar.train"] + sys.argv[1:]
runpy.run_module("cgar.train", run_name="__main__", alter_sys=True)
'''


def run_config(data_dir, epochs=24) -> dict:
    """CGAR variant (PDC + HSW), 10 steps per 4 epochs: 60 steps, a checkpoint every 10, a log line every 5."""
    return {"data_dir": str(data_dir), "model": dict(TINY_MODEL),
            "pdc": {"enabled": True, "stages": [[0.0, 1, 1], [0.5, 2, 2]]}, "hsw": {"enabled": True},
            "train": {"global_batch_size": 16, "epochs": epochs, "epochs_per_iter": 4, "lr": 3e-3,
                      "lr_warmup_steps": 5, "checkpoint_every": 10, "log_every": 5, "device": "cpu", "seed": 0}}


def train(cfg: dict, out: Path, fault: str = "", kill_at: int = 0, kill_after: float | None = None,
          env_extra: dict | None = None, args: tuple = ()) -> subprocess.CompletedProcess:
    """One training run (a restart when `out` holds a checkpoint); `kill_after`: SIGKILL after that many wall
    seconds, wherever the run is then (start-up, mid-step, mid-checkpoint), unless it has finished."""
    cfg_path = out.parent / f"{out.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CGAR_FAULT_KILL_AT_STEP")}
    # unbuffered: a SIGKILL from outside must not swallow what the run printed ("resumed at step ...")
    env.update(OMP_NUM_THREADS="1", CGAR_TEST_FAULT=fault, CGAR_TEST_OUT=str(out), PYTHONUNBUFFERED="1")
    if kill_at:
        env["CGAR_FAULT_KILL_AT_STEP"] = str(kill_at)
    env.update(env_extra or {})
    t0 = time.monotonic()
    cmd = [sys.executable, "-c", INJECT, "--config", str(cfg_path), "--out", str(out), *args]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = p.communicate(timeout=300 if kill_after is None else kill_after)
    except subprocess.TimeoutExpired:
        p.kill()  # SIGKILL: the planned kill, or a hung run (re-raised)
        stdout, stderr = p.communicate()
        if kill_after is None:
            raise
    res = subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)
    TIMINGS[f"{out.name} {fault or kill_at or 'clean'}"] = time.monotonic() - t0
    return res


def assert_consistent(out: Path, allow_model: bool = False) -> str | None:
    """What a killed run may leave: `latest` (if any) names a complete, loadable checkpoint; model.pt is absent
    (`allow_model`: unless a run in this folder already got as far as exporting it; then it is complete)."""
    ckpt = out / "ckpt"
    if (out / "model.pt").exists():
        assert allow_model, "a killed run must not leave model.pt"
        torch.load(out / "model.pt", weights_only=False)  # written atomically: never a torn file
    latest = ckpt / "latest"
    if not latest.exists():
        return None
    tag = latest.read_text().strip()
    assert tag.startswith("step") and (ckpt / tag).is_dir(), f"latest names {tag!r}"
    for name in ("rank0.pt", "mp_rank_00_model_states.pt"):
        torch.load(ckpt / tag / name, map_location="cpu", weights_only=False)  # complete, not truncated
    return tag


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft_ref") / "ref"
    res = train(run_config(data_dir), out)
    assert res.returncode == 0, res.stderr[-3000:]
    return final_state(out)


# (fault, kill_at, tag that `latest` names after the kill, step the next run resumes at / starts from)
CHAIN = [
    ("", 3, None, 0),                                   # 1. between steps, no checkpoint yet
    ("ckpt_rank_file:step0000010", 0, None, 0),         # 2. mid-write of the first checkpoint: nothing complete
    ("latest:step0000020", 0, "step0000010", 10),       # 3. step20/ complete but `latest` not yet replaced
    ("ckpt_ds_file:step0000030", 0, "step0000020", 20),  # 4. mid-write of DeepSpeed's model/optimizer file
    ("", 47, "step0000040", 40),                        # 5. between steps
    ("run_config", 0, "step0000040", 40),               # 6. at start-up, mid-write of run_config.json
    ("export", 0, "step0000050", 50),                   # 7. mid-write of the final model.pt (in ckpt/final/)
]


def test_sigkill_anywhere_then_resume_is_bitwise_identical(data_dir, reference, tmp_path):
    cfg = run_config(data_dir)
    out = tmp_path / "run"
    log, start = [], 0
    for i, (fault, kill_at, want_tag, resume_step) in enumerate(CHAIN, 1):
        res = train(cfg, out, fault=fault, kill_at=kill_at)
        assert res.returncode == -9, f"kill point {i} ({fault or kill_at}) did not fire:\n{res.stderr[-3000:]}"
        begun = "starting step 0/60" if start == 0 else f"resumed at step {start}/60"
        if fault != "run_config":  # that one dies before it gets there
            assert begun in res.stdout, f"run {i}: expected {begun!r}:\n{res.stdout}"
        assert assert_consistent(out) == want_tag, f"kill point {i}"
        if fault.startswith(("ckpt_rank_file", "ckpt_ds_file")):
            # the half-written checkpoint is there, under a name nobody loads
            assert (out / "ckpt" / f".tmp-{fault.split(':')[1]}").is_dir()
        if fault.startswith("latest"):
            assert (out / "ckpt/step0000020").is_dir() and (out / "ckpt/latest").read_text().strip() == "step0000010"
        if fault == "run_config":  # the previous, complete file is still in place
            assert json.loads((out / "run_config.json").read_text())["train"]["seed"] == 0
        if fault == "export":  # nothing published; the half-written temp file is in an unfinished ckpt/.final.*
            assert not (out / "metrics.jsonl").exists() and not (out / "model.pt").exists()
            assert list(out.glob("ckpt/.final.*/.model.pt.*")) and not (out / "ckpt/final").exists()
        log.append(f"{i}. {fault or f'kill_at={kill_at}'}: latest={want_tag}, next run resumes at {resume_step}")
        start = resume_step
    res = train(cfg, out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed at step 50" in res.stdout
    # a finished run keeps only its outputs and tag (no step checkpoint, nor stale half-written ones)
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["final", "run_tag"]
    want, want_recs = reference
    got, got_recs = final_state(out)
    assert [r["step"] for r in got_recs] == list(range(5, 61, 5))
    assert got_recs == want_recs
    for k in want:
        assert torch.equal(got[k], want[k]), k
    print("\nkill chain:\n  " + "\n  ".join(log))
    print("timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})


def test_sigkill_at_random_times_then_resume_is_bitwise_identical(data_dir, reference, tmp_path):
    """Five SIGKILLs at seeded random wall-clock times: wherever they land (start-up, inside a step, inside a
    checkpoint write), each restart resumes from the last complete checkpoint and the end is bitwise identical."""
    cfg = run_config(data_dir)
    out = tmp_path / "run"
    t0 = time.monotonic()  # wall time of one uninterrupted run, start-up included (extension ops now cached)
    assert train(cfg, tmp_path / "timing").returncode == 0
    full = time.monotonic() - t0
    rng = random.Random(20261201)
    kills, log = 0, []
    for _ in range(12):
        delay = rng.uniform(0.3, 0.9) * full
        res = train(cfg, out, kill_after=delay)
        if res.returncode == 0:  # finished before the kill: only ckpt/final/ is kept; start over in a new folder
            assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["final", "run_tag"]
            shutil.rmtree(out)
            log.append(f"{delay:.1f} s: finished first")
            continue
        assert res.returncode == -9, res.stderr[-3000:]
        kills += 1
        began = re.search(r"(starting|resumed at) step \d+", res.stdout)
        half = sorted(p.name for p in (out / "ckpt").glob(".tmp-*")) if (out / "ckpt").is_dir() else []
        # `latest` (if any) names a complete, loadable checkpoint, whatever the kill interrupted
        tag = assert_consistent(out, allow_model=True)
        log.append(f"{delay:.1f} s: killed after {began[0] if began else 'start-up'}; latest={tag}"
                   + (f", half-written {half}" if half else ""))
        if kills == 5:
            break
    assert kills == 5, log
    res = train(cfg, out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["final", "run_tag"]
    want, want_recs = reference
    got, got_recs = final_state(out)
    assert got_recs == want_recs
    for k in want:
        assert torch.equal(got[k], want[k]), k
    print("\nrandom kills (uninterrupted run %.1f s):\n  " % full + "\n  ".join(log))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    cfg = run_config(data_dir, epochs=8)  # 20 steps
    out = tmp_path / "run"
    res = train(cfg, out, fault="nan_loss:14")
    assert res.returncode == 1
    assert "FloatingPointError" in res.stderr and "non-finite loss (nan) at optimizer step 14" in res.stderr
    assert "last good checkpoint is step0000010" in res.stderr and str(out / "ckpt") in res.stderr
    assert assert_consistent(out) == "step0000010" and not (out / "metrics.jsonl").exists()
    res = train(cfg, out)  # the kept checkpoint is usable: restart (no NaN now) resumes from it and finishes
    assert res.returncode == 0 and "resumed at step 10/20" in res.stdout, res.stderr[-3000:]


def test_corrupt_checkpoint_gives_a_clear_error(data_dir, tmp_path):
    cfg = run_config(data_dir, epochs=8)
    out = tmp_path / "run"
    assert train(cfg, out, kill_at=15).returncode == -9
    good = tmp_path / "good_ckpt"
    shutil.copytree(out / "ckpt", good)

    def corrupt(how):
        shutil.rmtree(out / "ckpt")
        shutil.copytree(good, out / "ckpt")
        how(out / "ckpt")
        return train(cfg, out)

    def truncate(p: Path):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])

    res = corrupt(lambda c: truncate(c / "step0000010/mp_rank_00_model_states.pt"))
    assert res.returncode == 2 and "corrupt checkpoint" in res.stderr and "step0000010" in res.stderr, res.stderr
    res = corrupt(lambda c: truncate(c / "step0000010/rank0.pt"))
    assert res.returncode == 2 and "corrupt checkpoint" in res.stderr, res.stderr[-2000:]
    res = corrupt(lambda c: (c / "latest").write_text("step0000099\n"))
    assert res.returncode == 2 and "names checkpoint 'step0000099', which does not exist" in res.stderr, res.stderr
    assert not (out / "model.pt").exists()


def test_dataset_checksum_mismatch_is_detected(data_dir, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(data_dir, ds)
    manifest = verify_manifest(ds)  # intact: passes
    rel = next(r for r in manifest["files"] if r.endswith("all__inputs.npy"))
    p = ds / rel
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the payload: still a loadable .npy, only the checksum can tell
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"does not match manifest\.json") as e:
        verify_manifest(ds)
    assert rel in str(e.value)
    p.write_bytes(bytes(data[:100]))  # truncated: the loader refuses it too
    from cgar.data.loader import load_split

    with pytest.raises(DataError, match="unreadable or truncated"):
        load_split(ds, rel.split("/")[0])


def test_truncated_metrics_line_is_tolerated_on_resume(data_dir, tmp_path):
    """A crash mid-append (node failure, ENOSPC) leaves half a JSON line at the end of ckpt/metrics.jsonl."""
    cfg = run_config(data_dir, epochs=8)  # 20 steps
    out = tmp_path / "run"
    res = train(cfg, out, fault="metrics_line:15")  # half of the step-15 line, then SIGKILL
    assert res.returncode == -9 and assert_consistent(out) == "step0000010"
    assert not (out / "ckpt/metrics.jsonl").read_text().endswith("\n")
    res = train(cfg, out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed at step 10/20" in res.stdout
    assert [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [5, 10, 15, 20]


# ----------------------------------------------------------------------------- issue 11: run folders

def test_finished_run_is_reexported_not_retrained(data_dir, tmp_path):
    """Item 1: Snakemake deletes the outputs of a job it rejects after the training finished (Ctrl-C as the job
    ended); the rerun with the same run tag copies them back from ckpt/final/ without a single step."""
    cfg, out = run_config(data_dir, epochs=8), tmp_path / "run"
    res = train(cfg, out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["final", "run_tag"]  # step checkpoints pruned
    first = {n: (out / n).read_bytes() for n in ("model.pt", "metrics.jsonl", "run_config.json")}
    for name in first:
        (out / name).unlink()
    res = train(cfg, out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "already finished" in res.stdout and "starting step" not in res.stdout
    assert {n: (out / n).read_bytes() for n in first} == first
    res = train(cfg, out, args=("--code-version", "99"))  # new code is another run: trained again, from step 0
    assert res.returncode == 0 and "moved it to" in res.stdout and "starting step 0/20" in res.stdout, res.stdout


def test_run_tag_covers_config_and_code_version(data_dir):
    from cgar.run_dir import run_tag

    cfg = run_config(data_dir, epochs=8)
    assert run_tag(cfg, "1", data_dir) != run_tag(cfg, "2", data_dir) != run_tag({**cfg, "x": 1}, "2", data_dir)
    assert run_tag(cfg, "2", data_dir) == run_tag(json.loads(json.dumps(cfg)), "2", data_dir)


def test_second_writer_is_refused_naming_the_holder(data_dir, tmp_path):
    """Item 3 (and 4): while another process holds <out>/.lock, a training exits 2 at once, names the holder's pid
    and host, and writes nothing (run_config.json and ckpt/ untouched)."""
    import socket

    from cgar.run_dir import RunLock

    cfg, out = run_config(data_dir, epochs=8), tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_text("{}")
    holder = RunLock(out).acquire()
    try:
        with pytest.raises(DataError, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
            RunLock(out).acquire()  # a second open file description conflicts even in the same process
        res = train(cfg, out)
    finally:
        holder.release()
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert f"{out}/.lock" in res.stderr and f"pid {os.getpid()} on host" in res.stderr
    assert (out / "run_config.json").read_text() == "{}" and not (out / "ckpt").exists()
    RunLock(out).acquire().release()  # released with the holder; a stale lock file blocks nobody


def test_stale_extension_build_lock_fails_fast_and_no_op_is_built(data_dir, tmp_path):
    """Item 5: nothing is JIT-built at start (an empty extensions dir stays empty), and a build lock left by a killed
    build (no process holds it) stops the run at once, naming it, instead of a silent wait for ever."""
    from cgar.ds_ops import stale_build_locks

    ext = tmp_path / "ext"
    ext.mkdir()
    res = train(run_config(data_dir, epochs=4), tmp_path / "run", env_extra={"TORCH_EXTENSIONS_DIR": str(ext)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(ext.iterdir()) == []  # deepspeed_shm_comm was not built
    lock = ext / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.touch()
    with open(lock):  # held open, as torch's FileBaton does during a build: not stale
        assert stale_build_locks(ext, ["deepspeed_shm_comm"]) == []
    assert stale_build_locks(ext, ["deepspeed_shm_comm"]) == [lock]
    t0 = time.monotonic()
    res = train(run_config(data_dir, epochs=4), tmp_path / "run2", env_extra={"TORCH_EXTENSIONS_DIR": str(ext)})
    assert res.returncode == 2 and f"{lock}: stale torch extensions build lock" in res.stderr, res.stderr[-2000:]
    assert time.monotonic() - t0 < 120 and not (tmp_path / "run2/model.pt").exists()


def test_outputs_honour_the_umask(data_dir, tmp_path):
    """Item 6: files and folders are created as the umask allows (0644 / 0755 under 022), not 0600 / 0700."""
    import stat

    from cgar.io_utils import atomic_directory, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "d") as d:
            (d / "f").write_text("y")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
        assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    res = train(run_config(data_dir, epochs=4), tmp_path / "run")  # the child inherits umask 022
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("model.pt", "metrics.jsonl", "run_config.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((tmp_path / "run/ckpt/final").stat().st_mode) == 0o755


def test_disk_full_during_a_checkpoint_removes_the_partial_one(data_dir, tmp_path):
    """Item 7: ENOSPC while writing checkpoint step 10 -> one-line error naming the folder, which is gone."""
    cfg, out = run_config(data_dir, epochs=8), tmp_path / "run"
    res = train(cfg, out, fault="enospc:step0000010")
    assert res.returncode == 2, res.stderr[-2000:]
    errors = re.findall(r"error: .*", res.stderr)  # one line (the progress bar shares the terminal line)
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    last = errors[0]
    assert f"error: {out}/ckpt/.tmp-step0000010: cannot write checkpoint" in last
    assert "No space left on device" in last and "resumes from step 0" in last
    assert not list((out / "ckpt").glob(".tmp-*")) and not (out / "model.pt").exists()


# ----------------------------------------------------------------------------- issue 11: Snakemake in the loop
# Real signals to a real snakemake running the .test workflow (one experiment, imported puzzles: data in seconds).

SMK_RUN = "results/runs/baseline/seed0"
SMK_TARGET = f"{SMK_RUN}/model.pt"
SMK_LOG = f"logs/{SMK_RUN}/train.log"


@pytest.fixture(scope="module")
def smk_data(tmp_path_factory):
    """A .test workflow folder with its dataset built (by Snakemake), one experiment of 140 steps."""
    from cgar.data.puzzle_csv import write_puzzle_csv
    from cgar.sudoku.grid import format_grid
    from tests.conftest import random_pairs

    work = tmp_path_factory.mktemp("smk")
    for name, n, seed in (("train.csv", 30, 1), ("test.csv", 8, 2)):
        p, s = random_pairs(n, seed)
        write_puzzle_csv(work / name, [("x", format_grid(a), format_grid(b), 0) for a, b in zip(p, s)])
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["experiments"] = {"baseline": {}}
    cfg["data"]["source"] = "import"
    cfg["data"]["import"].update(train_csv=str(work / "train.csv"), test_csv=str(work / "test.csv"),
                                 on_error="fail", check_unique=False)
    cfg["data"]["build"]["val_size"] = 0  # all 30 puzzles train (the step count below depends on it)
    cfg["run_defaults"]["train"]["epochs"] = 80  # 7 steps per 4 epochs: 140 steps, a checkpoint every 10
    (work / "config").mkdir()
    (work / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    r = smk_wait(smk_start(work, "results/data/leak_check.json", "results/data/dataset"))
    assert r.returncode == 0, r.stdout[-3000:]
    return work


def smk_start(work: Path, *args, env_extra: dict | None = None) -> subprocess.Popen:
    """snakemake in its own session (so a test can kill it alone, or with all its jobs), SIGINT at its default."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           **(env_extra or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CGAR_FAULT_KILL_AT_STEP"):
        env.pop(k, None)
    return subprocess.Popen([str(Path(sys.executable).parent / "snakemake"), "--cores", "2", "--directory", str(work),
                             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def smk_wait(p: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        raise AssertionError(f"snakemake did not finish within {timeout} s (a hang):\n{out[-3000:]}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, "")


def wait_for(cond, what: str, timeout: float = 300) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - t0


def log_has(work: Path, pattern: str):
    return lambda: (work / SMK_LOG).exists() and re.search(pattern, (work / SMK_LOG).read_text(errors="replace"))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def smk_work(smk_data, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(smk_data, work, symlinks=True)
    yield work
    for pid_file in work.glob("results/runs/*/seed*/.lock"):  # never leave an orphan training behind
        pid = (pid_file.read_text().split() or ["0"])[0]
        if pid.isdigit() and int(pid) > 0 and pid_alive(int(pid)) and int(pid) != os.getpid():
            os.kill(int(pid), signal.SIGKILL)


def test_sigint_to_snakemake_as_training_ends_reexports(smk_work):
    """Ctrl-C to snakemake alone: it lets the training finish, then marks the job failed; the rerun (profile:
    rerun-incomplete) re-exports the outputs from ckpt/final/ instead of training again."""
    p = smk_start(smk_work, SMK_TARGET)
    wait_for(log_has(smk_work, r"train: .*\| [1-9]\d*/140 "), "the first training steps")
    os.kill(p.pid, signal.SIGINT)
    r = smk_wait(p)
    assert r.returncode != 0 and "Terminating processes on user request" in r.stdout, r.stdout[-3000:]
    assert "wrote results/runs/baseline/seed0/model.pt" in (smk_work / SMK_LOG).read_text(errors="replace")
    model = (smk_work / SMK_TARGET).read_bytes()
    t0 = time.monotonic()
    r = smk_wait(smk_start(smk_work, SMK_TARGET))
    TIMINGS["snakemake rerun after SIGINT (re-export)"] = time.monotonic() - t0
    log = (smk_work / SMK_LOG).read_text(errors="replace")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "already finished" in log and "starting step" not in log, log[-2000:]
    assert (smk_work / SMK_TARGET).read_bytes() == model
    took = TIMINGS["snakemake rerun after SIGINT (re-export)"]
    print(f"\nSIGINT: snakemake rc {p.returncode}; rerun re-exported in {took:.1f} s")


def test_sigkill_to_snakemake_orphan_keeps_its_run(smk_work):
    """SIGKILL to snakemake alone: its training runs on as an orphan. The rerun's training is refused (exit 2,
    naming the orphan) instead of resuming from the orphan's live checkpoint; once the orphan is done, a rerun
    re-exports its outputs."""
    p = smk_start(smk_work, SMK_TARGET)
    wait_for(log_has(smk_work, r"train: .*\| [1-9]\d*/140 "), "the first training steps")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=60)  # not communicate(): the orphan job's shell still holds snakemake's output pipe
    p.stdout.close()
    orphan = int((smk_work / SMK_RUN / ".lock").read_text().split()[0])
    assert pid_alive(orphan)
    assert smk_wait(smk_start(smk_work, "--unlock")).returncode == 0  # snakemake's own lock, left by the SIGKILL
    r = smk_wait(smk_start(smk_work, SMK_TARGET))
    log = (smk_work / SMK_LOG).read_text(errors="replace")
    assert r.returncode != 0 and f"another training (pid {orphan} on host" in log, log[-2000:]
    assert (smk_work / SMK_RUN / "ckpt").is_dir()  # the orphan's checkpoints were left alone
    wait_for(lambda: not pid_alive(orphan), "the orphan training to finish")
    assert (smk_work / SMK_RUN / "ckpt/final/model.pt").is_file()
    # The orphan published complete outputs of the same run tag after Snakemake had given the job up; the rerun
    # takes them as they are (Snakemake: nothing to be done) or re-exports them from ckpt/final/: nothing retrains.
    r = smk_wait(smk_start(smk_work, SMK_TARGET))
    log = (smk_work / SMK_LOG).read_text(errors="replace")
    assert r.returncode == 0 and "starting step" not in log, r.stdout[-3000:] + log[-2000:]
    assert (smk_work / SMK_TARGET).read_bytes() == (smk_work / SMK_RUN / "ckpt/final/model.pt").read_bytes()


def test_crash_then_edit_the_experiment_starts_over(smk_work):
    """The whole snakemake process group SIGKILLed after a checkpoint (a crash), then the experiment edited: the
    rerun moves the stale ckpt/ aside, says so in the log, and trains the new config from step 0."""
    p = smk_start(smk_work, SMK_TARGET)
    wait_for(lambda: (smk_work / SMK_RUN / "ckpt/latest").exists(), "the first checkpoint")
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    tag = (smk_work / SMK_RUN / "ckpt/run_tag").read_text().strip()
    cfg_path = smk_work / "config/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["experiments"]["baseline"] = {"train": {"lr": 0.002}}
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert smk_wait(smk_start(smk_work, "--unlock")).returncode == 0
    r = smk_wait(smk_start(smk_work, SMK_TARGET))
    log = (smk_work / SMK_LOG).read_text(errors="replace")
    assert r.returncode == 0, r.stdout[-3000:] + log[-2000:]
    assert f"moved it to results/runs/baseline/seed0/ckpt.stale-{tag}" in log and "starting step 0/140" in log
    assert list((smk_work / SMK_RUN / f"ckpt.stale-{tag}").glob("step*"))
    assert json.loads((smk_work / SMK_RUN / "run_config.json").read_text())["train"]["lr"] == 0.002


def test_kill_during_first_start_then_rerun_does_not_hang(smk_work, tmp_path):
    """SIGKILL to snakemake and its job during the training's first start on a machine (empty torch extensions
    folder, where DeepSpeed used to JIT-build its shm op under a lock): the rerun runs through, nothing is built."""
    ext = tmp_path / "ext"
    ext.mkdir()
    env = {"TORCH_EXTENSIONS_DIR": str(ext)}
    p = smk_start(smk_work, SMK_TARGET, env_extra=env)
    wait_for(lambda: (smk_work / SMK_LOG).exists(), "the training job to start")
    time.sleep(1.0)  # inside the start-up: imports, process group (the old JIT build window)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    assert smk_wait(smk_start(smk_work, "--unlock")).returncode == 0
    t0 = time.monotonic()
    r = smk_wait(smk_start(smk_work, SMK_TARGET, env_extra=env), timeout=600)
    TIMINGS["snakemake rerun after a kill at first start"] = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:]
    assert list(ext.iterdir()) == []
    took = TIMINGS["snakemake rerun after a kill at first start"]
    print(f"\nkill at first start: rerun took {took:.1f} s, nothing built")
