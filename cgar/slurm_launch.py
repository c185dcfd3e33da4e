"""How a job's ranks are started: torchrun on one node, or srun + one torchrun per task across SLURM nodes.

    python -m cgar.slurm_launch --nodes 2 --tasks-per-node 1 --gpus-per-task 4 --cpus-per-task 32 -- -m cgar.train ...

runs in the job's batch script on the first node and execs
    srun --nodes 2 --ntasks 2 --ntasks-per-node 1 --cpus-per-task 32 --gpus-per-task 4 --kill-on-bad-exit=1 \\
        python -m torch.distributed.run --nnodes 2 --nproc-per-node 4 --rdzv-id $SLURM_JOB_ID --rdzv-backend c10d \\
        --rdzv-endpoint <first node>:<port> -m cgar.train ...
so the world is nodes x tasks_per_node x GPUs per task ranks (one rank per task on CPU, gloo). Every torchrun
meets at the first node's c10d store; ranks are handed out in join order, which does not matter: a rank's data
depends only on its rank number, so 2 x 1, 1 x 2 and `torchrun --standalone` with 2 processes train bit for bit
alike (tests/test_slurm.py). The run directory (checkpoints) must be on the shared filesystem, as Snakemake
requires anyway.

The Snakemake side (workflow/rules/common.smk) only calls `launch_prefix` and `sbatch_resources` below:
- A multi-task job needs the `mpi` resource: without it the jobstep plugin runs the job as `srun -n1 --nodes=1`,
  which cannot span nodes (and a nested srun cannot get the other node). With it, the rule's shell runs in the
  batch script and this module calls srun itself.
- snakemake-executor-plugin-slurm 2.8.0 accepts `tasks_per_node` only when > 1 (else `tasks`), and turns `tasks`
  into `--ntasks-per-gpu` for GPU jobs unless `tasks_per_gpu` is 0; `sbatch_resources` writes what it accepts.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Protocol


class Resources(Protocol):  # Snakemake's job resources (a Namedlist) or a dict
    def get(self, key: str, default: Any = None) -> Any: ...


@dataclass(frozen=True)
class Geometry:
    nodes: int = 1
    tasks_per_node: int = 1  # torchrun agents per node (1 with GPUs, normally)
    gpus_per_task: int = 0  # 0: CPU, one process (rank) per task

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def procs_per_task(self) -> int:
        return max(1, self.gpus_per_task)

    @property
    def world(self) -> int:
        return self.tasks * self.procs_per_task


def gres_gpus(gres: str | None) -> int:
    """GPUs per node in a SLURM gres string: "gpu:4" and "gpu:a100:4" -> 4; none, or no gpu gres -> 0."""
    if not gres:
        return 0
    m = re.fullmatch(r"gpu(?::[^:,]+)?:(\d+)", str(gres).strip())
    if m is None:
        if str(gres).startswith("gpu"):
            raise ValueError(f"resources.gres={gres!r}: expected gpu:N or gpu:TYPE:N")
        return 0
    return int(m.group(1))


def _int(res: Resources, key: str, default: int) -> int:
    value = res.get(key, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"resources.{key}={value!r}: expected a non-negative integer")
    return value


def geometry_from_resources(res: Resources) -> Geometry:
    """Nodes, tasks per node and GPUs per task from a job's resources, checked.

    GPUs come from whichever of `gpu` (sbatch --gpus: per job) or `gres: gpu[:type]:N` (per node) the job has.
    """
    nodes = max(1, _int(res, "nodes", 1))
    tpn, tasks = _int(res, "tasks_per_node", 0), _int(res, "tasks", 0)
    if tpn and tasks and tasks != nodes * tpn:
        raise ValueError(f"resources.tasks={tasks} is not nodes x tasks_per_node = {nodes} x {tpn}")
    if not tpn and tasks:
        if tasks % nodes:
            raise ValueError(f"resources.tasks={tasks} is not a multiple of resources.nodes={nodes}")
        tpn = tasks // nodes
    tpn = tpn or 1
    gpu, per_node = _int(res, "gpu", 0), gres_gpus(res.get("gres", None))
    if gpu and per_node:
        raise ValueError(f"resources.gpu={gpu} and resources.gres={res.get('gres')!r} both ask for GPUs "
                         "(the SLURM plugin treats them as mutually exclusive): set gpu: 0 to use gres")
    if per_node % tpn or gpu % (nodes * tpn):
        what = f"gres {per_node} GPUs per node" if per_node else f"gpu {gpu} GPUs per job"
        raise ValueError(f"resources: {what} do not split evenly over {nodes} node(s) x {tpn} task(s) per node")
    geom = Geometry(nodes, tpn, per_node // tpn if per_node else gpu // (nodes * tpn))
    if geom.tasks > 1 and not res.get("mpi", None):
        raise ValueError(
            f"resources: {geom.nodes} node(s) x {geom.tasks_per_node} task(s) per node need resources.mpi "
            "(else the SLURM jobstep runs the job as `srun -n1` on one node); set resources.nodes_per_run / "
            "tasks_per_node in the config, whose rule resources include it (cgar.slurm_launch.sbatch_resources)")
    return geom


def sbatch_resources(nodes: int, tasks_per_node: int) -> dict:
    """The rule resources that make snakemake-executor-plugin-slurm 2.8.0 submit `nodes` x `tasks_per_node` tasks
    and run the rule's shell in the batch script (see the module docstring); {} for one task."""
    if nodes * tasks_per_node == 1:
        return {}
    res = {"nodes": nodes, "mpi": "srun", "tasks_per_gpu": 0}
    res.update({"tasks_per_node": tasks_per_node} if tasks_per_node > 1 else {"tasks": nodes})
    return res


