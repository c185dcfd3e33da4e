"""GPU locks for concurrent local jobs: distinct GPUs, waiting when none is free, SLURM's choice respected."""

import os
import subprocess
import sys
import time


def launch(tmp_path, n, out, sleep=1.5, extra_env=None):
    env = {**os.environ, "CGAR_NUM_GPUS": "2", "CGAR_GPU_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(extra_env or {})
    cmd = f'echo "$CUDA_VISIBLE_DEVICES $(date +%s.%N)" > {out}; sleep {sleep}'
    return subprocess.Popen([sys.executable, "-m", "cgar.gpu_lock", str(n), "--", "sh", "-c", cmd], env=env,
                            stderr=subprocess.PIPE, text=True)


def read(path):
    gpus, t = path.read_text().split()
    return gpus, float(t)


def test_concurrent_jobs_get_distinct_gpus_and_a_third_waits(tmp_path):
    t0 = time.time()
    procs = [launch(tmp_path, 1, tmp_path / f"job{i}") for i in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    got = sorted((read(tmp_path / f"job{i}") for i in range(3)), key=lambda r: r[1])
    assert {got[0][0], got[1][0]} == {"0", "1"}  # the first two run at once on different GPUs
    assert got[2][1] - t0 >= 1.5  # the third started only after one of them released its GPU
    assert any("waiting for 1 free GPU" in p.stderr.read() for p in procs)


def test_multi_gpu_job_and_exit_status(tmp_path):
    p = launch(tmp_path, 2, tmp_path / "both", sleep=0)
    assert p.wait(timeout=60) == 0 and read(tmp_path / "both")[0] == "0,1"
    env = {**os.environ, "CGAR_NUM_GPUS": "2", "CGAR_GPU_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    assert subprocess.call([sys.executable, "-m", "cgar.gpu_lock", "1", "--", "sh", "-c", "exit 3"], env=env) == 3
    too_many = subprocess.run([sys.executable, "-m", "cgar.gpu_lock", "3", "--", "true"], env=env,
                              capture_output=True, text=True)
    assert too_many.returncode != 0 and "asks for 3 GPUs but this machine has 2" in too_many.stderr


def test_existing_assignment_is_respected(tmp_path):
    p = launch(tmp_path, 1, tmp_path / "slurm", sleep=0, extra_env={"CUDA_VISIBLE_DEVICES": "7"})
    assert p.wait(timeout=60) == 0 and read(tmp_path / "slurm")[0] == "7"
    assert not (tmp_path / "locks").exists()
