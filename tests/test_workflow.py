"""The Snakemake DAG: lint and format, dry-runs of the paper config, the .test pipeline end to end with its
HTML report, re-rendering figures from cached results, and reruns limited to a changed experiment."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # rules call `python -m cgar...`
DATA_TRAIN_EVAL = {"generate_chunk", "split", "import_csv", "build_dataset", "check_dataset", "run_config",
                   "train", "flops", "evaluate", "evaluate_best", "evaluate_act", "trace", "evaluate_shard",
                   "evaluate_merge"}


def smk(*args, cwd=ROOT, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from a dry-run's 'Job stats' table."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    table = text.split("Job stats:")[-1] if "Job stats:" in text else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def test_lint_and_format():
    lint = smk("--lint", "--directory", ".test")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/"], cwd=ROOT,
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr


def test_paper_config_dry_run():
    jobs = planned_jobs(smk("-n", "--cores", "4", "--forceall"))
    assert jobs["generate_chunk"] == -(-(423168 + 20000) // 2000)  # 222 chunks fan out
    assert jobs["train"] == jobs["evaluate"] == jobs["flops"] == 4 * 3  # 4 variants x 3 seeds
    assert jobs["evaluate_best"] == jobs["evaluate_act"] == 4 * 3
    assert jobs["trace"] == 4  # the first seed of each variant
    assert jobs["split"] == jobs["build_dataset"] == jobs["check_dataset"] == 1


def test_paper_config_dry_run_with_the_slurm_profile():
    r = smk("-n", "--workflow-profile", "profiles/slurm", "--forceall")
    jobs = planned_jobs(r)
    assert jobs["train"] == 12 and jobs["generate_chunk"] == 222


def test_laptop_config_dry_run():
    """config/laptop.yaml (issue 12) validates against the schema and plans the 4 variants x >= 3 seeds, each with
    its three evaluations, on a 6x6 grid."""
    cfg = yaml.safe_load((ROOT / "config/laptop.yaml").read_text())
    seeds = len(cfg["seeds"])
    assert seeds >= 3 and sorted(cfg["experiments"]) == ["baseline", "cgar", "hsw", "pdc"]
    assert cfg["data"]["generate"]["grid"] == "6x6" and cfg["data"]["generate"]["test_size"] >= 1000
    jobs = planned_jobs(smk("-n", "--cores", "2", "--forceall", "--configfile", "config/laptop.yaml"))
    assert jobs["train"] == jobs["evaluate"] == jobs["evaluate_best"] == jobs["evaluate_act"] == 4 * seeds
    assert jobs["flops"] == 4 * seeds and jobs["trace"] == 4 and jobs["build_dataset"] == 1


def test_paper_config_stops_at_once_without_a_gpu(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU")
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config/config.yaml", tmp_path / "config/config.yaml")
    r = smk("--cores", "1", "--directory", tmp_path, timeout=120)
    assert r.returncode != 0 and "requires a GPU" in r.stderr and "config/laptop.yaml" in r.stderr
    assert not (tmp_path / "results").exists()


def test_bad_config_names_the_key(tmp_path):
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["data"]["build"]["num_augs"] = 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--directory", ".test", "--configfile", tmp_path / "bad.yaml")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "num_augs" in out and "Additional properties are not allowed" in out
    assert "On instance['data']['build']" in out  # the key path of the offending mapping
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["resources"]["gpus_per_run"] = "one"  # wrong type
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--directory", ".test", "--configfile", tmp_path / "bad.yaml")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "'one' is not of type 'integer'" in out
    assert "On instance['resources']['gpus_per_run']" in out
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["experiments"]["pdc"] = {"pdc": {"enabled": "yes"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--directory", ".test", "--configfile", tmp_path / "bad.yaml")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "experiments.pdc" in out and "pdc.enabled: expected true/false" in out


@pytest.fixture(scope="module")
def test_pipeline(tmp_path_factory):
    """Run the whole .test pipeline once, in a copy of .test/ (CI and developers keep a clean tree)."""
    work = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(ROOT / ".test/config", work / "config")
    r = smk("--cores", "2", "--directory", work, timeout=1500)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return work


def test_pipeline_end_to_end(test_pipeline):
    from cgar.report import figure_files, table_files

    for f in table_files() + figure_files():
        assert (test_pipeline / f).stat().st_size > 0, f
    for exp in ("baseline", "pdc", "hsw", "cgar"):
        run = test_pipeline / f"results/runs/{exp}/seed0"
        for name in ("model.pt", "metrics.jsonl", "run_config.json", "flops.json", "eval.json", "eval.parquet",
                     "model_best.pt", "eval_best.json", "eval_best.parquet", "eval_act.json", "eval_act.parquet",
                     "trace.json"):
            assert (run / name).is_file(), run / name
        assert (test_pipeline / f"logs/results/runs/{exp}/seed0/train.log").is_file()
    assert "leaks" in (test_pipeline / "results/data/leak_check.json").read_text()
    again = smk("-n", "--cores", "2", "--directory", test_pipeline)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_pipeline_evaluates_during_training_with_a_val_split(test_pipeline):
    """.test turns on in-training evaluation, snapshots, gradient statistics and the val split (issue 10)."""
    leak = json.loads((test_pipeline / "results/data/leak_check.json").read_text())
    assert leak["leaks"] == 0 and leak["val_vs_train"]["test_puzzles"] == 10 and leak["val_vs_test"]["leaks"] == 0
    for exp in ("baseline", "cgar"):
        run = test_pipeline / f"results/runs/{exp}/seed0"
        curve = [json.loads(ln) for ln in (run / "eval_curve.jsonl").read_text().splitlines()]
        assert curve and all(p["val"]["num_puzzles"] == 10 for p in curve), exp
        assert curve[-1]["step"] == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        assert (run / "grad_stats.jsonl").read_text().strip() and list((run / "tensorboard").iterdir())
        assert torch.load(run / "model_best.pt", weights_only=True)["selected_on"] == "val"
        steps = [p["step"] for p in curve]
        assert steps == [15, 30, 35], steps  # every 15 of the 35 steps, and the last
        kept = sorted(int(p.stem[4:]) for p in (run / "snapshots").glob("step*.pt"))
        best = max(curve, key=lambda p: (p["val"]["exact_accuracy"], -p["step"]))["step"]
        assert kept == sorted({35, best})  # keep_snapshots 1: the newest, plus the best by val


def test_html_report(test_pipeline):
    r = smk("--report", "report.html", "--directory", test_pipeline, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (test_pipeline / "report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "main_results" in html and "speed_accuracy" in html
    for name in ("claims", "time_to_target", "halting", "eval_curves", "puzzle_trace", "grad_norm_by_step"):
        assert name in html, name


def test_figures_from_cached_results(test_pipeline, tmp_path):
    """Runs copied back from a cluster (fresh mtimes, no data, no checkpoints): only report jobs run."""
    shutil.copytree(test_pipeline / "config", tmp_path / "config")
    for src in (test_pipeline / "results/runs").rglob("*"):
        if src.is_file() and "ckpt" not in src.parts:
            dst = tmp_path / src.relative_to(test_pipeline)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    jobs = planned_jobs(smk("figures", "-n", "--cores", "2", "--config", "cached_results=true",
                            "--directory", tmp_path))
    assert set(jobs) == {"collect", "tables", "figures_render", "figures"}
    assert not DATA_TRAIN_EVAL & set(jobs)
    r = smk("figures", "--cores", "2", "--config", "cached_results=true", "--directory", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "results/figures/speed_accuracy.png").stat().st_size > 0


def test_changing_one_experiment_reruns_only_it(test_pipeline, tmp_path):
    cfg = yaml.safe_load((test_pipeline / "config/config.yaml").read_text())
    cfg["experiments"]["hsw"] = {"hsw": {"enabled": True, "mode": "released"}}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--cores", "2", "--directory", test_pipeline, "--configfile", tmp_path / "changed.yaml")
    jobs = planned_jobs(r)
    assert jobs.get("run_config") == 1 and jobs.get("train") == 1 and jobs.get("evaluate") == 1
    assert "results/runs/hsw/seed0/run.yaml" in r.stdout and "results/runs/cgar/seed0/run.yaml" not in r.stdout
    assert not {"generate_chunk", "split", "build_dataset"} & set(jobs)
    # and really rerun it: a finished run keeps only ckpt/final/ (its outputs, under its run tag), so the changed
    # experiment moves that aside and trains from step 0 (never resumes the old run, nor refuses the new config)
    for ckpt in test_pipeline.glob("results/runs/*/seed*/ckpt"):
        assert sorted(p.name for p in ckpt.iterdir()) == ["final", "run_tag"], ckpt
    r = smk("--cores", "2", "--directory", test_pipeline, "--configfile", tmp_path / "changed.yaml", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (test_pipeline / "logs/results/runs/hsw/seed0/train.log").read_text()
    assert "moved it to results/runs/hsw/seed0/ckpt.stale-" in log and "starting step 0/" in log
    run_cfg = yaml.safe_load((test_pipeline / "results/runs/hsw/seed0/run_config.json").read_text())
    assert run_cfg["hsw"]["mode"] == "released"


def test_gpus_per_job_follow_the_rule_resource():
    """torchrun's rank count is the job's `gpu` resource, so a profile or --set-resources can change it."""
    r = smk("-n", "-p", "--cores", "4", "--forceall", "--resources", "gpu=4", "--set-resources", "train:gpu=4")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    train_cmds = [ln for ln in out.splitlines() if "-m cgar.train" in ln]
    eval_cmds = [ln for ln in out.splitlines() if "-m cgar.evaluate" in ln]
    assert len(train_cmds) == 12 and all("--nproc_per_node 4 " in c for c in train_cmds)
    assert eval_cmds and all("--nproc_per_node 1 " in c for c in eval_cmds)  # evaluate keeps the config's 1


def test_gpus_per_job_from_gres():
    """The documented gres alternative (gpu: 0 + gres gpu:N or gpu:TYPE:N) starts as many ranks as `gpu` would."""
    for gres in ("gpu:3", "gpu:a100:3"):
        r = smk("-n", "-p", "--cores", "4", "--forceall", "--set-resources", "train:gpu=0", f"train:gres={gres}")
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-3000:]
        train_cmds = [ln for ln in out.splitlines() if "-m cgar.train" in ln]
        assert len(train_cmds) == 12 and all("gpu_lock 3 -- torchrun --standalone --nproc_per_node 3 " in c
                                             for c in train_cmds), train_cmds[:1]


def test_multinode_and_sharded_dry_run(tmp_path):
    """nodes_per_run x tasks_per_node > 1: srun + rendezvous launcher with GPUs per task from the per-node gres;
    evaluate.shards: K shard jobs + one merge per run; a runtime over the partition cap stops the DAG build."""
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    # 8 GPUs per run over 2 nodes (a consistent config: the DAG build checks it), given per node as gres below
    cfg["resources"].update(nodes_per_run=2, tasks_per_node=1, gpus_per_run=8)
    cfg["evaluate"]["shards"] = 4
    (tmp_path / "mn.yaml").write_text(yaml.safe_dump(cfg))
    r = smk("-n", "-p", "--workflow-profile", "profiles/slurm", "--forceall", "--configfile", tmp_path / "mn.yaml",
            "--set-resources", "train:gpu=0", "train:gres=gpu:4", "train:cpus_per_gpu=8")
    jobs = planned_jobs(r)
    # the three evaluations of every run (eval, eval_best, eval_act) are sharded alike
    assert jobs["evaluate_shard"] == 3 * 12 * 4 and jobs["evaluate_merge"] == 3 * 12
    assert not {"evaluate", "evaluate_best", "evaluate_act"} & set(jobs)
    out = r.stdout + r.stderr
    train_cmds = [ln for ln in out.splitlines() if "-m cgar.train" in ln]
    assert len(train_cmds) == 12 and all(
        "python -m cgar.slurm_launch --nodes 2 --tasks-per-node 1 --gpus-per-task 4 --cpus-per-task 32 -- -m cgar.train"
        in c for c in train_cmds), train_cmds[:1]
    assert "--shard 3/4" in out and "cgar.eval_shards" in out
    assert "--stem eval_act --mode act --shard 3/4" in out and "--stem eval_best --mode full --shard 0/4" in out
    assert "cgar/seed2/model_best.pt" in out
    cfg["resources"]["max_runtime_minutes"] = 600  # < train_runtime_minutes 960
    (tmp_path / "cap.yaml").write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--forceall", "--configfile", tmp_path / "cap.yaml")
    assert r.returncode != 0 and "resources.train_runtime_minutes=960 exceeds resources.max_runtime_minutes=600" in \
        r.stdout + r.stderr


def test_import_mode_stops_before_training_on_a_leak(tmp_path):
    """data.source: import with a test CSV holding a symmetry (transpose) of a train puzzle: the leak check
    fails and no training job starts."""
    from cgar.sudoku.generate import SourceMix, generate_chunk

    rows = generate_chunk(5, 0, 40, SourceMix(kaggle_like=0.5, unbiased_like=0.5, lowclue=0, hard=0))
    transpose = lambda s: "".join(s[c * 9 + r] for r in range(9) for c in range(9))  # noqa: E731
    leak = (rows[0][0], transpose(rows[0][1]), transpose(rows[0][2]), rows[0][3])
    (tmp_path / "real").mkdir()
    for name, part in (("train", rows[:30]), ("test", rows[30:] + [leak])):
        # the real dataset's 4 columns (generated rows also carry the class-rating columns)
        lines = ["source,question,answer,rating"] + [",".join(map(str, r[:4])) for r in part]
        (tmp_path / "real" / f"{name}.csv").write_text("\n".join(lines) + "\n")
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["data"]["source"] = "import"
    cfg["data"]["import"].update(train_csv="real/train.csv", test_csv="real/test.csv")
    cfg["data"]["build"]["val_size"] = 0  # the leaked row stays in train (a val split could draw it: a val leak)
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    r = smk("--cores", "2", "--directory", tmp_path, "--retries", "0", timeout=600)
    assert r.returncode != 0
    assert (tmp_path / "results/data/imported/test.csv").is_file()  # import and build ran
    assert "LEAK: 1 test puzzle(s)" in (tmp_path / "logs/data/check.log").read_text()
    assert not list(tmp_path.glob("results/runs/*/seed*/model.pt")) and not list(tmp_path.glob("logs/results/runs/**/train.log"))


def _edited_test_config(tmp_path, edit) -> Path:
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    edit(cfg)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _set(path: str, value):
    """An edit of the .test config: set the dotted key `path` (missing mappings are created)."""
    def edit(cfg):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            if not isinstance(node.get(p), dict):  # absent, or null (an experiment without overrides)
                node[p] = {}
            node = node[p]
        node[last] = value
    return edit


@pytest.mark.parametrize(
    "edit, messages",
    [  # issue 11: refused when the DAG is built, with the key path; the schema catches plain bounds first
        (_set("run_defaults.train.epochs_per_iter", 0),
         ["0 is less than the minimum of 1", "On instance['run_defaults']['train']['epochs_per_iter']"]),
        (_set("experiments.hsw.train.ema_rate", 2.0),
         ["2.0 is greater than or equal to the maximum of 1",
          "On instance['experiments']['hsw']['train']['ema_rate']"]),
        (_set("run_defaults.train.checkpoint_every", 0), ["On instance['run_defaults']['train']['checkpoint_every']"]),
        (_set("run_defaults.train.epochs", 0), ["On instance['run_defaults']['train']['epochs']"]),
        (_set("experiments.pdc.train.lr", 0), ["On instance['experiments']['pdc']['train']['lr']"]),
        (_set("run_defaults.model.H_cycles", 0), ["On instance['run_defaults']['model']['H_cycles']"]),
        (_set("experiments.cgar.model.hidden_size", 33),
         ["config: experiments.cgar (merged with run_defaults): model.hidden_size: 33 is not divisible by "
          "model.num_heads (2)"]),
        (_set("experiments.pdc.pdc.stages", [[0.0, 5, 5]]),
         ["config: experiments.pdc (merged with run_defaults): pdc.stages: stage depth [(5, 5)] exceeds"]),
        (_set("report.baseline", "nope"), ["config: report.baseline: 'nope' is not an experiment"]),
        (_set("data.generate.grid", "6x6"),  # .test's mix is 73.5% gen_hard
         ["config: data.generate.mix.hard: the hill-climbed sources are 9x9 only, but data.generate.grid is 6x6"]),
        (_set("data.generate.grid", "5x5"), ["On instance['data']['generate']['grid']"]),
        (_set("resources.gpus_per_run", 3),
         ["config: experiments.baseline (merged with run_defaults): train.global_batch_size: 16 is not divisible "
          "by the 3 ranks"]),
        (_set("experiments.cgar.train.grad_accum_steps", 3),
         ["config: experiments.cgar (merged with run_defaults): train.grad_accum_steps: 3 does not divide the 16 "
          "slots per rank"]),
        (_set("run_defaults.train.compile", "yes"), ["On instance['run_defaults']['train']['compile']"]),
        (_set("run_defaults.train.global_batch_size", 128),
         ["train.global_batch_size: 128 exceeds one iteration (train.epochs_per_iter 4 x "
          "data.build.subsample_size 30 puzzles)"]),
    ],
)
def test_bad_run_values_are_refused_at_dag_build(tmp_path, edit, messages):
    r = smk("-n", "--directory", ".test", "--configfile", _edited_test_config(tmp_path, edit), timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out[-3000:]
    for m in messages:
        assert m in out, out[-3000:]


def test_cuda_without_a_gpu_is_refused_at_dag_build(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU")
    r = smk("-n", "--directory", ".test", "--configfile",
            _edited_test_config(tmp_path, _set("run_defaults.train.device", "cuda")), timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "train.device: cuda, but this machine has no GPU" in out, out[-3000:]
