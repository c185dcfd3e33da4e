"""TRM's puzzle embedding: a buffer of per-identifier vectors trained by SignSGD (`cgar.optim.SignSGD`).

Split out of `cgar.model` because of its one piece of state that outlives a forward: the [B, D] gradient leaf that
SignSGD reads after backward, which gradient accumulation fills one micro-batch of slots at a time.
"""

from __future__ import annotations

import torch
from torch import nn


class PuzzleEmbedding(nn.Module):
    """Per-puzzle-identifier vectors as a zero-initialised *buffer* (TRM's CastedSparseEmbedding).

    Not a Parameter, so it stays out of parameters(), the main optimizer and the EMA. A training forward with grad
    enabled copies the looked-up rows into a leaf tensor requiring grad and returns that leaf; after backward,
    `cgar.optim.SignSGD` reads `last_rows.grad` [B, D] and `last_ids` [B] and updates `weight` in place.

    The leaf [B, D] and its ids [B] are allocated *outside* the forward, by `reserve` (which `TRM.initial_carry`
    calls), as the reference allocates its `local_weights` at init; the forward only writes into them under
    no_grad and clears the leaf's old gradient. Creating the leaf inside the forward
    (`rows.detach().requires_grad_()`) cannot be traced by torch.compile: it split the compiled TRM forward into
    7 graphs. An eager forward with a batch size, device or dtype the leaf does not have reserves it itself.

    Gradient accumulation (`slots`): a forward over slots lo:hi of the B reserved ones writes and returns rows
    lo:hi of the leaf, so the backward of every micro-batch accumulates into the one [B, D] gradient that SignSGD
    then reads, exactly as after one forward over all B slots. The gradient is cleared by the micro-batch that
    starts at slot 0.
    """

    def __init__(self, num_ids: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_ids, dim))
        self._rows: torch.Tensor | None = None  # [B, D] grad leaf, reused by every training forward
        self._ids: torch.Tensor | None = None  # [B] int64
        # set by a training forward, cleared by SignSGD.step once consumed
        self.last_rows: torch.Tensor | None = None
        self.last_ids: torch.Tensor | None = None

    def _fits(self, batch_size: int) -> bool:
        rows, w = self._rows, self.weight
        return rows is not None and rows.shape[0] == batch_size and (rows.device, rows.dtype) == (w.device, w.dtype)

    def reserve(self, batch_size: int) -> None:
        """Allocate the grad leaf for `batch_size` slots, on the weight's device and dtype (no-op if it fits).
        Skipped in inference mode, where a leaf could not take part in a later backward."""
        if self._fits(batch_size) or torch.is_inference_mode_enabled():
            return
        w = self.weight
        self._rows = torch.zeros(batch_size, w.shape[1], dtype=w.dtype, device=w.device, requires_grad=True)
        self._ids = torch.zeros(batch_size, dtype=torch.long, device=w.device)

    def forward(self, ids: torch.Tensor, slots: slice | None = None) -> torch.Tensor:
        """ids [b] -> [b, D]. slots: which of the reserved slots these b rows are (None: all of them, b = B)."""
        ids = ids.long()  # [b]
        if not (self.training and torch.is_grad_enabled()):
            return self.weight[ids]  # [b, D]
        if slots is None:
            slots = slice(0, ids.shape[0])
            if not self._fits(ids.shape[0]):
                self.reserve(ids.shape[0])
        elif self._rows is None or slots.stop > self._rows.shape[0] or slots.stop - slots.start != ids.shape[0]:
            raise ValueError(f"puzzle embedding: slots {slots.start}:{slots.stop} do not match the {ids.shape[0]} "
                             f"ids or the reserved batch ({None if self._rows is None else self._rows.shape[0]})")
        rows, slot_ids = self._rows, self._ids
        if slots.start == 0:
            rows.grad = None  # this step's gradient only, as a fresh leaf would have
        with torch.no_grad():
            rows[slots].copy_(self.weight[ids])
            slot_ids[slots].copy_(ids)
        self.last_rows, self.last_ids = rows, slot_ids
        return rows if slots.stop - slots.start == rows.shape[0] else rows[slots]  # [b, D]: the leaf or its rows
