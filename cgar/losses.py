"""TRM's ACT loss (reference `models/losses.py`, spec §1.5) with an HSW weighting hook.

    loss = sum_i w_i * (lm_i + 0.5 * bce(q_halt_i, seq_is_correct_i))

lm_i is the stablemax cross-entropy (Prieto et al. 2025) averaged over sequence i's label tokens, in float64.
The sum runs over the batch (all slots, at whatever supervision step each is at). The training step divides
by the number of rows it holds (TRM: `loss / global_batch_size`), so gradients are per-sample means.
w is 1 (TRM), a scalar (CGAR released code) or a per-sample tensor (CGAR paper); see `cgar.curriculum`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cgar.model import IGNORE_LABEL_ID


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(s(x_i) / sum_j s(x_j)) with s(x) = 1/(1-x) for x < 0 and x + 1 for x >= 0 (positive, no exp)."""
    # Each branch only sees its own half-line: 1/(1-x) at x = 1 is inf, and where() would turn its zero
    # gradient into 0 * inf = NaN (TRM adds 1e-30 to the denominator for the same reason; values are equal).
    s = torch.where(x < 0, 1 / (1 - x.clamp(max=0)), x.clamp(min=0) + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                            ignore_index: int = IGNORE_LABEL_ID) -> torch.Tensor:
    """Per-token loss [B, L] in float64; 0 where labels == ignore_index. logits: [B, L, V], labels: [B, L]."""
    logp = log_stablemax(logits.to(torch.float64), dim=-1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, 0).long()  # any in-range index; masked below
    picked = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0.0)


def act_loss(logits: torch.Tensor, q_halt: torch.Tensor, labels: torch.Tensor, halted: torch.Tensor,
             steps: torch.Tensor, weight: float | torch.Tensor | None = None,
             q_weight: float = 0.5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed ACT loss for one supervision step, and detached metric *sums*.

    logits [B, 81, V]; q_halt [B] fp32; labels [B, 81] (-100 = ignore); halted, steps [B]: the carry after the
    step (steps is 1-based, so it is also the HSW step index t); weight: None, a scalar, or [B].

    Metrics follow TRM's train metrics: accuracy, exact_accuracy, q_halt_accuracy and steps are summed over the
    slots that halted at this step and have labels (`count`); lm_loss / q_halt_loss are unweighted sums over all
    rows. Divide with `reduce_metrics`.
    """
    mask = labels != IGNORE_LABEL_ID  # [B, 81]
    n_tok = mask.sum(-1)  # [B]
    lm = (stablemax_cross_entropy(logits, labels) / n_tok.clamp_min(1).unsqueeze(-1)).sum(-1)  # [B] float64
    with torch.no_grad():
        is_correct = mask & (logits.argmax(-1) == labels)  # [B, 81]
        seq_correct = is_correct.sum(-1) == n_tok  # [B]: all label cells right at this step
    q = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="none")  # [B]
    per_sample = lm + q_weight * q  # [B] float64
    if weight is not None:
        per_sample = per_sample * (weight.to(per_sample.dtype) if torch.is_tensor(weight) else weight)
    loss = per_sample.sum()

    with torch.no_grad():
        counted = halted & (n_tok > 0)
        tok_acc = is_correct.sum(-1).float() / n_tok.clamp_min(1)
        metrics = {
            "count": counted.sum(),
            "accuracy": torch.where(counted, tok_acc, 0.0).sum(),
            "exact_accuracy": (counted & seq_correct).sum(),
            "q_halt_accuracy": (counted & ((q_halt >= 0) == seq_correct)).sum(),
            "steps": torch.where(counted, steps, 0).sum(),
            "lm_loss": lm.sum().detach(),
            "q_halt_loss": q.sum().detach(),
            "loss": loss.detach(),
        }
    return loss, metrics


def reduce_metrics(sums: dict[str, float], batch_size: int) -> dict[str, float]:
    """Sums (already all-reduced across ranks) -> means as TRM logs them: losses per row of the batch,
    everything else per counted (halted, labelled) slot; count stays a count."""
    count = max(float(sums["count"]), 1.0)
    return {k: float(v) if k == "count" else float(v) / (batch_size if k.endswith("loss") else count)
            for k, v in sums.items()}
