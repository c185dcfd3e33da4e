# Data: generate (chunked fan-out) or import, split by symmetry class, build the arrays, check for leaks.


if config["data"]["source"] == "generate":

    rule generate_chunk:
        output:
            csv="results/data/pool/chunk{chunk}.csv",
            stats="results/data/pool/chunk{chunk}.json",
        log:
            "logs/data/generate/chunk{chunk}.log",
        benchmark:
            "benchmarks/data/generate/chunk{chunk}.tsv"
        conda:
            "../envs/cgar.yaml"
        resources:
            mem_mb=1000,
            runtime=60,
        params:
            seed=config["data"]["generate"]["seed"],
            size=chunk_size,
            mix=mix_arg(),
            hard_threshold=config["data"]["generate"]["hard_threshold"],
            extreme_threshold=config["data"]["generate"]["extreme_threshold"],
            class_copies=config["data"]["class_copies"],
            grid=grid_name(),
        shell:
            "NUMBA_NUM_THREADS=1 python -m cgar.data generate --grid {params.grid} --seed {params.seed} "
            "--chunk {wildcards.chunk} "
            "--size {params.size} --mix {params.mix} --hard-threshold {params.hard_threshold} "
            "--extreme-threshold {params.extreme_threshold} --class-copies {params.class_copies} "
            "--out {output.csv} --summary {output.stats} --quiet > {log} 2>&1"

    rule split:
        input:
            expand("results/data/pool/chunk{chunk:04d}.csv", chunk=range(n_chunks())),
        output:
            train="results/data/split/train.csv",
            test="results/data/split/test.csv",
            summary="results/data/split/split.json",
        log:
            "logs/data/split.log",
        benchmark:
            "benchmarks/data/split.tsv"
        conda:
            "../envs/cgar.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            test_size=config["data"]["generate"]["test_size"],
            seed=config["data"]["split_seed"],
        shell:
            "NUMBA_NUM_THREADS={threads} python -m cgar.data split {input} --train {output.train} "
            "--test {output.test} --test-size {params.test_size} --seed {params.seed} "
            "--summary {output.summary} --quiet > {log} 2>&1"

else:

    rule import_csv:
        input:
            imported_src,
        output:
            csv="results/data/imported/{split}.csv",
            summary="results/data/imported/{split}.json",
        log:
            "logs/data/import/{split}.log",
        benchmark:
            "benchmarks/data/import/{split}.tsv"
        wildcard_constraints:
            split="train|test",
        conda:
            "../envs/cgar.yaml"
        resources:
            mem_mb=2000,
            runtime=240,
        params:
            on_error=config["data"]["import"]["on_error"],
            unique=(
                "" if config["data"]["import"]["check_unique"] else "--no-check-unique"
            ),
            class_copies=config["data"]["import"]["class_copies"],
        shell:
            "python -m cgar.data import {input} --out {output.csv} --format csv --on-error {params.on_error} "
            "{params.unique} --class-copies {params.class_copies} --summary {output.summary} --quiet "
            "> {log} 2>&1"


rule build_dataset:
    input:
        **split_csvs(),
    output:
        directory(DATASET),
    log:
        "logs/data/build.log",
    benchmark:
        "benchmarks/data/build.tsv"
    conda:
        "../envs/cgar.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        subsample=config["data"]["build"]["subsample_size"] or 0,
        num_aug=config["data"]["build"]["num_aug"],
        min_difficulty=(
            f"--min-difficulty {config['data']['build']['min_difficulty']}"
            if config["data"]["build"]["min_difficulty"] is not None
            else ""
        ),
        seed=config["data"]["build"]["seed"],
        difficulty=config["data"]["build"]["difficulty"],
        val_size=config["data"]["build"]["val_size"],
    shell:
        "python -m cgar.data build --train {input.train} --test {input.test} --out {output} "
        "--subsample-size {params.subsample} --num-aug {params.num_aug} {params.min_difficulty} "
        "--difficulty {params.difficulty} --seed {params.seed} --val-size {params.val_size} --quiet > {log} 2>&1"


rule check_dataset:
    input:
        DATASET,
    output:
        "results/data/leak_check.json",
    log:
        "logs/data/check.log",
    benchmark:
        "benchmarks/data/check.tsv"
    conda:
        "../envs/cgar.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        val=(f"--val {DATASET}/val" if config["data"]["build"]["val_size"] > 0 else ""),
    shell:
        "NUMBA_NUM_THREADS={threads} python -m cgar.data check --train {input}/train --test {input}/test "
        "{params.val} --verify-manifest --summary {output} --quiet > {log} 2>&1"
