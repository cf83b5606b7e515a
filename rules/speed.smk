rule speed:
    input:
        base=base_model_input,
        data=lambda wc: data_file(wc.task, "train"),
    output:
        "results/{task}/{hardware}/{cell}/speed.json",
    params:
        launch=lambda wc: launcher(wc, f"{SCRIPTS}/speed.py"),
        base=BASE_DIR,
        settings=cell_settings,
        cell=cell_record,
        warmup=config.get("speed", {}).get("warmup_steps", 2),
        measured=config.get("speed", {}).get("measured_steps", 5),
        peak=lambda wc: (
            f"--peak-tflops {config['hardware'][wc.hardware]['peak_tflops']}"
            if config["hardware"][wc.hardware].get("peak_tflops")
            else ""
        ),
    threads: lambda wc: cell_of(wc).procs
    log:
        "logs/{task}/{hardware}/{cell}/speed.log",
    shell:
        "OMP_NUM_THREADS=1 {params.launch} --base {params.base} --train {input.data} "
        "--settings {params.settings:q} --task {wildcards.task} --hardware {wildcards.hardware} "
        "--cell {params.cell:q} --warmup-steps {params.warmup} --measured-steps {params.measured} "
        "{params.peak} --out {output} > {log} 2>&1"
