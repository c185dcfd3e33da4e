"""CGAR's two training-time schedules (Qasim & Zhang, arXiv 2511.08653), as pure functions.

Progressive Depth Curriculum (PDC, paper §3.3): the recursion depth (T, n) grows with training progress
rho = step / total_steps: (1, 2) for rho < 0.3, (2, 4) for rho < 0.6, then the full (3, 6). Evaluation always
uses the full depth (the CGAR code ignores the curriculum in eval mode). Effective depth per supervision step is
D_eff = T (n + 1) n_layers, so the stages cost 6, 20, 42 layers and the progress-weighted mean is
0.3*6 + 0.3*20 + 0.4*42 = 24.6, i.e. the paper's 41.4% FLOPs reduction.

Hierarchical Supervision Weighting (HSW, paper §3.5): supervision step t (1-based) gets weight
w_t = lambda^(t-1) / Z_lambda with Z_lambda = sum_{t=1..N_sup} lambda^(t-1), lambda = 0.7.

The paper and the released code disagree on HSW (spec §3.4), so both are modes:
- "paper": per-sample w_t, t = the slot's own supervision step after this step, Z over 16 steps
  (0.301, 0.211, 0.148, 0.103, 0.072, ..., 0.0014 at t = 16; the weights sum to 1).
- "released": `losses_cgar.py` multiplies the *whole* loss by one scalar 0.7^int(mean of the incoming
  carry's step counts), with no Z and no per-sample weights.
- "off": TRM baseline (weight 1).

DEFAULT_HSW_MODE = "paper". Why:
1. A reproduction of the method must implement the method as published; "released" is kept for an ablation.
2. Under AdamATan2 the released scalar is close to a no-op. atan2(c m, c sqrt(v)) = atan2(m, sqrt(v)) for any
   constant c > 0, and with the persistent carry the batch-mean incoming step quickly settles to a near-constant
   value (the slots are a mix of all depths 1..16), so 0.7^k only matters through its slow drift and the
   rare integer flips of k. A run in released mode is nearly the baseline, and so cannot show an HSW effect.
3. The per-sample weights change the *relative* contribution of slots: with the persistent carry every
   optimizer step mixes slots at steps 1..16, and w_1 / w_16 = 0.7^-15 = 211, so gradients come mostly from
   early-step slots. That is the paper's stated mechanism (early steps carry the largest gradients).
   The absolute scale drop (each sample's loss times <= 0.301, about 1/Z on average at early steps) cancels in
   AdamATan2 just like the released scalar, so no learning-rate retuning is implied; it does matter for
   AdamW only through eps (1e-8, negligible). Log the unweighted lm/q losses to compare runs.
Caveats: deep-step slots (and their q_halt targets) get little gradient, which may change halting behaviour;
t follows the slot's own step counter, which the exploration rule and the q_halt head make variable per slot.
"""

from __future__ import annotations

import math

import torch

Stage = tuple[float, int, int]  # (progress at which the stage starts, T, n)
PAPER_STAGES: tuple[Stage, ...] = ((0.0, 1, 2), (0.3, 2, 4), (0.6, 3, 6))
HSW_MODES = ("off", "paper", "released")
DEFAULT_HSW_MODE = "paper"


# ----------------------------------------------------------------------------- PDC

