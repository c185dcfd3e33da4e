# Evaluation of every run on the full test set: EMA weights, full depth, 16 supervision steps, plus ACT halting
# (eval.*); the best-by-validation snapshot the same way (eval_best.*); ACT inference with batch compaction, which
# really stops halted puzzles (eval_act.*); and one test puzzle through the recursion for the figure (trace.json).
# With evaluate.shards > 1 the sharded rules (evaluate_shards.smk) produce the eval* files instead.

if not CACHED:

    rule evaluate:
        input:
            model=f"{RUN}/model.pt",
            data=DATASET,
        output:
            metrics=f"{RUN}/eval.json",
            table=f"{RUN}/eval.parquet",
        log:
            f"logs/{RUN}/evaluate.log",
        benchmark:
            f"benchmarks/{RUN}/evaluate.tsv"
        conda:
            "../envs/cgar.yaml"
        threads: max(1, gpus_per_run())
        resources:
            gpu=gpus_per_run(),
            mem_mb=config["resources"]["eval_mem_mb"],
            runtime=eval_runtime,
        params:
            out=output_dir,
            launcher=launcher,
            batch=config["evaluate"]["batch_size"],
            stem="eval",
            mode=eval_mode,
        shell:
            "{params.launcher} -m cgar.evaluate --checkpoint {input.model} --data {input.data} "
            "--out-dir {params.out} --batch-size {params.batch} --stem {params.stem} "
            "--mode {params.mode} > {log} 2>&1"

    use rule evaluate as evaluate_best with:
        input:
            model=f"{RUN}/model_best.pt",
            data=DATASET,
        output:
            metrics=f"{RUN}/eval_best.json",
            table=f"{RUN}/eval_best.parquet",
        log:
            f"logs/{RUN}/evaluate_best.log",
        benchmark:
            f"benchmarks/{RUN}/evaluate_best.tsv"
        params:  # merged with evaluate's: only the stem differs (and the mode, which follows it)
            stem="eval_best",

    use rule evaluate as evaluate_act with:
        output:
            metrics=f"{RUN}/eval_act.json",
            table=f"{RUN}/eval_act.parquet",
        log:
            f"logs/{RUN}/evaluate_act.log",
        benchmark:
            f"benchmarks/{RUN}/evaluate_act.tsv"
        params:  # merged with evaluate's: only the stem differs (and the mode, which follows it)
            stem="eval_act",

    rule trace:
        input:
            model=f"{RUN}/model.pt",
            data=DATASET,
        output:
            f"{RUN}/trace.json",
        log:
            f"logs/{RUN}/trace.log",
        conda:
            "../envs/cgar.yaml"
        params:
            index=TRACE_INDEX,
        shell:
            "python -m cgar.trace --checkpoint {input.model} --data {input.data} --out {output} "
            "--index {params.index} > {log} 2>&1"
