"""Training-step throughput of the paper's TRM per PDC stage, its FLOP/s against this machine's dense matmul
FLOP/s, and PDC's wall-clock saving against its FLOPs saving (issue 3).

Usage: python bench/train_bench.py [--device auto] [--batch 16] [--steps 5] [--threads N] [--no-diagnose]
       python bench/train_bench.py --small-step [--shape 64,32,2,2,8] [--grid 6x6] [--prefix 1] [--ffn-multiple 64]
                                   [--before-after] [--rounds 6] [--block 5] [--profile-steps 5]

Model: TRM with the paper's shape (hidden 512, mlp_t, 2 blocks, 97 positions, full depth T=3, n=6). A step is
what `cgar.train` does minus DeepSpeed: refill + T(n+1) net applications (T-1 cycles under no_grad) + heads,
ACT loss, backward through the last cycle, AdamATan2 + SignSGD steps, EMA update.
FLOPs per step come from `cgar.flops.step_counts` (fvcore, all ops; FLOPs = 2 x MACs).

Timing: every stage is warmed up, then the stages and a dense-matmul probe (fp32 torch.mm on CPU, bf16 on CUDA,
on the same threads) run round-robin for --steps rounds, so load from other processes hits all of them alike;
each figure is a median. Utilisation = achieved step FLOP/s / the probe's FLOP/s.
Diagnosis (default on): the model's own GEMM shapes timed alone (what its matmuls could reach at best),
and a profiler breakdown of one full-depth step into matmul and other ops.

--small-step (bench/small_step.py): cgar.train's own step (DeepSpeed engine and all) at a small shape, default
config/laptop.yaml's (6x6, hidden 64, batch 32, T=2, n=2, 8 supervision steps, prefix 1, SwiGLU rounded to 64;
--before-after: against the old quick shape, 9x9 with TRM's prefix 16 and 256-rounding): the plain step and the fast step
(`Trainer(fast_step=...)`, bitwise the same training) alternating in one run, their steps/s ratio and achieved
FLOP/s as a share of an fp32 matmul probe; --profile-steps N adds where each step's time goes (docs/step_profile.md).

The workplace machine (2 vCPUs, Sapphire Rapids) is shared: wall times are only meaningful for calls during which
the process got its threads' CPU ("quiet" samples, reported apart). With 2 threads and other jobs running, the
OpenMP sibling wait makes every figure a measure of the load; `--threads 1` measures the code. Measured there
(2026-11-22, batch 16, 1 thread): 61-62% utilisation at every stage (62% of the 176 GFLOP/s probe), PDC wall
ratio 0.647 vs FLOPs ratio 0.649; the rest is element-wise ops (28% of the step's time, 0.4% of its FLOPs)
and GEMM shape efficiency; `--compile` (fused element-wise ops) gives 68%.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F

from cgar.curriculum import PAPER_STAGES, effective_depth
from cgar.flops import step_counts
from cgar.losses import act_loss
from cgar.model import TRM, TRMConfig, swiglu_inner
from cgar.optim import EMA, AdamATan2, SignSGD
from probe import MatmulProbe, timed  # bench/probe.py

TARGET_UTILISATION = 0.50
TARGET_PDC_GAP = 0.10  # PDC's wall-clock saving within 10% (relative) of its FLOPs saving
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


QUIET = 0.90  # a timed call counts as uncontended when the process got >= 90% of its threads' time


class Timing(NamedTuple):
    """Three estimates of one call's seconds from repeated samples; see `timed`."""

    all: float  # median wall time of every sample
    quiet: float | None  # median wall time of the uncontended samples (busy >= QUIET x wall), None if none
    n_quiet: int
    busy: float  # median busy time

    @classmethod
    def of(cls, samples: list[tuple[float, float]]) -> Timing:
        quiet = [w for w, b in samples if b >= QUIET * w]
        return cls(statistics.median(w for w, _ in samples), statistics.median(quiet) if quiet else None,
                   len(quiet), statistics.median(b for _, b in samples))


class StepRunner:
    """One training step at a given depth on a persistent carry, as cgar.train runs it."""

    def __init__(self, cfg: TRMConfig, batch: int, device: torch.device):
        torch.manual_seed(0)
        self.model = TRM(cfg).to(device).train()
        self.opt = AdamATan2(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1.0)
        self.sign_sgd = SignSGD(self.model.puzzle_emb, lr=1e-4, weight_decay=1.0)
        self.ema = EMA(self.model, 0.999)
        self.carry = self.model.initial_carry(batch, device)
        g = torch.Generator().manual_seed(0)
        self.batch = {"inputs": torch.randint(1, 11, (batch, 81), generator=g).to(device),
                      "labels": torch.randint(2, 11, (batch, 81), generator=g).to(device),
                      "puzzle_identifiers": torch.zeros(batch, dtype=torch.int32, device=device)}
        self.min_halt = torch.zeros(batch, dtype=torch.long, device=device)

    def step(self, T: int, n: int) -> None:
        self.carry, out = self.model(self.carry, self.batch, depth=(T, n), min_halt_steps=self.min_halt)
        loss, _ = act_loss(out.logits, out.q_halt, self.carry.data["labels"], self.carry.halted, self.carry.steps)
        (loss / len(self.min_halt)).backward()
        self.sign_sgd.step()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.model)


