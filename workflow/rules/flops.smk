# FLOPs of each run's actual schedule (fvcore per-step counts x the steps taken at each depth).

if not CACHED:

    rule flops:
        input:
            run_config=f"{RUN}/run_config.json",
            metrics=f"{RUN}/metrics.jsonl",
        output:
            f"{RUN}/flops.json",
        log:
            f"logs/{RUN}/flops.log",
        conda:
            "../envs/cgar.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        shell:
            "python -m cgar.flops --run-config {input.run_config} --metrics {input.metrics} "
            "--out {output} > {log} 2>&1"
