"""The pipeline on a real (throw-away, 2 slurmd on localhost, fake-GPU) SLURM cluster: tests/slurm_cluster.py.

(a) the cluster schedules a `--gpus=1` batch job; (b) a small workflow runs through `--executor slurm` with
profiles/slurm plus the test overrides; (c) a training job killed under SLURM (scancel -> Snakemake retry, or
`scontrol requeue` -> SLURM restarts the same job) resumes from its last checkpoint and ends bit-identical to an
uninterrupted run; (d) the project's `.test` pipeline end to end through the slurm executor (grouped data jobs,
sharded evaluation); (e) data-parallel training over 2 nodes x 1 task and 1 node x 2 tasks (srun + c10d
rendezvous) equal to 2 ranks under torchrun --standalone.

Skipped when SLURM is not installed, unless CGAR_REQUIRE_SLURM=1 (CI), see `.ci/slurm_setup.sh`.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.slurm_cluster import slurm_cluster_fixture
from tests.conftest import final_state

pytestmark = pytest.mark.slow
# two slurmd on localhost (SLURM's multiple-slurmd emulation), 2 fake GPUs each: multi-node jobs really span nodes
slurm_cluster = slurm_cluster_fixture(scope="module", gpus=2, nodes=2)

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tests/data/slurm_smoke/Snakefile"
VENV_BIN = Path(sys.executable).parent
TINY_MODEL = {"hidden_size": 32, "num_heads": 2, "halt_max_steps": 4, "H_cycles": 2, "L_cycles": 2}

# What the test cluster needs on top of profiles/slurm (see the profile's header): no accounting DB -> squeue
# status; one "debug" partition; 2 CPUs -> 1 CPU per GPU; short status interval so small DAGs finish quickly.
SLURM_OVERRIDES = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
    "--latency-wait", "5",
    "--jobs", "2",
    "--default-resources", "slurm_partition=debug", "mem_mb=500", "runtime=10",
    # (replaces the profile's whole set-resources block, its "gpu" partition included)
    "--set-resources", "train:cpus_per_gpu=1", "evaluate:cpus_per_gpu=1", "train:slurm_partition=debug",
    "evaluate:slurm_partition=debug",
]
SNAKEMAKE_TIMEOUT = 420


def tiny_run_config(data_dir, epochs: int) -> dict:
    """10 optimizer steps per 4 epochs; CGAR variant (PDC + HSW) so resume must restore the schedule state."""
    return {"data_dir": str(data_dir), "model": dict(TINY_MODEL),
            "pdc": {"enabled": True, "stages": [[0.0, 1, 1], [0.5, 2, 2]]}, "hsw": {"enabled": True},
            "train": {"global_batch_size": 16, "epochs": epochs, "epochs_per_iter": 4, "lr": 3e-3,
                      "lr_warmup_steps": 5, "checkpoint_every": 10, "log_every": 5, "device": "cpu", "seed": 0}}


def job_env(cluster, tmp_path) -> dict:
    env = dict(cluster.env)
    env["PATH"] = f"{cluster.root / 'bin'}:{VENV_BIN}:{env['PATH']}"  # wrappers, then this venv's python/snakemake
    env["OMP_NUM_THREADS"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SNAKEMAKE_PROFILE"):
        env.pop(k, None)
    return env


def snakemake_cmd(workdir, snakefile=SMOKE, *extra) -> list[str]:
    return [str(VENV_BIN / "snakemake"), "-s", str(snakefile), "--directory", str(workdir),
            "--profile", str(REPO / "profiles/slurm"), "--workflow-profile", "none", *SLURM_OVERRIDES, *extra]


def run_logged(cmd, env, log: Path, timeout=SNAKEMAKE_TIMEOUT) -> tuple[int, str]:
    """Run with output to a file (no pipe to fill); kill the whole process group on timeout."""
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
            rc = "timeout"
    return rc, log.read_text()


# ---------------------------------------------------------------------------------------------- harness


def test_missing_binaries_skip_or_fail_under_ci(monkeypatch):
    import tests.slurm_cluster as sc

    monkeypatch.setattr(sc, "_which", lambda name: None if name == "slurmd" else "/usr/bin/" + name)
    monkeypatch.delenv("CGAR_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing slurmd"):
        sc.require_slurm()
    monkeypatch.setenv("CGAR_REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match="CGAR_REQUIRE_SLURM=1"):
        sc.require_slurm()


# ---------------------------------------------------------------------------------------------- (a)


def test_cluster_runs_a_gpu_batch_job(slurm_cluster, tmp_path):  # noqa: F811
    print(f"cluster up in {slurm_cluster.start_seconds:.2f} s")
    assert slurm_cluster.node_state() == "idle"
    out = tmp_path / "job.out"
    t0 = time.monotonic()
    jid = slurm_cluster.run("sbatch", "--parsable", "--gpus=1", "-t", "1", "-o", str(out), "--wrap",
                            "echo GPUS=$SLURM_GPUS CVD=$CUDA_VISIBLE_DEVICES; srun hostname").stdout.strip()
    assert slurm_cluster.wait_job(jid, timeout=60) == "COMPLETED", out.read_text() if out.exists() else ""
    print(f"sbatch --gpus=1 job COMPLETED in {time.monotonic() - t0:.1f} s")
    text = out.read_text()
    assert "GPUS=1" in text and re.search(r"CVD=\d", text), text
    assert slurm_cluster.job_field(jid, "TresPerJob") == "gres:gpu:1"


# ---------------------------------------------------------------------------------------------- (b)


def test_smoke_workflow_through_slurm_executor(slurm_cluster, data_dir, tmp_path):  # noqa: F811
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "run.yaml").write_text(yaml.safe_dump(tiny_run_config(data_dir, epochs=8)))  # 20 steps
    t0 = time.monotonic()
    rc, log = run_logged(snakemake_cmd(wd, SMOKE, "--config", f"run_config={wd / 'run.yaml'}"),
                         job_env(slurm_cluster, tmp_path), tmp_path / "snakemake.log")
    print(f"smoke workflow (gpu_probe + train on SLURM, summary local): rc={rc} in {time.monotonic() - t0:.1f} s")
    assert rc == 0, log[-4000:]
    probe = (wd / "gpu_probe.txt").read_text()
    job_id = re.search(r"SLURM_JOB_ID=(\d+)", probe).group(1)
    assert slurm_cluster.job_field(job_id, "TresPerJob") == "gres:gpu:1", probe  # resources: gpu=1 -> --gpus=1
    print("gpu_probe job environment:", " ".join(probe.split()))
    assert json.loads((wd / "summary.json").read_text())["steps"] == 20
    assert (wd / "run/model.pt").is_file()


# ---------------------------------------------------------------------------------------------- (c)


def _wait_for(cond, timeout, what, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) before {what}:\n"
                                 f"{log.read_text()[-4000:] if log else ''}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.parametrize("fault", ["scancel", "requeue"])
def test_killed_training_job_resumes_under_slurm(fault, slurm_cluster, data_dir, tmp_path):  # noqa: F811
    """scancel: the job ends CANCELLED, Snakemake counts a failure and its retry submits attempt 2.
    requeue: `scontrol requeue` (what preemption / node failure with --requeue does) kills the job and SLURM
    restarts the same job id; Snakemake just keeps waiting. Either way the training resumes from ckpt/."""
    cfg = tiny_run_config(data_dir, epochs=48)  # 120 steps, checkpoint every 10
    ref = tmp_path / "ref"
    env = job_env(slurm_cluster, tmp_path)
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "cgar.train", "--config", str(tmp_path / "ref.yaml"), "--out", str(ref)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    t_ref = time.monotonic() - t0

    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "run.yaml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / "snakemake.log"
    cmd = snakemake_cmd(wd, SMOKE, "--config", f"run_config={wd / 'run.yaml'}", "targets=[run/model.pt]")
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        latest = wd / "run/ckpt/latest"
        _wait_for(latest.exists, 180, "the first checkpoint", proc, log)
        jobs = slurm_cluster.active_jobs()
        assert len(jobs) == 1, jobs
        killed_after = latest.read_text().strip()
        if fault == "scancel":
            slurm_cluster.run("scancel", jobs[0])
        else:
            slurm_cluster.run("scontrol", "requeue", jobs[0])
        t_kill = time.monotonic() - t0
        rc = proc.wait(timeout=SNAKEMAKE_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    elapsed = time.monotonic() - t0
    text = log.read_text()
    train_log = (wd / "logs/train.log").read_text() if (wd / "logs/train.log").exists() else "<no train log>"
    print(f"{fault}: reference run {t_ref:.1f} s; fault at {t_kill:.1f} s (latest={killed_after}); "
          f"workflow done in {elapsed:.1f} s rc={rc}")
    assert rc == 0, text[-4000:] + "\n--- train.log:\n" + train_log[-3000:]
    attempts_txt = (wd / "run/attempts.txt").read_text()
    attempts = re.findall(r"SLURM_JOB_ID=(\d+)", attempts_txt)
    assert len(attempts) == 2, attempts_txt
    resumed = re.search(r"resumed at step (\d+)", train_log)
    assert resumed and int(resumed.group(1)) >= 10, train_log
    if fault == "scancel":
        assert attempts[0] != attempts[1]  # a new submission by Snakemake's retry
        assert "Trying to restart job" in text or "attempt 2" in text.lower() or "SLURM status is: 'CANCELLED'" in text
    else:
        assert attempts[0] == attempts[1]  # the same SLURM job, restarted by SLURM
        assert slurm_cluster.job_field(attempts[0], "Restarts") == "1"

    want, want_recs = final_state(ref)
    got, got_recs = final_state(wd / "run")
    assert got_recs == want_recs
    for k in want:
        assert torch.equal(got[k], want[k]), k


# ---------------------------------------------------------------------------------------------- (e)


@pytest.mark.parametrize("nodes,tasks_per_node", [(2, 1), (1, 2)])
def test_multinode_training_equals_two_ranks(nodes, tasks_per_node, slurm_cluster, data_dir, tmp_path):  # noqa: F811
    """srun + one torchrun per task + c10d rendezvous on the first node (cgar.slurm_launch), over 2 nodes x 1 task
    and 1 node x 2 tasks, ends bitwise equal to `torchrun --standalone --nproc_per_node 2`."""
    env = job_env(slurm_cluster, tmp_path)
    cfg = tiny_run_config(data_dir, epochs=8)  # 20 steps, a checkpoint at 10
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "cgar.train", "--config", str(tmp_path / "ref.yaml"), "--out", str(tmp_path / "ref")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "run.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    rc, log = run_logged(snakemake_cmd(wd, SMOKE, "--config", f"run_config={wd / 'run.yaml'}", f"nodes={nodes}",
                                       f"tasks_per_node={tasks_per_node}", "targets=[dist/model.pt]"),
                         env, tmp_path / "snakemake.log")
    train_log = (wd / "logs/train_dist.log").read_text() if (wd / "logs/train_dist.log").exists() else ""
    print(f"{nodes} node(s) x {tasks_per_node} task(s) through SLURM: rc={rc} in {time.monotonic() - t0:.1f} s")
    assert rc == 0, log[-4000:] + "\n--- train log:\n" + train_log[-3000:]
    launch = re.search(r"slurm_launch: (srun .*)", train_log).group(1)
    print("launched:", launch)
    assert f"--nodes={nodes}" in launch and f"--ntasks-per-node={tasks_per_node}" in launch
    assert "--rdzv-backend=c10d" in launch and "--rdzv-endpoint=127.0.0.1:" in launch
    job_id = re.search(r"--rdzv-id=(\d+)", launch).group(1)
    assert slurm_cluster.job_field(job_id, "NumNodes") == str(nodes)
    assert "(2 rank(s)" in train_log
    want, want_recs = final_state(tmp_path / "ref")
    got, got_recs = final_state(wd / "dist")
    assert got_recs == want_recs
    for k in want:
        assert torch.equal(got[k], want[k]), k


# ---------------------------------------------------------------------------------------------- (d)


def test_dot_test_pipeline_through_slurm_executor(slurm_cluster, tmp_path):  # noqa: F811
    """The project's CI config (.test/) end to end, every non-local rule as a SLURM job; here with 5 data chunks
    (grouped into one sbatch by the profile) and evaluation in 2 shards per run (merged locally)."""
    wd = tmp_path / "test_copy"
    shutil.copytree(REPO / ".test", wd, ignore=shutil.ignore_patterns("results", "resources", "logs", "benchmarks",
                                                                        ".snakemake"))
    cfg = yaml.safe_load((wd / "config/config.yaml").read_text())
    cfg["data"]["generate"]["chunk_size"] = 20  # 100 puzzles -> 5 chunks
    cfg["evaluate"]["shards"] = 2
    (wd / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    snakefile = REPO / "Snakefile"
    t0 = time.monotonic()
    rc, log = run_logged(snakemake_cmd(wd, snakefile, "--configfile", str(wd / "config/config.yaml"), "--cores", "2"),
                         job_env(slurm_cluster, tmp_path), tmp_path / "snakemake.log", timeout=540)
    print(f".test pipeline through SLURM: rc={rc} in {time.monotonic() - t0:.1f} s")
    assert rc == 0, log[-6000:]
    # every data, training, FLOPs and evaluation job went through sbatch (only run_config, the merges and the report
    # are local); the 5 generate_chunk jobs as one group job (profile: groups + group-components generate=16)
    submitted = re.findall(r"has been submitted with SLURM jobid \d+ \(log: \S*/slurm_logs/((?:rule|group)_\w+)/",
                           log)
    per_rule = {rule: submitted.count(rule) for rule in set(submitted)}
    print(f"sbatch calls: {len(submitted)} in all, per rule/group: {per_rule}")
    groups = {k: n for k, n in per_rule.items() if k.startswith("group_generate")}  # group_<group>_<rule>
    assert sum(groups.values()) == 1 and "rule_generate_chunk" not in per_rule, per_rule
    assert len(list(wd.glob("results/data/pool/chunk*.csv"))) == 5
    for rule, n in {"split": 1, "build_dataset": 1, "check_dataset": 1, "train": 4, "flops": 4,
                    "evaluate_shard": 8}.items():  # 4 experiments x 1 seed; more only if a job was retried
        assert per_rule.get(f"rule_{rule}", 0) >= n, per_rule
    assert "rule_evaluate" not in per_rule
    # the merged evaluation equals an unsharded one of the same model (run here, from the same folder)
    r = subprocess.run([sys.executable, "-m", "cgar.evaluate", "--checkpoint", "results/runs/cgar/seed0/model.pt",
                        "--data", "results/data/dataset", "--out-dir", str(tmp_path / "unsharded"),
                        "--batch-size", str(cfg["evaluate"]["batch_size"])],
                       cwd=wd, env=job_env(slurm_cluster, tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import pyarrow.parquet as pq

    one = json.loads((tmp_path / "unsharded/eval.json").read_text())
    merged = json.loads((wd / "results/runs/cgar/seed0/eval.json").read_text())
    timing = ("wall_s", "puzzles_per_s")
    assert {k: v for k, v in merged.items() if k not in timing} == {k: v for k, v in one.items() if k not in timing}
    assert pq.read_table(wd / "results/runs/cgar/seed0/eval.parquet").equals(pq.read_table(tmp_path / "unsharded/eval.parquet"))
    from cgar.report import figure_files, table_files

    for f in table_files() + figure_files():
        assert (wd / f).stat().st_size > 0, f
    for exp in ("baseline", "pdc", "hsw", "cgar"):
        assert (wd / f"results/runs/{exp}/seed0/eval.json").is_file()
