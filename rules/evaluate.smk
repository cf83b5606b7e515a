from ftbench.cluster import eval_rule_resources


rule evaluate_before:
    input:
        base=base_model_input,
        data=lambda wc: data_file(wc.task, "val"),
        # AUROC scores the first tokens of the training answers (ftbench.evaluate.auroc_tokens)
        train=lambda wc: data_file(wc.task, "train"),
    output:
        metrics="results/{task}/{hardware}/eval_before.json",
        predictions="results/{task}/{hardware}/predictions_before.jsonl",
    log:
        "logs/{task}/{hardware}/eval_before.log",
    # Slurm: one process with one GPU on GPU hardware (ftbench/cluster.py).
    resources:
        **eval_rule_resources(config),
        scripts=SCRIPTS,
    params:
        one_thread=ONE_THREAD,
        base=BASE_DIR,
        settings=lambda wc: json.dumps(eval_settings(config, wc.task)),
    shell:
        "{params.one_thread} python {resources.scripts}/evaluate.py --model {params.base} --data {input.data} "
        "--train {input.train} --task {wildcards.task} --hardware {wildcards.hardware} --stage before "
        "--settings {params.settings:q} --out {output.metrics} --predictions {output.predictions} > {log} 2>&1"


rule evaluate_after:
    input:
        artifact="results/{task}/{hardware}/{cell}/train/artifact.json",
        data=lambda wc: data_file(wc.task, "val"),
        train=lambda wc: data_file(wc.task, "train"),
    output:
        metrics="results/{task}/{hardware}/{cell}/eval_after.json",
        predictions="results/{task}/{hardware}/{cell}/predictions.jsonl",
    log:
        "logs/{task}/{hardware}/{cell}/eval_after.log",
    resources:
        **eval_rule_resources(config),
        scripts=SCRIPTS,
    params:
        one_thread=ONE_THREAD,
        settings=lambda wc: json.dumps(eval_settings(config, wc.task, cell_of(wc).strategy)),
        cell=cell_record,
        # the attention the cell trained with (the recipe's fp16 rows eager, bf16 flash attention)
        attention=lambda wc: cell_of(wc).attention,
    shell:
        "{params.one_thread} python {resources.scripts}/evaluate.py --model {input.artifact} --data {input.data} "
        "--train {input.train} --task {wildcards.task} --hardware {wildcards.hardware} --stage after --cell {params.cell:q} "
        "--attention {params.attention} "
        "--settings {params.settings:q} --out {output.metrics} --predictions {output.predictions} > {log} 2>&1"
