from ftbench.config import skipped_tsv
from ftbench.atomic import write_text_atomic


rule skipped:
    output:
        "results/skipped.tsv",
    params:
        text=skipped_tsv(SKIPPED),
    run:
        write_text_atomic(output[0], params.text)


rule tables:
    input:
        evals=eval_targets(),
        speeds=speed_targets(),
        skipped="results/skipped.tsv",
    output:
        "results/tables/section.md",
    params:
        before=lambda wc, input: [f for f in input.evals if f.endswith("eval_before.json")],
        after=lambda wc, input: [f for f in input.evals if f.endswith("eval_after.json")],
        speed_tasks=" ".join(sorted(SPEED_TASKS)),
    log:
        "logs/report/tables.log",
    shell:
        "python {SCRIPTS}/report_tables.py --before {params.before} --after {params.after} "
        "--speed {input.speeds} --skipped {input.skipped} --speed-tasks {params.speed_tasks} "
        "--out-dir results/tables > {log} 2>&1"


rule readme:
    input:
        "results/tables/section.md",
    output:
        touch("results/tables/README.updated"),
    log:
        "logs/report/readme.log",
    shell:
        "python {SCRIPTS}/update_readme.py --section {input} --readme README.md > {log} 2>&1"