def launch_prefix(res: Resources, threads: int) -> str:
    """The command that `-m cgar.<step> ...` is appended to for a job with these resources.

    One task: torchrun --standalone over its GPUs (cgar.gpu_lock picks free ones on a shared workstation and keeps
    SLURM's assignment), or one plain process on CPU. Several: this module's srun + rendezvous launcher.
    """
    geom = geometry_from_resources(res)
    if geom.tasks == 1:
        g = geom.gpus_per_task
        return f"python -m cgar.gpu_lock {g} -- torchrun --standalone --nproc_per_node {g}" if g else "python"
    cpus = _int(res, "cpus_per_task", 0) or (_int(res, "cpus_per_gpu", 0) * geom.gpus_per_task) or threads
    return (f"python -m cgar.slurm_launch --nodes {geom.nodes} --tasks-per-node {geom.tasks_per_node} "
            f"--gpus-per-task {geom.gpus_per_task} --cpus-per-task {max(1, cpus)} --")


def capped_runtime(minutes: int, attempt: int, cap: int | None) -> int:
    """A retry's time limit: minutes x attempt, but never above the partition's limit `cap` (None: no cap).
    Training gains from a capped retry too: it resumes from its last checkpoint."""
    return min(minutes * attempt, cap) if cap else minutes * attempt


# ----------------------------------------------------------------------------- inside the job

def _scontrol(*args: str) -> str:
    try:
        p = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"slurm_launch: scontrol {' '.join(args)} failed: {e}") from None
    if p.returncode:
        raise SystemExit(f"slurm_launch: scontrol {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def first_node_address(job_id: str) -> str:
    """NodeAddr of the allocation's first node (the batch host), where the c10d store listens."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")  # the jobstep plugin drops it; then ask slurmctld
    if not nodelist:
        m = re.search(r"\bNodeList=(\S+)", _scontrol("-o", "show", "job", job_id))
        if m is None:
            raise SystemExit(f"slurm_launch: no NodeList for job {job_id}")
        nodelist = m.group(1)
    first = _scontrol("show", "hostnames", nodelist).split()[0]
    m = re.search(r"\bNodeAddr=(\S+)", _scontrol("-o", "show", "node", first))
    return m.group(1) if m else first


def rendezvous_port(job_id: str) -> int:
    """A port per job (below Linux's ephemeral range), so two jobs sharing a first node do not collide."""
    return int(os.environ.get("CGAR_RDZV_PORT", 20000 + int(job_id) % 10000))


def srun_command(geom: Geometry, cpus_per_task: int, job_id: str, endpoint: str, command: list[str]) -> list[str]:
    srun = ["srun", f"--nodes={geom.nodes}", f"--ntasks={geom.tasks}", f"--ntasks-per-node={geom.tasks_per_node}",
            f"--cpus-per-task={cpus_per_task}", "--kill-on-bad-exit=1"]
    if geom.gpus_per_task:
        srun.append(f"--gpus-per-task={geom.gpus_per_task}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={geom.tasks}",
                f"--nproc-per-node={geom.procs_per_task}", f"--rdzv-id={job_id}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}"]
    return srun + torchrun + command


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cgar.slurm_launch", description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--tasks-per-node", type=int, default=1, help="torchrun agents per node")
    ap.add_argument("--gpus-per-task", type=int, default=0, help="0: CPU, one rank per task")
    ap.add_argument("--cpus-per-task", type=int, default=1)
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then torchrun's script arguments (-m cgar.train ...)")
    a = ap.parse_args(argv)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        ap.error("no command given (... -- -m cgar.train ...)")
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise SystemExit("slurm_launch: SLURM_JOB_ID is not set: multi-node runs need a SLURM allocation "
                         "(snakemake --workflow-profile profiles/slurm); for a local run set resources.nodes_per_run "
                         "and resources.tasks_per_node to 1")
    geom = Geometry(a.nodes, a.tasks_per_node, a.gpus_per_task)
    endpoint = f"{first_node_address(job_id)}:{rendezvous_port(job_id)}"
    cmd = srun_command(geom, a.cpus_per_task, job_id, endpoint, command)
    print(f"slurm_launch: {geom.nodes} node(s) x {geom.tasks_per_node} task(s) x {geom.procs_per_task} rank(s) = "
          f"world {geom.world}; rendezvous at {endpoint}\nslurm_launch: {' '.join(cmd)}", file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
