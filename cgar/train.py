"""Train TRM / CGAR variants on a built Sudoku dataset through a DeepSpeed engine.

    python -m cgar.train --config run.yaml --out results/runs/cgar/seed0 [--set train.seed=1 ...]
    torchrun --standalone --nproc_per_node 4 -m cgar.train --config run.yaml --out ...

One supervision step per optimizer step over a persistent carry of `global_batch_size` slots (spec §1.4),
split over ranks; PDC picks (T, n) from training progress; HSW weights the loss; AdamATan2 (or AdamW) for the
network, SignSGD for the puzzle embedding, EMA 0.999. Resumable: a checkpoint every `checkpoint_every` steps
holds everything needed to continue bit for bit, and a restart with the same --out continues from the latest.
`Trainer(fast_step=False)` runs the plain step, the reference the default fast one is tested to equal bit for bit
(docs/step_profile.md: what the fast step leaves out, and where a small step's time goes).

Outputs in --out: run_config.json, metrics.jsonl (one line per logged step), model.pt (EMA weights), model_best.pt
(the EMA snapshot best on val, else a copy of model.pt; see cgar/snapshots.py) and, when enabled, eval_curve.jsonl +
snapshots/ (cgar/train_eval.py) and grad_stats.jsonl (cgar/grad_stats.py); all appear only when the run completes.
Training wall-clock (metrics "wall_s", eval points "train_wall_s") excludes evaluation and gradient statistics.
ckpt/ holds the DeepSpeed checkpoints and the live logs; it is not a pipeline output, so a failed, retried or
requeued job (whose declared outputs Snakemake deletes) finds it. Before anything is written the run takes
<out>/.lock and checks ckpt/'s run tag (cgar/run_dir.py): another run's ckpt/ is moved aside, and a finished run's
ckpt/final/ (every output above) is re-exported instead of retrained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from cgar import run_dir
from cgar.act import carry_rows, carry_to, cat_carries
from cgar.config import ConfigError, RunConfig, check_world_size, compile_enabled, config_to_dict, load_config
from cgar.curriculum import hsw_weight
from cgar.data.build import verify_split_files
from cgar.data.loader import TrainStream, load_split
from cgar.engine import (Checkpointer, Runtime, all_reduce_sum, compute_init, ds_config, exit_process, print0,
                         shutdown, to_device)
from cgar.io_utils import DataError, atomic_directory, atomic_write, atomic_write_json
from cgar.losses import act_loss, reduce_metrics
from cgar.memory import device_budget, estimate_peak_memory, fit_micro_batches
from cgar.model import TRM, Carry, draw_min_halt_steps
from cgar.optim import EMA, SignSGD, lr_at, make_optimizer, set_lr
from cgar.schedule import depth_for, model_config, step_flops, step_flops_fwd_effective, total_steps  # noqa: F401
from cgar.snapshots import write_model_best
from cgar.grad_stats import GradStats
from cgar.run_logs import TensorBoard
from cgar.train_eval import TrainingEvals

# run-folder outputs besides model.pt / metrics.jsonl / run_config.json; most exist only with some settings
# (eval_every, grad_stats_every, tensorboard), so a fresh run removes them itself rather than relying on Snakemake
OPTIONAL_OUTPUTS = ("eval_curve.jsonl", "grad_stats.jsonl", "snapshots", "model_best.pt", "tensorboard")
METRIC_KEYS = ("count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss", "loss")


def _parse_metrics_line(line: str) -> dict | None:
    """A line of the live metrics log, or None for a line cut short by a crash (only ever the last one, and
    always past the last checkpoint, so dropping it loses nothing: the resumed run logs that step again)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        print0(f"dropping a truncated line of the live metrics log: {line[:60]!r}")
        return None


