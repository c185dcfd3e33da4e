# Helpers shared by all rules: config validation, the experiment grid, paths and resource functions.

import json
import os
import shutil

import yaml
from snakemake.utils import validate

from cgar.config import ConfigError, check_world_size, config_from_dict
from cgar.report import DEFAULT_BASELINE_FRACTIONS, TABLES
from cgar.report import figure_files as report_figure_files
from cgar.slurm_launch import (
    capped_runtime,
    geometry_from_resources,
    launch_prefix,
    sbatch_resources,
)

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


def run_ranks() -> int:
    """Ranks of one training job as the config asks (cgar.slurm_launch.Geometry.world)."""
    res = {
        "gpu": int(config["resources"]["gpus_per_run"]),
        "nodes": int(config["resources"].get("nodes_per_run", 1)),
        "tasks_per_node": int(config["resources"].get("tasks_per_node", 1)),
        "mpi": "srun",
    }
    try:
        return geometry_from_resources(res).world
    except ValueError as e:
        raise WorkflowError(f"config: {e}")


def iteration_groups() -> int | None:
    """At most this many training puzzles (groups) when the config caps them (data.build.subsample_size), so a
    global batch larger than epochs_per_iter x this can never fill one iteration."""
    size = config["data"]["build"]["subsample_size"]
    return None if size is None else int(size)


def check_run_configs() -> None:
    """Every run config now, so a bad experiment stops the DAG before any job starts ("config: <key path>")."""
    ranks, groups = run_ranks(), iteration_groups()
    for exp in EXPERIMENTS:
        where = f"config: experiments.{exp} (merged with run_defaults)"
        try:
            cfg = config_from_dict(run_dict(exp, 0))
            check_world_size(cfg, ranks)
        except ConfigError as e:
            raise WorkflowError(f"{where}: {e}")
        t = cfg.train
        if groups is not None and t.global_batch_size > t.epochs_per_iter * groups:
            raise WorkflowError(
                f"{where}: train.global_batch_size: {t.global_batch_size} exceeds one iteration "
                f"(train.epochs_per_iter {t.epochs_per_iter} x data.build.subsample_size {groups} puzzles)"
            )
        if (
            t.device == "cuda"
            and workflow.local_exec
            and shutil.which("nvidia-smi") is None
        ):
            raise WorkflowError(
                f"{where}: train.device: cuda, but this machine has no GPU (no nvidia-smi); use auto or cpu"
            )
    if config["report"]["baseline"] not in EXPERIMENTS:
        raise WorkflowError(
            f"config: report.baseline: {config['report']['baseline']!r} is not an experiment "
            f"(experiments: {', '.join(EXPERIMENTS)})"
        )


check_run_configs()


def run_params(wildcards) -> dict:
    return run_dict(wildcards.exp, wildcards.seed)


def output_dir(wildcards, output) -> str:
    """The folder of a job's first output (the run directory), for CLIs that take --out DIR."""
    return os.path.dirname(output[0])


def gpus_per_run() -> int:
    return int(config["resources"]["gpus_per_run"])


def train_runtime(wildcards, attempt) -> int:
    """Minutes; each retry (timeout, preemption) asks for more, up to resources.max_runtime_minutes (the
    partition's limit), and resumes from the last checkpoint."""
    return capped_runtime(
        int(config["resources"]["train_runtime_minutes"]),
        attempt,
        config["resources"].get("max_runtime_minutes"),
    )


def eval_runtime(wildcards, attempt) -> int:
    return capped_runtime(
        int(config["resources"]["eval_runtime_minutes"]),
        attempt,
        config["resources"].get("max_runtime_minutes"),
    )


def _check_runtimes() -> None:
    cap = config["resources"].get("max_runtime_minutes")
    for key in ("train_runtime_minutes", "eval_runtime_minutes"):
        if cap and config["resources"][key] > cap:
            raise WorkflowError(
                f"config: resources.{key}={config['resources'][key]} exceeds "
                f"resources.max_runtime_minutes={cap} (the partition's time limit)"
            )


_check_runtimes()


def nodes_per_run() -> int:
    return int(config["resources"].get("nodes_per_run", 1))


def tasks_per_node() -> int:
    return int(config["resources"].get("tasks_per_node", 1))


def multinode_resources() -> dict:
    """The SLURM resources of a training job spanning resources.nodes_per_run x tasks_per_node tasks ({} for one)."""
    return sbatch_resources(nodes_per_run(), tasks_per_node())


