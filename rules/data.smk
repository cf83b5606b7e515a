from ftbench.data.sources import rule_arguments, rule_input


rule make_raw:
    output:
        directory("results/raw/{task}"),
    log:
        "logs/raw/{task}.log",
    resources:
        scripts=SCRIPTS,
    params:
        rows=lambda wc: (
            ",".join(map(str, config["tasks"][wc.task]["rows"]))
            if isinstance(config["tasks"][wc.task]["rows"], list)
            else config["tasks"][wc.task]["rows"]
        ),
        seed=config["data"]["seed"],
    shell:
        "python {resources.scripts}/make_raw.py --task {wildcards.task} --out {output} "
        "--rows {params.rows} --seed {params.seed} > {log} 2>&1"


# A conversion replaces its published files only when it succeeded and differs from them
# (ftbench/data/staging.py); Snakemake 9 would delete them itself before the job and after a
# failure (remove_existing_output and cleanup in src/snakemake/jobs.py of
# https://github.com/snakemake/snakemake). Outputs flagged update() are kept before the job, backed
# up, and restored when it fails (the same bytes, with a new mtime). A checkpoint, because when one
# finishes Snakemake decides again which jobs still need to run (update_checkpoint_dependencies,
# then postprocess and update_needrun, in src/snakemake/dag.py): the cells planned downstream of a
# conversion that turned out byte-identical are dropped then. Snakemake touches the outputs of every
# job that ran (check_and_touch_output), but an input newer than a job's outputs only reruns the job
# when its checksum differs from the one recorded when the job ran (update_needrun), for inputs up to
# --max-checksum-file-size (1 MB by default; a larger jsonl falls back to its mtime).
checkpoint convert:
    input:
        # the synthetic raw folder, or the source's local folder (ftbench/data/sources.py)
        lambda wc: rule_input(wc.task, config["tasks"][wc.task]),
    output:
        train=update("results/data/{task}/{task}_train.jsonl"),
        val=update("results/data/{task}/{task}_val.jsonl"),
        test=update("results/data/{task}/{task}_test.jsonl"),
        summary=update("results/data/{task}/summary.json"),
        leakage=update("results/data/{task}/leakage.json"),
    log:
        "logs/convert/{task}.log",
    wildcard_constraints:
        task=one_of(t for t in config["tasks"] if t not in CUSTOM_TASKS),
    threads: lambda wc: config["tasks"][wc.task]["processes"]
    resources:
        scripts=SCRIPTS,
    params:
        args=lambda wc: rule_arguments(wc.task, config["tasks"][wc.task]),
    shell:
        "python {resources.scripts}/convert.py --task {wildcards.task} {params.args} "
        "--out results/data/{wildcards.task} --processes {threads} > {log} 2>&1"


# A task declared with `source: custom`: its own common-format files, validated, then linked in
# (a checkpoint with update() outputs for the reasons given at convert).
checkpoint import_custom:
    input:
        lambda wc: [config["tasks"][wc.task][k] for k in ("train", "val", "test") if k in config["tasks"][wc.task]],
    output:
        train=update("results/data/{task}/{task}_train.jsonl"),
        val=update("results/data/{task}/{task}_val.jsonl"),
        test=update("results/data/{task}/{task}_test.jsonl"),
        summary=update("results/data/{task}/summary.json"),
    log:
        "logs/convert/{task}.log",
    wildcard_constraints:
        task=one_of(CUSTOM_TASKS),
    resources:
        scripts=SCRIPTS,
    params:
        args=lambda wc: custom_import_args(config, wc.task),
    shell:
        "python {resources.scripts}/import_custom.py --task {wildcards.task} {params.args} "
        "--out results/data/{wildcards.task} > {log} 2>&1"
