"""A real SLURM cluster on localhost for tests: munged + slurmctld + one slurmd per node (Debian's packages).

    with LocalSlurmCluster(gpus=2) as cluster:             # or the `slurm_cluster` fixture below
        subprocess.run(["sbatch", "--gpus=1", "--wrap", "nvidia-smi || true"], env=cluster.env)

Everything lives under one fresh runtime directory (/tmp/cgar-slurm-XXXX: munge key/socket/logs, slurm.conf,
gres.conf, state, spool, logs). Nothing is written to /etc; clients find the cluster through `cluster.env`:
- `SLURM_CONF` points at the generated slurm.conf;
- `PATH` starts with `<runtime>/bin`, which holds wrappers (`srun`, `sbatch`, `squeue`, ...) that re-export
  SLURM_CONF before exec'ing the real binary. This is needed because snakemake-executor-plugin-slurm-jobstep
  deletes SLURM_* variables inside the job before it calls `srun`; without /etc/slurm/slurm.conf the bare
  `srun` then fails with "Could not establish a configuration source" (toolchain_measured.md §5, pitfall 1).
- SLURM_* variables inherited from the caller (e.g. pytest itself running inside a real SLURM job) are dropped.

The node has a fake GPU gres (gres.conf `File=/dev/null`), so `--gpus=N` / `--gres=gpu:N` requests schedule
(jobs see CUDA_VISIBLE_DEVICES, SLURM_GPUS; there is of course no device). There is no accounting database
(`accounting_storage/none`): `sacct` exits 1, so Snakemake must use `--slurm-status-command squeue`
(otherwise plugin 2.8.0 loops forever, §5). Finished jobs stay visible to squeue/scontrol for MinJobAge=300 s.

Daemons run in the foreground as our own children (munged -F, slurmctld -D, slurmd -D) and are killed by PID
in reverse order on exit, also when the test failed. Before that, every job is cancelled and waited for, and
any process still carrying this cluster's marker variable (`CGAR_SLURM_CLUSTER=<runtime dir>`, set in the
daemons' and in `cluster.env`) - i.e. slurmstepd and job processes - is SIGKILLed by PID.

Missing binaries skip the tests, unless CGAR_REQUIRE_SLURM=1 (CI), which turns that into a failure.
`.ci/slurm_setup.sh` installs the packages. Set CGAR_SLURM_KEEP=1 to keep the runtime dir for debugging.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo", "sacct", "salloc")
MARKER = "CGAR_SLURM_CLUSTER"
_live: set["LocalSlurmCluster"] = set()


class SlurmUnavailable(RuntimeError):
    pass


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin")


def missing_binaries() -> list[str]:
    return [b for b in DAEMONS + CLIENTS if _which(b) is None]


def require_slurm() -> None:
    """Skip (or fail under CGAR_REQUIRE_SLURM=1) when the SLURM/munge binaries are not installed."""
    missing = missing_binaries()
    msg = None
    if missing:
        msg = (f"SLURM test cluster unavailable: missing {', '.join(missing)} "
               f"(install with `sudo .ci/slurm_setup.sh`: Debian packages munge slurm-wlm)")
    elif os.geteuid() != 0:
        msg = "SLURM test cluster unavailable: slurmd must run as root (SlurmdUser=root) to launch jobs"
    if msg:
        if os.environ.get("CGAR_REQUIRE_SLURM") == "1":
            pytest.fail(msg + "; CGAR_REQUIRE_SLURM=1 is set", pytrace=False)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"    <{e}>"
    return "\n".join("    " + ln for ln in lines[-n:]) or "    <empty>"


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


class LocalSlurmCluster:
    """Context manager: start() brings the cluster up and waits for the node to be idle; stop() tears it down."""

    def __init__(self, gpus: int = 2, cpus: int | None = None, partition: str = "debug",
                 start_timeout: float = 60.0, root: str | os.PathLike | None = None, nodes: int = 1):
        self.gpus, self.partition, self.start_timeout = gpus, partition, start_timeout
        self.cpus = cpus or os.cpu_count() or 1
        self.host = socket.gethostname().split(".")[0]
        # one slurmd per node, all on this machine; a single node keeps the machine's name
        self.nodes = [self.host] if nodes == 1 else [f"{self.host}-n{i}" for i in range(1, nodes + 1)]
        self.mem_mb = int(_mem_mb() * 0.7)
        self._root_parent = root
        self.root: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.start_seconds: float | None = None
        self.env: dict[str, str] = {}

    # ------------------------------------------------------------------ files

    def _write_config(self) -> None:
        r = self.root
        for d in ("munge/run", "munge/log", "munge/lib", "slurm/state", "slurm/spool", "slurm/log", "slurm/run", "bin"):
            (r / d).mkdir(parents=True, exist_ok=True)
        for d in (r, r / "munge", r / "munge/run"):  # munged: "execute permissions for all required" on the socket dir
            d.chmod(0o755)
        key = r / "munge/munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.munge_socket = r / "munge/run/munge.socket.2"
        self.conf = r / "slurm/slurm.conf"
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        ports = [self.slurmd_port] + [_free_port() for _ in self.nodes[1:]]
        # several slurmd on one machine (SLURM's "multiple slurmd" emulation): each node its own Port, and per-node
        # spool/pid/log files through %n (the node name); every node is 127.0.0.1 under its own NodeName
        node_lines = "\n".join(
            f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname={self.host} Port={port} CPUs={self.cpus} "
            f"RealMemory={self.mem_mb} Gres=gpu:{self.gpus} State=UNKNOWN" for n, port in zip(self.nodes, ports))
        per_node = "" if len(self.nodes) == 1 else ".%n"
        s = r / "slurm"
        self.conf.write_text(f"""\
