rule random_base:
    output:
        "results/base/random-{preset}/config.json",
    log:
        "logs/base/random-{preset}.log",
    resources:
        scripts=SCRIPTS,
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "python {resources.scripts}/speed_inputs.py base --preset {wildcards.preset} --out {params.out} > {log} 2>&1"


rule speed_inputs:
    output:
        "results/speed/inputs/docvqa_shape_train.jsonl",
    log:
        "logs/speed/inputs.log",
    resources:
        scripts=SCRIPTS,
    params:
        samples=config["speed"]["samples"],
    shell:
        "python {resources.scripts}/speed_inputs.py docvqa-shape --samples {params.samples} --out results/speed/inputs "
        "> {log} 2>&1"


rule speed:
    input:
        # speed.inputs / speed.weights: converted samples and the base, or no-download stand-ins
        base=speed_base_input,
        data=speed_data_input,
    output:
        "results/{task}/{hardware}/{cell}/speed.json",
    log:
        "logs/{task}/{hardware}/{cell}/speed.log",
    threads: lambda wc: cell_of(wc).procs
    # Slurm: nodes, GPUs, CPUs, memory, runtime from the cell and the hardware table (ftbench/cluster.py).
    resources:
        **rule_resources(config, cell_of, "speed"),
        scripts=SCRIPTS,
    params:
        one_thread=ONE_THREAD,
        launch=launcher("speed.py"),
        base=lambda wc, input: str(Path(input.base).parent),
        settings=speed_settings,
        cell=cell_record,
        warmup=config["speed"]["warmup_steps"],
        measured=config["speed"]["measured_steps"],
        peak=lambda wc: (
            f"--peak-tflops {config['hardware'][wc.hardware]['peak_tflops']}"
            if config["hardware"][wc.hardware].get("peak_tflops")
            else ""
        ),
    shell:
        # srun of a multi-node launch: the job's CPUs per task (Slurm >= 22.05 no longer passes them on)
        "{params.one_thread} SRUN_CPUS_PER_TASK={resources.cpus_per_task} "
        "{params.launch} --base {params.base} --train {input.data} "
        "--settings {params.settings:q} --task {wildcards.task} --hardware {wildcards.hardware} "
        "--cell {params.cell:q} --warmup-steps {params.warmup} --measured-steps {params.measured} "
        "{params.peak} --out {output} > {log} 2>&1"
