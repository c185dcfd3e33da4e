# Sharded evaluation (config evaluate.shards = K > 1): K jobs per evaluation, each a contiguous range of whole
# batches (python -m cgar.evaluate --shard I/K), then a local merge into the same eval.json / eval.parquet the
# single `evaluate` job writes (python -m cgar.eval_shards; equal, tested). A failed or timed-out shard is retried
# on its own; the other shards' outputs stay. Serves every stem of EVAL_CHECKPOINTS (common.smk).

if not CACHED and EVAL_SHARDS > 1:

    ruleorder: evaluate_merge > evaluate
    ruleorder: evaluate_merge > evaluate_best
    ruleorder: evaluate_merge > evaluate_act

    rule evaluate_shard:
        input:
            model=eval_checkpoint,
            data=DATASET,
        output:
            metrics=f"{EVAL_SHARD}.json",
            table=f"{EVAL_SHARD}.parquet",
        log:
            f"logs/{RUN}/evaluate/{{stem}}.shard{{shard}}of{EVAL_SHARDS}.log",
        benchmark:
            f"benchmarks/{RUN}/evaluate/{{stem}}.shard{{shard}}of{EVAL_SHARDS}.tsv"
        wildcard_constraints:
            stem="|".join(EVAL_CHECKPOINTS),
            shard=r"\d+",
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
            shard=shard_arg,
            mode=eval_mode,
        shell:
            "{params.launcher} -m cgar.evaluate --checkpoint {input.model} --data {input.data} "
            "--out-dir {params.out} --batch-size {params.batch} --stem {wildcards.stem} --mode {params.mode} "
            "--shard {params.shard} > {log} 2>&1"

    rule evaluate_merge:
        input:
            shards=eval_shard_tables,
            data=DATASET,
        output:
            metrics=f"{RUN}/{{stem}}.json",
            table=f"{RUN}/{{stem}}.parquet",
        log:
            f"logs/{RUN}/evaluate/{{stem}}.merge.log",
        wildcard_constraints:
            stem="|".join(EVAL_CHECKPOINTS),
        localrule: True
        conda:
            "../envs/cgar.yaml"
        params:
            out=output_dir,
        shell:
            "python -m cgar.eval_shards --data {input.data} --out-dir {params.out} {input.shards} > {log} 2>&1"
