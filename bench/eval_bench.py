"""Evaluation throughput: full 16-step pass vs ACT inference with batch compaction, at the paper's model shape.

Usage: python bench/eval_bench.py [--n 8] [--batch-size 4] [--device auto] [--target-halt 6] [--threads 1]

A randomly initialised TRM (hidden 512, mlp_t, T=3, n=6, 16 steps) on synthetic puzzles: timing does not depend on
what the weights know. The init's q_head (weight 0, bias -5) would never halt, so the bench gives it random
weights N(0, 1/D), which make q_halt vary from step to step, then shifts its bias so that the mean ACT halting step
derived from the full pass is --target-halt (about 6: the CGAR claims put trained models near 5.5-5.9). The bias
moves q_halt by a constant and leaves the recursion untouched, so the ACT run can be checked against the full pass.

Prints puzzles/s in both modes, the halting distribution, the cost ratio ACT/full against mean_halt/16 (target:
<= 1.1 x), per-puzzle agreement with the ACT view of the full pass, and the projected time for 423,168 puzzles.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cgar.eval_metrics import halt_steps
from cgar.evaluate import Results, evaluate_act, evaluate_full
from cgar.model import TRM, TRMConfig

TEST_PUZZLES = 423_168


def synthetic_batches(n: int, batch: int, seed: int):
    """(batch dict, example indices) like `eval_batches`: random givens and labels, the last batch padded."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1, 11, (n, 81), generator=g, dtype=torch.int32)
    labels = torch.randint(2, 11, (n, 81), generator=g, dtype=torch.int32)
    for b0 in range(0, n, batch):
        idx = np.arange(b0, min(b0 + batch, n))
        pad = batch - len(idx)
        yield {"inputs": torch.nn.functional.pad(inputs[idx], (0, 0, 0, pad)),
               "labels": torch.nn.functional.pad(labels[idx], (0, 0, 0, pad), value=-100),
               "puzzle_identifiers": torch.zeros(batch, dtype=torch.int32)}, idx


def bias_for_mean_halt(q: np.ndarray, target: float) -> float:
    """Shift c such that halting on q + c > 0 gives a mean halting step near `target` (bisection: it falls with c)."""
    run = np.full(len(q), q.shape[1], np.uint8)
    lo, hi = -50.0, 50.0
    for _ in range(60):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if halt_steps(q + c, run).mean() > target else (lo, c)
    return (lo + hi) / 2


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="synthetic puzzles (default 8 on CPU, 4 x 768 on CUDA)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="puzzles per batch (full) / slots in flight (ACT); default 4 on CPU, 768 (the paper's) on CUDA")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--target-halt", type=float, default=6.0, help="mean ACT halting step to calibrate to")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: steady on a shared machine)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    if a.batch_size is None:  # a GPU projection from tiny batches would be far too pessimistic
        a.batch_size = 768 if device.type == "cuda" else 4
    if a.n is None:
        a.n = 4 * a.batch_size if device.type == "cuda" else 8
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = TRM(TRMConfig(hidden_size=a.hidden)).to(device).eval()
    S = model.config.halt_max_steps
    with torch.no_grad():
        model.q_head.weight.normal_(0, a.hidden**-0.5)
        model.q_head.bias.zero_()
    print(f"TRM hidden {a.hidden} mlp_t, depth (T, n) = ({model.config.H_cycles}, {model.config.L_cycles}), "
          f"{S} steps, {model.num_params():,} params, {device}"
          f"{'' if device.type == 'cuda' else f' ({a.threads} thread(s))'}; {a.n} puzzles, batch {a.batch_size}")

    evaluate_full(model, synthetic_batches(a.batch_size, a.batch_size, a.seed + 1), Results.empty(a.batch_size, S))
    full = Results.empty(a.n, S)
    t_full = timed(lambda: evaluate_full(model, synthetic_batches(a.n, a.batch_size, a.seed), full))

    c = bias_for_mean_halt(full.q_halt, a.target_halt)
    with torch.no_grad():
        model.q_head.bias[0] += c  # q_halt is output 0 of the q head
    want = halt_steps(full.q_halt + c, full.steps_run)
    act = Results.empty(a.n, S)
    t_act = timed(lambda: evaluate_act(model, synthetic_batches(a.n, a.batch_size, a.seed), act, a.batch_size))
    act = Results.merge([act])
    mean_h = float(act.steps_run.mean())

    agree = float((act.steps_run == want).mean())
    ran = np.arange(S) < want[:, None]
    cells_agree = float((act.cells == full.cells)[ran].mean()) if agree == 1.0 else float("nan")
    ratio, ideal = t_act / t_full, mean_h / S
    print(f"full pass : {a.n / t_full:8.3f} puzzles/s  ({t_full:.1f} s, {a.n * S} puzzle-steps)")
    print(f"ACT mode  : {a.n / t_act:8.3f} puzzles/s  ({t_act:.1f} s, {int(act.steps_run.sum())} puzzle-steps)")
    print(f"mean halting step {mean_h:.3f} (q bias shift {c:+.3f}); histogram 1..{S}: "
          f"{np.bincount(act.steps_run, minlength=S + 1)[1:].tolist()}")
    print(f"cost ratio ACT/full {ratio:.3f} vs mean_halt/{S} = {ideal:.3f}: {ratio / ideal:.3f} x "
          f"({'OK' if ratio <= 1.1 * ideal else 'ABOVE'} the 1.1 x target)")
    print(f"ACT per-puzzle agreement with the full pass: halting steps {agree:.3f}, right cells up to halt "
          f"{cells_agree:.3f}")
    for name, t in (("full", t_full), ("ACT", t_act)):
        secs = TEST_PUZZLES * t / a.n
        print(f"projected {name:4s} on {TEST_PUZZLES:,} puzzles: {secs / 3600:9.2f} h on this device")


if __name__ == "__main__":
    main()