def gemm_shapes(cfg: TRMConfig, batch: int) -> list[tuple[str, tuple[int, ...], tuple[int, int], bool]]:
    """The forward linears of one block: (name, input shape, weight shape, input is the transposed view)."""
    L, D = cfg.total_len, cfg.hidden_size
    inner = swiglu_inner(D, cfg.expansion, cfg.ffn_multiple)
    inner_t = swiglu_inner(L, cfg.expansion, cfg.ffn_multiple)
    return [("token gate_up  [B*512, 97] x [97, 1024]", (batch, L, D), (2 * inner_t, L), True),
            ("token down     [B*512, 512] x [512, 97]", (batch, D, inner_t), (L, inner_t), False),
            ("channel gate_up [B*97, 512] x [512, 3072]", (batch, L, D), (2 * inner, D), False),
            ("channel down   [B*97, 1536] x [1536, 512]", (batch, L, inner), (D, inner), False)]


def diagnose_gemms(cfg: TRMConfig, batch: int, device: torch.device, reps: int = 5) -> None:
    print(f"\n-- the model's forward GEMMs timed alone (best of {reps} runs: the shape's ceiling)")
    total_flops = total_s = 0.0
    for name, x_shape, w_shape, transposed in gemm_shapes(cfg, batch):
        x = torch.randn(*x_shape, device=device)
        x = x.transpose(1, 2) if transposed else x  # the token MLP reads x as a [B, D, L] view, as the model does
        w = torch.randn(*w_shape, device=device)
        F.linear(x, w)
        s = min(timed(lambda: F.linear(x, w), device)[0] for _ in range(reps))
        flops = 2 * x.numel() * w_shape[0]
        total_flops, total_s = total_flops + flops, total_s + s
        print(f"  {name:44s} {flops / s / 1e9:8.1f} GFLOP/s")
    print(f"  all four, FLOP-weighted                      {total_flops / total_s / 1e9:8.1f} GFLOP/s")


