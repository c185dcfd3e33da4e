"""FLOP accounting for TRM training and inference: an analytic matmul count and fvcore counts of every op.

Units: every `*_flops` number is FLOPs, with 1 multiply-add = 2 FLOPs. fvcore's own handles count MACs (its
"flops"); ours double them, so inside fvcore the unit is already FLOPs. `*_macs` fields are multiply-adds.

Per sample (97 positions on 9x9), a supervision step at depth (T, n) applies `net` T (n + 1) times forward; the first
T - 1 cycles run under no_grad. Backward runs through the last cycle only: its n + 1 applications, the input
injections, the embedding scale and the heads. That is exactly the forward of a T = 1 step, so
    step_bwd = 2 x step_fwd(T=1, n)                      (the standard 2x rule: input- and weight-gradients)
This is exact for the matmuls (tests/test_flops.py checks it against torch's FlopCounterMode, which runs the real
backward): in this model x = embed(inputs) always carries grad (embed_tokens is trained and the puzzle-embedding
rows are a grad leaf), so even the cycle's first linear needs its input-gradient. Were x grad-free, FlopCounterMode
would come out lower by exactly that linear's input-gradient (2 x its MACs), which the tests also show.

Two counts, kept consistent by tests:
- analytic (`net_macs`, `head_macs`, `step_flops`, defined in `cgar.schedule`, below both this module and the
  training loop, and re-exported here): matmuls only, cheap; training logs it as cumulative FLOPs;
- fvcore (`count_net`, `count_forward`): a traced, uncompiled copy with a handle for every op in `OP_HANDLES`.
  Its matmul ops equal the analytic count exactly; element-wise ops (norms, SiLU, residual adds, RoPE, softmax)
  add 0.41% (mlp_t) / 0.29% (attention) to a training step at the paper's shape (more at toy widths).
  An op with no handle that is not in `ZERO_COST_OPS` raises `UncountedOpError`.

    python -m cgar.flops --run-config run_config.json [--metrics metrics.jsonl] --out flops.json

The model's seq_len / vocab_size are those of the run's dataset (`data_dir`; the FLOPs rule runs after training,
so it is there); a config counted without its data gets the paper's 9x9 grid, with a note on stderr.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import sys
from collections import Counter
from math import prod
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from cgar.config import RunConfig, load_config
from cgar.curriculum import effective_depth
from cgar.data.loader import dataset_dims, grid_dims
from cgar.io_utils import atomic_write_json
from cgar.model import TRM, TRMConfig
from cgar.schedule import depth_for, head_macs, model_config, net_macs, step_flops  # noqa: F401 (re-exported)
from cgar.sudoku.grid import SUDOKU_9

# ----------------------------------------------------------------------------- analytic matmul count


# net_macs, head_macs and step_flops live in cgar.schedule (re-exported here): the training loop needs them too.


# ----------------------------------------------------------------------------- fvcore op registry

Handle = Callable[[list, list], Counter]


class OpRule(NamedTuple):
    handle: Handle  # fvcore handle: (jit inputs, jit outputs) -> Counter{key: FLOPs}
    doc: str


def _shape(v) -> list[int] | None:
    return v.type().sizes() if v.isCompleteTensor() else None


def _doubled(fvcore_handle: Handle, key: str) -> Handle:
    """fvcore's MAC count of a matmul op, as FLOPs."""
    return lambda inputs, outputs: Counter({key: 2 * int(fvcore_handle(inputs, outputs))})


def _linear(inputs, outputs) -> Counter:
    x, w, b = (_shape(v) for v in inputs[:3])
    out = Counter({"linear": 2 * prod(x) * w[0]})  # fvcore's linear_flop_jit, doubled; it skips the bias
    if b is not None:
        out["linear_bias"] = prod(_shape(outputs[0]))
    return out


def _per_element(key: str, flops: int, of: str = "output") -> Handle:
    def handle(inputs, outputs) -> Counter:
        return Counter({key: flops * prod(_shape(outputs[0] if of == "output" else inputs[0]))})

    return handle


SOFTMAX_FLOPS_PER_SCORE = 6  # scale, max, subtract, exp, sum, divide


def _sdpa(inputs, outputs) -> Counter:
    """QK^T and AV: B·H·Lq·Lk·(d_k + d_v) MACs (2·L²·D per layer and sample over all heads); the softmax
    (with the 1/sqrt(d) scale) on the B·H·Lq·Lk scores is counted apart as element-wise work."""
    *bh, lq, dk = _shape(inputs[0])
    lk, dv = _shape(inputs[2])[-2:]
    scores = prod(bh) * lq * lk
    return Counter({"scaled_dot_product_attention": 2 * scores * (dk + dv),
                    "sdpa_softmax": SOFTMAX_FLOPS_PER_SCORE * scores})


