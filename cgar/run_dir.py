"""One writer per run folder, and what a rerun in it may reuse (called by cgar.train before anything is written).

A run folder `<out>/` is written by Snakemake's jobs, which can be interrupted in ways a plain restart is not:
Snakemake itself killed (its orphan training keeps running), an experiment edited after a crash, Ctrl-C just as a
training finishes (Snakemake then deletes the outputs). Three rules keep a rerun correct and cheap:

- `RunLock`: an exclusive `fcntl.flock` on `<out>/.lock`, holding the holder's "pid host", taken before anything
  is written. A second writer (two jobs, or the orphan of a killed Snakemake and its rerun) fails at once naming the
  holder instead of deleting checkpoints under it. The kernel drops the lock when the holder dies, so a stale lock
  file never blocks anyone.
- The run tag: sha256 of (run config, code_version, the dataset's manifest.json), written to `ckpt/run_tag`.
  `ckpt/` of another tag (an edited experiment, new code or data) is moved aside to `ckpt.stale-<tag>/`, with a log
  line, and the run starts at step 0; Snakemake cannot act on a "use a new --out" refusal.
- `ckpt/final/`: a finished run's outputs (model.pt, model_best.pt, metrics.jsonl and, when enabled,
  eval_curve.jsonl, grad_stats.jsonl, snapshots/) kept beside their tag. If Snakemake rejects the
  job after all (interrupted while the job ended) and deletes the outputs, the rerun with the same tag re-exports
  them from here instead of retraining. It is replaced only when a run of another tag starts in the folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

from cgar.io_utils import DataError, atomic_write, atomic_write_text, publish_links

TAG_FILE = "run_tag"
FINAL = "final"
FINAL_OUTPUTS = ("model.pt", "model_best.pt", "metrics.jsonl")  # always there; others optional


class RunLock:
    """Exclusive lock on `<out>/.lock` for the life of this process (or until `release`)."""

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            pid, host = (holder + ["?", "?"])[:2]
            raise DataError(self.path, f"another training (pid {pid} on host {host}) is writing this run folder; "
                            "wait for it or stop it (after a killed Snakemake it is an orphan job)") from None
        # Never unlinked: removing a flock'ed file lets a third process lock a new inode while we hold the old one.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def run_tag(run_config: dict, code_version: str, data_dir: str | os.PathLike) -> str:
    """16 hex digits identifying what a run computes: its config, the code version and the dataset's manifest
    (every file's sha256), so a rebuilt dataset or a bumped code_version never reuses an old checkpoint."""
    manifest = Path(data_dir) / "manifest.json"
    data = manifest.read_bytes() if manifest.is_file() else b"no manifest: " + str(Path(data_dir).resolve()).encode()
    h = hashlib.sha256(json.dumps(run_config, sort_keys=True).encode())
    h.update(b"\0" + str(code_version).encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def _read_tag(ckpt: Path) -> str | None:
    f = ckpt / TAG_FILE
    return f.read_text().strip() if f.is_file() else None


def prepare(out: str | os.PathLike, tag: str, log=print) -> bool:
    """Make `<out>/ckpt/` belong to `tag`; True when `ckpt/final/` already holds this run's finished outputs.

    Rank 0 only, under the RunLock. A `ckpt/` of another tag (or of none: written before tags existed) is moved to
    `ckpt.stale-<its tag>/` (replacing an older one of that name) so nothing of a different run is ever resumed.
    """
    ckpt = Path(out) / "ckpt"
    old = _read_tag(ckpt)
    if ckpt.exists() and old != tag:
        stale = ckpt.with_name(f"ckpt.stale-{old or 'untagged'}")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(ckpt, stale)
        log(f"{ckpt} was written by another run config, code version or dataset (run tag {old}, this run is "
            f"{tag}): moved it to {stale} and starting from step 0")
    ckpt.mkdir(parents=True, exist_ok=True)
    if old != tag:
        atomic_write_text(ckpt / TAG_FILE, tag + "\n")
    final = ckpt / FINAL
    return final.is_dir() and all((final / name).is_file() for name in FINAL_OUTPUTS)


def final_dir(out: str | os.PathLike) -> Path:
    """Where a finished run keeps its outputs; write it with io_utils.atomic_directory (complete or absent)."""
    return Path(out) / "ckpt" / FINAL


def publish_final(out: str | os.PathLike) -> None:
    """Copy everything in `ckpt/final/` into `<out>/` (files atomically, folders as hard links swapped in whole),
    where Snakemake expects it."""
    out = Path(out)
    for src in sorted((out / "ckpt" / FINAL).iterdir()):
        if src.is_dir():
            publish_links(sorted(src.iterdir()), out / src.name)
            continue
        with atomic_write(out / src.name) as f, open(src, "rb") as fh:
            shutil.copyfileobj(fh, f)


def remove_entries(folder: str | os.PathLike, names) -> None:
    """Delete these files / folders of `folder` where they exist."""
    for name in names:
        path = Path(folder) / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def prune_checkpoints(out: str | os.PathLike) -> None:
    """Delete the resumable step checkpoints of a finished run (`ckpt/final/` and the tag stay)."""
    ckpt = Path(out) / "ckpt"
    remove_entries(ckpt, [p.name for p in ckpt.iterdir() if p.name not in (FINAL, TAG_FILE)])
