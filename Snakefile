# CGAR on Tiny Recursive Models for Sudoku-Extreme: the whole experiment as one DAG.
#
#   snakemake --cores all --use-conda                      # paper-scale run on a GPU workstation
#   snakemake --cores all --configfile config/laptop.yaml  # whole pipeline on a laptop CPU (6x6 grids), <= 30 min
#   snakemake --workflow-profile profiles/slurm --use-conda # on a SLURM cluster
#   snakemake figures --config cached_results=true         # re-render tables/figures from cached runs
#
# Rules live in workflow/rules/, the logic in the `cgar` package (python -m cgar.<step>).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/flops.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/evaluate_shards.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
    localrule: True
