"""First start of a CPU process group on a machine with an empty torch extensions cache, before and after
cgar.ds_ops.skip_shm_comm_build.

Usage: python bench/first_start_bench.py
"before": `deepspeed.init_distributed(gloo)` as cgar.engine called it until issue 11 (DeepSpeed JIT-builds its
shared-memory op, under a build lock a kill leaves behind); "after": `cgar.engine.compute_init("cpu")`. Each runs in
a fresh process with its own empty TORCH_EXTENSIONS_DIR; prints wall seconds and whether a build folder appeared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETUP = ("import os; os.environ.update(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', "
         "MASTER_PORT='29511'); ")
CASES = {
    "before (plain deepspeed.init_distributed)": SETUP + "import deepspeed; deepspeed.init_distributed('gloo')",
    "after (cgar.engine.compute_init)": SETUP + "from cgar.engine import compute_init; compute_init('cpu')",
}


def main() -> None:
    for name, code in CASES.items():
        with tempfile.TemporaryDirectory() as ext:
            env = {**os.environ, "TORCH_EXTENSIONS_DIR": ext}
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - t0
            built = sorted(p.name for p in Path(ext).iterdir())  # TORCH_EXTENSIONS_DIR/<op name>/
            print(f"{name}: rc {r.returncode}, {wall:.1f} s, build folders: {built or 'none'}")
            if r.returncode:
                print(r.stderr[-2000:])


if __name__ == "__main__":
    main()
