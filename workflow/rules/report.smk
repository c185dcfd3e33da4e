# Tables and figures from the per-run results. With cached_results=true these rules are all that runs.


rule collect:
    input:
        run_config=run_files("run_config.json"),
        metrics=run_files("metrics.jsonl"),
        flops=run_files("flops.json"),
        eval=run_files("eval.json"),
        eval_best=run_files("eval_best.json"),
        eval_act=run_files("eval_act.json"),
    output:
        "results/summary/runs.csv",
    log:
        "logs/report/collect.log",
    localrule: True
    conda:
        "../envs/cgar.yaml"
    params:
        runs=expand(RUN, exp=EXPERIMENTS, seed=SEEDS),
    shell:
        "python -m cgar.report collect --runs {params.runs} --out {output} > {log} 2>&1"


rule tables:
    input:
        summary="results/summary/runs.csv",
        eval=run_files("eval.json"),
    output:
        labelled(table_files(), "csv", "Tables"),
    log:
        "logs/report/tables.log",
    localrule: True
    conda:
        "../envs/cgar.yaml"
    params:
        runs=expand(RUN, exp=EXPERIMENTS, seed=SEEDS),
        baseline=config["report"]["baseline"],
        targets=report_targets(),
    shell:
        "python -m cgar.report tables --summary {input.summary} --runs {params.runs} "
        "--baseline {params.baseline} {params.targets} --out-dir results/tables > {log} 2>&1"


rule figures_render:
    input:
        summary="results/summary/runs.csv",
        metrics=run_files("metrics.jsonl"),
        eval=run_files("eval.json"),
        eval_act=run_files("eval_act.json"),
        trace=trace_files(),
    output:
        labelled(figure_files(), "png", "Figures"),
    log:
        "logs/report/figures.log",
    localrule: True
    conda:
        "../envs/cgar.yaml"
    params:
        runs=expand(RUN, exp=EXPERIMENTS, seed=SEEDS),
        baseline=config["report"]["baseline"],
        targets=report_targets(),
    shell:
        "python -m cgar.report figures --runs {params.runs} --baseline {params.baseline} {params.targets} "
        "--out-dir results/figures > {log} 2>&1"


rule figures:
    # `snakemake figures --config cached_results=true`: tables and figures only, from results/runs/ as it is.
    input:
        table_files(),
        figure_files(),
    localrule: True
