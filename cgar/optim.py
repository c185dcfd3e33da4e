"""Optimizers and schedules of the TRM recipe (spec §1.6), in plain torch.

- `AdamATan2`: the main optimizer in TRM's code (package `adam-atan2` 0.0.3, a CUDA-only extension; re-done here so
  it runs on CPU and as a DeepSpeed client optimizer). Adam with atan2 in place of m / (sqrt(v) + eps).
- `SignSGD`: the puzzle-embedding buffer's optimizer (TRM's CastedSparseEmbeddingSignSGD_Distributed).
- `lr_at`: linear warmup then cosine to `min_ratio` (TRM uses min_ratio 1.0: constant after warmup).
- `EMA`: exponential moving average of the trainable parameters; evaluation and export use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from cgar.puzzle_embedding import PuzzleEmbedding


class AdamATan2(torch.optim.Optimizer):
    """Adam-atan2 (Everett et al. 2024, "Scaling Exponents Across Parameterizations and Optimizers"), a = b = 1,
    with the update rule of the `adam-atan2` package 0.0.3, which TRM uses.

    Per step t, for each parameter p with gradient g (as the 0.0.3 CUDA kernel, `csrc/adam_atan2.cu`):
        p <- p * (1 - lr * wd)                               decoupled weight decay, before the moments
        m <- lerp(m, g, 1 - b1);  v <- lerp(v, g^2, 1 - b2)
        p <- p - (lr / (1 - b1^t)) * atan2(m, sqrt(v) / sqrt(1 - b2^t))
    beta1's bias correction scales the step size, outside atan2. No epsilon: atan2 is bounded and defined at
    (0, 0). The update is invariant to a constant scale of g; for a steady gradient it is lr * atan(c) / c with
    c = 1 - b1^t (0.997 lr at step 1, then towards pi/4 lr).

    Why 0.0.3: TRM's requirements.txt does not pin `adam-atan2`, so a TRM install (TRM appeared in October 2025)
    resolves to 0.0.3, released in April 2025 a day after 0.0.2 and still the latest. 0.0.2 put the correction
    inside, atan2(m / (1 - b1^t), ..): 0.788x the 0.0.3 step at t = 1, 0.886x at 10, 0.985x at 30 for a steady
    gradient. No TRM or CGAR run can have used it, so it is not offered as an option.
    lr and weight_decay are read from param_groups at each step, so schedulers/DeepSpeed can change them.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.0):
        if lr < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamATan2 hyper-parameters lr={lr} betas={betas} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, (b1, b2) = group["lr"], group["weight_decay"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0  # a host int: reading a device tensor's count would stall a GPU every step
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                p.mul_(1 - lr * wd)
                m.lerp_(g, 1 - b1)
                v.lerp_(g * g, 1 - b2)
                denom = v.sqrt() / math.sqrt(1 - b2**t)
                # the step size is formed in double and cast once by the op, as the kernel's opmath step_size
                p.add_(torch.atan2(m, denom), alpha=-lr / (1 - b1**t))
        return loss


def make_optimizer(name: str, params, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.Optimizer:
    """'adam_atan2' (TRM code) or 'adamw' (TRM paper text; torch's, decoupled wd, eps 1e-8)."""
    if name == "adam_atan2":
        return AdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (adam_atan2 | adamw)")


class SignSGD(torch.optim.Optimizer):
    """Sign-SGD with decoupled weight decay for a `PuzzleEmbedding` buffer (TRM's sparse-embedding optimizer).

    For every identifier present in this step's batch (on any rank):
        w[id] <- w[id] * (1 - lr * wd) - lr * sign(sum of the gradients of the slots with that id)
    Rows that are absent are untouched (no decay either). Gradients come from `embedding.last_rows.grad`.
    Across ranks the per-id sums are all-reduced (dense [num_ids, D]: tiny for Sudoku's single id).
    """

    def __init__(self, embedding: PuzzleEmbedding, lr: float = 1e-4, weight_decay: float = 0.0):
        self.embedding = embedding
        super().__init__([embedding.weight], dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        emb, group = self.embedding, self.param_groups[0]
        rows, ids = emb.last_rows, emb.last_ids
        if rows is None or rows.grad is None:
            return None
        w = emb.weight  # [num_ids, D]
        grad = torch.zeros_like(w).index_add_(0, ids, rows.grad.to(w.dtype))  # [num_ids, D]
        seen = torch.zeros(w.shape[0], device=w.device).index_add_(0, ids, torch.ones_like(ids, dtype=torch.float))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(grad)
            dist.all_reduce(seen)
        lr, wd = group["lr"], group["weight_decay"]
        present = (seen > 0).unsqueeze(-1)  # [num_ids, 1]
        w.copy_(torch.where(present, w * (1 - lr * wd) - lr * grad.sign(), w))
        rows.grad = None  # consumed; a stale gradient must never be applied twice
        emb.last_rows = emb.last_ids = None
        return None


def lr_at(step: int, base_lr: float, warmup_steps: int = 2000, total_steps: int | None = None,
          min_ratio: float = 1.0) -> float:
    """TRM's `cosine_schedule_with_warmup_lr_lambda`: base_lr * step / warmup during warmup, then a half cosine
    from base_lr to min_ratio * base_lr at total_steps. min_ratio 1.0 (TRM's default) means constant.

    `step` is the 1-based number of the optimizer step about to be taken (TRM increments before computing the
    rate), so the first update uses base_lr / warmup_steps.
    """
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    if min_ratio == 1.0 or total_steps is None:
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EMA:
    """shadow <- (1 - decay) * param + decay * shadow after each optimizer step, over requires_grad params.

    Buffers (the puzzle embedding, y/z init) are not averaged: swapping in the EMA weights leaves them live,
    as TRM's deepcopy-based EMA model does.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, foreach: bool = True):
        self.decay, self.foreach = decay, foreach
        self.shadow = {name: p.detach().clone() for name, p in self._params(model)}

    @staticmethod
    def _params(model: nn.Module) -> Iterable[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in model.named_parameters() if p.requires_grad)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self.foreach:  # the same two ops on every tensor, in one call each (one fused kernel per op on CUDA)
            names, params = zip(*((name, p.detach()) for name, p in self._params(model)))
            shadows = [self.shadow[name] for name in names]
            torch._foreach_mul_(shadows, self.decay)
            torch._foreach_add_(shadows, params, alpha=1 - self.decay)
            return
        for name, p in self._params(model):
            self.shadow[name].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the EMA weights (for export)."""
        for name, p in self._params(model):
            p.copy_(self.shadow[name])

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily use the EMA weights (evaluation); the live weights come back on exit, even on error."""
        backup = {name: p.detach().clone() for name, p in self._params(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(backup[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise KeyError(f"EMA state has parameters {sorted(state['shadow'])}, model has {sorted(self.shadow)}")
        self.decay = state["decay"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
