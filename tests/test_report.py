"""cgar.report on synthetic run directories: 2 experiments x 2 seeds with known numbers.

eval.json comes from the real `cgar.eval_metrics.summarize_all` (so the keys the report reads are the ones the
evaluator writes); flops.json mimics `cgar.flops.run_flops` (a slow test checks the keys against the real one).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from cgar.config import config_from_dict, config_to_dict
from cgar.eval_metrics import summarize_all
from cgar.report import FIGURE_FORMATS, FIGURES, TABLE_FORMATS, TABLES
from cgar.report.__main__ import main
from cgar.report.collect import FLOPS_KEYS, SUMMARY_COLUMNS, get_key, load_runs
from cgar.report.tables import Stat, build_tables, t_quantile

S, N = 16, 100  # supervision steps, test puzzles per run
# (exp, seed) -> (training hours, puzzles solved at step 16, training FLOPs, test mean halting step)
RUNS = {
    ("baseline", 0): (2.0, 80, 1.0e15, 8),
    ("baseline", 1): (2.2, 84, 1.0e15, 8),
    ("cgar", 0): (1.0, 78, 0.6e15, 6),
    ("cgar", 1): (1.2, 80, 0.6e15, 6),
}
T_975_DF1 = 12.706204736  # t_{0.975} with 1 degree of freedom (any t table)


def eval_record(solved: int, halt: int) -> dict:
    """Puzzles 0..solved-1 are solved from step 4 on; every puzzle's q_halt turns positive at step `halt`."""
    cells = np.full((N, S), 80, np.uint8)
    cells[:solved, 3:] = 81
    q = np.full((N, S), -1.0, np.float32)
    q[:, halt - 1:] = 1.0
    ratings = np.arange(N) % 40  # buckets 0, 1-2, 3-9, 10-29, 30-99
    sources = np.array(["hard", "easy"], dtype=object)[np.arange(N) % 2]
    return {"num_puzzles": N, **summarize_all(cells, np.full(N, 81, np.uint8), q, np.full(N, S, np.uint8),
                                              ratings, sources)}


def flops_record(train_flops: float, pdc: bool) -> dict:
    depth = 24.6 if pdc else 42.0
    return {"train_flops": train_flops, "mean_effective_depth": depth, "forward_effective_depth_flops": 1e14,
            "inference_flops_per_puzzle": 1e10,
            "full_depth_baseline": {"mean_effective_depth": 42.0},
            "reduction_vs_full_depth": {"effective_depth": 1 - depth / 42.0, "train_flops": 0.35 if pdc else 0.0}}


def write_run(root, exp: str, seed: int, hours: float, solved: int, flops: float, halt: int):
    run = root / exp / f"seed{seed}"
    run.mkdir(parents=True)
    on = exp != "baseline"
    cfg = config_from_dict({"train": {"seed": seed, "max_steps": 200}, "pdc": {"enabled": on},
                            "hsw": {"enabled": on}})
    (run / "run_config.json").write_text(json.dumps(config_to_dict(cfg)))
    lines = []
    for i, step in enumerate(range(10, 201, 10)):
        T, n = ((1, 2) if step <= 60 else (2, 4) if step <= 120 else (3, 6)) if on else (3, 6)
        lines.append({"step": step, "stage": 0, "T": T, "n": n, "lr": 1e-4, "hsw_weight": 0.2 if on else 1.0,
                      "count": 5.0, "accuracy": 0.5 + i / 50, "exact_accuracy": i / 25,
                      "q_halt_accuracy": 0.9, "steps": 10.0 - i / 10, "lm_loss": 2.0 / (i + 1),
                      "q_halt_loss": 0.1, "loss": 1.0 / (i + 1), "wall_s": hours * 3600 * step / 200,
                      "flops": int(flops * step / 200)})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run / "flops.json").write_text(json.dumps(flops_record(flops, on)))
    (run / "eval.json").write_text(json.dumps(eval_record(solved, halt)))
    return run


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for (exp, seed), spec in RUNS.items():
        write_run(root, exp, seed, *spec)
    return root


@pytest.fixture(scope="module")
def outputs(runs_root, tmp_path_factory):
    """The three CLI commands, run once for the module."""
    out = tmp_path_factory.mktemp("out")
    pattern = str(runs_root / "*" / "seed*")
    summary = out / "summary" / "runs.csv"
    assert main(["collect", "--runs", pattern, "--out", str(summary)]) == 0
    assert main(["tables", "--summary", str(summary), "--runs", pattern, "--out-dir", str(out / "tables")]) == 0
    assert main(["figures", "--runs", pattern, "--out-dir", str(out / "figures")]) == 0
    return out


