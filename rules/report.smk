from ftbench.config import skipped_tsv
from ftbench.atomic import write_text_atomic


# `snakemake --report results/report.html`: this text on the front page, the results marked report().
report: "../report/workflow.rst"


# Cheap bookkeeping: on a cluster these run where Snakemake runs, not as Slurm jobs.
localrules:
    skipped,
    tables,
    plots,
    readme,


rule skipped:
    output:
        "results/skipped.tsv",
    log:
        "logs/report/skipped.log",
    params:
        text=skipped_tsv(SKIPPED),
    run:
        write_text_atomic(output[0], params.text)
        write_text_atomic(log[0], f"{len(SKIPPED)} cells refused\n")


rule tables:
    input:
        evals=eval_targets(),
        speeds=speed_targets(),
        skipped="results/skipped.tsv",
        published=f"{workflow.basedir}/ftbench/published/phi3v_cookbook.yaml",
    output:
        # `snakemake --report results/report.html`: the HTML page is shown inline, the Markdown offered.
        html=report(
            "results/tables/section.html",
            caption="../report/tables.rst",
            category="Results",
            subcategory="Tables",
            labels={"table": "every task and speed", "format": "HTML"},
        ),
        markdown=report(
            "results/tables/section.md",
            caption="../report/tables.rst",
            category="Results",
            subcategory="Tables",
            labels={"table": "every task and speed", "format": "Markdown"},
        ),
    log:
        "logs/report/tables.log",
    resources:
        scripts=SCRIPTS,
    params:
        before=lambda wc, input: [f for f in input.evals if f.endswith("eval_before.json")],
        after=lambda wc, input: [f for f in input.evals if f.endswith("eval_after.json")],
        speed_tasks=" ".join(sorted(SPEED_TASKS)),
    shell:
        "python {resources.scripts}/report_tables.py --before {params.before} --after {params.after} "
        "--speed {input.speeds} --skipped {input.skipped} --speed-tasks {params.speed_tasks} "
        "--published {input.published} "
        "--out-dir results/tables > {log} 2>&1 && "
        "python {resources.scripts}/tables_html.py {output.markdown} {output.html} >> {log} 2>&1"


rule plots:
    input:
        before=[f for f in eval_targets() if f.endswith("eval_before.json")],
        after=[f for f in eval_targets() if f.endswith("eval_after.json")],
        speeds=speed_targets(),
        # Each cell's train_log.jsonl is written before its artifact.json, the train rule's output
        # (written last), which is what the DAG can wait for.
        trained=[f"{c.path()}/train/artifact.json" for c in RUNNABLE],
        # a classification task's class list (UCF-101): its chance level
        summaries=[f"results/data/{task}/summary.json" for task in TASKS],
    output:
        headline=report_figure("results/plots/accuracy.png", "accuracy.rst", "headline metric per cell"),
        throughput=report_figure("results/plots/throughput.png", "throughput.rst", "img/s per GPU count"),
        loss=report_figure("results/plots/loss.png", "loss.rst", "training loss per step"),
        accuracy_memory=report_figure(
            "results/plots/accuracy_memory.png", "accuracy_memory.rst", "headline metric per peak memory"
        ),
    log:
        "logs/report/plots.log",
    resources:
        scripts=SCRIPTS,
    params:
        train_logs=lambda wc, input: [str(Path(f).with_name("train_log.jsonl")) for f in input.trained],
    shell:
        "python {resources.scripts}/plots.py --before {input.before} --after {input.after} --speed {input.speeds} "
        "--train-log {params.train_logs} --summary {input.summaries} "
        "--headline {output.headline} --throughput {output.throughput} --loss {output.loss} "
        "--accuracy-memory {output.accuracy_memory} > {log} 2>&1"


# The README's results section: the tables, and the main figures copied into docs/figures/ (committed
# with the tables, so the README shows them without running anything). README.md and the figures are
# rewritten in place, hence update(): Snakemake deletes a job's other outputs before it runs and after
# it fails (remove_existing_output and cleanup in src/snakemake/jobs.py), but keeps these, backs them
# up and restores them when it fails. The figures keep their names (update_readme.py --figures-dir).
rule readme:
    input:
        section="results/tables/section.md",
        headline="results/plots/accuracy.png",
        throughput="results/plots/throughput.png",
        loss="results/plots/loss.png",
    output:
        readme=update("README.md"),
        headline=update("docs/figures/accuracy.png"),
        throughput=update("docs/figures/throughput.png"),
        loss=update("docs/figures/loss.png"),
    log:
        "logs/report/readme.log",
    resources:
        scripts=SCRIPTS,
    shell:
        "python {resources.scripts}/update_readme.py --section {input.section} --readme {output.readme} "
        "--figures-dir docs/figures --figure {input.headline:q} "
        "'Headline metric after fine-tuning per cell (95% interval), before fine-tuning and chance' "
        "--figure {input.throughput:q} 'Throughput against GPU count per strategy, ideal scaling dashed' "
        "--figure {input.loss:q} 'Training loss per step per strategy' > {log} 2>&1"