# generated by tests/slurm_cluster.py
ClusterName=cgartest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long (+1 s) before it may start again (default 120 s)
AuthInfo=socket={self.munge_socket},cred_expire=10
StateSaveLocation={s}/state
SlurmdSpoolDir={s}/spool{per_node}
SlurmctldPidFile={s}/run/slurmctld.pid
SlurmdPidFile={s}/run/slurmd{per_node}.pid
SlurmctldLogFile={s}/log/slurmctld.log
SlurmdLogFile={s}/log/slurmd{per_node}.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job with no --mem takes all node memory and jobs serialize
DefMemPerCPU=500
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to squeue/scontrol (snakemake's squeue status mode relies on it)
MinJobAge=300
KillWait=5
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
{node_lines}
PartitionName={self.partition} Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")
        # fake GPUs: slurmd wants one distinct character device per GPU (a regular file loads, but then jobs get no
        # CUDA_VISIBLE_DEVICES). Harmless ones; task/none means no cgroup device rules are applied.
        fake = ["/dev/null", "/dev/zero", "/dev/full", "/dev/urandom"]
        if self.gpus * len(self.nodes) > len(fake):
            raise ValueError(f"at most {len(fake)} fake GPUs in all")
        lines = [f"NodeName={n} Name=gpu File={fake[k * self.gpus + i]}\n"
                 for k, n in enumerate(self.nodes) for i in range(self.gpus)]
        (s / "gres.conf").write_text("".join(lines))
        for tool in CLIENTS:
            w = r / "bin" / tool
            w.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec {_which(tool)} "$@"\n')
            w.chmod(0o755)

    def _make_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '')}"
        env[MARKER] = str(self.root)
        return env

    # ------------------------------------------------------------------ up

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.console.log", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, start_new_session=True)
        log.close()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SlurmUnavailable(f"{name} exited with code {p.returncode} during start-up")

    def start(self) -> "LocalSlurmCluster":
        t0 = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="cgar-slurm-", dir=self._root_parent))
        _live.add(self)
        try:
            self._write_config()
            self.env = self._make_env()
            r = self.root
            self._spawn("munged", [_which("munged"), "-F", f"--key-file={r}/munge/munge.key",
                                   f"--socket={self.munge_socket}", f"--pid-file={r}/munge/run/munged.pid",
                                   f"--log-file={r}/munge/log/munged.log", f"--seed-file={r}/munge/lib/munged.seed"])
            self._wait(lambda: self.munge_socket.exists(), "munged socket")
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: self._run(["scontrol", "ping"], timeout=5).stdout.count("UP") > 0, "slurmctld ping")
            for n in self.nodes:
                self._spawn("slurmd" if len(self.nodes) == 1 else f"slurmd.{n}", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", n])
            self._wait(lambda: self.node_state() == "idle", "node(s) idle")
        except BaseException as e:
            report = self.diagnostics()
            self.stop()
            if isinstance(e, (SlurmUnavailable, subprocess.TimeoutExpired)):
                raise SlurmUnavailable(f"{e}\n{report}") from None
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait(self, cond, what: str, poll: float = 0.1) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if cond():
                    return
            except (subprocess.TimeoutExpired, OSError):
                pass
            time.sleep(poll)
        raise SlurmUnavailable(f"timed out after {self.start_timeout:.0f} s waiting for {what}")

    def diagnostics(self) -> str:
        if self.root is None:
            return ""
        parts = [f"SLURM runtime dir: {self.root}"]
        for pattern in ("munge/log/munged.log", "slurm/log/slurmctld.log", "slurm/log/slurmd*.log",
                        "munged.console.log", "slurmctld.console.log", "slurmd*.console.log"):
            for p in sorted(self.root.glob(pattern)):
                parts.append(f"--- tail of {p.relative_to(self.root)}:\n{_tail(p)}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ clients

    def _run(self, argv: list[str], timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster; raises on a non-zero exit."""
        p = self._run(list(argv), timeout=timeout)
        if p.returncode:
            raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}\n{self.diagnostics()}")
        return p

    def node_state(self) -> str:
        """The nodes' state ("idle", "mix", ...); "mixed states: ..." while they differ."""
        p = self._run(["sinfo", "-h", "-N", "-o", "%t"], timeout=10)
        states = sorted({ln.strip().rstrip("*~#!%$@^-") for ln in p.stdout.splitlines() if ln.strip()})
        return states[0] if len(states) == 1 else f"mixed states: {states}"

    def job_state(self, job_id: str | int) -> str:
        out = self._run(["scontrol", "-o", "show", "job", str(job_id)], timeout=10).stdout
        m = re.search(r"\bJobState=(\S+)", out)
        return m.group(1) if m else "UNKNOWN"

    def job_field(self, job_id: str | int, field: str) -> str | None:
        out = self._run(["scontrol", "-o", "show", "job", str(job_id)], timeout=10).stdout
        m = re.search(rf"\b{field}=(\S*)", out)
        return m.group(1) if m else None

    def wait_job(self, job_id: str | int, timeout: float = 60,
                 done=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                       "BOOT_FAIL", "DEADLINE", "PREEMPTED")) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in done:
                return state
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {self.job_state(job_id)} after {timeout} s\n{self.diagnostics()}")

    def active_jobs(self) -> list[str]:
        p = self._run(["squeue", "-h", "-o", "%i %T"], timeout=10)
        return [ln.split()[0] for ln in p.stdout.splitlines()
                if ln.split()[1:] and ln.split()[1] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING",
                                                          "REQUEUED", "SUSPENDED", "RESIZING", "STOPPED")]

    # ------------------------------------------------------------------ down

    def _marked_pids(self) -> list[int]:
        """PIDs of processes carrying this cluster's marker (slurmstepd, job processes), except ourselves."""
        needle = f"{MARKER}={self.root}".encode()
        me, out = os.getpid(), []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == me:
                continue
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    out.append(int(d.name))
            except OSError:
                continue
        return out

    def stop(self) -> None:
        if self.root is None:
            return
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            with contextlib.suppress(Exception):
                self._run(["scancel", "--full", "--quiet", *self.active_jobs()], timeout=10) \
                    if self.active_jobs() else None
                deadline = time.monotonic() + 20
                while self.active_jobs() and time.monotonic() < deadline:
                    time.sleep(0.2)
        for name in reversed(list(self.procs)):  # slurmd, slurmctld, munged
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        for pid in self._marked_pids():  # stragglers: slurmstepd and job processes of this cluster only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.procs.clear()
        _live.discard(self)
        if os.environ.get("CGAR_SLURM_KEEP") != "1":
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> "LocalSlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:  # last resort (e.g. KeyboardInterrupt past the fixture finalizers)
    for c in list(_live):
        with contextlib.suppress(Exception):
            c.stop()


def slurm_cluster_fixture(scope: str = "module", **kwargs):
    """Fixture factory: `my_cluster = slurm_cluster_fixture(scope="session", gpus=1)` in a test module/conftest."""

    @pytest.fixture(scope=scope)
    def _fixture():
        require_slurm()
        with LocalSlurmCluster(**kwargs) as cluster:
            yield cluster

    return _fixture


slurm_cluster = slurm_cluster_fixture(scope="module", gpus=2)
