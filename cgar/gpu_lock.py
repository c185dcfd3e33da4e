"""Give a job N free GPUs on a shared workstation: `python -m cgar.gpu_lock N -- COMMAND ...`.

Snakemake limits how many GPU jobs run at once (`--resources gpu=4`) but never says *which* GPUs a job gets, so
two concurrent `torchrun` jobs would both start on cuda:0. This wrapper takes an exclusive lock on N of the
machine's GPUs (one lock file per GPU, `fcntl.flock`, released by the kernel even if the job is killed), sets
CUDA_VISIBLE_DEVICES to them, runs COMMAND and exits with its status. It waits while fewer than N are free.

When CUDA_VISIBLE_DEVICES is already set (a SLURM job, or a user pinning GPUs by hand) or N is 0, COMMAND runs
unchanged. The GPU count comes from CGAR_NUM_GPUS if set, else torch.cuda.device_count().
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def lock_dir() -> Path:
    return Path(os.environ.get("CGAR_GPU_LOCK_DIR", f"/tmp/cgar-gpu-locks-{getpass.getuser()}"))


def gpu_count() -> int:
    if "CGAR_NUM_GPUS" in os.environ:
        return int(os.environ["CGAR_NUM_GPUS"])
    import torch

    return torch.cuda.device_count()


def try_acquire(n: int, total: int, directory: Path) -> tuple[list[int], list[int]] | None:
    """Lock n of GPUs 0..total-1 without blocking: (gpu ids, open lock fds), or None (nothing kept locked)."""
    directory.mkdir(parents=True, exist_ok=True)
    ids, fds = [], []
    for gpu in range(total):
        fd = os.open(directory / f"gpu{gpu}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        ids.append(gpu)
        fds.append(fd)
        if len(ids) == n:
            return ids, fds
    for fd in fds:
        os.close(fd)  # closing releases the lock
    return None


def acquire(n: int, total: int, directory: Path, poll_s: float = 5.0) -> tuple[list[int], list[int]]:
    if n > total:
        raise SystemExit(f"gpu_lock: the job asks for {n} GPUs but this machine has {total}")
    waited = False
    while (got := try_acquire(n, total, directory)) is None:
        if not waited:
            print(f"gpu_lock: waiting for {n} free GPU(s) of {total} (locks in {directory})", file=sys.stderr,
                  flush=True)
            waited = True
        time.sleep(poll_s)
    return got


def run(n: int, command: list[str]) -> int:
    if n == 0 or "CUDA_VISIBLE_DEVICES" in os.environ:
        return subprocess.call(command)
    ids, fds = acquire(n, gpu_count(), lock_dir())
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, ids))}
    print(f"gpu_lock: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, env=env)
    # pass termination on to the job (Snakemake or SLURM stopping us), keeping the locks until it is gone
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    code = child.wait()
    for fd in fds:
        os.close(fd)
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cgar.gpu_lock", description=__doc__.splitlines()[0])
    ap.add_argument("gpus", type=int, help="number of GPUs the command needs")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    a = ap.parse_args(argv)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        ap.error("no command given (python -m cgar.gpu_lock N -- COMMAND ...)")
    return run(a.gpus, command)


if __name__ == "__main__":
    sys.exit(main())
