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
CURVE_STEPS = (50, 100, 150, 200)
# eval_curve.jsonl test exact accuracy at CURVE_STEPS (the last point = eval.json's accuracy)
CURVES = {("baseline", 0): (0.2, 0.5, 0.7, 0.8), ("baseline", 1): (0.25, 0.45, 0.65, 0.84),
          ("cgar", 0): (0.3, 0.6, 0.75, 0.78), ("cgar", 1): (0.5, 0.6, 0.7, 0.8)}
# grad_stats.jsonl variance_reduction of the two measurements (0 for the unweighted baseline)
VAR_REDUCTION = {("baseline", 0): (0.0, 0.0), ("baseline", 1): (0.0, 0.0), ("cgar", 0): (0.3, 0.5),
                 ("cgar", 1): (0.2, 0.4)}


def eval_record(solved: int, halt: int, act_mode: bool = False) -> dict:
    """Puzzles 0..solved-1 are solved from step 4 on; every puzzle's q_halt turns positive at step `halt`; 31 givens,
    always right, so the unsolved have 49 of their 50 blank cells right (blank_acc).
    act_mode: as `cgar.evaluate --mode act` records it (steps after the halt not run)."""
    cells = np.full((N, S), 80, np.uint8)
    cells[:solved, 3:] = 81
    q = np.full((N, S), -1.0, np.float32)
    q[:, halt - 1:] = 1.0
    steps_run = np.full(N, halt if act_mode else S, np.uint8)
    if act_mode:
        q[:, halt:], cells[:, halt:] = np.nan, 0
    ratings = np.arange(N) % 40  # buckets 0, 1-2, 3-9, 10-29, 30-99
    sources = np.array(["hard", "easy"], dtype=object)[np.arange(N) % 2]
    blank = np.where(cells > 0, cells.astype(np.int64) - 31, 0).astype(np.uint8)
    return {"num_puzzles": N, **summarize_all(cells, np.full(N, 81, np.uint8), q, steps_run, ratings, sources,
                                              blank, np.full(N, 50, np.uint8))}


def blank_acc(solved: int) -> float:
    return (solved + (N - solved) * 49 / 50) / N


def curve_line(step: int, acc: float, hours: float, flops: float) -> dict:
    split = {"num_puzzles": 50, "exact_accuracy": acc, "token_accuracy": 0.9 + acc / 10,
             "blank_token_accuracy": 0.8 + acc / 5,
             "act": {"exact_accuracy": acc, "mean_halt_step": 8.0, "halting_accuracy": 0.9}}
    return {"step": step, "stage": 0, "T": 3, "n": 6, "train_wall_s": hours * 3600 * step / 200, "eval_wall_s": 1.5,
            "flops": int(flops * step / 200), "flops_fwd_effective": int(0.5 * flops * step / 200),
            "test": split, "val": {**split, "exact_accuracy": acc - 0.01 * (step == 200)}}