def validate_stages(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """Stages must start at progress 0, be sorted by strictly increasing start in [0, 1), and have T, n >= 1."""
    stages = tuple((float(s), int(T), int(n)) for s, T, n in stages)
    starts = [s for s, _, _ in stages]
    if not stages or starts[0] != 0.0:
        raise ValueError(f"PDC stages must start at progress 0.0, got {stages}")
    if any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= 1.0:
        raise ValueError(f"PDC stage starts must increase strictly within [0, 1), got {starts}")
    if any(T < 1 or n < 1 for _, T, n in stages):
        raise ValueError(f"PDC stages need positive integer T and n, got {stages}")
    return stages


def depth_at(progress: float, stages: tuple[Stage, ...] = PAPER_STAGES) -> tuple[int, int]:
    """(T, n) for training progress in [0, 1]: the last stage whose start <= progress (paper §3.3)."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    stages = validate_stages(stages)
    T, n = stages[0][1:]
    for start, t, m in stages:
        if progress >= start:
            T, n = t, m
    return T, n


def stages_from_base(H_base: int = 3, L_base: int = 6, boundaries: tuple[float, float] = (0.3, 0.6)
                     ) -> tuple[Stage, ...]:
    """The CGAR code's derivation (`trm_cgar.py`): stage 1 (max(1, ceil(H/3)), max(2, ceil(L/3))),
    stage 2 (max(stage 1, ceil(2H/3)), likewise for L), stage 3 the base. (3, 6) gives the paper's stages."""
    h1, l1 = max(1, math.ceil(H_base / 3)), max(2, math.ceil(L_base / 3))
    h2, l2 = max(h1, math.ceil(2 * H_base / 3)), max(l1, math.ceil(2 * L_base / 3))
    return validate_stages(((0.0, h1, l1), (boundaries[0], h2, l2), (boundaries[1], H_base, L_base)))


def effective_depth(T: int, n: int, n_layers: int = 2) -> int:
    """Layers applied per supervision step: T cycles of (n z-updates + 1 y-update), each n_layers deep."""
    return T * (n + 1) * n_layers


def mean_effective_depth(stages: tuple[Stage, ...] = PAPER_STAGES, n_layers: int = 2) -> float:
    """Progress-weighted mean of effective_depth over training (each stage weighted by its share of [0, 1])."""
    stages = validate_stages(stages)
    ends = [s for s, _, _ in stages[1:]] + [1.0]
    return sum((end - s) * effective_depth(T, n, n_layers) for (s, T, n), end in zip(stages, ends))


def depth_reduction(stages: tuple[Stage, ...] = PAPER_STAGES, n_layers: int = 2) -> float:
    """1 - mean / final-stage depth: 0.414 for the paper's stages (24.6 vs 42)."""
    _, T, n = validate_stages(stages)[-1]
    return 1.0 - mean_effective_depth(stages, n_layers) / effective_depth(T, n, n_layers)


# ----------------------------------------------------------------------------- HSW

def hsw_weights_paper(steps: torch.Tensor, lam: float = 0.7, max_steps: int = 16, check: bool = True) -> torch.Tensor:
    """Paper HSW: w_t = lam^(t-1) / Z, Z = sum_{t=1..max_steps} lam^(t-1). steps: [B] 1-based -> [B] float32.
    check=False skips the range check (two host syncs on a GPU; the trainer's fast step checks at log steps)."""
    steps = torch.as_tensor(steps)
    if check and steps.numel() and (int(steps.min()) < 1 or int(steps.max()) > max_steps):
        raise ValueError(f"supervision steps must be in 1..{max_steps}")
    Z = sum(lam**k for k in range(max_steps))
    return lam ** (steps.to(torch.float32) - 1) / Z


def hsw_scale_released(incoming_steps: torch.Tensor, decay: float = 0.7) -> torch.Tensor:
    """Released-code HSW: decay ** int(mean of the incoming carry's step counts), one scalar for the whole loss,
    as a 0-d float64 tensor on the steps' device (computed there: reading the mean on the host would stall a GPU).

    `incoming_steps` is the carry's `steps` *before* the model refills halted slots (continuing slots: steps
    done so far; just-halted slots: their final count), as `losses_cgar.py` reads it. With several ranks the
    trainer passes the global batch mean (all-reduced), so 1 and N ranks give the same weight; the released code
    ran on one GPU, where the two coincide.
    """
    mean = torch.as_tensor(incoming_steps).double().mean()  # >= 0, so floor = int()'s truncation
    return torch.full_like(mean, decay).pow(mean.floor())


def hsw_weight(mode: str, incoming_steps: torch.Tensor, steps: torch.Tensor, lam: float = 0.7,
               max_steps: int = 16, check: bool = True) -> torch.Tensor | None:
    """The `weight` argument of `cgar.losses.act_loss` for an HSW mode: None, a 0-d tensor, or [B].

    incoming_steps: carry.steps before the forward; steps: carry.steps after it (1-based); check: see
    `hsw_weights_paper`.
    """
    if mode == "off":
        return None
    if mode == "paper":
        return hsw_weights_paper(steps, lam, max_steps, check)
    if mode == "released":
        return hsw_scale_released(incoming_steps, lam)
    raise ValueError(f"unknown HSW mode {mode!r} (one of {HSW_MODES})")
