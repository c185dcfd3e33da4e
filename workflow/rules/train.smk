# Training: one job per experiment x seed, each a DeepSpeed run under torchrun (or one CPU process).
# The DeepSpeed checkpoint directory ckpt/ is deliberately NOT an output: a failed, retried or requeued
# job finds it and resumes from the last checkpoint instead of starting over. It is tagged with a hash of the
# run config, code_version and dataset manifest (cgar/run_dir.py): a rerun of another tag (edited experiment,
# new code or data) moves it aside and starts fresh; a finished run keeps only ckpt/final/ (its outputs), so
# a job Snakemake rejected after it finished (Ctrl-C) is re-exported by the rerun, not retrained.

if not CACHED:

    rule run_config:
        output:
            f"{RUN}/run.yaml",
        log:
            f"logs/{RUN}/run_config.log",
        localrule: True
        conda:
            "../envs/cgar.yaml"
        params:
            run=run_params,
        run:
            from cgar.io_utils import atomic_write_text

            atomic_write_text(
                output[0], yaml.safe_dump(params.run, sort_keys=False)
            )

    rule train:
        input:
            data=DATASET,
            # no training on a dataset whose test set leaks into train (the check exits 1 on any leak)
            leak_check="results/data/leak_check.json",
            config=f"{RUN}/run.yaml",
        output:
            model=f"{RUN}/model.pt",
            model_best=f"{RUN}/model_best.pt",  # best-by-val EMA snapshot (a copy of model.pt without val)
            metrics=f"{RUN}/metrics.jsonl",
            run_config=f"{RUN}/run_config.json",
        log:
            f"logs/{RUN}/train.log",
        benchmark:
            f"benchmarks/{RUN}/train.tsv"
        conda:
            "../envs/cgar.yaml"
        threads: max(1, gpus_per_run())
        resources:
            **multinode_resources(),
            gpu=gpus_per_run(),
            mem_mb=config["resources"]["train_mem_mb"],
            runtime=train_runtime,
        params:
            out=output_dir,
            launcher=launcher,
            code_version=CGAR_CODE_VERSION,
        shell:
            "{params.launcher} -m cgar.train --config {input.config} --out {params.out} "
            "--code-version {params.code_version} > {log} 2>&1"
