"""The Snakemake DAG: planning the cluster matrix, one-cell targets, config errors."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ftbench.config import split_cells
from ftbench.launch import THREAD_VARIABLES

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(args, cwd):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def job_counts(stdout):
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stdout, re.M)}


def workdir(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def test_cluster_matrix_plans_hundreds_of_jobs(tmp_path):
    wd = workdir(tmp_path)
    r = snakemake(["-n", "--configfile", str(REPO / "config" / "cluster.yaml")], wd)
    assert r.returncode == 0, r.stderr[-2000:]
    counts = job_counts(r.stdout)
    # 192 cells, 48 with fp16 + flash attention refused -> 144 trained and evaluated
    assert counts["train"] == 144 and counts["evaluate_after"] == 144
    assert counts["speed"] == 36 and counts["evaluate_before"] == 4
    # the official checkpoint fetched at its pinned commit, no base built; the four real sources converted
    assert counts["fetch_model"] == 1 and "base_model" not in counts and counts["convert"] == 4
    assert "make_raw" not in counts  # no synthetic data
    assert counts["total"] > 300
    assert "srun --nodes 2 --ntasks 2" not in r.stdout  # shell commands are not printed without -p
    # targets first: --configfile takes several values
    r = snakemake(["results/docvqa/a100/full-bf16-flash_attention_2-2x8-s0/train/artifact.json", "-n", "-p",
                   "--configfile", str(REPO / "config" / "cluster.yaml")], wd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "srun --nodes 2 --ntasks 2 --ntasks-per-node 1" in r.stdout
    assert "--nnodes 2 --nproc-per-node 8" in r.stdout


def test_one_cell_target_plans_only_that_cell(tmp_path):
    wd = workdir(tmp_path)
    r = snakemake(["-n", "results/hateful_memes/cpu/lora-bf16-sdpa-1x2-s0/eval_after.json"], wd)
    assert r.returncode == 0, r.stderr[-2000:]
    counts = job_counts(r.stdout)
    assert counts["train"] == 1 and counts["evaluate_after"] == 1
    assert "lora-bf16-sdpa-1x2-s0" in r.stdout and "full-bf16-sdpa-1x1-s0" not in r.stdout


def test_wrong_config_value_is_one_line_naming_the_key(tmp_path):
    wd = workdir(tmp_path)
    bad = yaml.safe_load((REPO / "config.yaml").read_text())
    bad["tasks"]["docvqa"]["steps"] = "ten"
    (wd / "bad.yaml").write_text(yaml.safe_dump(bad))
    r = snakemake(["-n", "--configfile", "bad.yaml"], wd)
    assert r.returncode != 0
    output = r.stdout + r.stderr  # Snakemake prints workflow errors on stdout
    lines = [line for line in output.splitlines() if "tasks.docvqa.steps" in line]
    assert len(lines) == 1 and lines[0].endswith("tasks.docvqa.steps: 'ten' is not of type 'integer'")
    line = lines[0]
    assert "bad.yaml" in line


def test_hub_model_is_fetched_at_a_pinned_revision(tmp_path):
    wd = workdir(tmp_path)
    hub = yaml.safe_load((REPO / "config" / "cluster.yaml").read_text())
    hub["model"]["source"] = "microsoft/Phi-3.5-vision-instruct"
    hub["model"]["revision"] = "0123456789abcdef0123456789abcdef01234567"
    (wd / "hub.yaml").write_text(yaml.safe_dump(hub))
    r = snakemake(["-n", "--configfile", "hub.yaml"], wd)
    assert r.returncode == 0, r.stdout[-2000:]
    assert job_counts(r.stdout)["fetch_model"] == 1
    assert "results/base/microsoft__Phi-3.5-vision-instruct@0123456789abcdef0123456789abcdef01234567" in r.stdout
    hub["model"]["revision"] = None
    (wd / "hub.yaml").write_text(yaml.safe_dump(hub))
    r = snakemake(["-n", "--configfile", "hub.yaml"], wd)
    assert r.returncode != 0
    assert "model.revision: a hub id needs a pinned 40-hex commit" in r.stdout + r.stderr


def planned_jobs(stdout: str) -> dict[str, str]:
    """A dry run's jobs (``-n -p``): the text of each rule block (rule, input, output, shell command),
    keyed by its first output, without the run-specific lines (job ids, reasons, resources, times)."""
    jobs = {}
    for block in re.split(r"\n(?=\[[A-Z][a-z]{2} )", stdout):
        lines = [line for line in block.splitlines()[1:] if line.strip()
                 and not re.match(r"\s*(jobid|reason|resources|wildcards|threads|log):", line)]
        output = next((line.split(":", 1)[1].split(",")[0].strip() for line in lines
                       if line.strip().startswith("output:")), None)
        if lines and lines[0].startswith("rule ") and output:
            jobs[output] = "\n".join(lines)
    return jobs


def test_a_tasks_settings_change_no_other_tasks_jobs_and_not_the_base(tmp_path):
    """The base model and another task's cells are planned identically (same inputs, params and
    command, so Snakemake reruns none of them) whether one task's cells are refused, retuned or
    alone in the matrix."""
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    refused = yaml.safe_load((REPO / "config.yaml").read_text())
    refused["tasks"]["hateful_memes"]["global_batch"] = 15  # no layout divides it: its cells are refused
    alone = yaml.safe_load((REPO / "config.yaml").read_text())
    alone["matrix"] = [block for block in alone["matrix"] if block["task"] == ["hateful_memes"]]
    plans = {}
    for name, config in (("default", default), ("refused", refused), ("alone", alone)):
        wd = tmp_path / name
        wd.mkdir()
        (wd / "config.yaml").write_text(yaml.safe_dump(config))
        r = snakemake(["-n", "-p"], wd)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        plans[name] = planned_jobs(r.stdout)
    base = "results/base/tiny/config.json"
    assert plans["refused"][base] == plans["default"][base] == plans["alone"][base]
    others = {o: j for o, j in plans["default"].items() if o.startswith(("results/docvqa/", "results/nlvr2/"))}
    expected = [c for c in split_cells(default, flash_available=False)[0] if c.task in ("docvqa", "nlvr2")]
    assert sorted(o for o in others if o.endswith("eval_after.json")) == sorted(
        f"{c.path()}/eval_after.json" for c in expected)
    assert {o: plans["refused"][o] for o in others} == others  # identical jobs, none new or changed
    assert not [o for o in plans["refused"] if o.startswith("results/hateful_memes/cpu/") and "-s0/" in o]
    assert plans["alone"]["results/hateful_memes/cpu/eval_before.json"] == \
        plans["default"]["results/hateful_memes/cpu/eval_before.json"]


def thread_variables_snakemake_sets(tmp_path) -> set[str]:
    """The environment variables Snakemake gives a job as its thread count, read from a job's environment."""
    wd = tmp_path / "threads"
    wd.mkdir()
    # an unusual count and a name about threads, so that no other variable (SHLVL, ...) counts
    (wd / "Snakefile").write_text('rule env:\n    output: "env.txt"\n    threads: 13\n    shell: "env > {output}"\n')
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    subprocess.run([str(BIN / "snakemake"), "--cores", "13", "-q"], cwd=wd, env=env, check=True, capture_output=True,
                   timeout=120)
    job_env = dict(line.split("=", 1) for line in (wd / "env.txt").read_text().splitlines() if "=" in line)
    return {name for name, value in job_env.items()
            if value == "13" and "THREADS" in name and os.environ.get(name) != "13"}


