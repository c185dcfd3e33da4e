"""One test puzzle through the recursion: the model's prediction of the grid after every supervision step.

    python -m cgar.trace --checkpoint run/model.pt --data DATASET --out run/trace.json [--index 0] [--split test]

Same protocol as `cgar.evaluate --mode full` (EMA weights, eval mode, full depth, a fresh carry, all S steps),
for one example, so a reader can watch the answer form (drawn by the `puzzle_trace` figure). trace.json holds
the puzzle and its solution as n*n digits (0 = blank; 81 for 9x9, 36 for 6x6: the dataset's grid), and per step
1..S the predicted digits (argmax over the vocabulary; 0 where the model predicts the pad or blank token), the number
of right cells and the q_halt logit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from cgar.data.loader import collate, load_split
from cgar.evaluate import build_model, read_checkpoint
from cgar.io_utils import DataError, atomic_write_json
from cgar.model import TRM

DIGIT_OFFSET = 1  # tokens: 0 pad, 1 blank, d + 1 for digit d (cgar.data.build), so digit = token - 1


def tokens_to_digits(tokens: np.ndarray) -> list[int]:
    """[n*n] tokens -> digits 0..n (0 for pad / blank; a token past the grid's digits cannot occur: the model's
    vocabulary is the dataset's, 0..n+1)."""
    return np.maximum(np.asarray(tokens, np.int64) - DIGIT_OFFSET, 0).tolist()


@torch.inference_mode()
def trace(model: TRM, batch: dict[str, torch.Tensor]) -> dict:
    """All S supervision steps of the one-row `batch`: predictions, right cells and q_halt per step."""
    model.eval()
    device = model.y_init.device
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = batch["labels"][0]
    carry = model.initial_carry(1, device)  # halted: the first step takes the puzzle
    preds, right, q_halt = [], [], []
    for _ in range(model.config.halt_max_steps):
        carry, out = model(carry, batch)  # depth=None: full (T, n), as cgar.evaluate
        pred = out.logits[0].argmax(-1)
        preds.append(tokens_to_digits(pred.cpu().numpy()))
        right.append(int((pred == labels).sum()))
        q_halt.append(float(out.q_halt[0]))
    return {"predictions": preds, "cells_correct": right, "q_halt": q_halt,
            "solved": [r == int(labels.numel()) for r in right]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cgar.trace", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="model.pt (or a snapshot) written by cgar.train")
    ap.add_argument("--data", type=Path, required=True, help="built dataset directory")
    ap.add_argument("--split", default="test", help="split the puzzle comes from (default: test)")
    ap.add_argument("--index", type=int, default=0, help="example index in the split (default: 0)")
    ap.add_argument("--out", type=Path, required=True, help="trace.json to write")
    a = ap.parse_args(argv)
    try:
        payload = read_checkpoint(a.checkpoint)
        split = load_split(a.data, a.split)
        if not 0 <= a.index < split.num_examples:
            raise DataError("--index", f"{a.index} is outside the {split.num_examples} examples of {a.split}")
        model = split.fitting(build_model(payload, a.checkpoint, "cpu"), a.checkpoint)  # one puzzle: CPU is plenty
        result = trace(model, collate(split, np.array([a.index]), 1))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    record = {"checkpoint": str(a.checkpoint), "step": payload.get("step"), "data_dir": str(a.data),
              "split": a.split, "index": a.index, "max_steps": model.config.halt_max_steps,
              "puzzle": tokens_to_digits(split.inputs[a.index]), "solution": tokens_to_digits(split.labels[a.index]),
              **result}
    atomic_write_json(a.out, record)
    print(f"{a.out}: example {a.index}, right cells per step {result['cells_correct']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
