"""The small training step of `cgar.train` (config/laptop.yaml's shape by default): where its time goes, the plain
step against the fast step side by side, and the laptop shape against the old quick shape side by side (issue 12,
"Speed of the small step"). Run through `train_bench.py --small-step`.

Both measure the real `Trainer.train_step` (DeepSpeed engine, AdamATan2, SignSGD, EMA, loss, data) on a small
built dataset of generated kaggle-like puzzles in a temporary folder:
- `profile_phases`: torch.profiler over a few steps, with a region around each phase of the step (the DeepSpeed
  wrappers, the model's forward, autograd, the optimizers, EMA, data, ...). A region's *exclusive* time is its time
  minus the regions inside it, so "DeepSpeed forward wrapper" is the engine's forward minus the model's forward.
  The model's compute is split further by op kind (matmul, element-wise, copies and views).
- `compare`: two Trainers of the same run, one with `fast_step=False` (the plain step) and one with the fast step,
  alternating blocks of steps for several rounds so that load from other processes hits both alike; a dense matmul
  probe runs in every round. Prints the median steps/s ratio and the achieved FLOP/s as a share of the probe.
- `compare_shapes`: the same alternation between two shapes (`--before-after`: the old quick config's 9x9 TRM
  block, prefix 16 and 256-rounded SwiGLUs, against the laptop config's 6x6, prefix 1, 64-rounded), each its own
  dataset; prints steps/s, samples/s and the share of the matmul probe of each.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from cgar.config import config_from_dict
from cgar.data.build import BuildConfig, build_dataset
from cgar.engine import compute_init
from cgar.flops import step_flops
from cgar.sudoku.generate import SourceMix, write_chunk
from cgar.sudoku.grid import grid_shape
from cgar.train import Trainer
from probe import MatmulProbe  # bench/probe.py

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")
ELEMENTWISE_OPS = ("aten::mul", "aten::add", "aten::add_", "aten::silu", "aten::silu_backward", "aten::pow",
                   "aten::rsqrt", "aten::mean", "aten::sum", "aten::div", "aten::div_", "aten::where", "aten::sub",
                   "aten::neg", "aten::square", "aten::clamp", "aten::log", "aten::lerp_", "aten::atan2",
                   "aten::sqrt", "aten::mul_", "aten::sign", "aten::argmax", "aten::eq", "aten::ne", "aten::lt",
                   "aten::ge", "aten::reciprocal", "aten::fill_", "aten::zero_", "aten::gather", "aten::index_add_",
                   "aten::binary_cross_entropy_with_logits", "aten::exp", "aten::sigmoid", "aten::isfinite",
                   "aten::bitwise_and", "aten::bitwise_or", "aten::logical_and", "aten::embedding_dense_backward",
                   "aten::scatter_add_", "aten::index_select", "aten::index")
COPY_OPS = ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::empty",
            "aten::empty_strided", "aten::empty_like", "aten::zeros", "aten::zeros_like", "aten::constant_pad_nd",
            "aten::stack", "aten::full", "aten::resize_")


@dataclass(frozen=True)
class StepShape:
    """What sets a small step's cost: the grid and the model's shape (defaults: config/laptop.yaml)."""

    grid: str = "6x6"
    hidden: int = 64
    batch: int = 32
    T: int = 2
    n: int = 2
    sup: int = 8
    prefix: int = 1  # model.puzzle_emb_len (TRM: 16)
    ffn_multiple: int = 64  # model.ffn_multiple (TRM: 256)

    def __str__(self) -> str:
        return (f"{self.grid}, hidden {self.hidden}, batch {self.batch}, T={self.T}, n={self.n}, {self.sup} "
                f"supervision steps, prefix {self.prefix}, SwiGLU rounded to {self.ffn_multiple}")


LAPTOP = StepShape()
QUICK = StepShape(grid="9x9", prefix=16, ffn_multiple=256)  # the old config/quick.yaml (issue 12's "before")


def small_run_config(data_dir: Path, s: StepShape) -> dict:
    """config/laptop.yaml's run_defaults at the given shape (checkpoints and logging as cgar.train does them)."""
    return {"data_dir": str(data_dir),
            "model": {"hidden_size": s.hidden, "mlp_t": True, "H_cycles": s.T, "L_cycles": s.n,
                      "halt_max_steps": s.sup, "puzzle_emb_len": s.prefix, "ffn_multiple": s.ffn_multiple},
            "train": {"global_batch_size": s.batch, "epochs": 48, "epochs_per_iter": 8, "optimizer": "adam_atan2",
                      "lr": 3e-3, "lr_warmup_steps": 40, "weight_decay": 0.1, "puzzle_emb_lr": 3e-3,
                      "puzzle_emb_weight_decay": 0.1, "ema_rate": 0.99, "checkpoint_every": 10**9, "log_every": 25,
                      "device": "cpu", "seed": 0}}


