"""How fast does a small TRM learn Sudoku on one CPU thread? The sweep behind config/laptop.yaml (issue 12).

Usage: python bench/laptop_sweep.py [--grid 6x6] [--hidden 64] [--T 2 --n 2] [--batch 32] [--lr 3e-3]
                                    [--prefix 1] [--ffn-multiple 64] [--steps 1500] [--every 100]

A plain training loop, no DeepSpeed and no Snakemake, so one setting takes minutes: generated puzzles (the
generator's `gen_unbiased_like` source, random minimal puzzles; `--kaggle` for 9x9's easier kaggle-like ones),
TRM's carry, ACT loss (stablemax), AdamATan2 + SignSGD, EMA 0.99. Every `--every` steps the EMA model is
evaluated on 500 held-out puzzles: exact accuracy after all `--sup` steps, accuracy on the blank cells, and the
mean step at which the halting head (q_halt > 0) first fires, i.e. what ACT inference would do. `t` is training
time only (evaluation excluded). The rows of docs/laptop/sweep.md come from this loop (their logs beside it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cgar.losses import act_loss
from cgar.model import TRM, TRMConfig
from cgar.optim import EMA, AdamATan2, SignSGD, lr_at, set_lr
from cgar.sudoku.generate import SourceMix, generate_chunk
from cgar.sudoku.grid import grid_shape, parse_grids

TEST = 500


def puzzles(grid: str, n: int, kaggle: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) int32 [n, cells] in the dataset's tokens (1 blank, 2..n+1 digits)."""
    shape = grid_shape(grid)
    share = dict(kaggle_like=float(kaggle), unbiased_like=float(not kaggle))
    mix = SourceMix(**share, lowclue=0.0, hard=0.0, extreme=0.0)
    rows = generate_chunk(seed=0, chunk=0, size=n, mix=mix, shape=shape, class_copies=1)
    q = parse_grids([r[1] for r in rows], shape).astype(np.int32) + 1
    a = parse_grids([r[2] for r in rows], shape).astype(np.int32) + 1
    return torch.from_numpy(q), torch.from_numpy(a)


def evaluate(model: TRM, ema: EMA, inputs, labels, sup: int) -> tuple[float, float, float]:
    """(exact accuracy, blank-cell accuracy, mean first halting step) of the EMA model after `sup` steps."""
    n = len(inputs)
    with ema.swapped(model), torch.inference_mode():
        model.eval()
        carry = model.initial_carry(n)
        batch = dict(inputs=inputs, labels=labels, puzzle_identifiers=torch.zeros(n, dtype=torch.int32))
        halt = torch.full((n,), sup)
        for k in range(sup):
            carry, out = model(carry, batch)
            halt = torch.where((out.q_halt > 0) & (halt == sup), k + 1, halt)
        model.train()
    pred, blank = out.logits.argmax(-1), inputs == 1
    exact = (pred == labels).all(-1).float().mean().item()
    return exact, ((pred == labels) & blank).sum().item() / blank.sum().item(), halt.float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", default="6x6", choices=("9x9", "6x6", "4x4"))
    ap.add_argument("--kaggle", action="store_true", help="kaggle-like puzzles (more givens) instead of minimal")
    ap.add_argument("--train-puzzles", type=int, default=3000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--T", type=int, default=2)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--sup", type=int, default=8, help="supervision steps (halt_max_steps)")
    ap.add_argument("--prefix", type=int, default=1, help="puzzle_emb_len (TRM: 16)")
    ap.add_argument("--ffn-multiple", type=int, default=64, help="SwiGLU rounding (TRM: 256)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    t0 = time.time()
    inputs, labels = puzzles(a.grid, a.train_puzzles + TEST, a.kaggle)
    print(f"{len(inputs)} puzzles in {time.time() - t0:.1f}s, mean givens {(inputs > 1).sum(1).float().mean():.1f}")
    (tr_in, te_in), (tr_lab, te_lab) = inputs.split([a.train_puzzles, TEST]), labels.split([a.train_puzzles, TEST])
    shape = grid_shape(a.grid)
    cfg = TRMConfig(vocab_size=shape.n + 2, seq_len=shape.cells, puzzle_emb_len=a.prefix, hidden_size=a.hidden,
                    H_cycles=a.T, L_cycles=a.n, halt_max_steps=a.sup, ffn_multiple=a.ffn_multiple,
                    forward_dtype="float32")
    torch.manual_seed(0)
    model = TRM(cfg).train()
    print(f"{model.num_params():,} parameters")
    opt = AdamATan2(model.parameters(), lr=a.lr, weight_decay=a.wd)
    emb_opt = SignSGD(model.puzzle_emb, lr=a.lr, weight_decay=a.wd)
    ema, g = EMA(model, 0.99), torch.Generator().manual_seed(0)
    carry, train_s = model.initial_carry(a.batch), 0.0
    ids = torch.zeros(a.batch, dtype=torch.int32)
    for step in range(1, a.steps + 1):
        t = time.time()
        idx = torch.randint(0, len(tr_in), (a.batch,), generator=g)
        lr = lr_at(step, a.lr, a.warmup)
        set_lr(opt, lr), set_lr(emb_opt, lr)
        carry, out = model(carry, dict(inputs=tr_in[idx], labels=tr_lab[idx], puzzle_identifiers=ids), generator=g)
        loss, m = act_loss(out.logits, out.q_halt, carry.data["labels"], carry.halted, carry.steps)
        (loss / a.batch).backward()
        opt.step(), emb_opt.step(), opt.zero_grad(set_to_none=True), ema.update(model)
        train_s += time.time() - t
        if step % a.every == 0:
            exact, blank, halt = evaluate(model, ema, te_in, te_lab, a.sup)
            print(f"t={train_s:5.0f}s step={step} loss={loss.item() / a.batch:.3f} test exact={exact:.3f} "
                  f"blank_tok={blank:.3f} halt_mean={halt:.2f}", flush=True)
    print(f"train steps/s {a.steps / train_s:.2f}")


if __name__ == "__main__":
    main()