def test_every_pytorch_job_overrides_each_thread_count_snakemake_sets(tmp_path):
    """Snakemake exports the job's threads (2 for a two-process cell) to OpenMP, MKL, OpenBLAS, ...;
    torchrun's processes must not each take them all (with them left at 2, two-process LoRA
    training on two cores ran 10x slower), so every command that starts PyTorch sets each of them to 1."""
    names = thread_variables_snakemake_sets(tmp_path)
    assert {"OMP_NUM_THREADS", "MKL_NUM_THREADS"} <= names <= set(THREAD_VARIABLES)
    wd = workdir(tmp_path)
    r = snakemake(["-n", "-p", "--cores", "2"], wd)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    commands = {output: job for output, job in planned_jobs(r.stdout).items()
                if re.search(r"\b(torchrun|python \S+/(build_base|evaluate)\.py)\b", job)}
    rules = {job.splitlines()[0] for job in commands.values()}
    assert {"rule base_model:", "rule train:", "rule speed:", "rule evaluate_before:", "rule evaluate_after:"} <= rules
    assert any("--nproc-per-node 2" in job for job in commands.values())
    for output, job in commands.items():
        shell = job.split("Shell command:", 1)[-1] if "Shell command:" in job else job
        missing = sorted(name for name in names if not re.search(rf"(^|\s){name}=1\s", shell))
        assert not missing, f"{output}: {missing} left at the job's thread count"


def test_each_cell_is_evaluated_with_the_attention_it_trained_with(tmp_path):
    wd = workdir(tmp_path)
    cells = {"full-bf16-flash_attention_2-1x8-s0": "flash_attention_2", "full-fp16-eager-1x8-s0": "eager"}
    targets = [f"results/docvqa/a100/{cell}/eval_after.json" for cell in cells]
    r = snakemake([*targets, "-n", "-p", "--configfile", str(REPO / "config" / "cluster.yaml")], wd)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    jobs = planned_jobs(r.stdout)
    for cell, attention in cells.items():
        shell = jobs[f"results/docvqa/a100/{cell}/eval_after.json"]
        assert re.search(rf"evaluate\.py .*--attention {attention} ", shell), shell
