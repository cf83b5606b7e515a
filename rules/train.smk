from ftbench.cluster import rule_resources

if BASE_IS_BUILT:

    # The base depends on its own settings only (model.pretrain, its tasks included), never on which
    # cells the matrix has or which are runnable: changing one task's cells leaves the others' results.
    rule base_model:
        input:
            [data_file(task, "train") for task in PRETRAIN_TASKS],
        output:
            f"{BASE_DIR}/config.json",
        log:
            f"logs/base/{config['model']['preset']}.log",
        resources:
            scripts=SCRIPTS,
        params:
            one_thread=ONE_THREAD,
            out=lambda wc, output: os.path.dirname(output[0]),
            settings=json.dumps({k: v for k, v in config["model"]["pretrain"].items() if k != "tasks"}),
        shell:
            "{params.one_thread} python {resources.scripts}/build_base.py --train {input} --out {params.out} "
            "--settings {params.settings:q} > {log} 2>&1"


if BASE_IS_HUB:

    rule fetch_model:
        output:
            f"{BASE_DIR}/config.json",
        log:
            "logs/base/fetch.log",
        resources:
            scripts=SCRIPTS,
        params:
            source=MODEL_SOURCE,
            revision=config["model"].get("revision"),
            out=lambda wc, output: os.path.dirname(output[0]),
        shell:
            "python {resources.scripts}/fetch_model.py --source {params.source} --revision {params.revision} "
            "--out {params.out} > {log} 2>&1"


rule train:
    input:
        base=base_model_input,
        data=lambda wc: data_file(wc.task, "train"),
    output:
        artifact="results/{task}/{hardware}/{cell}/train/artifact.json",
        provenance="results/{task}/{hardware}/{cell}/provenance.json",
    log:
        "logs/{task}/{hardware}/{cell}/train.log",
    threads: lambda wc: cell_of(wc).procs
    # Slurm: nodes, GPUs, CPUs, memory, runtime from the cell and the hardware table (ftbench/cluster.py).
    resources:
        **rule_resources(config, cell_of, "train"),
        loader_workers=loader_resource("loader_workers"),
        loader_prefetch=loader_resource("loader_prefetch"),
        # the checkpoint cadence: a resource, not a param, as it never changes a result (no rerun)
        checkpoint_every=CHECKPOINT_EVERY,
        scripts=SCRIPTS,
    params:
        one_thread=ONE_THREAD,
        launch=launcher("train.py"),
        base=BASE_DIR,
        out="results/{task}/{hardware}/{cell}/train",
        settings=cell_settings,
    shell:
        # srun of a multi-node launch: the job's CPUs per task (Slurm >= 22.05 no longer passes them on)
        "{params.one_thread} SRUN_CPUS_PER_TASK={resources.cpus_per_task} "
        "{params.launch} --base {params.base} --train {input.data} --out {params.out} "
        "--settings {params.settings:q} --provenance {output.provenance} --checkpoint-every {resources.checkpoint_every} "
        "--loader-workers {resources.loader_workers} --loader-prefetch {resources.loader_prefetch} > {log} 2>&1"
