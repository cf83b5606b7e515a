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
    params:
        text=skipped_tsv(SKIPPED),
    run:
        write_text_atomic(output[0], params.text)


rule tables:
    input:
        evals=eval_targets(),
        speeds=speed_targets(),
        skipped="results/skipped.tsv",
        published=f"{workflow.basedir}/ftbench/published/phi3v_cookbook.yaml",
    output:
        # `snakemake --report results/report.html`: the HTML page is shown inline, the Markdown offered.
        html=report("results/tables/section.html", caption="../report/tables.rst", category="Tables"),
        markdown=report("results/tables/section.md", caption="../report/tables.rst", category="Tables"),
    params:
        before=lambda wc, input: [f for f in input.evals if f.endswith("eval_before.json")],
        after=lambda wc, input: [f for f in input.evals if f.endswith("eval_after.json")],
        speed_tasks=" ".join(sorted(SPEED_TASKS)),
    log:
        "logs/report/tables.log",
    shell:
        "python {SCRIPTS}/report_tables.py --before {params.before} --after {params.after} "
        "--speed {input.speeds} --skipped {input.skipped} --speed-tasks {params.speed_tasks} "
        "--published {input.published} "
        "--out-dir results/tables > {log} 2>&1 && "
        "python {SCRIPTS}/tables_html.py {output.markdown} {output.html} >> {log} 2>&1"


rule plots:
    input:
        speeds=speed_targets(),
        after=[f for f in eval_targets() if f.endswith("eval_after.json")],
    output:
        throughput=report("results/plots/throughput.png", caption="../report/plots.rst", category="Speed"),
        accuracy=report("results/plots/accuracy_memory.png", caption="../report/plots.rst", category="Speed"),
    log:
        "logs/report/plots.log",
    shell:
        "python {SCRIPTS}/plots.py --speed {input.speeds} --after {input.after} "
        "--throughput {output.throughput} --accuracy {output.accuracy} > {log} 2>&1"


rule readme:
    input:
        "results/tables/section.md",
    output:
        touch("results/tables/README.updated"),
    log:
        "logs/report/readme.log",
    shell:
        "python {SCRIPTS}/update_readme.py --section {input} --readme README.md > {log} 2>&1"
