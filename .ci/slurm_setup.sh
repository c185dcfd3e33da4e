#!/usr/bin/env bash
# Install what tests/slurm_cluster.py needs to bring up a throw-away single-node SLURM cluster on localhost:
# Debian's munge + slurm-wlm (slurmctld, slurmd, client commands). Idempotent; needs root (or sudo) and apt.
# No accounting database is used (tests run Snakemake with --slurm-status-command squeue), so no slurmdbd/MariaDB.
# Nothing is started or configured here: the harness writes its config under a temp dir and runs the daemons itself.
set -euo pipefail

need=()
for bin in munged slurmctld slurmd sbatch srun squeue scancel scontrol sinfo; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$bin")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "slurm_setup: munge and slurm-wlm already installed ($(slurmctld -V 2>/dev/null || echo '?'))"
    exit 0
fi
echo "slurm_setup: missing ${need[*]}; installing munge slurm-wlm"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "slurm_setup: need root or sudo to apt-get install" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's postinst scripts try to start the services; on machines without an init system that fails harmlessly,
# and policy-rc.d (if present) denies it. We never want the packaged services running anyway.
$SUDO apt-get update -qq
$SUDO apt-get install -y -q munge slurm-wlm
echo "slurm_setup: installed $(slurmctld -V)"
