"""Per-run record logs that resume exactly (eval_curve.jsonl, grad_stats.jsonl) and live TensorBoard scalars.

`RecordLog`: the records are the truth and travel in the trainer's checkpoints (`state_dict`), so a resumed run
ends with exactly the records an uninterrupted run writes; `ckpt/<name>` is a live copy for people watching a run
(rewritten from the checkpoint on resume, appended to after each record), published to the run folder at the end.

`TensorBoard`: event files in `<run>/tensorboard/` when `train.tensorboard` is true and torch.utils.tensorboard can
be imported (it needs the `tensorboard` package: `pip install -e '.[tb]'`); otherwise a no-op, with one message
saying why. Events are for watching only; no pipeline step reads them, and a resumed run appends to them (a
TensorBoard chart then shows the redone steps twice; the jsonl files never do).
"""

from __future__ import annotations

import json
from pathlib import Path

from cgar.io_utils import atomic_write


class RecordLog:
    def __init__(self, live: Path):
        self.live, self.records = Path(live), []

    def append(self, rec: dict) -> None:
        self.records.append(rec)
        with open(self.live, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def state_dict(self) -> dict:
        return {"records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict | None) -> None:
        self.records = list((state or {}).get("records", []))

    def restart_live(self) -> None:
        """Rewrite the live file from the records (those past the checkpoint will be redone)."""
        self.live.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.live, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)

    def publish(self, dest: Path) -> None:
        with atomic_write(dest, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)


def _flatten(prefix: str, rec: dict, out: dict) -> dict:
    for k, v in rec.items():
        if isinstance(v, dict):
            _flatten(f"{prefix}{k}/", v, out)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = v
    return out


class TensorBoard:
    """Scalars of metrics / eval / grad-stats records, keyed by optimizer step (rank 0 only)."""

    def __init__(self, logdir: Path | None):
        self.writer = None
        if logdir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # optional dependency
            print(f"TensorBoard events off: {e} (pip install tensorboard, or set train.tensorboard: false)",
                  flush=True)
            return
        self.writer = SummaryWriter(log_dir=str(logdir))

    @property
    def active(self) -> bool:
        return self.writer is not None

    def scalars(self, group: str, rec: dict, skip: tuple[str, ...] = ("step",)) -> None:
        if self.writer is None:
            return
        for tag, value in _flatten(f"{group}/", {k: v for k, v in rec.items() if k not in skip}, {}).items():
            self.writer.add_scalar(tag, value, rec["step"])

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
