"""Gradient statistics of HSW's premise, every `train.grad_stats_every` optimizer steps.

HSW (cgar/curriculum.py) weights supervision step t by lambda^(t-1) / Z on the premise that gradients shrink over the
supervision steps. At a measurement step, before the step's own forward, on the step's carry and batch (so on the
weights the step is about to update), we compute:

- per supervision step group t = 1..S (the slots that run their t-th step now): the gradient g_t of the UNWEIGHTED
  summed ACT loss of those slots; `grad_norm_by_step[t]` = ||g_t|| / count_t (the per-slot mean gradient's norm),
  null for an empty group. By linearity sum_t g_t is the full batch's unweighted gradient (tested).
- the variance of the minibatch gradient estimate across `grad_stats_chunks` fixed chunks of the global batch
  (contiguous slot ranges): chunk c's estimate is g_c = grad(sum_i w_i loss_i over the chunk) / |chunk|, and
  var = sum_c ||g_c - mean||^2 / (C - 1) (the trace of the sample covariance), once with the run's HSW weights w
  and once with w = 1; `*_rel` divides by ||mean||^2, so the weights' overall scale (1/Z) cancels, and
  variance_reduction = 1 - var_weighted_rel / var_unweighted_rel (0 for a run without per-sample weights).

Gradients are of the network parameters (the main optimizer's; the SignSGD puzzle embedding is left out) and come
from `torch.autograd.grad`, which returns them without accumulating into .grad. The forwards run on row subsets of
the carry (the model is row-independent) with the model in eval mode, where the puzzle embedding is a plain lookup
of the same values and its training-mode grad leaf stays untouched; the halting decision of these forwards is
discarded (the loss does not depend on it). Nothing here draws random numbers or touches the optimizer, the EMA or
the carry, so a run with grad stats trains bitwise like one without (tested). Ranks: every rank computes its slots'
part of each group and chunk gradient and the parts are summed over ranks (one all-reduce each), so the numbers do
not depend on the world size beyond float summation order. Cost per measurement: about 2 forwards and 3 backwards
of the batch (2 with uniform weights); `bench/train_eval_overhead.py` measures it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cgar.act import carry_rows
from cgar.curriculum import hsw_weight
from cgar.engine import all_reduce_sum
from cgar.losses import act_loss
from cgar.model import TRM, Carry
from cgar.run_logs import RecordLog

Weight = float | torch.Tensor | None  # act_loss's weight: none, one scalar, or one per slot


def slot_steps(carry: Carry) -> torch.Tensor:
    """[B] int64: the 1-based supervision step each slot runs next (a halted slot restarts at 1)."""
    return (torch.where(carry.halted, torch.zeros_like(carry.steps), carry.steps) + 1).long()


def flat_grads(model: TRM, params: list[torch.Tensor], carry: Carry, batch: dict, depth: tuple[int, int],
               min_halt: torch.Tensor, idx: torch.Tensor, weights: list[Weight]) -> list[torch.Tensor]:
    """For slots `idx`: one flattened fp32 gradient of the summed ACT loss per entry of `weights` (a per-slot weight
    tensor covers all B slots and is sliced here; a float is one scalar), all from one forward. Call with the model in eval mode."""
    n_params = sum(p.numel() for p in params)
    if len(idx) == 0:
        return [torch.zeros(n_params, device=params[0].device) for _ in weights]
    with torch.enable_grad():
        new, out = model(carry_rows(carry, idx), {k: v[idx] for k, v in batch.items()}, depth=depth,
                         min_halt_steps=min_halt[idx])
        grads = []
        for k, w in enumerate(weights):
            w = w[idx] if torch.is_tensor(w) and w.ndim else w  # per slot, or one scalar
            loss, _ = act_loss(out.logits, out.q_halt, new.data["labels"], new.halted, new.steps, weight=w)
            g = torch.autograd.grad(loss, params, retain_graph=k + 1 < len(weights), allow_unused=True)
            grads.append(torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1).float()
                                    for p, gi in zip(params, g)]))
    return grads


def chunk_variance(chunk_grads: torch.Tensor) -> tuple[float, float]:
    """[C, P] minibatch gradient estimates -> (trace of their sample covariance, the same / ||mean||^2)."""
    g = chunk_grads.double()
    mean = g.mean(0)
    var = float(((g - mean) ** 2).sum() / (len(g) - 1))
    return var, var / max(float(mean.square().sum()), 1e-300)


def measure(model: TRM, carry: Carry, batch: dict, depth: tuple[int, int], min_halt: torch.Tensor, weight: Weight,
            chunks: int, global_batch: int, rank: int = 0, world: int = 1) -> dict:
    """The statistics of one step (module docstring); `carry`, `batch`, `min_halt`, `weight` are this rank's slots
    [B / world], exactly as the training step is about to use them."""
    S, local = model.config.halt_max_steps, len(carry.steps)
    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device
    t = slot_steps(carry)
    was_training = model.training
    model.eval()  # the puzzle embedding's grad leaf and the training halting rule stay out of it
    try:
        counts = all_reduce_sum(torch.stack([(t == s).sum() for s in range(1, S + 1)]).to(dev)).tolist()
        norms = []
        for s in range(1, S + 1):
            (g,) = flat_grads(model, params, carry, batch, depth, min_halt, torch.nonzero(t == s).flatten(), [None])
            all_reduce_sum(g)
            norms.append(float(g.norm()) / counts[s - 1] if counts[s - 1] else None)
        per_slot = torch.is_tensor(weight)  # HSW paper mode; released mode is a float
        ests: list[list[torch.Tensor]] = [[], []]  # unweighted, weighted
        lo = rank * local
        for c in range(chunks):
            a, b = c * global_batch // chunks, (c + 1) * global_batch // chunks  # global slots of chunk c
            first = max(a, lo)  # this rank's part of the chunk (often none of it)
            idx = torch.arange(first, max(first, min(b, lo + local)), device=t.device) - lo
            gs = flat_grads(model, params, carry, batch, depth, min_halt, idx, [None, weight] if per_slot else [None])
            for k, g in enumerate(gs):
                ests[k].append(all_reduce_sum(g) / (b - a))
    finally:
        model.train(was_training)
    var_u, rel_u = chunk_variance(torch.stack(ests[0]))
    # a scalar weight (released mode) or none scales every chunk alike: the relative variance is the unweighted one
    var_w, rel_w = chunk_variance(torch.stack(ests[1])) if per_slot else (var_u * _scale2(weight), rel_u)
    return {"slots_by_step": [int(x) for x in counts], "grad_norm_by_step": norms,
            "var_weighted": var_w, "var_unweighted": var_u, "var_weighted_rel": rel_w, "var_unweighted_rel": rel_u,
            "variance_reduction": 1.0 - rel_w / rel_u if rel_u > 0 else 0.0}


def _scale2(weight: Weight) -> float:
    return 1.0 if weight is None else float(weight) ** 2


class GradStats:
    """The run's measurements: `run` at a due step (from inside the training step), records checkpointed with the
    run (`log`, a RecordLog; live copy ckpt/grad_stats.jsonl), published as grad_stats.jsonl."""

    def __init__(self, cfg, ckpt_root: Path):
        self.cfg, self.every, self.chunks = cfg, cfg.train.grad_stats_every, cfg.train.grad_stats_chunks
        self.log = RecordLog(ckpt_root / "grad_stats.jsonl")

    @classmethod
    def create(cls, cfg, ckpt_root: Path) -> "GradStats | None":
        return cls(cfg, ckpt_root) if cfg.train.grad_stats_every > 0 else None

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def run(self, tr, step: int, stage: int, T: int, n: int, batch: dict, min_halt: torch.Tensor,
            incoming: torch.Tensor) -> float:
        """Measure at `step` for trainer `tr` (before its forward); returns the seconds it took (off the clock)."""
        t0 = time.perf_counter()
        cfg = self.cfg
        # the weights the step's loss will use: HSW's per-slot step index is the step the slot is about to run
        w = hsw_weight(cfg.hsw.mode, incoming, slot_steps(tr.carry), cfg.hsw.decay,
                       tr.mcfg.halt_max_steps) if cfg.hsw.enabled else None
        stats = measure(tr.model, tr.carry, batch, (T, n), min_halt, w, self.chunks, cfg.train.global_batch_size,
                        tr.rt.rank, tr.rt.world)
        wall = time.perf_counter() - t0
        if tr.rt.is_main:
            rec = {"step": step, "stage": stage, "T": T, "n": n, **stats, "grad_stats_wall_s": round(wall, 3)}
            self.log.append(rec)
            tr.tb.scalars("grad_stats", {k: v for k, v in rec.items() if k != "grad_norm_by_step"})
            tr.tb.scalars("grad_norm_by_step", {"step": step, **{f"t{t:02d}": v for t, v in
                                                                enumerate(stats["grad_norm_by_step"], 1)}})
        return wall
