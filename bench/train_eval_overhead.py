"""Overhead of in-training evaluation and gradient statistics as a share of training time (issue 10).

Usage: python bench/train_eval_overhead.py [--device auto] [--hidden 64] [--batch 32] [--reps 5] [--threads 1]

What is timed, at one batch size B (default a small CPU shape: hidden 64, the paper's depth T=3, n=6, 16 steps):
- a training step (bench/train_bench.py's StepRunner: what cgar.train does minus DeepSpeed) at each PDC stage;
- one evaluation batch: `cgar.train_eval.evaluate_split` on B puzzles (16 full-depth supervision steps, no grad);
- one gradient-statistics measurement: `cgar.grad_stats.measure` on the step's carry, with HSW paper weights
  (the costliest case: weighted and unweighted chunk gradients).
Each is a median over --reps rounds, run round-robin so that load from other processes hits all alike.

The shares at the paper config's intervals scale these per-batch times linearly in the batch size (both the
training step and the evaluation are batch-parallel): per `eval_every` = 2000 steps of a 768 batch, an evaluation
point runs ceil((eval_subsample 8192 + val 1000) / 768) = 12 batches of 768; a grad-stats measurement every 2000
steps costs one measurement of the 768 batch. The baseline trains at full depth; PDC runs (pdc, cgar) take cheaper
steps early on, so the same evaluation is a larger share of their training time; both are printed.

Measured on the workplace machine (2026-12-02, 2 shared vCPUs, 1 thread, defaults; heavily loaded, so absolute
times are inflated, ratios less so): eval overhead 5.41% of training time at full depth, 8.68% on the PDC schedule;
grad stats 0.117% / 0.188% (one measurement = 2.3 full-depth training steps; one evaluation point = 108).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_bench import StepRunner, timed  # noqa: E402  (the training step as the step benchmark runs it)

from cgar.curriculum import PAPER_STAGES, hsw_weights_paper  # noqa: E402
from cgar.data.loader import SplitArrays  # noqa: E402
from cgar.grad_stats import measure, slot_steps  # noqa: E402
from cgar.model import TRMConfig  # noqa: E402
from cgar.train_eval import evaluate_split  # noqa: E402


def synthetic_split(n: int, seed: int = 0) -> SplitArrays:
    rng = np.random.default_rng(seed)
    labels = rng.integers(2, 11, (n, 81), dtype=np.uint8)
    inputs = np.where(rng.random((n, 81)) < 0.6, 1, labels).astype(np.uint8)
    idx = np.arange(n + 1, dtype=np.int32)
    meta = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 11, "seq_len": 81}
    return SplitArrays(Path("synthetic"), inputs, labels, np.zeros(n, np.int32), idx, idx, meta)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--hidden", type=int, default=64, help="hidden size (paper: 512)")
    ap.add_argument("--batch", type=int, default=32, help="batch B at which every part is timed")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1 measures the code on a shared machine)")
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--eval-puzzles", type=int, default=8192 + 1000, help="eval_subsample + val_size per point")
    ap.add_argument("--paper-batch", type=int, default=768, help="training and evaluation batch of the paper config")
    ap.add_argument("--grad-stats-every", type=int, default=2000)
    ap.add_argument("--chunks", type=int, default=8)
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    torch.set_num_threads(a.threads)
    cfg = TRMConfig(hidden_size=a.hidden, H_cycles=3, L_cycles=6, halt_max_steps=16)
    runner = StepRunner(cfg, a.batch, device)
    split = synthetic_split(a.batch)
    for _ in range(3):  # warm-up: every depth, and slots spread over supervision steps
        for _, T, n in PAPER_STAGES:
            runner.step(T, n)
    t = slot_steps(runner.carry)
    w = hsw_weights_paper(t.cpu(), 0.7, cfg.halt_max_steps).to(device)

    def eval_batch():
        runner.model.eval()
        evaluate_split(runner.model, split, a.batch, 0, 1)
        runner.model.train()

    def grad_stats():
        measure(runner.model, runner.carry, runner.batch, (3, 6), runner.min_halt, w, a.chunks, a.batch)

    parts = {f"step T={T} n={n}": (lambda T=T, n=n: runner.step(T, n)) for _, T, n in PAPER_STAGES}
    parts.update({"eval batch (16 steps, full depth)": eval_batch, "grad stats (HSW weights)": grad_stats})
    samples = {k: [] for k in parts}
    for _ in range(a.reps):
        for name, fn in parts.items():
            samples[name].append(timed(fn, device)[0])
    med = {k: statistics.median(v) for k, v in samples.items()}

    print(f"device {device}, {a.threads} thread(s), hidden {a.hidden}, batch {a.batch}, T=3 n=6, 16 steps, "
          f"median of {a.reps}")
    for name, sec in med.items():
        print(f"  {name:36s} {sec * 1e3:9.2f} ms")
    full = med["step T=3 n=6"]
    ends = [s for s, *_ in PAPER_STAGES[1:]] + [1.0]
    pdc_step = sum((end - s) * med[f"step T={T} n={n}"] for (s, T, n), end in zip(PAPER_STAGES, ends))
    scale = a.paper_batch / a.batch  # per-batch times scale linearly with the batch
    eval_point = math.ceil(a.eval_puzzles / a.paper_batch) * scale * med["eval batch (16 steps, full depth)"]
    gs = scale * med["grad stats (HSW weights)"]
    print(f"paper intervals: eval every {a.eval_every} steps on {a.eval_puzzles} puzzles "
          f"({math.ceil(a.eval_puzzles / a.paper_batch)} batches of {a.paper_batch}), "
          f"grad stats every {a.grad_stats_every} steps, batch {a.paper_batch}")
    for label, step in (("baseline / hsw (full depth)", full), ("pdc / cgar (PDC schedule mean)", pdc_step)):
        train = a.eval_every * scale * step
        print(f"  {label:32s} eval overhead {eval_point / train:6.2%} of training time, "
              f"grad stats {gs / (a.grad_stats_every * scale * step):6.3%}")
    print(f"  one grad-stats measurement = {med['grad stats (HSW weights)'] / full:.1f} full-depth training steps; "
          f"one evaluation point = {eval_point / (scale * full):.0f} full-depth training steps")


if __name__ == "__main__":
    main()
