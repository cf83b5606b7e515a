from ftbench.data.sources import rule_arguments, rule_input


rule make_raw:
    output:
        directory("results/raw/{task}"),
    params:
        rows=lambda wc: ",".join(map(str, config["tasks"][wc.task]["rows"]))
        if isinstance(config["tasks"][wc.task]["rows"], list)
        else config["tasks"][wc.task]["rows"],
        seed=config["data"].get("seed", 0),
    log:
        "logs/raw/{task}.log",
    shell:
        "python {SCRIPTS}/make_raw.py --task {wildcards.task} --out {output} "
        "--rows {params.rows} --seed {params.seed} > {log} 2>&1"


rule convert:
    wildcard_constraints:
        task=one_of(t for t in config["tasks"] if t not in CUSTOM_TASKS),
    input:
        # the synthetic raw folder, or the source's local folder (ftbench/data/sources.py)
        lambda wc: rule_input(wc.task, config["tasks"][wc.task]),
    output:
        train="results/data/{task}/{task}_train.jsonl",
        val="results/data/{task}/{task}_val.jsonl",
        test="results/data/{task}/{task}_test.jsonl",
        summary="results/data/{task}/summary.json",
        leakage="results/data/{task}/leakage.json",
    params:
        args=lambda wc: rule_arguments(wc.task, config["tasks"][wc.task]),
    threads: lambda wc: config["tasks"][wc.task].get("processes", 1)
    log:
        "logs/convert/{task}.log",
    shell:
        "python {SCRIPTS}/convert.py --task {wildcards.task} {params.args} "
        "--out results/data/{wildcards.task} --processes {threads} > {log} 2>&1"


# A task declared with `source: custom`: its own common-format files, validated, then linked in.
rule import_custom:
    wildcard_constraints:
        task=one_of(CUSTOM_TASKS),
    input:
        lambda wc: [config["tasks"][wc.task][k] for k in ("train", "val", "test") if k in config["tasks"][wc.task]],
    output:
        train="results/data/{task}/{task}_train.jsonl",
        val="results/data/{task}/{task}_val.jsonl",
        test="results/data/{task}/{task}_test.jsonl",
        summary="results/data/{task}/summary.json",
    params:
        args=lambda wc: custom_import_args(config, wc.task),
    log:
        "logs/convert/{task}.log",
    shell:
        "python {SCRIPTS}/import_custom.py --task {wildcards.task} {params.args} "
        "--out results/data/{wildcards.task} > {log} 2>&1"
