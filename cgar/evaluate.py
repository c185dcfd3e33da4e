"""Evaluate a trained TRM/CGAR checkpoint on the full test set: accuracy per step, ACT halting, per difficulty.

    python -m cgar.evaluate --checkpoint run/model.pt --data data/sudoku-extreme-1k-aug-1000 --out-dir run
    torchrun --standalone --nproc_per_node 4 -m cgar.evaluate ...   (each rank its slice of every global batch)

EMA weights, `model.eval()`, full depth (T, n) from the model config whatever PDC did in training, bf16 compute
on CUDA and fp32 on CPU (the model decides). Two modes:
- `full` (default; the TRM/CGAR protocol, spec §1.4): every puzzle runs all S = 16 supervision steps from a fresh
  carry. One pass records, per puzzle and step, the right-cell count and the q_halt logit, from which the step-16
  accuracy, the accuracy at every step and ACT halting (first q_halt > 0) are all derived (`cgar.eval_metrics`).
- `act`: ACT inference that really stops computing a puzzle once it halts. A working batch of slots is refilled
  from the stream as puzzles halt (as the training carry) and shrinks once the stream runs dry, so compute
  follows the mean halting step. Per-puzzle results equal the ACT view of the full pass (tested).

Outputs in --out-dir (`eval_act.*` in act mode; `--stem NAME` gives NAME.*, e.g. eval_best for model_best.pt):
eval.json (metrics overall / per rating bucket / per source, checkpoint step, puzzles, wall seconds, puzzles/s)
and eval.parquet (one row per puzzle, see `cgar.eval_results.to_arrow`).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from cgar.act import carry_rows
from cgar.cli_checks import check_writable, positive_int
from cgar.config import ConfigError, compile_enabled
from cgar.data.build import verify_split_files
from cgar.data.loader import eval_batches, load_split
from cgar.eval_results import Results, gather, sidecars, write_outputs
from cgar.io_utils import DataError
from cgar.model import IGNORE_LABEL_ID, TRM, Carry, TRMConfig, halting

Batches = Iterable[tuple[dict[str, torch.Tensor], np.ndarray]]  # (padded local batch, indices of real rows)


# ----------------------------------------------------------------------------- the checkpoint

def read_checkpoint(path: str | Path) -> dict:
    """The `model.pt` payload written by `cgar.train` (model_config, run_config, state_dict, step, weights),
    checked; any problem is a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint missing (cgar.train writes model.pt when a run completes)")
    try:  # weights_only: the payload is plain dicts and tensors; never run a pickle's code
        with warnings.catch_warnings():  # torch warns about odd pickle protocols on garbage before failing
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, not a torch file: all the same to the user
        raise DataError(path, f"unreadable or corrupt checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(payload, dict):
        raise DataError(path, f"expected a dict payload, got {type(payload).__name__}")
    missing = [k for k in ("model_config", "state_dict") if not isinstance(payload.get(k), dict)]
    if missing:
        raise DataError(path, f"payload lacks {', '.join(missing)} (has {sorted(payload)}); not a cgar model.pt")
    for key, value in payload["state_dict"].items():  # a diverged run's NaN weights would evaluate as 0% quietly
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise DataError(path, f"non-finite weights in {key} (the run diverged); not evaluating them")
    return payload


def build_model(payload: dict, path: str | Path, device: torch.device | str) -> TRM:
    """TRM from a checked payload, weights loaded strictly, in eval mode on `device`."""
    try:
        model = TRM(TRMConfig(**payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError) as e:
        raise DataError(path, f"model config or weights do not fit TRM ({str(e)[:300]})") from None
    return model.to(device).eval()


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> TRM:
    return build_model(read_checkpoint(path), path, device)


# ----------------------------------------------------------------------------- rank slices

def local_count(num_examples: int, global_batch: int, rank: int, world: int) -> int:
    """Real rows rank `rank` gets from `eval_batches` (its slice of each global batch, padding excluded)."""
    local = global_batch // world
    starts = np.arange(0, num_examples, global_batch)
    return int(np.clip(num_examples - starts - rank * local, 0, local).sum())


# ----------------------------------------------------------------------------- the two evaluation loops

BLANK_TOKEN = 1  # input token of an empty cell (0 pad, 1 blank, 2..10 digits; cgar.data.build)


def _step(model: TRM, carry: Carry, batch: dict[str, torch.Tensor]):
    """One full-depth supervision step; returns (carry, q_halt [B], right cells [B], label cells [B], (right
    cells, label cells) [B] over the puzzle's blank cells)."""
    carry, out = model(carry, batch)  # depth=None: full (T, n) from the model config, never a PDC stage
    labels = carry.data["labels"]  # the slots' puzzles after the refill
    mask = labels != IGNORE_LABEL_ID
    right = (out.logits.argmax(-1) == labels) & mask
    blank = mask & (carry.data["inputs"] == BLANK_TOKEN)
    return carry, out.q_halt, right.sum(-1), mask.sum(-1), ((right & blank).sum(-1), blank.sum(-1))


@torch.inference_mode()
def evaluate_full(model: TRM, batches: Batches, res: Results, bar: tqdm | None = None) -> Results:
    """All S steps for every puzzle, a fresh carry per batch (TRM protocol)."""
    model.eval()
    device = model.y_init.device
    for batch, idx in batches:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        pos, n = res.add(idx), len(idx)
        carry = model.initial_carry(len(batch["inputs"]), device)  # all halted: step 1 fills every slot
        per_step = []  # kept on the device: one copy to the host per batch, not one per step
        for _ in range(model.config.halt_max_steps):
            carry, q, cells, n_cells, (bc, nb) = _step(model, carry, batch)
            per_step.append((q, cells, n_cells, bc, nb))
        host = [torch.stack(col)[:, :n].cpu() for col in zip(*per_step)]  # [S, n] each; padded rows dropped
        for k, (q, cells, n_cells, bc, nb) in enumerate(zip(*host)):
            res.record(pos, k, q, cells, n_cells, (bc, nb))
        if bar is not None:
            bar.update(n)
    return res


class RowQueue:
    """The real rows of a batch stream, handed out a few at a time (the refill source of ACT mode)."""

    def __init__(self, batches: Batches):
        self.it: Iterator = iter(batches)
        self.rows: dict[str, torch.Tensor] | None = None
        self.idx = np.zeros(0, np.int64)

    def take(self, n: int) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Up to n rows (fewer only when the stream is exhausted) and their example indices."""
        while len(self.idx) < n:
            nxt = next(self.it, None)
            if nxt is None:
                break
            batch, idx = nxt
            real = {k: v[: len(idx)] for k, v in batch.items()}
            self.rows = real if self.rows is None else {k: torch.cat((self.rows[k], real[k])) for k in real}
            self.idx = np.concatenate((self.idx, idx))
        m = min(n, len(self.idx))
        if m == 0:
            return {}, self.idx[:0]
        rows = {k: v[:m] for k, v in self.rows.items()}
        self.rows = {k: v[m:] for k, v in self.rows.items()}
        idx, self.idx = self.idx[:m], self.idx[m:]
        return rows, idx


@torch.inference_mode()
def evaluate_act(model: TRM, batches: Batches, res: Results, slots: int, bar: tqdm | None = None) -> Results:
    """ACT inference with batch compaction: `slots` puzzles in flight; a puzzle leaves at its halting step (first
    q_halt > 0, at most S) and a fresh one from the stream takes its slot with a fresh carry row (the model's
    refill, as in training). When the stream runs dry the batch shrinks to the puzzles still running, so the
    work done is sum(halting steps) rows x steps, with no padding."""
    model.eval()
    device, S = model.y_init.device, model.config.halt_max_steps
    queue = RowQueue(batches)
    carry = model.initial_carry(slots, device)  # all halted: the first refill fills every slot
    pos = np.full(slots, -1, np.int64)  # Results row of each slot's puzzle
    halted = np.ones(slots, bool)  # host copy of carry.halted: the one read-back per step, below
    while True:
        free = np.flatnonzero(halted)
        new, idx = queue.take(len(free))
        if len(idx) < len(free):  # stream dry: drop the slots nothing will refill (the compaction)
            keep = np.sort(np.concatenate((np.flatnonzero(~halted), free[: len(idx)])))
            if len(keep) == 0:
                break
            carry, pos = carry_rows(carry, torch.as_tensor(keep, device=device)), pos[keep]
            free = np.flatnonzero(halted[keep])
        pos[free] = res.add(idx)
        batch = dict(carry.data)  # rows of running slots are ignored by the refill; free slots take new puzzles
        if len(free):
            slot = torch.as_tensor(free, device=device)
            batch = {k: v.index_copy(0, slot, new[k].to(device)) for k, v in batch.items()}
        carry, q, cells, n_cells, blank = _step(model, carry, batch)
        # the ACT rule without exploration (training=True enables q_halt > 0; eval mode would never halt early)
        carry.halted = halting(carry.steps, q, S, training=True)
        # one copy to the host per step (the refill needs the halted slots there); float64 holds every value
        # exactly (the counts, and q_halt's fp32)
        host = torch.stack([t.double() for t in (carry.steps, q, cells, n_cells, *blank, carry.halted)]).cpu()
        steps, q, cells, n_cells, bc, nb, halted = host.unbind(0)
        res.record(pos, steps.long().numpy() - 1, q, cells, n_cells, (bc, nb))
        halted = halted.bool().numpy()
        if bar is not None:
            bar.update(int(halted.sum()))
    return res


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cgar.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="model.pt written by cgar.train (EMA weights)")
    ap.add_argument("--data", type=Path, required=True, help="built dataset directory (python -m cgar.data build)")
    ap.add_argument("--split", default="test", help="split to evaluate (default: test)")
    ap.add_argument("--out-dir", type=Path, required=True, help="where eval.json and eval.parquet go")
    ap.add_argument("--batch-size", type=positive_int, default=768, help="global batch (puzzles in flight over all ranks)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                    help="torch.compile the network (auto: on CUDA, as train.compile: null)")
    ap.add_argument("--mode", default="full", choices=("full", "act"),
                    help="full: 16 steps for every puzzle (paper protocol, ACT derived); act: stop halted puzzles")
    ap.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N puzzles (smoke runs)")
    ap.add_argument("--stem", default=None,
                    help="output name stem (default: eval, or eval_act with --mode act), e.g. eval_best")
    ap.add_argument("--shard", default=None, metavar="I/K",
                    help="evaluate only shard I of K (whole batches) into <stem>.shardIofK.*; cgar.eval_shards merges")
    a = ap.parse_args(argv)
    from cgar.engine import compute_init
    from cgar.eval_shards import parse_shard, shard_range, shard_stem

    try:
        shard = parse_shard(a.shard) if a.shard else None
        payload = read_checkpoint(a.checkpoint)  # fail before starting ranks and a process group
        verify_split_files(a.data, a.split)
        split = load_split(a.data, a.split)
        ratings, sources = sidecars(split)
        if split.num_examples == 0:
            raise DataError(split.path, "has no puzzles to evaluate; nothing written")
        check_writable(a.out_dir)  # now, not after the whole evaluation
        rt = compute_init(a.device, key="--device")
        if a.batch_size % rt.world:
            raise DataError("--batch-size", f"{a.batch_size} is not divisible by the {rt.world} ranks")
        model = split.fitting(build_model(payload, a.checkpoint, rt.device), a.checkpoint)
        if compile_enabled({"auto": None, "on": True, "off": False}[a.compile], rt.device):
            model.compile_net()
        total = split.num_examples if a.limit is None else min(a.limit, split.num_examples)
        start, stop = shard_range(total, a.batch_size, *shard) if shard else (0, total)
        n_local = local_count(stop - start, a.batch_size, rt.rank, rt.world)
        res = Results.empty(n_local, model.config.halt_max_steps)
        bar = tqdm(total=n_local, disable=not rt.is_main, desc=f"eval {a.mode} (rank 0)", unit="puzzle",
                   file=sys.stderr, mininterval=1.0)
        batches = eval_batches(split, a.batch_size, rt.rank, rt.world, start=start, stop=stop)
        t0 = time.perf_counter()
        if a.mode == "full":
            evaluate_full(model, batches, res, bar)
        else:
            evaluate_act(model, batches, res, a.batch_size // rt.world, bar)
        bar.close()
        merged = gather(res)
        wall = time.perf_counter() - t0
        if merged is not None:
            if merged.n != stop - start or (merged.example != np.arange(start, stop)).any():
                raise RuntimeError(f"gathered {merged.n} puzzles, expected examples {start}..{stop - 1} once each")
            cfg = model.config
            info = {"checkpoint": str(a.checkpoint), "step": payload.get("step"), "weights": payload.get("weights"),
                    "data_dir": str(a.data), "split": a.split, "mode": a.mode, "max_steps": cfg.halt_max_steps,
                    "depth": [cfg.H_cycles, cfg.L_cycles], "batch_size": a.batch_size, "world_size": rt.world,
                    "device": rt.device.type, "compiled": model.compiled, "wall_s": round(wall, 3),
                    "puzzles_per_s": round((stop - start) / wall, 3),
                    "row_steps": int(merged.steps_run.astype(np.int64).sum())}
            stem = a.stem or ("eval" if a.mode == "full" else "eval_act")
            if shard:  # per-puzzle rows only; the metrics are computed once, over all shards, by the merge
                write_outputs(a.out_dir, shard_stem(stem, *shard), merged, ratings, sources,
                              {**info, "shard": list(shard), "range": [start, stop], "num_examples": total},
                              metrics=False)
                print(f"shard {a.shard}: examples [{start}, {stop}) in {wall:.1f}s", flush=True)
                return 0
            rec = write_outputs(a.out_dir, stem, merged, ratings, sources, info)
            o = rec["overall"]
            print(f"{stop} puzzles in {wall:.1f}s ({stop / wall:.1f}/s): exact {o['exact_accuracy']}, "
                  f"ACT exact {o['act']['exact_accuracy']:.4f} at mean step {o['act']['mean_halt_step']:.2f}, "
                  f"halting accuracy {o['act']['halting_accuracy']:.4f}", flush=True)
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    from cgar.engine import exit_process

    exit_process(main())  # not sys.exit: see cgar.engine.exit_process
