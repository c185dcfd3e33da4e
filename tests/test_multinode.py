"""Multi-node launch (cgar.slurm_launch): rank counts from gpu / gres / nodes / tasks, the SLURM resources the
plugin accepts, the srun + torchrun rendezvous command, capped retry runtimes, and the world-size check on resume.
The launches themselves run on the local SLURM cluster in tests/test_slurm.py."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from cgar.engine import Checkpointer
from cgar.io_utils import DataError
from cgar.slurm_launch import (Geometry, capped_runtime, gres_gpus, geometry_from_resources, launch_prefix,
                               sbatch_resources, srun_command)


def test_gres_gpus():
    assert gres_gpus("gpu:4") == 4 and gres_gpus("gpu:a100:2") == 2 and gres_gpus(" gpu:1 ") == 1
    assert gres_gpus(None) == 0 and gres_gpus("") == 0 and gres_gpus("tmpdisk:100") == 0
    with pytest.raises(ValueError, match="gpu:N or gpu:TYPE:N"):
        gres_gpus("gpu:a100")


def test_geometry_from_resources():
    assert geometry_from_resources({"gpu": 4}) == Geometry(1, 1, 4)
    assert geometry_from_resources({"gpu": 0, "gres": "gpu:h100:2"}) == Geometry(1, 1, 2)
    assert geometry_from_resources({"gpu": 0}) == Geometry(1, 1, 0)
    # multi-node: gres is per node, gpu per job
    two = {"nodes": 2, "tasks": 2, "mpi": "srun"}
    assert geometry_from_resources({**two, "gres": "gpu:4"}) == Geometry(2, 1, 4)
    assert geometry_from_resources({**two, "gpu": 8}) == Geometry(2, 1, 4)
    assert geometry_from_resources({"nodes": 1, "tasks_per_node": 2, "mpi": "srun"}) == Geometry(1, 2, 0)
    assert geometry_from_resources({**two, "gres": "gpu:4"}).world == 8
    assert Geometry(2, 1, 0).world == Geometry(1, 2, 0).world == 2  # CPU: one rank per task
    with pytest.raises(ValueError, match="mutually exclusive"):
        geometry_from_resources({"gpu": 1, "gres": "gpu:1"})
    with pytest.raises(ValueError, match="do not split evenly"):
        geometry_from_resources({**two, "gpu": 3})
    with pytest.raises(ValueError, match="need resources.mpi"):
        geometry_from_resources({"nodes": 2, "tasks": 2})
    with pytest.raises(ValueError, match="not nodes x tasks_per_node"):
        geometry_from_resources({"nodes": 2, "tasks": 3, "tasks_per_node": 2, "mpi": "srun"})
    with pytest.raises(ValueError, match="resources.nodes=-1"):
        geometry_from_resources({"nodes": -1})


def test_sbatch_resources_are_what_plugin_2_8_accepts():
    assert sbatch_resources(1, 1) == {}
    # tasks_per_node only when > 1 (the plugin refuses 1); tasks_per_gpu 0 keeps it from adding --ntasks-per-gpu
    assert sbatch_resources(2, 1) == {"nodes": 2, "mpi": "srun", "tasks_per_gpu": 0, "tasks": 2}
    assert sbatch_resources(1, 2) == {"nodes": 1, "mpi": "srun", "tasks_per_gpu": 0, "tasks_per_node": 2}
    for nodes, tpn in ((2, 1), (1, 2), (3, 2)):
        assert geometry_from_resources(sbatch_resources(nodes, tpn)) == Geometry(nodes, tpn, 0)


def test_launch_prefix():
    assert launch_prefix({"gpu": 0}, 1) == "python"
    assert launch_prefix({"gpu": 2}, 2) == "python -m cgar.gpu_lock 2 -- torchrun --standalone --nproc_per_node 2"
    assert launch_prefix({"gpu": 0, "gres": "gpu:a100:3"}, 3).endswith("--nproc_per_node 3")
    mn = {**sbatch_resources(2, 1), "gpu": 0, "gres": "gpu:4", "cpus_per_gpu": 8}
    assert launch_prefix(mn, 4) == ("python -m cgar.slurm_launch --nodes 2 --tasks-per-node 1 --gpus-per-task 4 "
                                    "--cpus-per-task 32 --")
    assert launch_prefix({**sbatch_resources(1, 2), "gpu": 0}, 1).startswith(
        "python -m cgar.slurm_launch --nodes 1 --tasks-per-node 2 --gpus-per-task 0 --cpus-per-task 1")


def test_srun_command():
    cmd = srun_command(Geometry(2, 1, 4), 32, "1234", "node1:21234", ["-m", "cgar.train", "--out", "x"])
    assert cmd[:7] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=32",
                       "--kill-on-bad-exit=1", "--gpus-per-task=4"]
    assert cmd[7:10] == [sys.executable, "-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc-per-node=4", "--rdzv-id=1234", "--rdzv-backend=c10d",
            "--rdzv-endpoint=node1:21234"} <= set(cmd)
    assert cmd[-4:] == ["-m", "cgar.train", "--out", "x"]
    cpu = srun_command(Geometry(1, 2, 0), 1, "7", "h:20007", ["-m", "cgar.train"])
    assert "--nproc-per-node=1" in cpu and "--nnodes=2" in cpu and not any("gpus" in c for c in cpu)


def test_capped_runtime():
    assert [capped_runtime(960, a, 1440) for a in (1, 2, 3)] == [960, 1440, 1440]
    assert [capped_runtime(960, a, None) for a in (1, 2, 3)] == [960, 1920, 2880]


def test_resume_with_another_world_size_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "step0000010").mkdir(parents=True)
    for r in (0, 1):
        torch.save({}, ckpt / "step0000010" / f"rank{r}.pt")
    (ckpt / "latest").write_text("step0000010\n")
    with pytest.raises(DataError, match="written by a run with 2 ranks, but this run has 1; resume with the same "
                                        "world size"):
        Checkpointer(ckpt).load(engine=None, rank=0)


def test_resume_with_another_world_size_exits_2(data_dir, tmp_path):
    """Through the CLI: 2 ranks killed after their first checkpoint, then 1 rank on the same --out."""
    cfg = {"data_dir": str(data_dir), "model": {"hidden_size": 32, "num_heads": 2, "halt_max_steps": 4,
                                               "H_cycles": 2, "L_cycles": 2},
           "train": {"global_batch_size": 16, "epochs": 4, "epochs_per_iter": 4, "checkpoint_every": 5,
                     "log_every": 5, "device": "cpu", "seed": 0}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    train = ["-m", "cgar.train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *train],
                         env={**env, "CGAR_FAULT_KILL_AT_STEP": "6"}, capture_output=True, text=True, timeout=300)
    assert two.returncode != 0 and (tmp_path / "out/ckpt/latest").read_text().strip() == "step0000005", two.stderr
    one = subprocess.run([sys.executable, *train], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 2, one.stderr[-2000:]
    assert "written by a run with 2 ranks, but this run has 1" in one.stderr
