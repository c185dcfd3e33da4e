"""No run-time JIT build of DeepSpeed ops, and a fast failure on a build lock nobody holds.

`deepspeed.init_distributed` on the CPU accelerator JIT-builds its shared-memory collective op
(`deepspeed_shm_comm`, ~30 s of C++ compilation at the first start on a machine) whenever the op probes as
compatible (`deepspeed.ops.__compatible_ops__`). torch's builder serialises builds with a plain lock file
(`<torch_extensions>/<py>_<dev>/<op>/lock`, created with O_EXCL and removed when done); a process killed mid-build
leaves it, and every later start on that machine (or home directory, on a cluster) waits for it forever, silently.

The op only serves `inference_all_reduce` (tensor-parallel inference, deepspeed.module_inject); training collectives
go through torch.distributed (gloo/nccl) either way. So `skip_shm_comm_build` marks it incompatible before the
process group starts (DeepSpeed then uses gloo for everything, as it does on any non-Linux host) and no build, no
lock, no first-start delay remain. `stale_build_locks` still guards the lock directories of DeepSpeed's ops, e.g. a
lock left by an older version of this code or by another program: a lock that no live process on this host keeps
open is reported by path, so the user can delete it instead of waiting for ever.
"""

from __future__ import annotations

import os
from pathlib import Path

SHM_COMM_OP = "deepspeed_shm_comm"


def skip_shm_comm_build() -> None:
    """Make `deepspeed.comm.torch.build_shm_op` return None (it checks this dict before building).

    Only where DeepSpeed would build it (an accelerator with that builder: the CPU one); elsewhere (CUDA) the
    builder is absent and touching the dict would only run DeepSpeed's probe of every op for nothing."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().create_op_builder("ShareMemCommBuilder") is None:
        return
    # DeepSpeed caches the probe result in the module on first access, so this edit is what build_shm_op reads.
    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False


def extensions_root() -> Path:
    """torch's JIT build root: $TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions (one subfolder per
    python/device flavour, e.g. py311_cpu)."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def _open_files() -> set[str]:
    """Every file some process of this host that we may inspect (our own user's) holds open."""
    held = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                held.add(os.readlink(fd))
        except OSError:  # gone meanwhile, or another user's process
            continue
    return held


def stale_build_locks(root: str | os.PathLike, op_names: list[str] | None = None) -> list[Path]:
    """Build locks under `root` (of `op_names`, default every DeepSpeed op) that no live process holds open:
    torch's builder keeps the lock's descriptor open for the whole build, so a lock without one is left over."""
    root = Path(root)
    if op_names is None:
        from deepspeed.ops.op_builder.all_ops import ALL_OPS

        op_names = sorted(ALL_OPS)
    locks = [p for name in op_names for p in root.glob(f"*/{name}/lock")] + \
            [p for name in op_names for p in root.glob(f"{name}/lock")]  # TORCH_EXTENSIONS_DIR may be one level
    if not locks:
        return []
    held = _open_files()
    return sorted(p for p in locks if str(p.resolve()) not in held and str(p) not in held)
