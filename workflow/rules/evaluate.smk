# Evaluation of every run on the full test set: EMA weights, full depth, 16 supervision steps, plus ACT halting.

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
        shell:
            "{params.launcher} -m cgar.evaluate --checkpoint {input.model} --data {input.data} "
            "--out-dir {params.out} --batch-size {params.batch} > {log} 2>&1"