def test_summary_rows(outputs):
    df = pd.read_csv(outputs / "summary" / "runs.csv")
    assert list(df.columns) == list(SUMMARY_COLUMNS)
    assert list(zip(df.exp, df.seed)) == list(RUNS)
    for (exp, seed), (hours, solved, flops, halt) in RUNS.items():
        row = df[(df.exp == exp) & (df.seed == seed)].iloc[0]
        assert row.final_step == 200
        assert row.train_hours == pytest.approx(hours)
        assert row.train_flops == pytest.approx(flops)
        assert row.exact_accuracy == pytest.approx(solved / N)
        assert row.act_mean_steps == pytest.approx(halt)
        assert row.num_puzzles == N
        assert row.pdc_enabled == row.hsw_enabled == (exp == "cgar")
        assert row.fwd_depth_reduction == pytest.approx(0.414285714 if exp == "cgar" else 0.0)
        # training finals: mean of the last 5 logged entries (i = 15..19)
        assert row.train_exact_accuracy_final == pytest.approx(np.mean([i / 25 for i in range(15, 20)]))
    # ACT: puzzles solved from step 4 halting at step >= 4 are right at the halt
    assert (df.act_exact_accuracy == df.exact_accuracy).all()


def test_t_quantile_and_ci_by_hand():
    for df, want in ((1, T_975_DF1), (2, 4.302652730), (4, 2.776445105), (10, 2.228138852), (29, 2.045229642)):
        assert t_quantile(df) == pytest.approx(want, rel=1e-7)
    values = [0.80, 0.84, 0.83]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    s = Stat.of(values)
    assert s.mean == pytest.approx(mean)
    assert s.ci95 == pytest.approx(4.302652730 * sd / math.sqrt(3))
    assert s.text(100) == f"{100 * mean:.2f} ± {100 * 4.302652730 * sd / math.sqrt(3):.2f}"
    one = Stat.of([0.5, float("nan")])
    assert one.n == 1 and math.isnan(one.ci95) and one.text(100) == "50.00 (n=1)"


def test_main_results_speedup_and_flops(outputs):
    t = pd.read_csv(outputs / "tables" / "main_results.csv").set_index("experiment")
    # paired by seed: 2.0/1.0 and 2.2/1.2
    ratios = [2.0, 2.2 / 1.2]
    assert t.loc["cgar", "speedup_mean"] == pytest.approx(np.mean(ratios))
    assert t.loc["cgar", "speedup_ci95"] == pytest.approx(T_975_DF1 * np.std(ratios, ddof=1) / math.sqrt(2))
    assert t.loc["cgar", "flops_reduction_mean"] == pytest.approx(0.4)
    assert t.loc["baseline", "speedup_mean"] == 1.0 and t.loc["baseline", "flops_reduction_mean"] == 0.0
    acc = [0.80, 0.84]
    assert t.loc["baseline", "exact_accuracy_mean"] == pytest.approx(0.82)
    assert t.loc["baseline", "exact_accuracy_ci95"] == pytest.approx(T_975_DF1 * np.std(acc, ddof=1) / math.sqrt(2))
    assert t.loc["cgar", "train_hours_mean"] == pytest.approx(1.1)
    md = (outputs / "tables" / "main_results.md").read_text()
    assert "ref." in md and f"{np.mean(ratios):.2f} ± " in md


def test_ablation_and_inference_values(outputs):
    ab = pd.read_csv(outputs / "tables" / "ablation.csv").set_index("experiment")
    assert list(ab.index) == ["baseline", "cgar"]  # ordered by component flags
    assert ab.loc["cgar", "delta_accuracy_mean"] == pytest.approx(np.mean([0.78 - 0.80, 0.80 - 0.84]))
    assert ab.loc["cgar", "paper_speedup"] == 1.71
    inf = pd.read_csv(outputs / "tables" / "inference.csv").set_index("experiment")
    assert inf.loc["cgar", "steps_reduction_mean"] == pytest.approx(1 - 6 / 8)
    # every puzzle halts at step 8 (q_halt > 0), which is right exactly for the solved ones
    assert inf.loc["baseline", "halting_accuracy_mean"] == pytest.approx(0.82)


EXPECTED_CSV_COLUMNS = {
    "main_results": ["experiment", "n_seeds", "exact_accuracy_mean", "exact_accuracy_ci95", "train_hours_mean",
                     "speedup_mean", "train_flops_mean", "flops_reduction_mean", "fwd_depth_reduction_mean"],
    "ablation": ["experiment", "pdc", "hsw", "paper_acc", "paper_speedup", "n_seeds", "exact_accuracy_mean",
                 "delta_accuracy_mean", "speedup_mean"],
    "inference": ["experiment", "n_seeds", "act_mean_steps_mean", "steps_reduction_mean", "halting_accuracy_mean",
                  "act_exact_accuracy_mean", "exact_accuracy_mean", "train_steps_final_mean"],
    "difficulty": ["breakdown", "group", "n_puzzles", "baseline_mean", "baseline_ci95", "cgar_mean", "cgar_ci95"],
}


