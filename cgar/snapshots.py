"""EMA snapshots taken at each in-training evaluation point, their retention, and model_best.pt.

A snapshot `step{step:07d}.pt` has the payload format of model.pt (`cgar.evaluate.read_checkpoint` loads it), so any
of them can be evaluated on the full test set later (`python -m cgar.evaluate --checkpoint snapshots/...`). While the
run trains they live in `ckpt/snapshots/` (beside the resumable checkpoints, which Snakemake does not delete on a
failed job); `publish` hard-links them into the run folder's `snapshots/` when the run completes, leaving the live
folder intact, so a kill during publishing loses nothing.

Retention (`train.keep_snapshots`): 0 keeps all; k keeps the k newest plus the best by validation exact accuracy
(which model_best.pt is copied from at the end, with "selected_on": "val").
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from cgar.io_utils import atomic_write, publish_links


def snapshot_name(step: int) -> str:
    return f"step{step:07d}.pt"


def save_payload(path: Path, payload: dict) -> None:
    with atomic_write(path) as f:
        torch.save(payload, f)


class Snapshots:
    def __init__(self, root: str | os.PathLike, keep: int = 0):
        self.root, self.keep = Path(root), keep

    name = staticmethod(snapshot_name)

    def steps(self) -> list[int]:
        return sorted(int(p.stem[4:]) for p in self.root.glob("step*.pt"))

    def save(self, step: int, payload: dict) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / snapshot_name(step)
        save_payload(path, payload)
        return path

    def prune(self, best_step: int | None) -> list[int]:
        """Delete all but the `keep` newest (and the best); returns the deleted steps. keep 0: delete nothing."""
        steps = self.steps()
        if self.keep <= 0:
            return []
        drop = [s for s in steps[: -self.keep] if s != best_step]
        for s in drop:
            (self.root / snapshot_name(s)).unlink(missing_ok=True)
        return drop

    def drop_after(self, step: int) -> None:
        """Resuming at `step`: snapshots past it belong to steps that will be redone."""
        for s in self.steps():
            if s > step:
                (self.root / snapshot_name(s)).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def publish(self, dest: Path) -> None:
        """Make `dest` hold exactly the live snapshots (hard links, swapped in when complete)."""
        publish_links([self.root / snapshot_name(s) for s in self.steps()], dest)


def write_model_best(dest: Path, source: Path | dict, selected_on: str) -> dict:
    """model_best.pt from a snapshot file (selected_on "val") or the final payload (selected_on "final": no val
    split, or no in-training evaluation), with the selection recorded in the payload."""
    payload = torch.load(source, map_location="cpu", weights_only=True) if isinstance(source, Path) else dict(source)
    payload.update(selected_on=selected_on, selection_metric="exact_accuracy" if selected_on == "val" else None)
    save_payload(dest, payload)
    return payload
