# ftbench: fine-tuning benchmark of Phi-3.5-vision as a Snakemake workflow.
# raw data -> common format -> base model -> train per cell -> evaluate before/after -> speed
# -> tables -> README. `snakemake --cores 2` runs the embedded default (config.yaml).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/speed.smk"
include: "rules/report.smk"


rule all:
    input:
        "results/tables/README.updated",
        "results/plots/throughput.png",
        # the report of identical images across splits, beside each converted dataset
        [f"results/data/{task}/leakage.json" for task in TASKS if task not in CUSTOM_TASKS],
