"""In-training evaluation: every `train.eval_every` optimizer steps (and at the last step), the EMA weights at full
depth on a fixed test subsample and on the validation split, sharded over the run's ranks.

The evaluation itself is `cgar.evaluate`'s (`evaluate_full` over `eval_batches`, metrics from `cgar.eval_metrics`):
EMA weights swapped in, `model.eval()`, every puzzle runs all halt_max_steps steps, metrics at the last step and
ACT halting derived from the same pass. It uses no random numbers and restores the live weights and train mode, so
it leaves the training trajectory untouched; its time is excluded from the training wall-clock (the trainer pauses
its clock). The test subsample is drawn once with the fixed seed 0 (`EVAL_SUBSAMPLE_SEED`), so every run, seed and
variant is evaluated on the same puzzles.

Each point is one record of `eval_curve.jsonl` (format: docs in config/README.md, the issue-10 interface). The
records live in the trainer's checkpoints (`TrainingEvals.state_dict`), so a resumed run writes the identical curve;
`ckpt/eval_curve.jsonl` is the live copy, published to the run folder when the run completes. Each point also
saves an EMA snapshot (`cgar.snapshots`), and the best by VAL exact accuracy becomes model_best.pt.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from cgar.config import ConfigError
from cgar.data.loader import SplitArrays, eval_batches, load_split
from cgar.eval_results import Results, gather
from cgar.evaluate import evaluate_full, local_count
from cgar.run_logs import RecordLog
from cgar.snapshots import Snapshots, write_model_best

EVAL_SUBSAMPLE_SEED = 0  # fixed on purpose: NOT train.seed, so all runs and variants see the same test puzzles
TIMING_KEYS = ("train_wall_s", "eval_wall_s")  # the only fields of a point that differ between identical runs


def is_eval_step(step: int, total: int, every: int) -> bool:
    """Evaluate at every multiple of `every` and always at the last step (never when every == 0)."""
    return every > 0 and (step % every == 0 or step == total)


def subsample_indices(num_examples: int, size: int, seed: int = EVAL_SUBSAMPLE_SEED) -> np.ndarray:
    """Sorted example indices of a seeded subsample without replacement; every example when size >= N."""
    if size >= num_examples:
        return np.arange(num_examples)
    return np.sort(np.random.default_rng(seed).choice(num_examples, size=size, replace=False))


def subset(split: SplitArrays, idx: np.ndarray) -> SplitArrays:
    """The examples `idx` of a split as a split of their own (copied rows; one example per group, like test)."""
    n = len(idx)
    return SplitArrays(split.path, inputs=np.asarray(split.inputs[idx]), labels=np.asarray(split.labels[idx]),
                       puzzle_identifiers=split.puzzle_identifiers[idx],
                       puzzle_indices=np.arange(n + 1, dtype=np.int32), group_indices=np.arange(n + 1, dtype=np.int32),
                       meta=split.meta, shape=split.shape)


def point_metrics(res: Results) -> dict:
    """The eval-curve metrics of one split (fractions in [0, 1], at the last step; ACT halting from the same pass)."""
    s = res.summary()["overall"]
    act = s["act"]
    return {"num_puzzles": s["n"], "exact_accuracy": s["exact_accuracy"], "token_accuracy": s["token_accuracy"],
            "blank_token_accuracy": s["blank_token_accuracy"],
            "act": {k: act[k] for k in ("exact_accuracy", "mean_halt_step", "halting_accuracy")}}


def evaluate_split(model, split: SplitArrays, batch_size: int, rank: int, world: int) -> dict | None:
    """Full-depth evaluation of `model` (already in eval mode, EMA weights) on `split`, sharded over the ranks;
    the metrics on rank 0, None elsewhere."""
    res = Results.empty(local_count(split.num_examples, batch_size, rank, world), model.config.halt_max_steps)
    evaluate_full(model, eval_batches(split, batch_size, rank, world), res)
    merged = gather(res)
    return None if merged is None else point_metrics(merged)


@dataclasses.dataclass
class TrainingEvals:
    """The periodic evaluations of one run, their snapshots and the best-by-val choice. `run(trainer)` at a due step;
    `state_dict` / `load_state_dict` go into the trainer's checkpoint; `publish` at the end (rank 0)."""

    every: int
    batch_size: int
    total: int
    log: RecordLog  # the points; live copy ckpt/eval_curve.jsonl
    test: SplitArrays
    val: SplitArrays | None
    snapshots: Snapshots

    @property
    def curve(self) -> list[dict]:
        return self.log.records

    @classmethod
    def create(cls, cfg, total: int, ckpt_root: Path, world: int = 1) -> "TrainingEvals | None":
        tc = cfg.train
        if tc.eval_every <= 0:
            return None
        if tc.eval_batch_size % world:  # found now, not at the first evaluation point
            raise ConfigError(f"train.eval_batch_size: {tc.eval_batch_size} is not divisible by the {world} ranks")
        test = load_split(cfg.data_dir, "test")
        test = subset(test, subsample_indices(test.num_examples, tc.eval_subsample))
        val = load_split(cfg.data_dir, "val") if (Path(cfg.data_dir) / "val").is_dir() else None
        return cls(tc.eval_every, tc.eval_batch_size, total, RecordLog(ckpt_root / "eval_curve.jsonl"), test, val,
                   Snapshots(ckpt_root / "snapshots", tc.keep_snapshots))

    def due(self, step: int) -> bool:
        return is_eval_step(step, self.total, self.every)

    def run(self, tr, step: int, stage: int, T: int, n: int) -> dict | None:
        """One evaluation point of trainer `tr` at `step` (its weights after that step); the record on rank 0."""
        rt, model = tr.rt, tr.model
        t0 = time.perf_counter()
        with tr.ema.swapped(model):
            model.eval()
            try:
                test = evaluate_split(model, self.test, self.batch_size, rt.rank, rt.world)
                val = None if self.val is None else evaluate_split(model, self.val, self.batch_size, rt.rank,
                                                                    rt.world)
                if rt.is_main:
                    self.snapshots.save(step, tr.payload())
            finally:
                model.train()
        if not rt.is_main:
            return None
        rec = {"step": step, "stage": stage, "T": T, "n": n, "train_wall_s": round(tr.wall, 3),
               "eval_wall_s": round(time.perf_counter() - t0, 3), "flops": tr.flops,
               "flops_fwd_effective": tr.flops_fwd_effective, "test": test, **({"val": val} if val else {})}
        self.log.append(rec)
        self.snapshots.prune(self.best_step())
        return rec

    def best_step(self) -> int | None:
        """The step of the best VAL exact accuracy so far (ties: the earliest), None without val."""
        scored = [(r["val"]["exact_accuracy"], -r["step"]) for r in self.curve if r.get("val")]
        return -max(scored)[1] if scored else None

    def resume(self, state: dict | None, step: int | None) -> None:
        """Rank 0 at start-up: the checkpointed points (step None: a fresh start, no points, no snapshots)."""
        self.log.load_state_dict(state)
        self.snapshots.drop_after(step) if step is not None else self.snapshots.clear()
        self.log.restart_live()

    def publish(self, out: Path) -> None:
        """eval_curve.jsonl, snapshots/ and model_best.pt (when there is a val split) into the run folder (rank 0)."""
        self.log.publish(out / "eval_curve.jsonl")
        self.snapshots.publish(out / "snapshots")
        best = self.best_step()
        if best is not None:
            write_model_best(out / "model_best.pt", out / "snapshots" / self.snapshots.name(best), "val")