def make_dataset(root: Path, grid: str = "6x6", puzzles: int = 200, num_aug: int = 7) -> Path:
    """A built dataset of generated kaggle-like puzzles (fast to generate; the step's cost does not depend on it)."""
    easy = SourceMix(kaggle_like=1.0, unbiased_like=0.0, lowclue=0.0, hard=0.0)
    shape = grid_shape(grid)
    write_chunk(root / "train.csv", seed=0, chunk=0, size=puzzles, mix=easy, shape=shape)
    write_chunk(root / "test.csv", seed=0, chunk=1, size=8, mix=easy, shape=shape)
    build_dataset(root / "train.csv", root / "test.csv", root / "ds", BuildConfig(subsample_size=None, num_aug=num_aug))
    return root / "ds"


class Setup:
    """A temporary dataset and the process group; `trainer(fast)` builds a Trainer of the same run."""

    def __init__(self, shape: StepShape, rt=None):
        self.tmp = Path(tempfile.mkdtemp(prefix="small_step_"))
        self.cfg = config_from_dict(small_run_config(make_dataset(self.tmp, shape.grid), shape))
        self.rt = rt or compute_init("cpu")
        self.count = 0

    def trainer(self, fast: bool) -> Trainer:
        self.count += 1
        return Trainer(self.cfg, self.tmp / f"run{self.count}", self.rt, fast_step=fast)


# ------------------------------------------------------------------------------------------------- the profile

def _wrap(obj, name: str, label: str) -> None:
    """Put a profiler region around obj.name (an instance attribute shadows the class's method)."""
    from torch.profiler import record_function

    inner = getattr(obj, name)

    def wrapped(*args, **kwargs):
        with record_function(label):
            return inner(*args, **kwargs)

    wrapped.__wrapped_label__ = label
    _LABELS.add(label)
    setattr(obj, name, wrapped)


_LABELS: set[str] = {"data: next batch (numpy gather + collate)"}


