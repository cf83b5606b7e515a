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
    input:
        "results/raw/{task}",
    output:
        train="results/data/{task}/{task}_train.jsonl",
        val="results/data/{task}/{task}_val.jsonl",
        test="results/data/{task}/{task}_test.jsonl",
        summary="results/data/{task}/summary.json",
    params:
        split=lambda wc: ""
        if wc.task == "ucf101"
        else f"--n-val {config['tasks'][wc.task].get('n_val', 500)} --n-test {config['tasks'][wc.task].get('n_test', 0)}",
        frames=lambda wc: f"--num-frames {config['tasks'][wc.task].get('num_frames', 8)}" if wc.task == "ucf101" else "",
    log:
        "logs/convert/{task}.log",
    shell:
        "python {SCRIPTS}/convert.py --task {wildcards.task} --raw {input} "
        "--out results/data/{wildcards.task} {params.split} {params.frames} > {log} 2>&1"
