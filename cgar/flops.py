"""FLOP accounting for TRM training and inference (matmuls only; 1 multiply-add = 2 FLOPs).

The analytic count here is what training logs as cumulative FLOPs. Per sample:
- one application of `net` (n_layers blocks) costs `net_macs`;
- a supervision step at depth (T, n) applies `net` T (n + 1) times forward; backward runs through the last
  cycle's n + 1 applications only, at twice the forward cost; the heads run once forward and once backward.
Element-wise work (norms, SiLU, residual adds) is left out: it is a few percent and not what the paper counts.
"""

from __future__ import annotations

from cgar.model import TRMConfig, swiglu_inner


def net_macs(cfg: TRMConfig) -> int:
    """Multiply-adds of one `net` application for one sample (97 positions)."""
    L, D = cfg.total_len, cfg.hidden_size
    inner = swiglu_inner(D, cfg.expansion)
    channel_mlp = L * (D * 2 * inner + inner * D)
    if cfg.mlp_t:
        inner_t = swiglu_inner(L, cfg.expansion)
        mixing = D * (L * 2 * inner_t + inner_t * L)  # the sequence-axis SwiGLU, once per channel
    else:
        mixing = L * D * 3 * D + 2 * L * L * D + L * D * D  # qkv, scores + weighted sum, o_proj
    return cfg.n_layers * (mixing + channel_mlp)


def head_macs(cfg: TRMConfig) -> int:
    return cfg.total_len * cfg.hidden_size * cfg.vocab_size + cfg.hidden_size * 2  # lm_head on all 97, q_head


def step_flops(cfg: TRMConfig, T: int, n: int, batch: int, backward: bool = True) -> int:
    """FLOPs of one supervision step for `batch` samples at depth (T, n), forward (+ backward if training)."""
    fwd = T * (n + 1) * net_macs(cfg) + head_macs(cfg)
    bwd = 2 * ((n + 1) * net_macs(cfg) + head_macs(cfg)) if backward else 0
    return 2 * batch * (fwd + bwd)