class Trainer:
    def __init__(self, cfg: RunConfig, out: Path, rt: Runtime, fast_step: bool = True):
        self.cfg, self.out, self.rt = cfg, out, rt
        self.fast_step = fast_step
        tc = cfg.train
        split = load_split(cfg.data_dir, "train")
        self.stream = TrainStream(split, tc.global_batch_size, tc.seed, tc.epochs_per_iter, rt.rank, rt.world)
        self.local_batch = tc.global_batch_size // rt.world
        self.total = total_steps(cfg, self.stream)

        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        self.mcfg = model_config(cfg, seq_len=split.seq_len, vocab_size=split.vocab_size)  # the data's grid
        model = TRM(self.mcfg).to(rt.device)
        model.checkpoint_grad_cycle = tc.activation_checkpointing
        if compile_enabled(tc.compile, rt.device):
            model.compile_net()
        # gradient accumulation: the rank's slots in grad_accum_steps equal micro-batches, one forward + backward
        # each, one optimizer step; the loss of each is divided by the whole local batch, so the summed gradient is
        # the unsplit step's (tests/test_efficiency.py). 0: the fewest that fit the device's memory (estimated)
        accum, self.memory_estimate = (tc.grad_accum_steps, None) if tc.grad_accum_steps else \
            fit_micro_batches(model, self.local_batch, device_budget(rt.device))  # the estimate is printed in run()
        micro = self.local_batch // accum
        self.micro_slots = [slice(i * micro, (i + 1) * micro) for i in range(accum)]
        self.sign_sgd = SignSGD(model.puzzle_emb, lr=tc.puzzle_emb_lr, weight_decay=tc.puzzle_emb_weight_decay)
        opt = make_optimizer(tc.optimizer, model.parameters(), tc.lr, tc.weight_decay, (tc.beta1, tc.beta2))
        import deepspeed

        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=opt,
            config=ds_config(tc.global_batch_size, rt.world, tc.zero_stage, tc.gradient_clipping, accum))
        self.model = model
        if fast_step and rt.world == 1 and tc.zero_stage == 0:
            # one rank, no ZeRO: DeepSpeed's gradient all-reduce flattens, "reduces" over 1 rank, scales by 1/1
            # and copies back, changing nothing (ZeRO 1/2 move gradients into partitions there, so they keep it)
            self.engine.enable_backward_allreduce = False
        self.ema = EMA(model, tc.ema_rate, foreach=fast_step)
        # fast step: each step's loss goes here and is checked for NaN/inf at the next log line or checkpoint,
        # one host sync per check instead of one per step (losses[:unchecked] are this window's, unchecked yet)
        self.losses = torch.zeros(tc.log_every, dtype=torch.float64, device=rt.device)
        self.unchecked = 0
        # exploration minimums: drawn on the device (no host copy per step), the same stream on every rank
        self.explore = torch.Generator(rt.device).manual_seed(tc.seed + 1)
        self.carry = model.initial_carry(self.local_batch, rt.device)
        self.step, self.wall, self.flops, self.flops_fwd_effective = 0, 0.0, 0, 0
        self.pause_s = 0.0  # time spent since the clock was last read that is not training (grad stats)
        # metric sums since the last log line (per rank, reduced when logged); checkpointed with the rest
        self.acc = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=rt.device)
        self.since = 0
        self.ckpt = Checkpointer(out / "ckpt")
        self.evals = TrainingEvals.create(cfg, self.total, self.ckpt.root, rt.world)
        self.grad_stats = GradStats.create(cfg, self.ckpt.root)
        self.tb = TensorBoard(None)  # opened in run(), after a fresh run has cleared the folder
        self.resumed_logs: dict = {}  # checkpointed records of evals / grad stats, applied by rank 0 in run()

    # ------------------------------------------------------------------ state

    def save(self) -> str:
        shared = {"step": self.step, "wall_s": self.wall, "flops": self.flops, "ema": self.ema.state_dict(),
                  "explore_rng": self.explore.get_state(), "run_config": config_to_dict(self.cfg),
                  "flops_fwd_effective": self.flops_fwd_effective,
                  "evals": self.evals.log.state_dict() if self.evals else None,
                  "grad_stats": self.grad_stats.log.state_dict() if self.grad_stats else None}
        rank_state = {"carry": dataclasses.asdict(carry_to(self.carry, "cpu")), "stream": self.stream.state_dict(),
                      "torch_rng": torch.get_rng_state(), "metric_sums": self.acc.cpu(), "since": self.since}
        return self.ckpt.save(self.engine, self.step, shared, rank_state, self.rt.rank)

    def resume(self) -> bool:
        loaded = self.ckpt.load(self.engine, self.rt.rank)
        if loaded is None:
            return False
        shared, rank_state = loaded
        if shared["run_config"] != config_to_dict(self.cfg):
            raise ConfigError(f"{self.out}: the checkpoint was written with a different run config; use a new --out")
        self.step, self.wall, self.flops = shared["step"], shared["wall_s"], shared["flops"]
        self.flops_fwd_effective = shared["flops_fwd_effective"]
        self.resumed_logs = {"evals": shared["evals"], "grad_stats": shared["grad_stats"]}
        self.ema.load_state_dict(shared["ema"])
        self.explore.set_state(shared["explore_rng"])
        self.carry = carry_to(Carry(**rank_state["carry"]), self.rt.device)
        self.stream.load_state_dict(rank_state["stream"])
        torch.set_rng_state(rank_state["torch_rng"])
        self.acc.copy_(rank_state["metric_sums"])
        self.since = rank_state["since"]
        return True

    # ------------------------------------------------------------------ one optimizer step

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimizer step. No host synchronisation except at log steps (the deferred checks): the exploration
        draw and every metric stay on the device, and python values come from the config and the step count."""
        cfg, tc, dev = self.cfg, self.cfg.train, self.rt.device
        step = self.step + 1
        lr = lr_at(step, tc.lr, tc.lr_warmup_steps, self.total, tc.lr_min_ratio)
        set_lr(self.engine.optimizer, lr)
        set_lr(self.sign_sgd, lr_at(step, tc.puzzle_emb_lr, tc.lr_warmup_steps, self.total, tc.lr_min_ratio))
        stage, T, n = depth_for(cfg, step, self.total)

        batch = {k: to_device(v, dev) for k, v in next(self.stream).items()}
        lo = self.rt.rank * self.local_batch
        min_halt = draw_min_halt_steps(tc.global_batch_size, self.mcfg.halt_max_steps,
                                       self.mcfg.halt_exploration_prob, self.explore,
                                       dev)[lo:lo + self.local_batch]
        incoming = self.carry.steps
        if cfg.hsw.enabled and cfg.hsw.mode == "released":  # one scalar from the global batch mean
            incoming = (all_reduce_sum(incoming.sum().double()) / tc.global_batch_size).reshape(1)
        if self.grad_stats and self.grad_stats.due(step):  # before the forward, on the same inputs; off the clock
            self.pause_s += self.grad_stats.run(self, step, stage, T, n, batch, min_halt, incoming)
        # the carry's steps are 1..halt_max_steps by construction (halting); the fast step checks it at log steps
        check = not self.fast_step or step % tc.log_every == 0
        whole = len(self.micro_slots) == 1  # no accumulation: the carry and batch as they are
        carries, losses, sums, weights = [], [], [], []
        for rows in self.micro_slots:
            carry = self.carry if whole else carry_rows(self.carry, rows)
            part = batch if whole else {k: v[rows] for k, v in batch.items()}
            carry, out = self.engine(carry, part, depth=(T, n), min_halt_steps=min_halt[rows],
                                     slots=None if whole else rows)
            w = hsw_weight(cfg.hsw.mode, incoming, carry.steps, cfg.hsw.decay,
                           self.mcfg.halt_max_steps, check) if cfg.hsw.enabled else None
            loss, part_sums = act_loss(out.logits, out.q_halt, carry.data["labels"], carry.halted, carry.steps,
                                       weight=w)
            if not self.fast_step and not torch.isfinite(loss):
                self.nonfinite_loss(loss.item(), step)
            # DeepSpeed averages gradients over ranks, so per-rank sum / local batch = TRM's global sum / global
            # batch; every micro-batch divides by the whole local batch (not DeepSpeed's 1 / grad_accum_steps)
            self.engine.backward(loss / self.local_batch, scale_wrt_gas=False)
            self.engine.step()  # DeepSpeed steps the optimizer at the last micro-batch only
            carries.append(carry)
            losses.append(loss.detach())
            sums.append(part_sums)
            weights.append(1.0 if w is None else torch.as_tensor(w, dtype=torch.float64).mean())
        self.carry = cat_carries(carries)
        self.sign_sgd.step()
        self.ema.update(self.model)
        if self.fast_step:
            if self.unchecked == len(self.losses):  # steps driven outside run() (bench): check the full window
                self.check_losses()
            self.losses[self.unchecked] = losses[0] if whole else torch.stack(losses).sum()  # NaN/inf stay
            self.unchecked += 1
        self.step = step
        self.flops += step_flops(self.mcfg, T, n, tc.global_batch_size)
        self.flops_fwd_effective += step_flops_fwd_effective(self.mcfg, T, n, tc.global_batch_size)
        weight = weights[0] if whole else torch.stack([torch.as_tensor(w) for w in weights]).mean()
        if not self.fast_step:  # the fast step converts it when it is logged (a host sync on GPU)
            weight = float(weight)
        extra = dict(stage=stage, T=T, n=n, lr=lr, hsw_weight=weight)
        totals = sums[0] if whole else {k: torch.stack([s[k] for s in sums]).sum() for k in sums[0]}
        return {**{k: v.detach().double() for k, v in totals.items()}, **extra}

    def nonfinite_loss(self, value: float, step: int):
        raise FloatingPointError(
            f"non-finite loss ({value}) at optimizer step {step}; stopping without saving. "
            f"The last good checkpoint is {self.ckpt.latest_tag()} in {self.ckpt.root}")

    def check_losses(self) -> None:
        """Fast step: stop at the first non-finite loss since the last check, naming its step (as the plain step
        does at once). Called before every log line and checkpoint, so neither ever holds a step past it."""
        if not self.unchecked:
            return
        window, first = self.losses[: self.unchecked], self.step - self.unchecked + 1
        self.unchecked = 0
        bad = (~torch.isfinite(window)).nonzero()
        if len(bad):
            i = int(bad[0, 0])
            self.nonfinite_loss(float(window[i]), first + i)

    # ------------------------------------------------------------------ the loop

    def _clock(self, t0: float) -> float:
        """Add the training time since t0 (less any pause) to the wall-clock; returns the new t0."""
        now = time.perf_counter()
        self.wall += now - t0 - self.pause_s
        self.pause_s = 0.0
        return now

    def run(self) -> None:
        tc = self.cfg.train
        metrics_path = self.ckpt.root / "metrics.jsonl"  # live log; published to out/ at the end
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        if self.rt.is_main:
            if not resumed:  # a fresh run: what an earlier run in this folder published must not look like ours
                run_dir.remove_entries(self.out, OPTIONAL_OUTPUTS)
            if tc.tensorboard:
                self.tb = TensorBoard(self.out / "tensorboard")
            keep = []
            if resumed and metrics_path.exists():  # drop lines past the checkpoint: they will be redone
                keep = [ln for ln in metrics_path.read_text().splitlines()
                        if (rec := _parse_metrics_line(ln)) is not None and rec["step"] <= self.step]
            with atomic_write(metrics_path, "w") as f:
                f.writelines(ln + "\n" for ln in keep)
            if self.evals:
                self.evals.resume(self.resumed_logs.get("evals"), self.step if resumed else None)
            if self.grad_stats:
                self.grad_stats.log.load_state_dict(self.resumed_logs.get("grad_stats"))
                self.grad_stats.log.restart_live()
            print0(f"{'resumed at' if resumed else 'starting'} step {self.step}/{self.total} "
                   f"({self.rt.world} rank(s), {self.rt.device}, {self.model.num_params():,} parameters, "
                   f"{'compiled' if self.model.compiled else 'eager'} network)")
            auto = "" if tc.grad_accum_steps else " (train.grad_accum_steps 0: the fewest micro-batches that fit)"
            estimate = self.memory_estimate or estimate_peak_memory(self.model, self.local_batch, len(self.micro_slots))
            print0(estimate.line() + auto +
                   (" (activation checkpointing)" if tc.activation_checkpointing else ""))
        kill_at = int(os.environ.get("CGAR_FAULT_KILL_AT_STEP", "0"))  # fault-injection hook for tests
        bar = tqdm(total=self.total, initial=self.step, disable=not self.rt.is_main, desc="train", unit="step",
                   file=sys.stderr, mininterval=1.0)
        log = open(metrics_path, "a") if self.rt.is_main else None
        t0 = time.perf_counter()
        while self.step < self.total:
            m = self.train_step()
            self.acc += torch.stack([m[k] for k in METRIC_KEYS])
            self.since += 1
            if self.evals and self.evals.due(self.step):  # off the training clock
                self.check_losses()  # an eval point is checkpointed: never one past a non-finite loss
                t0 = self._clock(t0)
                point = self.evals.run(self, self.step, m["stage"], m["T"], m["n"])
                if point:
                    self.tb.scalars("eval", point)
                    self.tb.flush()
                t0 = time.perf_counter()
            if self.step % tc.log_every == 0 or self.step == self.total:
                self.check_losses()
                sums = all_reduce_sum(self.acc.clone()).tolist()
                t0 = self._clock(t0)
                rec = {"step": self.step, **{k: m[k] for k in ("stage", "T", "n", "lr")},
                       "hsw_weight": float(m["hsw_weight"]),
                       **reduce_metrics(dict(zip(METRIC_KEYS, sums)), tc.global_batch_size * self.since),
                       "wall_s": round(self.wall, 3), "flops": self.flops}
                self.acc.zero_()
                self.since = 0
                if log:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    self.tb.scalars("train", rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", exact=f"{rec['exact_accuracy']:.3f}",
                                steps=f"{rec['steps']:.1f}", Tn=f"{rec['T']},{rec['n']}", refresh=False)
            bar.update(1)
            if self.step % tc.checkpoint_every == 0 and self.step < self.total:
                self.check_losses()
                t0 = self._clock(t0)  # the save itself counts as training time (as it always has)
                self.save()
            if kill_at and self.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        if log:
            log.close()
        if self.rt.is_main:  # ckpt/final/ first (what a rerun re-exports), then the outputs, then the rest goes
            with atomic_directory(run_dir.final_dir(self.out)) as final:
                shutil.copyfile(metrics_path, final / "metrics.jsonl")
                if self.evals:
                    self.evals.publish(final)
                if self.grad_stats:
                    self.grad_stats.log.publish(final / "grad_stats.jsonl")
                self.export(final)
            self.tb.close()
            run_dir.publish_final(self.out)
            run_dir.prune_checkpoints(self.out)
            print0(f"wrote {self.out / 'model.pt'}, model_best.pt and the logs (EMA weights, step {self.step})")

    def payload(self) -> dict:
        """The model.pt payload of the model's current weights (call with the EMA weights swapped in)."""
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return {"model_config": dataclasses.asdict(self.mcfg), "run_config": config_to_dict(self.cfg),
                "state_dict": state, "step": self.step, "weights": "ema"}

    def export(self, folder: Path) -> None:
        """folder/model.pt: EMA weights + buffers, the model config and the run config (what evaluation loads);
        folder/model_best.pt: the best snapshot by val when there is one (TrainingEvals.publish), else model.pt's."""
        with self.ema.swapped(self.model):
            payload = self.payload()
        with atomic_write(folder / "model.pt") as f:
            torch.save(payload, f)
        if not (self.evals and self.evals.best_step() is not None):
            write_model_best(folder / "model_best.pt", payload, "final")


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        out[key] = yaml.safe_load(value)
    return out