def _fvcore_handles():
    from fvcore.nn.jit_handles import bmm_flop_jit, einsum_flop_jit, matmul_flop_jit

    return {"aten::matmul": OpRule(_doubled(matmul_flop_jit, "matmul"), "fvcore's MACs x 2"),
            "aten::mm": OpRule(_doubled(matmul_flop_jit, "mm"), "fvcore's MACs x 2"),
            "aten::bmm": OpRule(_doubled(bmm_flop_jit, "bmm"), "fvcore's MACs x 2"),
            "aten::einsum": OpRule(_doubled(einsum_flop_jit, "einsum"), "fvcore's MACs x 2")}


# Every op of both model variants that costs arithmetic. Transcendentals (exp, rsqrt) count 1 FLOP, as
# arithmetic does; fvcore itself skips all element-wise ops, so these conventions are ours.
OP_HANDLES: dict[str, OpRule] = {
    "aten::linear": OpRule(_linear, "2 x in_features x out_features per row; +1 per output for a bias"),
    "aten::scaled_dot_product_attention": OpRule(_sdpa, "QK^T and AV as 2x MACs; softmax 6 per score"),
    "aten::add": OpRule(_per_element("add", 1), "residuals, input injection, RoPE, the norm's eps: 1/element"),
    "aten::sub": OpRule(_per_element("sub", 1), "1/element"),
    "aten::mul": OpRule(_per_element("mul", 1), "SwiGLU gate*up, the norm's scale, RoPE, sqrt(D) embed scale"),
    "aten::div": OpRule(_per_element("div", 1), "1/element"),
    "aten::neg": OpRule(_per_element("neg", 1), "RoPE rotate-half: 1/element"),
    "aten::silu": OpRule(_per_element("silu", 4), "x / (1 + exp(-x)): neg, exp, add, divide = 4/element"),
    "aten::square": OpRule(_per_element("square", 1), "rms_norm: x^2, 1/element"),
    "aten::pow": OpRule(_per_element("pow", 1), "rms_norm written with pow: 1/element"),
    "aten::mean": OpRule(_per_element("mean", 1, of="input"), "rms_norm: sum + divide, 1 per input element"),
    "aten::rsqrt": OpRule(_per_element("rsqrt", 1), "rms_norm: 1/element"),
}

# Ops fvcore reports that do no arithmetic: layout, indexing, copies and casts. fvcore's own silent-ignore set
# is replaced by this list, so any other op without a handle (a new layer, a changed norm) raises.
ZERO_COST_OPS: dict[str, str] = {
    **{op: "view / layout change" for op in (
        "aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::unsqueeze", "aten::squeeze",
        "aten::expand", "aten::chunk", "aten::split", "aten::unbind", "aten::slice", "aten::select",
        "aten::contiguous", "aten::t", "aten::flatten")},
    **{op: "memory copy / cast / zero fill" for op in (
        "aten::to", "aten::detach", "aten::cat", "aten::pad", "aten::constant_pad_nd", "aten::clone", "aten::copy_")},
    "aten::embedding": "token-embedding lookup (a gather)",
    "aten::index": "puzzle-embedding row lookup (a gather)",
    "aten::size": "shape query", "aten::Int": "shape arithmetic on Python ints",
    "aten::ScalarImplicit": "scalar conversion",
}

MATMUL_KEYS = frozenset({"linear", "matmul", "mm", "bmm", "einsum", "scaled_dot_product_attention"})


class UncountedOpError(RuntimeError):
    """The traced model contains an op with no FLOP handle that is not declared free."""


# ----------------------------------------------------------------------------- fvcore counts


class _NetApplication(nn.Module):
    def __init__(self, model: TRM):
        super().__init__()
        self.model = model

    def forward(self, h, injection):
        return self.model.net(h, injection)


class _SupervisionStep(nn.Module):
    """recur() with tensor inputs, since fvcore cannot trace the dataclass carry."""

    def __init__(self, model: TRM, T: int, n: int):
        super().__init__()
        self.model, self.depth = model, (T, n)

    def forward(self, y, z, inputs, ids):
        return self.model.recur(y, z, inputs, ids, self.depth)


@functools.lru_cache(maxsize=None)
def _counting_model(cfg: TRMConfig) -> TRM:
    # An uncompiled fp32 copy in eval mode (the training-only puzzle-embedding leaf is not an op)
    torch.manual_seed(0)
    return TRM(dataclasses.replace(cfg, forward_dtype="float32")).eval()