class _LabelledStream:
    """The trainer's data stream with a profiler region around each batch (next() ignores instance attributes)."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __next__(self):
        from torch.profiler import record_function

        with record_function("data: next batch (numpy gather + collate)"):
            return next(self.stream)


def instrument(tr: Trainer) -> set[str]:
    """Regions around every phase of `tr.train_step` (profiling only; the trainer stays usable); returns the
    region labels. "step" is what train_step does outside the other regions (lr, depth, metric dict, host syncs)."""
    import cgar.train as train_mod

    _wrap(tr, "train_step", "step")
    tr.stream = _LabelledStream(tr.stream)
    _wrap(tr.engine, "forward", "DeepSpeed forward wrapper")
    _wrap(tr.model, "forward", "model forward (refill, recursion, heads, halting)")
    _wrap(tr.engine, "backward", "DeepSpeed backward wrapper")
    _wrap(tr.engine, "allreduce_gradients", "DeepSpeed gradient all-reduce (1 rank)")
    _wrap(tr.engine, "step", "DeepSpeed step wrapper")
    _wrap(tr.engine.optimizer, "step", "AdamATan2")
    _wrap(tr.engine, "zero_grad", "DeepSpeed zero_grad")
    _wrap(tr.sign_sgd, "step", "SignSGD")
    _wrap(tr.ema, "update", "EMA update")
    for name, label in (("act_loss", "ACT loss (stablemax fp64 + BCE + metric sums)"),
                        ("hsw_weight", "HSW weight"), ("step_flops", "FLOPs bookkeeping"),
                        ("draw_min_halt_steps", "exploration draw")):
        if not hasattr(getattr(train_mod, name), "__wrapped_label__"):  # module-level: wrap once per process
            _wrap(train_mod, name, label)
    if not hasattr(torch.autograd.backward, "__wrapped_label__"):
        _wrap(torch.autograd, "backward", "autograd backward")
    return set(_LABELS)


def _op_kind(key: str) -> str:
    if key in MATMUL_OPS:
        return "matmul"
    if key in ELEMENTWISE_OPS:
        return "element-wise"
    if key in COPY_OPS:
        return "copies/allocation"
    if key.startswith("aten::"):
        return "views and other aten"
    return "autograd nodes and other"


def exclusive_times(events, labels: set[str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per region label: its time (us) outside the regions inside it; and within each region, that time split
    into op kinds (self time of the ops that belong to it) plus 'Python and dispatch' (the rest)."""
    excl: dict[str, float] = defaultdict(float)
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def enclosing(e) -> str | None:
        p = e.cpu_parent
        while p is not None and p.name not in labels:
            p = p.cpu_parent
        return None if p is None else p.name

    for e in events:
        if e.name in labels:
            inner = sum(c.cpu_time_total for c in _region_children(e, labels))
            excl[e.name] += e.cpu_time_total - inner
        elif (r := enclosing(e)) is not None:
            kinds[r][_op_kind(e.name)] += e.self_cpu_time_total
    for r, k in kinds.items():
        k["Python and dispatch"] = max(0.0, excl[r] - sum(k.values()))
    return dict(excl), {r: dict(k) for r, k in kinds.items()}


def _region_children(e, labels):
    """The nearest labelled regions below e."""
    out, stack = [], list(e.cpu_children)
    while stack:
        c = stack.pop()
        if c.name in labels:
            out.append(c)
        else:
            stack.extend(c.cpu_children)
    return out


