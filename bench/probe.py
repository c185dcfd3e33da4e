"""Timing helpers shared by the benches: device sync, wall and busy time of a call, a dense matmul probe.

Without cgar.flops (fvcore), so bench/gpu_check.py can use them on a machine that lacks it.
"""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds of fn(), busy seconds = process CPU time / threads).

    This machine is shared with other jobs: while they hold the cores, our threads are descheduled (and a
    2-thread OpenMP region waits for its descheduled sibling), so wall time measures the load, not the code.
    Busy time does not tick while descheduled; it still counts OpenMP spin-waiting, so a rate computed from
    it is a conservative estimate of the uncontended rate. On CUDA busy = wall."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    wall = time.perf_counter() - t0
    return wall, wall if device.type == "cuda" else (time.process_time() - c0) / torch.get_num_threads()


class MatmulProbe:
    """Dense square matmul: the machine's attainable matmul FLOP/s on these threads."""

    def __init__(self, device: torch.device, size: int):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.a, self.b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        self.flops, self.device, self.dtype = 2 * size**3, device, dtype

    def run(self, reps: int = 3) -> tuple[float, float]:
        """(wall, busy) seconds per matmul, as `timed`."""
        wall, busy = timed(lambda: [torch.mm(self.a, self.b) for _ in range(reps)], self.device)
        return wall / reps, busy / reps
