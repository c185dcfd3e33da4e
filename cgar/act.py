"""The ACT carry (spec §1.4): per-slot state that persists across optimizer steps, its refill and halting rule.

Training keeps B slots; each optimizer step runs one supervision step on every slot, and a slot whose puzzle
halted takes the next puzzle of the stream with a fresh (y, z). `TRM.forward` calls `refill`, runs the recursion,
counts the step and applies `halting`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Carry:
    """Persistent per-slot state. y, z: [B, 97, D] (detached); steps: [B] int32; halted: [B] bool;
    data: the slot's current puzzle {inputs [B, 81], labels [B, 81], puzzle_identifiers [B]}."""

    y: torch.Tensor
    z: torch.Tensor
    steps: torch.Tensor
    halted: torch.Tensor
    data: dict[str, torch.Tensor]


@dataclass
class StepOutput:
    logits: torch.Tensor  # [B, 81, vocab], compute dtype
    q_halt: torch.Tensor  # [B] fp32 halting logit


def _where_slot(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per-slot select: mask [B] broadcast over the trailing axes of new/old [B, ...]."""
    return torch.where(mask.view((-1,) + (1,) * (new.ndim - 1)), new, old.to(new.dtype))


def refill(carry: Carry, batch: dict[str, torch.Tensor], y_init: torch.Tensor, z_init: torch.Tensor) -> Carry:
    """Slots that halted last step take the new batch's puzzle and restart (y, z, steps = init, init, 0).

    Slots that did not halt keep their state AND their old puzzle; the batch rows at those slots are dropped.
    y_init, z_init: [D], broadcast to all 97 positions.
    """
    h = carry.halted
    return Carry(
        y=_where_slot(h, y_init.to(carry.y.dtype).expand_as(carry.y), carry.y),
        z=_where_slot(h, z_init.to(carry.z.dtype).expand_as(carry.z), carry.z),
        steps=torch.where(h, torch.zeros_like(carry.steps), carry.steps),
        halted=h,
        data={k: _where_slot(h, batch[k], v) for k, v in carry.data.items()},
    )


def draw_min_halt_steps(n: int, max_steps: int, explore_prob: float,
                        generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Exploration (training only): a random `explore_prob` share of n slots gets a minimum halting step drawn
    uniformly from 2..max_steps, the rest 0. Returns [n] int64.

    The training loop draws this for the *global* batch from one generator seeded alike on every rank and keeps
    its rank's slice, so 1 rank and N ranks take the same decisions.
    """
    explore = torch.rand(n, generator=generator, device=device) < explore_prob
    return explore * torch.randint(2, max_steps + 1, (n,), generator=generator, device=device)


def halting(steps: torch.Tensor, q_halt: torch.Tensor, max_steps: int, training: bool,
            min_steps: torch.Tensor | None = None) -> torch.Tensor:
    """Which slots halt after this step; `steps` already counts it (1-based). Returns [B] bool.

    Always at max_steps. Training only: also where q_halt > 0 (sigmoid > 0.5; no q_continue), but never before
    the slot's exploration minimum `min_steps` [B] (see `draw_min_halt_steps`; None = no exploration).
    Evaluation never halts early, so every puzzle runs all max_steps steps.
    """
    halted = steps >= max_steps
    if not training or max_steps <= 1:
        return halted
    halted = halted | (q_halt > 0)
    if min_steps is not None:
        halted = halted & (steps >= min_steps.to(steps.device))
    return halted


def carry_to(carry: Carry, device) -> Carry:
    return Carry(carry.y.to(device), carry.z.to(device), carry.steps.to(device), carry.halted.to(device),
                 {k: v.to(device) for k, v in carry.data.items()})


def carry_rows(carry: Carry, rows: slice | torch.Tensor) -> Carry:
    """The carry of slots `rows`: a slice (views) or an index tensor (copies)."""
    return Carry(carry.y[rows], carry.z[rows], carry.steps[rows], carry.halted[rows],
                 {k: v[rows] for k, v in carry.data.items()})


def cat_carries(parts: list[Carry]) -> Carry:
    """Micro-batch carries back into one, in slot order."""
    if len(parts) == 1:
        return parts[0]
    return Carry(torch.cat([c.y for c in parts]), torch.cat([c.z for c in parts]),
                 torch.cat([c.steps for c in parts]), torch.cat([c.halted for c in parts]),
                 {k: torch.cat([c.data[k] for c in parts]) for k in parts[0].data})