def profile_phases(tr: Trainer, steps: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    labels = instrument(tr)
    tr.train_step()  # the wrappers' first call outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            tr.train_step()
    events = prof.events()
    excl, kinds = exclusive_times(events, labels)
    total = sum(excl.values())
    print(f"\n-- where one step's time goes (torch.profiler, {steps} steps, exclusive time per region, "
          f"profiler overhead included; {total / steps / 1e3:.1f} ms per profiled step)")
    print(f"  {'region':62s} {'share':>6s}   split of the region's own time")
    for label, t in sorted(excl.items(), key=lambda kv: -kv[1]):
        split = ", ".join(f"{k} {v / t:.0%}" for k, v in sorted(kinds.get(label, {}).items(), key=lambda kv: -kv[1])
                          if t and v / t >= 0.01)
        print(f"  {label[:62]:62s} {t / total:6.1%}   {split}")
    n_ops = sum(1 for e in events if e.name.startswith("aten::") and e.cpu_parent is not None
                and not e.cpu_parent.name.startswith("aten::"))
    print(f"  top-level aten ops per step: {n_ops / steps:.0f}")


# ------------------------------------------------------------------------------------------------- old vs new

def _probe_flops_per_s(size: int = 1024, reps: int = 3) -> tuple[float, float]:
    """(wall, CPU-time) FLOP/s of an fp32 square matmul on this process's threads (one warm-up product first)."""
    probe = MatmulProbe(torch.device("cpu"), size)
    probe.run(1)
    wall, busy = probe.run(reps)
    return probe.flops / wall, probe.flops / busy


def _block(tr: Trainer, steps: int) -> tuple[float, float]:
    """(wall, CPU-time / threads) seconds per step over `steps` steps."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        tr.train_step()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / torch.get_num_threads() / steps


def alternate(trainers: dict[str, Trainer], rounds: int, steps: int, warmup: int = 3):
    """Blocks of `steps` steps of each trainer in turn for `rounds` rounds (the order reversed every other round, so
    drifting load hits all alike), a matmul probe per round. Returns ({name: [(wall, cpu) per step]}, probes)."""
    for tr in trainers.values():
        for _ in range(warmup):
            tr.train_step()
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in trainers}
    probes = []
    for r in range(rounds):
        probes.append(_probe_flops_per_s())
        for name, tr in (list(trainers.items()) if r % 2 == 0 else list(trainers.items())[::-1]):
            samples[name].append(_block(tr, steps))
    return samples, probes


def compare_shapes(before: StepShape, after: StepShape, rounds: int, steps: int) -> None:
    """The real training step at two shapes side by side: steps/s, samples/s, share of the matmul probe."""
    rt = compute_init("cpu")
    setups = {"before": Setup(before, rt), "after": Setup(after, rt)}
    trainers = {k: s.trainer(True) for k, s in setups.items()}
    samples, probes = alternate(trainers, rounds, steps)
    probe = statistics.median(p[0] for p in probes)
    print(f"\n-- the training step at two shapes, {rounds} rounds x {steps} steps each, alternating (wall time, "
          f"medians; fp32 matmul probe {probe / 1e9:.1f} GFLOP/s)")
    per = {}
    for k, tr in trainers.items():
        m, batch = setups[k].cfg.model, setups[k].cfg.train.global_batch_size
        flops = step_flops(tr.mcfg, m.H_cycles, m.L_cycles, batch)
        per[k] = statistics.median(s[0] for s in samples[k])
        print(f"  {k:6s} [{before if k == 'before' else after}]: {1 / per[k]:.2f} steps/s, {batch / per[k]:.0f} "
              f"samples/s, {flops / 1e9:.2f} GFLOP per step, {flops / per[k] / probe:.1%} of the probe")
    ratios = [b[0] / a[0] for b, a in zip(samples["before"], samples["after"])]
    print(f"  after / before steps/s: median of per-round ratios {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


def compare(setup: Setup, rounds: int, steps: int, warmup: int = 3) -> None:
    plain, fast = setup.trainer(False), setup.trainer(True)
    samples, probes = alternate({"plain": plain, "fast": fast}, rounds, steps, warmup)
    mcfg = setup.cfg.model
    flops = step_flops(fast.mcfg, mcfg.H_cycles, mcfg.L_cycles, setup.cfg.train.global_batch_size)
    print(f"\n-- plain step vs fast step, {rounds} rounds x {steps} steps each, alternating "
          f"({flops / 1e9:.2f} GFLOP per step, fvcore)")
    for view, i in (("wall time", 0), ("CPU time / threads", 1)):
        per = {k: statistics.median(s[i] for s in v) for k, v in samples.items()}
        ratios = [p[i] / f[i] for p, f in zip(samples["plain"], samples["fast"])]  # per round: same load
        probe = statistics.median(p[i] for p in probes)
        # the best block of each (and the best probe) is the least disturbed by other jobs: a second estimate
        best = {k: min(s[i] for s in v) for k, v in samples.items()}
        best_probe = max(p[i] for p in probes)
        print(f"  [{view}] fast / plain steps/s: median of per-round ratios {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}), best blocks {best['plain'] / best['fast']:.3f}; "
              f"achieved FLOP/s as a share of the fp32 matmul probe: medians plain {flops / per['plain'] / probe:.1%}"
              f", fast {flops / per['fast'] / probe:.1%}; best plain {flops / best['plain'] / best_probe:.1%}, "
              f"fast {flops / best['fast'] / best_probe:.1%}")


def run(shape: StepShape, rounds: int, steps: int, profile_steps: int, before_after: bool = False) -> None:
    print(f"small step: {shape}, mlp_t, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    if before_after:
        compare_shapes(QUICK, shape, rounds, steps)
        return
    setup = Setup(shape)
    if rounds:
        compare(setup, rounds, steps)
    if profile_steps:
        for fast in (False, True):
            print(f"\n== the {'fast' if fast else 'plain'} step")
            profile_phases(setup.trainer(fast), profile_steps)
