"""The one device check of issue 16: paper-scale training and evaluation on one GPU, in a few minutes, into one JSON.

    python bench/gpu_check.py --out docs/gpu_check.json                  # on the GPU (paper shape), <= 6 min
    python bench/gpu_check.py --device cpu --small --out /tmp/g.json     # the same code paths on CPU (CI, ~1 min)
    bash bench/gpu_wheels.sh; then with the device tool: bash bench/gpu_device.sh, carry .whl   # see the scripts

What it runs is `cgar.train`'s own `Trainer.train_step` (DeepSpeed engine, AdamATan2, SignSGD, EMA, ACT loss, data
stream) and `cgar.evaluate`'s loops, on a synthetic dataset (`cgar.sudoku.synthetic`: the step's cost does not
depend on the puzzles). Shape: the paper's (9x9, hidden 512, batch 768, T=3, n=6, 16 supervision steps) or with
--small config/laptop.yaml's (6x6, hidden 64, batch 32, T=2, n=2, 8 steps). It measures and prints:

- training samples/s and MFU per PDC stage, eager and compiled (`train.compile`); MFU = fvcore matmul FLOPs of
  the step / time / the device's dense peak (bf16 datasheet figure on a known GPU, else a measured matmul probe;
  on CPU the fp32 probe). Host syncs per training step (CUDA's sync debug mode), 0 is the target;
- peak memory of a full-depth step: measured (CUDA) and estimated (`cgar.memory`), for the whole batch eager and
  compiled, with gradient accumulation over 2 micro-batches, and with activation checkpointing. The timed runs
  use the paper config's `train.grad_accum_steps: 0` (the fewest micro-batches that fit), so a 40 GB card splits
  the batch instead of running out of memory; the JSON says how many micro-batches each used;
- projected hours of 65,100 steps per variant (baseline and HSW at full depth, PDC and CGAR through the stages),
  and PDC's wall-clock saving against its FLOPs saving;
- evaluation puzzles/s at 16 full-depth steps (the paper protocol) and in ACT mode (compaction), the projected
  time for the 423,168 test puzzles; an untrained model never halts early, so ACT is projected per mean halting
  step (16, 8, 4);
- bf16 against fp32 of the same weights over all supervision steps (logit difference, argmax agreement, exact
  accuracy under each): of the timing's barely trained model, or of a trained `--checkpoint` on its own data.

Every target of the issue is in the JSON's "targets" with its measured value and whether it was met; nothing is
asserted here (tests/test_gpu_check.py checks the CPU run's JSON for completeness and consistency).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from cgar.config import config_from_dict
from cgar.curriculum import stages_from_base
from cgar.data.build import BuildConfig, build_dataset
from cgar.data.loader import eval_batches, load_split
from cgar.engine import compute_init
from cgar.eval_results import Results
from cgar.evaluate import evaluate_act, evaluate_full, read_checkpoint
from cgar.io_utils import atomic_write_json
from cgar.memory import GIB, device_budget, estimate_peak_memory, fit_micro_batches
from cgar.model import IGNORE_LABEL_ID, TRM, TRMConfig
from cgar.schedule import step_flops
from cgar.sudoku.grid import grid_shape
from cgar.sudoku.synthetic import write_pairs_csv
from cgar.train import Trainer
from probe import MatmulProbe, sync  # bench/probe.py (this script's folder is on sys.path)

PAPER_STEPS, PAPER_TEST = 65_100, 423_168
SHAPES = {  # (grid, hidden, batch, T, n, supervision steps, prefix, ffn_multiple, eval puzzles)
    "paper": ("9x9", 512, 768, 3, 6, 16, 16, 256, 1536),
    "small": ("6x6", 64, 32, 2, 2, 8, 1, 64, 64),
}
DENSE_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
                     "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0}
TARGETS = {"mfu_full_depth_compiled": 0.40, "pdc_wall_over_flops_saving": 0.95, "baseline_hours": 2.5,
           "eval_full_minutes": 15.0, "syncs_per_step": 0}


def matmul_probe(dev: torch.device) -> float:
    """Measured dense matmul FLOP/s (`probe.MatmulProbe`: bf16 on CUDA, fp32 on CPU): 8192^3 on CUDA, 1024^3 on CPU,
    one warm-up product, then the mean of 10."""
    probe = MatmulProbe(dev, 8192 if dev.type == "cuda" else 1024)
    probe.run(1)
    return probe.flops / probe.run(10)[0]


def device_peak(dev: torch.device, probe: float) -> tuple[float, str]:
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        for key, tflops in DENSE_BF16_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"datasheet dense bf16 of {key}"
        return probe, "measured bf16 matmul probe (device not in the datasheet table)"
    return probe, "measured fp32 matmul probe (1 process, this CPU's threads)"


def run_config(data_dir: Path, shape: tuple, dev: torch.device, compile_: bool, accum: int = 0,
               checkpointing: bool = False) -> dict:
    grid, hidden, batch, T, n, sup, prefix, ffn, _ = shape
    return {"data_dir": str(data_dir),
            "model": {"hidden_size": hidden, "H_cycles": T, "L_cycles": n, "halt_max_steps": sup,
                      "puzzle_emb_len": prefix, "ffn_multiple": ffn},
            "train": {"global_batch_size": batch, "epochs": 80, "epochs_per_iter": 8, "lr_warmup_steps": 10,
                      "checkpoint_every": 10**9, "log_every": 10**4, "device": dev.type, "compile": compile_,
                      "grad_accum_steps": accum, "activation_checkpointing": checkpointing, "tensorboard": False},
            "pdc": {"enabled": True, "stages": [list(s) for s in stages_from_base(T, n)]}}


def make_data(root: Path, shape: tuple) -> Path:
    g = grid_shape(shape[0])
    write_pairs_csv(root / "train.csv", 200, seed=1, shape=g)
    write_pairs_csv(root / "test.csv", shape[-1], seed=2, shape=g)
    build_dataset(root / "train.csv", root / "test.csv", root / "ds", BuildConfig(subsample_size=None, num_aug=7))
    return root / "ds"


def peak_memory_gib(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / GIB if dev.type == "cuda" else None


def time_stage(tr: Trainer, start: float, warm: int, steps: int) -> tuple[float, float]:
    """(seconds per step, seconds of the warm-up, compile included) with training progress just past `start`."""
    dev = tr.rt.device
    tr.step = int(start * tr.total) + 1
    t0 = time.perf_counter()
    for _ in range(warm):
        tr.train_step()
    sync(dev)
    t1 = time.perf_counter()
    for _ in range(steps):
        tr.train_step()
    sync(dev)
    tr.check_losses()
    return (time.perf_counter() - t1) / steps, t1 - t0


def count_syncs(tr: Trainer, steps: int) -> float | None:
    """Host syncs per training step between log steps (CUDA's sync debug mode; None on CPU, see
    tests/test_efficiency.py for the CPU proxy)."""
    if tr.rt.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                tr.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    tr.check_losses()
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def training(cfgs: dict, rt, shape: tuple, peak: float, warm: int, steps: int) -> tuple[dict, dict, Trainer]:
    """Per-stage timing eager vs compiled; returns (per-mode results, memory results, the compiled trainer)."""
    out, memory, keep = {}, {}, None
    for mode in ("eager", "compiled"):
        tr = Trainer(config_from_dict(cfgs[mode]), Path(tempfile.mkdtemp(prefix=f"gpu_check_{mode}_")), rt)
        stages = []
        for start, T, n in tr.cfg.pdc.stages:
            if rt.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(rt.device)
            s, warm_s = time_stage(tr, start, warm, steps)
            flops = step_flops(tr.mcfg, T, n, tr.cfg.train.global_batch_size)
            stages.append({"start": start, "T": T, "n": n, "s_per_step": s, "warmup_s": warm_s,
                           "samples_per_s": tr.cfg.train.global_batch_size / s, "tflop_per_step": flops / 1e12,
                           "mfu": flops / s / peak})
            print(f"  {mode:8s} stage T={T} n={n}: {stages[-1]['samples_per_s']:9.1f} samples/s, "
                  f"MFU {stages[-1]['mfu']:.1%} (warm-up {warm_s:.1f} s)", flush=True)
        memory[f"{mode}_whole_batch" if len(tr.micro_slots) == 1 else f"{mode}_auto_micro_batches"] = {
            "measured_gib": peak_memory_gib(rt.device),
            **estimate_peak_memory(tr.model, tr.local_batch, len(tr.micro_slots)).as_dict()}
        out[mode] = {"stages": stages, "syncs_per_step": count_syncs(tr, 3), "compiled": tr.model.compiled,
                     "micro_batches": len(tr.micro_slots)}
        if mode == "compiled":
            keep = tr
            memory["auto_micro_batches"] = {  # what train.grad_accum_steps: 0 picks (estimate, 90% of the memory)
                "40GB": fit_micro_batches(tr.model, tr.local_batch, 0.9 * 40e9)[0],
                "this_device": fit_micro_batches(tr.model, tr.local_batch, device_budget(rt.device))[0]}
        else:
            del tr
            release(rt.device)
    return out, memory, keep


def release(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def memory_variants(cfgs: dict, rt) -> dict:
    """Peak memory of a full-depth step, eager, in 2 micro-batches and with activation checkpointing."""
    out = {}
    for name in ("eager_accum2", "eager_checkpointing"):
        tr = Trainer(config_from_dict(cfgs[name]), Path(tempfile.mkdtemp(prefix="gpu_check_mem_")), rt)
        if rt.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(rt.device)
        time_stage(tr, tr.cfg.pdc.stages[-1][0], 1, 1)
        est = estimate_peak_memory(tr.model, tr.local_batch, tr.cfg.train.grad_accum_steps)
        out[name] = {"measured_gib": peak_memory_gib(rt.device), **est.as_dict()}
        del tr
        release(rt.device)
    return out


def evaluation(model: TRM, data_dir: Path, batch: int) -> dict:
    split = load_split(data_dir, "test")
    out = {}
    for mode in ("full", "act"):
        for rep in ("warm", "timed"):  # the first pass compiles the evaluation graphs
            res = Results.empty(split.num_examples, model.config.halt_max_steps)
            sync(model.y_init.device)
            t0 = time.perf_counter()
            if mode == "full":
                evaluate_full(model, eval_batches(split, batch), res)
            else:
                evaluate_act(model, eval_batches(split, batch), res, batch)
            sync(model.y_init.device)
            wall = time.perf_counter() - t0
        row_steps = int(res.steps_run.astype("int64").sum())
        out[mode] = {"puzzles": split.num_examples, "wall_s": wall, "puzzles_per_s": split.num_examples / wall,
                     "row_steps_per_s": row_steps / wall, "mean_steps_run": row_steps / split.num_examples}
    S = model.config.halt_max_steps
    out["projected_minutes_full"] = PAPER_TEST / out["full"]["puzzles_per_s"] / 60
    out["projected_minutes_act"] = {str(h): PAPER_TEST * h / out["act"]["row_steps_per_s"] / 60
                                    for h in sorted({S, max(1, S // 2), max(1, S // 4)}, reverse=True)}
    return out


@torch.inference_mode()
def bf16_agreement(config: TRMConfig, state: dict, data_dir: Path, dev: torch.device, puzzles: int = 256) -> dict:
    """The same weights evaluated in bf16 and in fp32 (fresh eager models): all S supervision steps on up to
    `puzzles` test puzzles, as the paper protocol; logits at the last step, argmax agreement, exact accuracy."""
    split = load_split(data_dir, "test")
    n = min(puzzles, split.num_examples)
    batch = {k: v.to(dev) for k, v in next(eval_batches(split, n))[0].items()}
    logits = {}
    for dt in ("bfloat16", "float32"):
        m = TRM(dataclasses.replace(config, forward_dtype=dt)).to(dev).eval()
        m.load_state_dict(state)
        carry = m.initial_carry(n, dev)
        for _ in range(config.halt_max_steps):
            carry, o = m(carry, batch)
        logits[dt] = o.logits.float()
    labels = batch["labels"]
    free = labels == IGNORE_LABEL_ID  # cells without a label count as right
    answer = {dt: lg.argmax(-1) for dt, lg in logits.items()}
    diff = (logits["bfloat16"] - logits["float32"]).abs()
    return {"puzzles": n, "steps": config.halt_max_steps, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "max_abs_logit": float(logits["float32"].abs().max()),
            "argmax_agreement": float((answer["bfloat16"] == answer["float32"]).float().mean()),
            "same_answer_share": float(((answer["bfloat16"] == answer["float32"]) | free).all(-1).float().mean()),
            "exact_accuracy": {dt: float(((a == labels) | free).all(-1).float().mean()) for dt, a in answer.items()}}


def projections(results: dict, flops_stages: list[dict]) -> dict:
    """Hours of 65,100 steps per variant from the compiled per-stage step times; PDC saving wall vs FLOPs."""
    stages = results["compiled"]["stages"]
    ends = [s["start"] for s in stages[1:]] + [1.0]
    shares = [end - s["start"] for s, end in zip(stages, ends)]
    full = stages[-1]["s_per_step"]
    pdc = sum(sh * s["s_per_step"] for sh, s in zip(shares, stages))
    pdc_flops = sum(sh * s["tflop_per_step"] for sh, s in zip(shares, flops_stages))
    return {"steps": PAPER_STEPS,
            "hours": {"baseline": PAPER_STEPS * full / 3600, "hsw": PAPER_STEPS * full / 3600,
                      "pdc": PAPER_STEPS * pdc / 3600, "cgar": PAPER_STEPS * pdc / 3600},
            "note": "HSW only reweights the loss: timed as the baseline; training-time evaluation not included",
            "pdc_wall_saving": 1 - pdc / full, "pdc_flops_saving": 1 - pdc_flops / stages[-1]["tflop_per_step"],
            "pdc_wall_over_flops_saving": (1 - pdc / full) / (1 - pdc_flops / stages[-1]["tflop_per_step"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--small", action="store_true", help="config/laptop.yaml's shape instead of the paper's")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per stage (default 8 on CUDA, 3 on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="override the shape's global batch (paper shape on CPU)")
    ap.add_argument("--eval-puzzles", type=int, default=None, help="override the shape's evaluation puzzles")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (cgar.train under Snakemake on CPU: 1)")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="a trained model.pt for the bf16 vs fp32 check (default: the timing's barely trained model)")
    ap.add_argument("--checkpoint-data", type=Path, default=None,
                    help="the built dataset of --checkpoint (its test split is evaluated)")
    ap.add_argument("--out", type=Path, required=True, help="the JSON with every figure")
    a = ap.parse_args(argv)
    if bool(a.checkpoint) != bool(a.checkpoint_data):
        ap.error("--checkpoint and --checkpoint-data go together")
    t_start = time.perf_counter()
    if a.threads:
        torch.set_num_threads(a.threads)
    rt = compute_init(a.device, key="--device")
    dev, shape = rt.device, SHAPES["small" if a.small else "paper"]
    shape = shape[:2] + (a.batch or shape[2],) + shape[3:-1] + (a.eval_puzzles or shape[-1],)
    steps = a.steps or (8 if dev.type == "cuda" else 3)
    probe = matmul_probe(dev)
    peak, peak_source = device_peak(dev, probe)
    print(f"{dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or 'cpu'}): "
          f"peak {peak / 1e12:.1f} TFLOP/s ({peak_source}), matmul probe {probe / 1e12:.2f} TFLOP/s", flush=True)
    data_dir = make_data(Path(tempfile.mkdtemp(prefix="gpu_check_data_")), shape)
    cfgs = {"eager": run_config(data_dir, shape, dev, False), "compiled": run_config(data_dir, shape, dev, True),
            "eager_accum2": run_config(data_dir, shape, dev, False, accum=2),
            "eager_checkpointing": run_config(data_dir, shape, dev, False, accum=1, checkpointing=True)}
    print("training (cgar.train's step, synthetic data):", flush=True)
    train, memory, tr = training(cfgs, rt, shape, peak, warm=3, steps=steps)
    tr.model.eval()
    evals = evaluation(tr.model, data_dir, shape[2])
    if a.checkpoint:  # trained weights (and their data): the agreement that matters
        payload = read_checkpoint(a.checkpoint)
        agreement = bf16_agreement(TRMConfig(**payload["model_config"]), payload["state_dict"], a.checkpoint_data,
                                   dev)
        agreement["checkpoint"] = str(a.checkpoint)
    else:  # the few-step-trained model of the timing, on the synthetic puzzles
        agreement = bf16_agreement(tr.model.config, tr.model.state_dict(), data_dir, dev)
    del tr
    release(dev)
    memory.update(memory_variants(cfgs, rt))
    proj = projections(train, train["compiled"]["stages"])
    full_c, full_e = train["compiled"]["stages"][-1], train["eager"]["stages"][-1]
    measured = {"mfu_full_depth_compiled": full_c["mfu"],
                "pdc_wall_over_flops_saving": proj["pdc_wall_over_flops_saving"],
                "baseline_hours": proj["hours"]["baseline"], "eval_full_minutes": evals["projected_minutes_full"],
                "syncs_per_step": train["compiled"]["syncs_per_step"]}
    targets = {k: {"target": t, "measured": measured[k],
                   "met": None if measured[k] is None else
                   (measured[k] <= t if k in ("baseline_hours", "eval_full_minutes", "syncs_per_step")
                    else measured[k] >= t)} for k, t in TARGETS.items()}
    record = {
        "what": "bench/gpu_check.py" + (" --small" if a.small else ""), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": {"type": dev.type, "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                   platform.processor() or platform.machine(), "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "peak_flops": peak, "peak_source": peak_source,
                   "matmul_probe_flops": probe},
        "shape": dict(zip(("grid", "hidden", "batch", "T", "n", "sup", "prefix", "ffn_multiple", "eval_puzzles"),
                          shape)),
        "compile_speedup_full_depth": full_e["s_per_step"] / full_c["s_per_step"],
        "training": train, "memory": memory, "projection": proj, "evaluation": evals,
        "bf16_vs_fp32": agreement, "targets": targets, "wall_s": time.perf_counter() - t_start,
        "config": cfgs["compiled"],
    }
    atomic_write_json(a.out, record)
    print(json.dumps({"compile_speedup_full_depth": record["compile_speedup_full_depth"], "targets": targets,
                      "memory_gib": {k: (v["measured_gib"], round(v["total_gib"], 2)) for k, v in memory.items()
                                     if "total_gib" in v}, "auto_micro_batches": memory["auto_micro_batches"],
                      "hours": proj["hours"], "eval_minutes_full": evals["projected_minutes_full"],
                      "bf16_vs_fp32": agreement}, indent=1, default=str))
    print(f"wrote {a.out} in {record['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