def launcher(wildcards, resources, threads) -> str:
    """How the job's ranks start (cgar.slurm_launch.launch_prefix): torchrun over the job's GPUs, taken from
    whichever of `gpu` or `gres: gpu[:type]:N` it has; one plain process on CPU; srun + one torchrun per task
    with a c10d rendezvous when the job spans several tasks (resources nodes / tasks_per_node).

    Read from the job's resources, not the config, so `--set-resources train:gpu=4` (or a profile) really
    starts 4 ranks; the global batch stays fixed, so results do not depend on it. cgar.gpu_lock picks free
    GPUs for the job and sets CUDA_VISIBLE_DEVICES (Snakemake only counts GPUs), so concurrent local jobs
    never share one; under SLURM it keeps the GPUs SLURM assigned.
    """
    try:
        return launch_prefix(resources, threads)
    except ValueError as e:
        raise WorkflowError(f"resources of the job for {wildcards}: {e}")


# ---------------------------------------------------------------- sharded evaluation

EVAL_SHARDS = int(config["evaluate"].get("shards", 1))
# Evaluation outputs (stem) -> the checkpoint in the run folder they evaluate. The sharded rules
# (evaluate_shards.smk) serve every stem listed here: shard a second checkpoint by adding it.
EVAL_CHECKPOINTS = {
    "eval": "model.pt",
    "eval_best": "model_best.pt",  # the best-by-validation EMA snapshot (cgar.train)
    "eval_act": "model.pt",
}
EVAL_MODES = {"eval_act": "act"}  # cgar.evaluate --mode; "full" for the others
TRACE_INDEX = (
    0  # the test puzzle python -m cgar.trace follows (the puzzle_trace figure)
)
EVAL_SHARD = f"{RUN}/eval_shards/{{stem}}.shard{{shard}}of{EVAL_SHARDS}"  # cgar.eval_shards.shard_stem


def eval_checkpoint(wildcards) -> str:
    return f"results/runs/{wildcards.exp}/seed{wildcards.seed}/{EVAL_CHECKPOINTS[wildcards.stem]}"


def eval_mode(wildcards, output) -> str:
    """--mode of the evaluation that writes `output` (its stem: eval, eval_best, eval_act, or a shard of one)."""
    stem = os.path.basename(output[0]).split(".")[0]
    return EVAL_MODES.get(stem, "full")


def eval_shard_tables(wildcards) -> list[str]:
    """All K shard tables of one evaluation (their .json beside them), in shard order."""
    return expand(
        f"{EVAL_SHARD}.parquet",
        exp=wildcards.exp,
        seed=wildcards.seed,
        stem=wildcards.stem,
        shard=range(EVAL_SHARDS),
    )


def shard_arg(wildcards) -> str:
    return f"{wildcards.shard}/{EVAL_SHARDS}"


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


def grid_name() -> str:
    """data.generate.grid: 9x9 (the paper) or the small 6x6 / 4x4 grids of the laptop setting."""
    return config["data"]["generate"].get("grid", "9x9")


def _check_grid() -> None:
    """The hill-climbed sources exist for 9x9 only (small grids barely need guessing) and the real
    Sudoku-Extreme files are 9x9: refuse the combinations at DAG build, naming the key.
    """
    grid = grid_name()
    if grid == "9x9" or config["data"]["source"] != "generate":
        return
    for source in ("hard", "extreme"):
        if config["data"]["generate"]["mix"][source] > 0:
            raise WorkflowError(
                f"config: data.generate.mix.{source}: the hill-climbed sources are 9x9 only, but "
                f"data.generate.grid is {grid}; give their share to kaggle_like / unbiased_like / lowclue"
            )


_check_grid()


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


def trace_files() -> list[str]:
    """trace.json of each experiment's first seed (the puzzle_trace figure draws one run per experiment)."""
    return expand(f"{RUN}/trace.json", exp=EXPERIMENTS, seed=SEEDS[:1])


def table_files() -> list[str]:
    return expand(
        "results/tables/{table}.{ext}", table=TABLES, ext=("csv", "md", "tex")
    )


def figure_files() -> list[str]:
    return report_figure_files("results/figures")


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


def report_targets() -> str:
    """--targets / --baseline-fractions of `cgar.report tables` from report.targets / baseline_fractions."""
    fractions = config["report"].get("baseline_fractions", DEFAULT_BASELINE_FRACTIONS)
    targets = config["report"].get("targets", [])
    return " ".join(
        [f"--targets {' '.join(map(str, targets))}"] * bool(targets)
        + [f"--baseline-fractions {' '.join(map(str, fractions))}"]
    )


def all_outputs() -> list[str]:
    return (
        ["results/data/leak_check.json"] * (not CACHED) + table_files() + figure_files()
    )


onstart:
    if (
        nodes_per_run() * tasks_per_node() > 1
        and workflow.local_exec
        and not workflow.dryrun
    ):
        raise WorkflowError(
            f"resources.nodes_per_run={nodes_per_run()} x tasks_per_node={tasks_per_node()}: multi-task "
            "training runs through SLURM (--workflow-profile profiles/slurm); for a local run set both to 1"
        )
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
            "GPU was found (no nvidia-smi). For a CPU run use the laptop config: "
            "snakemake --cores all --configfile config/laptop.yaml"
        )
