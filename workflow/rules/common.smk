# Helpers shared by all rules: config validation, the experiment grid, paths and resource functions.

import json
import os
import shutil

import yaml
from snakemake.utils import validate

from cgar.config import ConfigError, config_from_dict
from cgar.report import FIGURES, TABLES

validate(config, schema="../schemas/config.schema.yaml")

EXPERIMENTS = list(config["experiments"])
SEEDS = [int(s) for s in config["seeds"]]
CACHED = str(config.get("cached_results", False)).lower() == "true"
DATASET = "results/data/dataset"
RUN = "results/runs/{exp}/seed{seed}"
CGAR_CODE_VERSION = config["code_version"]


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    seed=r"\d+",
    chunk=r"\d{4}",


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def run_dict(exp: str, seed: int) -> dict:
    """The cgar.config.RunConfig of one run: run_defaults, then the experiment's overrides, then the seed."""
    run = deep_merge(config["run_defaults"], config["experiments"][exp] or {})
    run = deep_merge(run, {"train": {"seed": int(seed)}, "data_dir": DATASET})
    # Canonical key order: params are compared by repr, and reordering a YAML file must not retrain.
    return json.loads(json.dumps(run, sort_keys=True))


# Validate every run config now, so a bad experiment stops the DAG before any job starts.
for _exp in EXPERIMENTS:
    try:
        config_from_dict(run_dict(_exp, 0))
    except ConfigError as e:
        raise WorkflowError(
            f"config: experiments.{_exp} (merged with run_defaults): {e}"
        )


def run_params(wildcards) -> dict:
    return run_dict(wildcards.exp, wildcards.seed)


def output_dir(wildcards, output) -> str:
    """The folder of a job's first output (the run directory), for CLIs that take --out DIR."""
    return os.path.dirname(output[0])


def gpus_per_run() -> int:
    return int(config["resources"]["gpus_per_run"])


def train_runtime(wildcards, attempt) -> int:
    """Minutes; each retry (timeout, preemption) asks for more, and resumes from the last checkpoint."""
    return int(config["resources"]["train_runtime_minutes"]) * attempt


def eval_runtime(wildcards, attempt) -> int:
    return int(config["resources"]["eval_runtime_minutes"]) * attempt


def launcher(wildcards, resources) -> str:
    """torchrun over the job's `gpu` resource (DeepSpeed data parallel); one plain process on CPU.

    Read from the job's resources, not the config, so `--set-resources train:gpu=4` (or a profile) really
    starts 4 ranks; the global batch stays fixed, so results do not depend on it. cgar.gpu_lock picks free
    GPUs for the job and sets CUDA_VISIBLE_DEVICES (Snakemake only counts GPUs), so concurrent local jobs
    never share one; under SLURM it keeps the GPUs SLURM assigned.
    """
    gpus = int(resources.gpu)
    if gpus > 0:
        return f"python -m cgar.gpu_lock {gpus} -- torchrun --standalone --nproc_per_node {gpus}"
    return "python"


# ---------------------------------------------------------------- data sources


def n_chunks() -> int:
    g = config["data"]["generate"]
    pool = int(g["test_size"]) + int(g["train_pool_size"])
    return -(-pool // int(g["chunk_size"]))


def chunk_size(wildcards) -> int:
    """Equal chunks; the last one takes the remainder."""
    g = config["data"]["generate"]
    pool = int(g["test_size"]) + int(g["train_pool_size"])
    k = int(wildcards.chunk)
    return min(int(g["chunk_size"]), pool - k * int(g["chunk_size"]))


def mix_arg() -> str:
    return ",".join(
        f"{k}={v}" for k, v in sorted(config["data"]["generate"]["mix"].items())
    )


def split_csvs() -> dict:
    """The train/test puzzle CSVs the dataset is built from: generated + split, or imported."""
    if config["data"]["source"] == "import":
        return {
            "train": "results/data/imported/train.csv",
            "test": "results/data/imported/test.csv",
        }
    return {
        "train": "results/data/split/train.csv",
        "test": "results/data/split/test.csv",
    }


def imported_src(wildcards) -> str:
    return config["data"]["import"][f"{wildcards.split}_csv"]


# ---------------------------------------------------------------- targets


def run_files(name: str) -> list[str]:
    return expand(f"{RUN}/{name}", exp=EXPERIMENTS, seed=SEEDS)


def table_files() -> list[str]:
    return expand(
        "results/tables/{table}.{ext}", table=TABLES, ext=("csv", "md", "tex")
    )


def figure_files() -> list[str]:
    return expand("results/figures/{figure}.{ext}", figure=FIGURES, ext=("png", "svg"))


def labelled(files: list[str], shown_ext: str, category: str) -> list:
    """Outputs with the `shown_ext` file of each item in the HTML report, under its own caption and label."""
    out = []
    for f in files:
        name, ext = os.path.splitext(os.path.basename(f))
        if ext == f".{shown_ext}":
            f = report(
                f,
                caption=f"../report/{name}.rst",
                category=category,
                labels={"name": name.replace("_", " ")},
            )
        out.append(f)
    return out


def all_outputs() -> list[str]:
    return (
        ["results/data/leak_check.json"] * (not CACHED) + table_files() + figure_files()
    )


onstart:
    # A paper-scale config on a machine without a GPU would start a multi-day CPU run: stop at once instead.
    if (
        config["resources"]["require_gpu"]
        and workflow.local_exec
        and not workflow.dryrun
        and not CACHED
        and shutil.which("nvidia-smi") is None
    ):
        raise WorkflowError(
            "this config trains at paper scale and requires a GPU (resources.require_gpu: true), but no "
            "GPU was found (no nvidia-smi). For a CPU run use the quick config: "
            "snakemake --cores all --configfile config/quick.yaml"
        )