def diagnose_profile(runner: StepRunner, T: int, n: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        runner.step(T, n)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    print(f"\n-- profiler, one ({T},{n}) step (self CPU time; the profiler adds overhead): matmul ops "
          f"{mm / total:.0%}, everything else {1 - mm / total:.0%}. Top ops:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"  {e.key:40s} {e.self_cpu_time_total / total:6.1%}  calls {e.count}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--batch", type=int, default=16, help="samples per step (CPU: 16 takes ~2-4 min in all)")
    ap.add_argument("--steps", type=int, default=5, help="timed rounds (one step per stage each)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per stage first")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--mm-size", type=int, default=0, help="matmul probe size (default 2048 CPU, 8192 CUDA)")
    ap.add_argument("--compile", action="store_true",
                    help="diagnostic: torch.compile each block, fusing its element-wise ops (training runs eager)")
    ap.add_argument("--no-diagnose", action="store_true", help="skip the GEMM-shape and profiler diagnosis")
    small = ap.add_argument_group("small step (bench/small_step.py): cgar.train's real step, plain vs fast path")
    small.add_argument("--small-step", action="store_true",
                       help="instead of the paper shape: the training step at --shape, plain and fast side by side")
    small.add_argument("--shape", default="64,32,2,2,8", metavar="HIDDEN,BATCH,T,N,SUP",
                       help="hidden size, global batch, T, n, supervision steps (default: config/laptop.yaml's)")
    small.add_argument("--grid", default="6x6", choices=("9x9", "6x6", "4x4"), help="the puzzles' grid (laptop: 6x6)")
    small.add_argument("--prefix", type=int, default=1, help="model.puzzle_emb_len (laptop: 1, TRM: 16)")
    small.add_argument("--ffn-multiple", type=int, default=64, help="model.ffn_multiple (laptop: 64, TRM: 256)")
    small.add_argument("--before-after", action="store_true",
                       help="the old quick shape (9x9, prefix 16, SwiGLU rounded to 256) against --grid/--shape/"
                            "--prefix/--ffn-multiple, alternating in one run")
    small.add_argument("--rounds", type=int, default=6, help="alternating rounds of plain and fast blocks (0: none)")
    small.add_argument("--block", type=int, default=5, help="steps per block")
    small.add_argument("--profile-steps", type=int, default=0, help="also profile this many steps of each path")
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.small_step:
        import small_step

        hidden, batch, T, n, sup = (int(v) for v in a.shape.split(","))
        shape = small_step.StepShape(a.grid, hidden, batch, T, n, sup, a.prefix, a.ffn_multiple)
        small_step.run(shape, a.rounds, a.block, a.profile_steps, a.before_after)
        return
    cfg = TRMConfig()  # the paper's shape
    stages = [(T, n) for _, T, n in PAPER_STAGES]
    shares = [end - start for (start, *_), end in zip(PAPER_STAGES, [s for s, *_ in PAPER_STAGES[1:]] + [1.0])]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, "
          f"hidden {cfg.hidden_size}, mlp_t={cfg.mlp_t}, {cfg.total_len} positions, "
          f"{'compiled blocks' if a.compile else 'eager'}; stages {stages} at {shares}")

    counts = {s: step_counts(cfg, *s) for s in stages}  # fvcore, per sample
    runner = StepRunner(cfg, a.batch, device)
    if a.compile:
        for block in runner.model.blocks:
            block.compile()
    probe = MatmulProbe(device, a.mm_size or (8192 if device.type == "cuda" else 2048))
    for s in stages:
        for _ in range(a.warmup):
            runner.step(*s)
    probe.run(1)

    samples, probes = {s: [] for s in stages}, []
    t_start = time.perf_counter()
    for _ in range(a.steps):  # round-robin: stages and the probe share whatever load the machine has
        probes.append(probe.run())
        for s in stages:
            samples[s].append(timed(lambda: runner.step(*s), device))
    every = sum(samples.values(), probes)
    print(f"timed {a.steps} rounds in {time.perf_counter() - t_start:.0f} s; the process got "
          f"{statistics.median(b / w for w, b in every):.0%} (median) of its threads' time while timed, "
          f"{sum(b >= QUIET * w for w, b in every)} of {len(every)} calls were quiet (>= {QUIET:.0%})")
    report(a, cfg, stages, shares, step_counts_of=counts, timings={s: Timing.of(v) for s, v in samples.items()},
           probe=Timing.of(probes), probe_flops=probe.flops, probe_name=f"{str(probe.dtype)[6:]} mm {probe.a.shape[0]}^3")
    if not a.no_diagnose:
        diagnose_gemms(cfg, a.batch, device)
        diagnose_profile(runner, *stages[-1])


def report(a, cfg, stages, shares, step_counts_of, timings, probe, probe_flops, probe_name) -> None:
    """Per-stage throughput and utilisation, and PDC's wall-clock vs FLOPs ratio, under each timing estimate."""
    views = [("all", "median wall, all samples"), ("quiet", "median wall, quiet samples"),
             ("busy", "median busy time (CPU time / threads)")]
    print(f"dense {probe_name}: " + ", ".join(
        f"{name} {probe_flops / getattr(probe, name) / 1e9:.1f}" for name, _ in views if getattr(probe, name))
          + " GFLOP/s")
    full = stages[-1]
    flops = {s: step_counts_of[s]["train_flops"] * a.batch for s in stages}
    flops_ratio = sum(w * flops[s] for w, s in zip(shares, stages)) / flops[full]
    depth_ratio = sum(w * effective_depth(*s) for w, s in zip(shares, stages)) / effective_depth(*full)
    print(f"PDC ({'/'.join(f'{w:.0%}' for w in shares)} of steps at {stages}) vs 100% at {full}: fwd+bwd FLOPs ratio "
          f"{flops_ratio:.3f} (saving {1 - flops_ratio:.1%}); effective-depth ratio {depth_ratio:.3f} "
          f"(saving {1 - depth_ratio:.1%}, the paper's 41.4%, forward only)")
    for name, title in views:
        t = {s: getattr(timings[s], name) for s in stages}
        peak = getattr(probe, name)
        if not peak or not all(t.values()):
            print(f"\n[{title}] n/a: " + ", ".join(f"{s}: {timings[s].n_quiet} quiet" for s in stages))
            continue
        print(f"\n[{title}]" + (" n quiet: " + ", ".join(f"{s} {timings[s].n_quiet}" for s in stages)
                                  + f", probe {probe.n_quiet}" if name == "quiet" else ""))
        print(f"  {'(T, n)':8s} {'D_eff':>5s} {'GFLOP/sample':>12s} {'step s':>8s} {'samples/s':>9s} {'GFLOP/s':>8s} "
              f"{'util':>6s}   (probe {probe_flops / peak / 1e9:.1f} GFLOP/s)")
        for s in stages:
            print(f"  {str(s):8s} {effective_depth(*s, cfg.n_layers):5d} {flops[s] / a.batch / 1e9:12.2f} {t[s]:8.3f} "
                  f"{a.batch / t[s]:9.2f} {flops[s] / t[s] / 1e9:8.1f} {flops[s] / t[s] / (probe_flops / peak):6.1%}")
        util = flops[full] / t[full] / (probe_flops / peak)
        wall = sum(w * t[s] for w, s in zip(shares, stages)) / t[full]
        gap = abs(wall - flops_ratio) / (1 - flops_ratio)  # |wall saving - FLOPs saving| / FLOPs saving
        print(f"  PDC wall-clock ratio {wall:.3f} (saving {1 - wall:.1%}) vs FLOPs ratio {flops_ratio:.3f}")
        print(f"  targets: utilisation at {full} {util:.1%} (>= {TARGET_UTILISATION:.0%}: "
              f"{'met' if util >= TARGET_UTILISATION else 'MISSED'}); PDC wall saving off its FLOPs saving by "
              f"{gap:.1%} relative (<= {TARGET_PDC_GAP:.0%}: {'met' if gap <= TARGET_PDC_GAP else 'MISSED'})")


if __name__ == "__main__":
    main()
