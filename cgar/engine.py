"""Process setup and the DeepSpeed engine: ranks, devices, the ds_config, atomic resumable checkpoints.

One code path for CPU and CUDA, 1 or N processes:
- `python -m cgar.train` alone: `compute_init` fills in the rank variables DeepSpeed needs (without them
  `deepspeed.initialize` falls into MPI discovery and dies on a missing mpi4py);
- `torchrun --standalone --nproc_per_node N -m cgar.train`: torchrun sets them; gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from cgar import ds_ops
from cgar.config import ConfigError
from cgar.io_utils import DataError, atomic_write_text


@dataclass(frozen=True)
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compute_init(device: str = "auto", key: str = "train.device") -> Runtime:
    """Rank variables (defaults for a single process), device choice, and the process group. `key`: where the
    device came from, for the error (the run config's key, or a CLI flag)."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: 'cuda' requested but no GPU is visible (torch.cuda.is_available() "
                              "is False); use auto or cpu")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    import deepspeed

    ds_ops.skip_shm_comm_build()  # no JIT build (and no build lock) at run time; see cgar/ds_ops.py
    stale = ds_ops.stale_build_locks(ds_ops.extensions_root())
    if stale:
        raise DataError(stale[0], "stale torch extensions build lock: no live process holds it (a build was "
                        "killed), and any DeepSpeed op build would wait for it for ever; delete it")
    deepspeed.init_distributed(dist_backend="nccl" if dev.type == "cuda" else "gloo")
    return Runtime(rank, world, local_rank, dev)


def print0(*args, **kwargs) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args, **kwargs, flush=True)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (a no-op with one process); returns t."""
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t)
    return t


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host batch -> device without stalling the host: a CUDA copy from pinned memory is asynchronous (from
    pageable memory it waits for the copy); on CPU a no-op."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def shutdown() -> None:
    """Tear the process group down explicitly: leaving it to interpreter exit can abort a rank (gloo)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def exit_process(code: int) -> None:
    """End a `torch.distributed` entry point (cgar.train, cgar.evaluate) without the interpreter's teardown.

    After `shutdown()` every output is written and closed, yet a C++ thread of the torch.distributed stack can
    still call std::terminate during interpreter finalization: on a loaded 2-core machine ~3% of 2-rank CPU runs
    ended with SIGABRT on a rank that had already printed past its shutdown (2026-12-06), and torchrun then fails
    the finished run. Flushing the standard streams and leaving with os._exit skips that finalization."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def ds_config(global_batch: int, world: int, zero_stage: int = 0, gradient_clipping: float = 0.0,
              grad_accum_steps: int = 1) -> dict:
    """DeepSpeed config for the TRM recipe: the global batch is the invariant, per-rank batch = global / world,
    in grad_accum_steps micro-batches of global / world / grad_accum_steps slots.

    gradient_clipping is explicit because DeepSpeed >= 0.19.3 clips at 1.0 by default and TRM does not clip.
    Precision stays in the model (fp32 weights, bf16 compute on GPU, as TRM), so no `bf16` section.
    """
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} is not divisible by the world size {world}")
    if (global_batch // world) % grad_accum_steps:
        raise ValueError(f"{grad_accum_steps} micro-batches do not divide the per-rank batch {global_batch // world}")
    if zero_stage not in (0, 1, 2):
        raise ValueError(f"zero_stage must be 0, 1 or 2, got {zero_stage}")
    return {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": global_batch // world // grad_accum_steps,
        "gradient_accumulation_steps": grad_accum_steps,
        "gradient_clipping": float(gradient_clipping),
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,  # AdamATan2 is not on DeepSpeed's ZeRO list; it is elementwise
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class Checkpointer:
    """Atomic DeepSpeed checkpoints under `root/`: `step0000100/`, ..., and `latest` naming the newest.

    All ranks write into `root/.tmp-<tag>/` (DeepSpeed's files plus one `rank<r>.pt` per rank for state that
    differs between ranks, such as the carry and RNG states); rank 0 then renames it to `root/<tag>/` and
    replaces `latest` atomically. A kill at any point leaves `latest` naming a complete checkpoint.
    """

    def __init__(self, root: str | os.PathLike, keep: int = 2):
        self.root, self.keep = Path(root), keep

    def latest_tag(self) -> str | None:
        f = self.root / "latest"
        if not f.is_file():
            return None
        tag = f.read_text().strip()
        if not (self.root / tag).is_dir():
            raise DataError(f, f"names checkpoint {tag!r}, which does not exist")
        return tag

    def save(self, engine, step: int, shared_state: dict, rank_state: dict, rank: int) -> str:
        tag = f"step{step:07d}"
        tmp_tag = f".tmp-{tag}"
        if rank == 0:
            shutil.rmtree(self.root / tmp_tag, ignore_errors=True)
        barrier()
        try:
            engine.save_checkpoint(str(self.root), tag=tmp_tag, client_state=shared_state, save_latest=False)
            torch.save(rank_state, self.root / tmp_tag / f"rank{rank}.pt")
        except (OSError, RuntimeError) as e:  # disk full: torch.save reports it as RuntimeError
            shutil.rmtree(self.root / tmp_tag, ignore_errors=True)
            latest = self.latest_tag()
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
            raise DataError(self.root / tmp_tag, f"cannot write checkpoint ({reason}); removed it. Free space and "
                            f"rerun: training resumes from {latest or 'step 0'}") from None
        barrier()
        if rank == 0:
            final = self.root / tag
            shutil.rmtree(final, ignore_errors=True)
            os.replace(self.root / tmp_tag, final)
            atomic_write_text(self.root / "latest", tag + "\n")
            self._prune(keep_tag=tag)
        barrier()
        return tag

    def _prune(self, keep_tag: str) -> None:
        tags = sorted(p.name for p in self.root.glob("step*") if p.is_dir())
        for old in tags[: -self.keep] if self.keep > 0 else []:
            if old != keep_tag:
                shutil.rmtree(self.root / old, ignore_errors=True)
        for stale in self.root.glob(".tmp-step*"):  # left by a run killed mid-save
            shutil.rmtree(stale, ignore_errors=True)

    def load(self, engine, rank: int) -> tuple[dict, dict] | None:
        """Load the newest complete checkpoint into `engine`; returns (shared_state, rank_state) or None.
        Only a run with the world size that wrote it may resume it (checked before anything is loaded)."""
        tag = self.latest_tag()
        if tag is None:
            return None
        saved = len(list((self.root / tag).glob("rank*.pt")))  # one per rank of the run that wrote it
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if saved != world:  # each rank resumes its own slice of the batch, carry and data stream
            raise DataError(self.root / tag, f"written by a run with {saved} ranks, but this run has {world}; "
                            "resume with the same world size (nodes x tasks per node x GPUs per task), or delete "
                            f"{self.root} to start over")
        rank_file = self.root / tag / f"rank{rank}.pt"
        try:
            path, shared = engine.load_checkpoint(str(self.root), tag=tag)
            rank_state = torch.load(rank_file, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError, KeyError) as e:
            raise DataError(self.root / tag, f"corrupt checkpoint ({type(e).__name__}: {e})") from None
        if path is None:
            raise DataError(self.root / tag, "DeepSpeed found no checkpoint files")
        return shared, rank_state