def grad_line(step: int, reduction: float) -> dict:
    norms = [2.0 ** -t for t in range(S)]
    norms[-1] = None  # no slot at the last step in this batch
    return {"step": step, "stage": 0, "T": 3, "n": 6, "slots_by_step": [2] * (S - 1) + [0],
            "grad_norm_by_step": norms, "var_weighted": 1.0 - reduction, "var_unweighted": 1.0,
            "var_weighted_rel": 0.1 * (1 - reduction), "var_unweighted_rel": 0.1, "variance_reduction": reduction}


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
    (run / "eval_best.json").write_text(json.dumps({**eval_record(solved + 2, halt), "step": 150}))
    (run / "eval_act.json").write_text(json.dumps(eval_record(solved, halt, act_mode=True)))
    curve = [curve_line(st, a, hours, flops) for st, a in zip(CURVE_STEPS, CURVES[exp, seed])]
    (run / "eval_curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    grads = [grad_line(st, v) for st, v in zip((100, 200), VAR_REDUCTION[exp, seed])]
    (run / "grad_stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grads))
    if seed == 0:
        (run / "trace.json").write_text(json.dumps(trace_record()))
    return run


def trace_record() -> dict:
    """cgar.trace's format: the pattern grid with 50 blanks; step t gets the first 20 t blanks right."""
    solution = [(3 * r + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)]
    blanks = list(range(0, 81, 81 // 50))[:50]
    puzzle = [0 if i in blanks else v for i, v in enumerate(solution)]
    preds = [[v if (i not in blanks or blanks.index(i) < 20 * t) else v % 9 + 1 for i, v in enumerate(solution)]
             for t in range(1, 5)]
    return {"index": 0, "step": 200, "max_steps": 4, "puzzle": puzzle, "solution": solution, "predictions": preds,
            "cells_correct": [sum(a == b for a, b in zip(p, solution)) for p in preds],
            "q_halt": [-1.0, -0.5, 0.5, 1.0]}


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
    assert main(["tables", "--summary", str(summary), "--runs", pattern, "--targets", "0.5",
                 "--baseline-fractions", "0.95", "0.99", "--out-dir", str(out / "tables")]) == 0
    assert main(["figures", "--runs", pattern, "--targets", "0.5", "--out-dir", str(out / "figures")]) == 0
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
        assert row.best_exact_accuracy == pytest.approx((solved + 2) / N) and row.best_step == 150
        assert row.actrun_mean_steps == halt and row.actrun_exact_accuracy == pytest.approx(solved / N)
        assert row.grad_variance_reduction == pytest.approx(np.mean(VAR_REDUCTION[exp, seed]))
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
    # blank-cell accuracy beside token accuracy: the 31 copied givens left out, so lower
    blank = [blank_acc(RUNS["cgar", seed][1]) for seed in (0, 1)]
    assert t.loc["cgar", "blank_token_accuracy_mean"] == pytest.approx(np.mean(blank))
    assert t.loc["cgar", "blank_token_accuracy_ci95"] == pytest.approx(T_975_DF1 * np.std(blank, ddof=1) / math.sqrt(2))
    assert (t.blank_token_accuracy_mean < t.token_accuracy_mean).all()
    header = md.splitlines()[2]
    assert "| Token acc. (%) | Blank-cell acc. (%) |" in header
    assert f"| {100 * np.mean(blank):.2f} ± {100 * T_975_DF1 * np.std(blank, ddof=1) / math.sqrt(2):.2f} |" in md
    assert "Blank-cell acc. (\\%)" in (outputs / "tables" / "main_results.tex").read_text()


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
    "time_to_target": ["experiment", "target", "target_acc", "n_seeds", "reached_mean", "hours_mean", "step_mean",
                       "flops_mean", "speedup_mean", "speedup_ci95", "flops_ratio_mean"],
    "claims": ["claim", "experiment", "paper_value", "ours_mean", "ours_ci95", "n", "ci_contains_paper"],
    "halting": ["experiment", "n_seeds", "actrun_mean_steps_mean", "steps_reduction_mean",
                "actrun_halting_accuracy_mean", "actrun_halted_and_correct_mean", "actrun_exact_accuracy_mean",
                "exact_accuracy_mean", "halt_minus_full_mean"],
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
    made_from = json.loads((outputs / "figures" / f"{name}.json").read_text())  # the config beside the figure
    assert made_from["figure"] == name and made_from["options"]["targets"] == [0.5]
    assert [(r["exp"], r["seed"]) for r in made_from["runs"]] == list(RUNS)
    assert made_from["runs"][0]["run_config"]["train"]["max_steps"] == 200
    assert not list((outputs / "figures").glob(".*tmp"))  # no temporaries left behind


def test_single_seed_shows_n1(runs_root, tmp_path):
    runs = load_runs([runs_root / "baseline" / "seed0", runs_root / "cgar" / "seed0"])
    from cgar.report.collect import summary_frame

    tables = build_tables(summary_frame(runs), runs)
    display = tables["main_results"].display.set_index("Experiment")
    assert display.loc["cgar", "Exact acc. final (%)"] == "78.00 (n=1)"
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


def test_time_to_target_table_by_hand(outputs):
    t = pd.read_csv(outputs / "tables" / "time_to_target.csv")
    t = t.set_index(["target", "experiment"])
    # 50%: baseline seed 0 hits 0.5 exactly at step 100 (2 h run: 3600 s); seed 1 crosses 0.45 -> 0.65 a quarter
    # of the way from step 100 to 150 (112.5 of 200 steps of a 2.2 h run); cgar seed 0 crosses 0.3 -> 0.6 at 2/3
    # from step 50 to 100 (83.33 of 200 of 1 h), seed 1 starts at 0.5 (its first point, step 50 of 200 of 1.2 h)
    base = [3600.0, 2.2 * 3600 * 112.5 / 200]
    cgar = [3600 * (50 + 100 / 3) / 200, 1.2 * 3600 * 50 / 200]
    assert t.loc[("50% abs.", "baseline"), "hours_mean"] == pytest.approx(np.mean(base) / 3600)
    assert t.loc[("50% abs.", "cgar"), "step_mean"] == pytest.approx(np.mean([50 + 100 / 3, 50]))
    # FLOPs grow linearly with the step in these curves (0.6e15 over 200 steps; half of it in the paper's count)
    assert t.loc[("50% abs.", "cgar"), "flops_mean"] == pytest.approx(0.6e15 * np.mean([50 + 100 / 3, 50]) / 200)
    assert t.loc[("50% abs.", "cgar"), "flops_fwd_effective_mean"] == pytest.approx(
        0.3e15 * np.mean([50 + 100 / 3, 50]) / 200, rel=1e-6)
    ratios = [b / c for b, c in zip(base, cgar)]
    assert t.loc[("50% abs.", "cgar"), "speedup_mean"] == pytest.approx(np.mean(ratios))
    assert t.loc[("50% abs.", "cgar"), "speedup_ci95"] == pytest.approx(T_975_DF1 * np.std(ratios, ddof=1) / 2 ** .5)
    # 99% of the baseline's 0.82 = 0.8118: only baseline seed 1 (0.84 at the end) gets there; no pair is left
    assert t.loc[("99% of baseline", "baseline"), "reached_mean"] == 1
    assert t.loc[("99% of baseline", "cgar"), "reached_mean"] == 0
    assert np.isnan(t.loc[("99% of baseline", "cgar"), "speedup_mean"])
    md = (outputs / "tables" / "time_to_target.md").read_text()
    assert "| cgar | 99% of baseline | 81.18 | 2 | 0/2 |" in md


def test_claims_table_by_hand(outputs):
    c = pd.read_csv(outputs / "tables" / "claims.csv").set_index("claim")
    fixed = c.loc["CGAR: training speedup, same steps"]
    assert fixed.experiment == "cgar" and fixed.paper_value == 1.71 and fixed.n == 2
    assert fixed.ours_mean == pytest.approx(np.mean([2.0, 2.2 / 1.2])) and fixed.ci_contains_paper == "yes"
    eq = c.loc["CGAR: training speedup at equal accuracy (99% of baseline)"]
    assert eq.n == 0 and eq.ci_contains_paper == "n.a."
    assert c.loc["HSW: gradient variance reduction", "ours_mean"] == pytest.approx(np.mean([0.4, 0.3]))
    steps = c.loc["CGAR: fewer reasoning steps than baseline (ACT inference)"]
    assert steps.ours_mean == pytest.approx(0.25) and steps.ours_ci95 == 0 and steps.ci_contains_paper == "no"
    assert c.loc["TRM baseline: test exact accuracy, best-by-val model", "ours_mean"] == pytest.approx(0.84)
    assert c.loc["PDC: FLOPs reduction (effective-depth accounting)", "ci_contains_paper"] == "yes"  # 41.43%
    assert "PDC alone: test exact accuracy, final model" not in c.index  # no experiment with PDC only
    assert set(c.experiment) == {"baseline", "cgar"}


def test_halting_table_by_hand(outputs):
    h = pd.read_csv(outputs / "tables" / "halting.csv").set_index("experiment")
    assert h.loc["cgar", "actrun_mean_steps_mean"] == 6 and h.loc["cgar", "steps_reduction_mean"] == pytest.approx(0.25)
    # every puzzle halts on q_halt > 0 at step 6 (cgar): right exactly for the solved ones, 78 and 80 of 100
    assert h.loc["cgar", "actrun_halting_accuracy_mean"] == pytest.approx(0.79)
    assert h.loc["cgar", "actrun_halted_and_correct_mean"] == pytest.approx(0.79)
    assert h.loc["cgar", "halt_minus_full_mean"] == pytest.approx(0.0)


def test_grad_stats_and_curve_are_read(runs_root):
    run = load_runs([runs_root / "cgar" / "seed0"])[0]
    assert list(run.eval_curve.step) == list(CURVE_STEPS)
    assert list(run.eval_curve.test_exact_accuracy) == pytest.approx(CURVES["cgar", 0])
    assert run.eval_curve.val_exact_accuracy.iloc[-1] == pytest.approx(0.77)
    norms = run.grad_stats.grad_norm_by_step.iloc[0]
    assert len(norms) == S and norms[1] == 0.5 and np.isnan(norms[-1])


@pytest.mark.parametrize("file, content, message", [
    ("eval_curve.jsonl", '{"step": 1}\n', "eval_curve.jsonl:1: missing key(s) stage"),
    ("eval_curve.jsonl", None, "step 100 does not follow step 100"),
    ("grad_stats.jsonl", None, "grad_norm_by_step must be a non-empty list of numbers"),
    ("eval_act.json", json.dumps({"num_puzzles": 3}), "eval_act.json: missing key overall"),
])
def test_malformed_new_files_are_named(tmp_path, capsys, file, content, message):
    run = write_run(tmp_path, "cgar", 0, *RUNS["cgar", 0])
    if content is None:  # a repeated step / a list of strings
        lines = (run / file).read_text().splitlines()
        if file == "eval_curve.jsonl":
            content = "\n".join([lines[0], lines[1], lines[1]]) + "\n"
        else:
            rec = json.loads(lines[0])
            content = json.dumps({**rec, "grad_norm_by_step": ["x"] * S}) + "\n"
    (run / file).write_text(content)
    assert main(["collect", "--runs", str(run), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert str(run / file) in err and message in err


def test_optional_files_may_be_absent(tmp_path):
    run = write_run(tmp_path, "cgar", 0, *RUNS["cgar", 0])
    for name in ("eval_best.json", "eval_act.json", "eval_curve.jsonl", "grad_stats.jsonl"):
        (run / name).unlink()
    from cgar.report.collect import summary_frame

    # an eval.json cached before blank-cell accuracy existed: NaN, shown as "–"
    rec = json.loads((run / "eval.json").read_text())
    del rec["overall"]["blank_token_accuracy"]
    (run / "eval.json").write_text(json.dumps(rec))
    row = summary_frame(load_runs([run])).iloc[0]
    assert np.isnan(row.blank_token_accuracy) and row.token_accuracy > 0
    assert np.isnan(row.best_exact_accuracy) and np.isnan(row.actrun_mean_steps) and np.isnan(row.grad_variance_reduction)


def test_bad_targets_and_baseline_are_named(outputs, runs_root, capsys):
    pattern = str(runs_root / "*" / "seed*")
    with pytest.raises(SystemExit) as e:
        main(["tables", "--summary", str(outputs / "summary" / "runs.csv"), "--runs", pattern, "--targets", "1.5",
              "--out-dir", str(outputs / "t3")])
    assert e.value.code == 2 and "argument --targets: 1.5 is not a fraction in (0, 1]" in capsys.readouterr().err
    assert main(["figures", "--runs", pattern, "--baseline", "trm", "--out-dir", str(outputs / "f3")]) == 2
    assert "--baseline: experiment 'trm' is not among the runs" in capsys.readouterr().err