def analyze(module: nn.Module, inputs: tuple) -> dict:
    """fvcore count of `module(*inputs)` with OP_HANDLES; raises UncountedOpError on any uncovered op."""
    from fvcore.nn import FlopCountAnalysis

    fa = FlopCountAnalysis(module, inputs)
    # Drop fvcore's default handles: they count multiply-adds (1 per MAC, e.g. for aten::addmm), ours count
    # FLOPs (2 per MAC); an op only they would cover must fail loudly below instead of counting at half weight.
    fa.clear_op_handles()
    fa.set_op_handle(**{k: r.handle for k, r in {**_fvcore_handles(), **OP_HANDLES}.items()})
    fa._ignored_ops = set(ZERO_COST_OPS)  # no API to shrink fvcore's default list; ours is the complete one
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    by_op = {k: int(v) for k, v in sorted(fa.by_operator().items())}
    if fa.unsupported_ops():
        raise UncountedOpError(f"ops with no FLOP handle (add one to OP_HANDLES or ZERO_COST_OPS): "
                               f"{dict(fa.unsupported_ops())}")
    matmul = sum(v for k, v in by_op.items() if k in MATMUL_KEYS)
    total = int(fa.total())
    return {"total_flops": total, "matmul_flops": matmul, "matmul_macs": matmul // 2,
            "elementwise_flops": total - matmul, "by_operator": by_op,
            "by_module": {k.removeprefix("model."): int(v) for k, v in fa.by_module().items()
                          if k.startswith("model.") and v}}


@functools.lru_cache(maxsize=None)
def _count(cfg: TRMConfig, T: int | None, n: int | None, batch: int) -> dict:
    model = _counting_model(cfg)
    state = torch.zeros(batch, cfg.total_len, cfg.hidden_size)
    if T is None:
        return analyze(_NetApplication(model), (state, state.clone()))
    inputs = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len))
    ids = torch.zeros(batch, dtype=torch.long)
    return {"T": T, "n": n, **analyze(_SupervisionStep(model, T, n), (state, state.clone(), inputs, ids))}


def count_net(cfg: TRMConfig, batch: int = 1) -> dict:
    """fvcore count (FLOPs) of one `net` application: total, matmul/element-wise, by_operator, by_module."""
    return {"batch": batch, **copy.deepcopy(_count(cfg, None, None, batch))}


def count_forward(cfg: TRMConfig, T: int, n: int, batch: int = 1) -> dict:
    """fvcore count (FLOPs) of one supervision step's forward at depth (T, n), no_grad cycles included."""
    return {"batch": batch, **copy.deepcopy(_count(cfg, T, n, batch))}


def step_counts(cfg: TRMConfig, T: int, n: int) -> dict:
    """Per-sample FLOPs of one training step at (T, n): forward, backward (2x the T=1 forward), both."""
    fwd, grad_part = _count(cfg, T, n, 1), _count(cfg, 1, n, 1)
    out = {"T": T, "n": n, "net_applications": T * (n + 1), "effective_depth": effective_depth(T, n, cfg.n_layers)}
    for part in ("total", "matmul"):
        f, b = fwd[f"{part}_flops"], 2 * grad_part[f"{part}_flops"]
        pre = "" if part == "total" else "matmul_"
        out.update({f"{pre}fwd_flops": f, f"{pre}bwd_flops": b, f"{pre}train_flops": f + b})
    return out


# ----------------------------------------------------------------------------- a run's schedule


def depth_segments(cfg: RunConfig, steps: int) -> list[dict]:
    """Runs of consecutive optimizer steps at one depth, from the training loop's own `depth_for`."""
    segments, first = [], 1
    while first <= steps:
        key = depth_for(cfg, first, steps)
        lo, hi = first, steps  # the stage index only grows with the step, so bisect for the segment's end
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if depth_for(cfg, mid, steps) == key else (lo, mid - 1)
        segments.append({"stage": key[0], "T": key[1], "n": key[2], "first_step": first, "last_step": lo,
                         "steps": lo - first + 1})
        first = lo + 1
    return segments


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def _totals(mcfg: TRMConfig, segments: list[dict], batch: int) -> dict:
    net = _count(mcfg, None, None, 1)["total_flops"]
    rows, tot = [], Counter()
    for seg in segments:
        per = step_counts(mcfg, seg["T"], seg["n"])
        k = seg["steps"] * batch
        row = {**seg, "effective_depth": per["effective_depth"], "per_sample": per,
               "train_flops": k * per["train_flops"], "train_matmul_flops": k * per["matmul_train_flops"],
               "forward_flops": k * per["fwd_flops"],
               "forward_effective_depth_flops": k * per["net_applications"] * net}
        rows.append(row)
        tot.update({key: row[key] for key in ("train_flops", "train_matmul_flops", "forward_flops",
                                              "forward_effective_depth_flops")})
        tot["depth_steps"] += seg["steps"] * per["effective_depth"]
    steps = sum(s["steps"] for s in segments)
    return {"per_depth": rows, **{k: int(v) for k, v in tot.items() if k != "depth_steps"},
            "mean_effective_depth": tot["depth_steps"] / steps}