def _broadcast_from_main(value: bool) -> bool:
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cgar.train", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="run config YAML (see cgar/config.py)")
    ap.add_argument("--out", type=Path, required=True, help="run directory; an existing checkpoint there resumes")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set train.seed=1 --set pdc.enabled=true")
    ap.add_argument("--code-version", default="",
                    help="the pipeline's code_version: part of the run tag, so new code never resumes old state")
    a = ap.parse_args(argv)
    lock = None
    try:
        cfg = load_config(a.config, parse_overrides(a.set))
        check_world_size(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        finished = False
        if int(os.environ.get("RANK", "0")) == 0:  # before anything is written: lock, then compare, then write
            lock = run_dir.RunLock(a.out).acquire()
            verify_split_files(cfg.data_dir, "train")
            tag = run_dir.run_tag(config_to_dict(cfg), a.code_version, cfg.data_dir)
            finished = run_dir.prepare(a.out, tag, log=print0)
        rt = compute_init(cfg.train.device)
        if rt.is_main:
            atomic_write_json(a.out / "run_config.json", config_to_dict(cfg))
        if _broadcast_from_main(finished):
            if rt.is_main:
                run_dir.publish_final(a.out)
                print0(f"{a.out}: this run already finished (ckpt/final/, same run tag); re-exported its outputs")
        else:
            Trainer(cfg, a.out, rt).run()
        shutdown()  # success path only: a failing rank must exit, so that torchrun stops the others
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if lock:
            lock.release()
    return 0


if __name__ == "__main__":
    exit_process(main())  # not sys.exit: see cgar.engine.exit_process
