# ftbench: fine-tuning benchmark of Phi-3.5-vision as a Snakemake workflow.
# raw data -> common format -> base model -> train per cell -> evaluate before/after -> speed
# -> tables -> README. `snakemake --cores 2` runs the embedded default (config.yaml).

from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from ftbench.config import ConfigError, read_config_file

min_version("9.0")

# Snakemake's message for a YAML error names neither the file nor the line, so config.yaml is read
# here first. The command line's --configfile files are read by Snakemake before this file runs, out
# of its reach: `python -m ftbench.config config.yaml FILE` names the file and line of their errors.
if Path("config.yaml").is_file():
    try:
        read_config_file("config.yaml")
    except ConfigError as e:
        raise WorkflowError(str(e)) from None


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/speed.smk"
include: "rules/report.smk"


rule all:
    input:
        # the README's results section and its figures (rule readme)
        "README.md",
        "results/plots/throughput.png",
        # the report of identical images across splits, beside each converted dataset
        [f"results/data/{task}/leakage.json" for task in TASKS if task not in CUSTOM_TASKS],