def run_dims(run_config: RunConfig) -> dict[str, int]:
    """{seq_len, vocab_size} of the run's dataset, or the paper's 9x9 grid's when data_dir holds none."""
    meta = Path(run_config.data_dir) / "train" / "dataset.json"
    if meta.is_file():
        return dataset_dims(run_config.data_dir)
    print(f"note: no dataset at {meta}: counting FLOPs for the paper's {SUDOKU_9.name} grid", file=sys.stderr)
    return grid_dims(SUDOKU_9)


def run_flops(run_config: RunConfig, steps: int, metrics: list[dict] | None = None,
              dims: dict[str, int] | None = None) -> dict:
    """Training FLOPs of a run of `steps` optimizer steps on its actual schedule, against a full-depth run
    of the same length; with `metrics` (metrics.jsonl records) the logged depths and FLOPs are checked.
    dims: the model's {seq_len, vocab_size} (default `run_dims`: the run's dataset's)."""
    mcfg = model_config(run_config, **(dims or run_dims(run_config)))
    batch = run_config.train.global_batch_size
    run = _totals(mcfg, depth_segments(run_config, steps), batch)
    full = (run_config.model.H_cycles, run_config.model.L_cycles)
    base = _totals(mcfg, [{"stage": 0, "T": full[0], "n": full[1], "first_step": 1, "last_step": steps,
                           "steps": steps}], batch)
    keys = ("train_flops", "train_matmul_flops", "forward_flops", "forward_effective_depth_flops")
    infer = _count(mcfg, *full, 1)
    out = {
        "conventions": "FLOPs = 2 x multiply-adds; fvcore counts (all ops) per sample x global batch; backward = "
                       "2 x the forward of the grad cycle (T=1 step); forward_effective_depth_flops = the paper's "
                       "D_eff = T(n+1) n_layers accounting: net applications only, forward only",
        "model": dataclasses.asdict(mcfg), "pdc": run_config.pdc.enabled, "steps": steps,
        "global_batch_size": batch, **run,
        "full_depth_baseline": {k: base[k] for k in (*keys, "mean_effective_depth")},
        "reduction_vs_full_depth": {"effective_depth": 1 - run["mean_effective_depth"] / base["mean_effective_depth"],
                                    **{k: 1 - run[k] / base[k] for k in keys}},
        "elementwise_share_of_train_flops": 1 - run["train_matmul_flops"] / run["train_flops"],
        "inference_flops_per_puzzle": mcfg.halt_max_steps * infer["total_flops"],
        "inference_matmul_flops_per_puzzle": mcfg.halt_max_steps * infer["matmul_flops"],
    }
    if metrics is not None:
        out["metrics"] = check_metrics(run_config, steps, metrics, run["train_matmul_flops"])
    return out


def check_metrics(run_config: RunConfig, steps: int, metrics: list[dict], matmul_flops: int) -> dict:
    """The logged (T, n) must follow the schedule; the logged cumulative (analytic matmul) FLOPs should equal it."""
    for rec in metrics:
        want = depth_for(run_config, rec["step"], steps)[1:]
        if (rec["T"], rec["n"]) != want:
            raise ValueError(f"metrics step {rec['step']}: logged depth {(rec['T'], rec['n'])}, schedule says {want}")
    last = metrics[-1]
    return {"logged_steps": last["step"], "logged_flops": last["flops"],
            "logged_flops_match": last["flops"] == matmul_flops, "wall_s": last.get("wall_s"),
            "achieved_train_flops_per_s": matmul_flops / last["wall_s"] if last.get("wall_s") else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cgar.flops", description=__doc__.splitlines()[0])
    ap.add_argument("--run-config", required=True, type=Path, help="the run's run_config.json (or a YAML config)")
    ap.add_argument("--metrics", type=Path, help="the run's metrics.jsonl: steps taken + a check of the logged depths")
    ap.add_argument("--steps", type=int, help="run length without --metrics (default: train.max_steps)")
    ap.add_argument("--out", required=True, type=Path, help="flops.json to write (atomically)")
    a = ap.parse_args(argv)
    cfg = load_config(a.run_config)
    metrics = read_metrics(a.metrics) if a.metrics else None
    steps = metrics[-1]["step"] if metrics else (a.steps or cfg.train.max_steps)
    if not steps:
        ap.error("the run length is unknown: give --metrics, --steps, or a config with train.max_steps")
    result = run_flops(cfg, steps, metrics)
    atomic_write_json(a.out, result)
    red = result["reduction_vs_full_depth"]
    print(f"{a.out}: {steps} steps, train {result['train_flops']:.4g} FLOPs (fwd+bwd); reduction vs full depth: "
          f"effective depth {red['effective_depth']:.1%}, train {red['train_flops']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
