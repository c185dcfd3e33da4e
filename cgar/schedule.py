"""A run's schedule and its per-step cost: pure helpers shared by the training loop and the FLOP accounting.

`cgar.train` (which runs the schedule) and `cgar.flops` (which counts it) both import this module, and it imports
neither, so the two no longer import each other:
- `model_config`, `total_steps`, `depth_for`: which model, how many optimizer steps, which (T, n) at each step;
- `net_macs`, `head_macs`, `step_flops`, `step_flops_fwd_effective`: the analytic matmul count of one step.

Units: `*_flops` are FLOPs with 1 multiply-add = 2 FLOPs; `*_macs` are multiply-adds. Per sample (97 positions on 9x9),
a supervision step at depth (T, n) applies `net` T (n + 1) times forward; backward runs through the last cycle
only, which is the forward of a T = 1 step, so step_bwd = 2 x step_fwd(T=1, n) (see `cgar.flops` for the proof
against torch's FlopCounterMode).
"""

from __future__ import annotations

import dataclasses

from cgar.config import RunConfig
from cgar.curriculum import depth_at
from cgar.model import TRMConfig, swiglu_inner


def model_config(cfg: RunConfig, *, seq_len: int, vocab_size: int) -> TRMConfig:
    """The run's model for its dataset's grid: seq_len / vocab_size come from the data, never the run config
    (`cgar.data.loader.dataset_dims` or a loaded split's), so a 6x6 dataset gets a 36-token model."""
    return TRMConfig(**dataclasses.asdict(cfg.model), seq_len=seq_len, vocab_size=vocab_size)


def total_steps(cfg: RunConfig, stream) -> int:
    """TRM's run length: (epochs / epochs_per_iter) iterations of floor(epochs_per_iter * groups / batch) steps.
    `stream` is the run's `cgar.data.loader.TrainStream` (only its `batches_per_iter` is read)."""
    full = (cfg.train.epochs // cfg.train.epochs_per_iter) * stream.batches_per_iter
    return min(full, cfg.train.max_steps) if cfg.train.max_steps else full


def depth_for(cfg: RunConfig, step: int, total: int) -> tuple[int, int, int]:
    """(stage index, T, n) for the 1-based optimizer step; progress = completed steps / total."""
    if not cfg.pdc.enabled:  # full depth all along: logged as the last stage, as PDC's full-depth stage is
        return len(cfg.pdc.stages) - 1, cfg.model.H_cycles, cfg.model.L_cycles
    progress = (step - 1) / total
    T, n = depth_at(progress, cfg.pdc.stages)
    stage = max(i for i, (start, *_) in enumerate(cfg.pdc.stages) if progress >= start)
    return stage, T, n


def net_macs(cfg: TRMConfig) -> int:
    """Multiply-adds of the matmuls of one `net` application for one sample (total_len positions: 97 on 9x9)."""
    L, D = cfg.total_len, cfg.hidden_size
    inner = swiglu_inner(D, cfg.expansion, cfg.ffn_multiple)
    channel_mlp = L * (D * 2 * inner + inner * D)
    if cfg.mlp_t:
        inner_t = swiglu_inner(L, cfg.expansion, cfg.ffn_multiple)
        mixing = D * (L * 2 * inner_t + inner_t * L)  # the sequence-axis SwiGLU, once per channel
    else:
        mixing = L * D * 3 * D + 2 * L * L * D + L * D * D  # qkv, QK^T + AV (all heads), o_proj
    return cfg.n_layers * (mixing + channel_mlp)


def head_macs(cfg: TRMConfig) -> int:
    return cfg.total_len * cfg.hidden_size * cfg.vocab_size + cfg.hidden_size * 2  # lm_head on all positions, q_head


def step_flops(cfg: TRMConfig, T: int, n: int, batch: int, backward: bool = True) -> int:
    """Matmul FLOPs of one supervision step for `batch` samples at depth (T, n), forward (+ backward)."""
    fwd = T * (n + 1) * net_macs(cfg) + head_macs(cfg)
    bwd = 2 * ((n + 1) * net_macs(cfg) + head_macs(cfg)) if backward else 0
    return 2 * batch * (fwd + bwd)


def step_flops_fwd_effective(cfg: TRMConfig, T: int, n: int, batch: int) -> int:
    """The paper's accounting of one step (D_eff = T (n + 1) n_layers): forward `net` applications only, no heads,
    no backward; matmul FLOPs, like `step_flops`. Ratios between runs equal their D_eff ratios."""
    return 2 * batch * T * (n + 1) * net_macs(cfg)
