"""The forward dtype policy (model.forward_dtype): bf16 only where the device runs it natively.

TRM runs its forward in bf16 on the GPU; `auto` does the same on a GPU of compute capability >= 8.0 and stays
fp32 elsewhere (CPU, and older GPUs, which emulate bf16 more slowly than fp32). `TRM` resolves it when built or
moved (`TRM._apply`), so nothing here runs inside a compiled forward.
"""

from __future__ import annotations

import warnings

import torch


def native_bf16(device: torch.device) -> bool:
    """bf16 matmuls run natively: a CUDA GPU of compute capability >= 8.0 (Ampere on). Older GPUs (V100, T4)
    emulate bf16, slower than fp32; on CPU the forward stays fp32 as everywhere in this project's tests."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def forward_dtype(name: str, device: torch.device) -> torch.dtype:
    """model.forward_dtype on `device`: auto = bfloat16 where the device has native bf16 (as TRM on its GPUs),
    else float32, with a warning on a GPU that lacks it. An explicit bfloat16 on such a GPU is an error naming the
    key rather than a silently slow run. Resolved when the model is built or moved (`TRM._apply`), never inside
    the forward, which torch.compile traces."""
    if name != "auto":
        if name == "bfloat16" and device.type == "cuda" and not native_bf16(device):
            raise ValueError(f"model.forward_dtype: bfloat16, but {torch.cuda.get_device_name(device)} (compute "
                             f"capability {torch.cuda.get_device_capability(device)}) has no native bf16; use auto "
                             f"or float32")
        return getattr(torch, name)
    if native_bf16(device):
        return torch.bfloat16
    if device.type == "cuda":
        warnings.warn(f"{torch.cuda.get_device_name(device)} has no native bf16 (compute capability "
                      f"{torch.cuda.get_device_capability(device)} < 8.0): model.forward_dtype auto runs float32")
    return torch.float32