@pytest.mark.parametrize("name", TABLES)
def test_tables_in_three_formats(outputs, name):
    d = outputs / "tables"
    assert sorted(p.name for p in d.glob(f"{name}.*")) == sorted(f"{name}.{e}" for e in TABLE_FORMATS)
    csv = pd.read_csv(d / f"{name}.csv")
    assert set(EXPECTED_CSV_COLUMNS[name]) <= set(csv.columns)
    assert len(csv) > 0
    md = (d / f"{name}.md").read_text().splitlines()
    header = [c.strip() for c in md[2].strip("|").split("|")]
    assert len(md) == 4 + len(csv) and all(len(ln.split(" | ")) == len(header) for ln in md[4:])
    tex = (d / f"{name}.tex").read_text()
    for token in (r"\toprule", r"\midrule", r"\bottomrule", rf"\label{{tab:{name}}}"):
        assert token in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(csv) and all(ln.count(" & ") == len(header) - 1 for ln in body)
    assert "±" not in tex and "%" not in tex.replace(r"\%", "")  # escaped for LaTeX


def test_difficulty_groups(outputs):
    t = pd.read_csv(outputs / "tables" / "difficulty.csv")
    assert set(t.breakdown) == {"difficulty", "source"}
    assert set(t[t.breakdown == "difficulty"].group) == {"0", "1-2", "3-9", "10-29", "30-99"}
    src = t[t.breakdown == "source"].set_index("group")
    assert src.n_puzzles.sum() == N
    # solved puzzles are 0..k-1: half of them even ("hard")
    assert src.loc["hard", "baseline_mean"] == pytest.approx(np.mean([40 / 50, 42 / 50]))


@pytest.mark.parametrize("name", FIGURES)
def test_figures_are_valid(outputs, name):
    for ext in FIGURE_FORMATS:
        path = outputs / "figures" / f"{name}.{ext}"
        data = path.read_bytes()
        if ext == "png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        else:
            assert ET.fromstring(data).tag.endswith("svg")
    assert not list((outputs / "figures").glob(".*tmp"))  # no temporaries left behind


def test_single_seed_shows_n1(runs_root, tmp_path):
    runs = load_runs([runs_root / "baseline" / "seed0", runs_root / "cgar" / "seed0"])
    from cgar.report.collect import summary_frame

    tables = build_tables(summary_frame(runs), runs)
    display = tables["main_results"].display.set_index("Experiment")
    assert display.loc["cgar", "Exact acc. (%)"] == "78.00 (n=1)"
    assert display.loc["cgar", "Speedup (×)"] == "2.00 (n=1)"
    assert tables["main_results"].data.exact_accuracy_ci95.isna().all()


def test_unknown_baseline_and_stale_summary(outputs, runs_root, capsys):
    summary = str(outputs / "summary" / "runs.csv")
    pattern = str(runs_root / "*" / "seed*")
    assert main(["tables", "--summary", summary, "--runs", pattern, "--baseline", "trm",
                 "--out-dir", str(outputs / "t2")]) == 2
    assert "--baseline" in capsys.readouterr().err
    assert main(["tables", "--summary", summary, "--runs", str(runs_root / "cgar" / "seed*"),
                 "--out-dir", str(outputs / "t2")]) == 2
    assert "rerun collect" in capsys.readouterr().err


@pytest.mark.parametrize("file, content, message", [
    ("eval.json", "{not json", "eval.json:1: not valid JSON"),
    ("eval.json", json.dumps({"num_puzzles": 3}), "eval.json: missing key overall"),
    ("flops.json", None, "flops.json: missing"),
    ("metrics.jsonl", '{"step": 1}\n', "metrics.jsonl:1: missing key(s) T"),
    ("metrics.jsonl", "", "metrics.jsonl: no logged steps"),
    ("run_config.json", "[1, 2]", "run_config.json: expected a JSON object"),
])
def test_malformed_file_is_named(tmp_path, capsys, file, content, message):
    run = write_run(tmp_path, "cgar", 0, *RUNS["cgar", 0])
    if content is None:
        (run / file).unlink()
    else:
        (run / file).write_text(content)
    assert main(["collect", "--runs", str(run), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert str(run / file) in err and message in err
    assert not (tmp_path / "s.csv").exists()


def test_no_matching_runs(tmp_path, capsys):
    assert main(["collect", "--runs", str(tmp_path / "nope" / "seed*"), "--out", str(tmp_path / "s.csv")]) == 2
    assert "no run directory matches" in capsys.readouterr().err


@pytest.mark.slow
def test_flops_keys_match_the_writer():
    from cgar.flops import run_flops

    cfg = config_from_dict({"model": {"hidden_size": 32}, "train": {"global_batch_size": 4, "max_steps": 10},
                            "pdc": {"enabled": True}})
    record = run_flops(cfg, 10)
    for keys in FLOPS_KEYS.values():
        assert isinstance(get_key(record, keys, "flops.json"), (int, float))
    assert get_key(record, FLOPS_KEYS["fwd_depth_reduction"], "flops.json") == pytest.approx(0.414285714)


def test_every_output_has_a_caption():
    from pathlib import Path

    captions = Path(__file__).parent.parent / "workflow" / "report"
    for name in (*TABLES, *FIGURES, "workflow", "tables", "figures"):
        assert (captions / f"{name}.rst").read_text().strip(), name
