"""The workflow on Slurm through snakemake-executor-plugin-slurm.

The demo tests run config/slurm-ci.yaml through profiles/slurm-ci on a real Slurm (the local cluster
of ci/slurm/up.sh: nodes n1 and n2, no accounting) and are skipped when none is up (`sinfo` fails).
They share one workflow run: a first run during which one cell's training job is cancelled with
scancel, and a rerun that completes it. The dry-run test needs no Slurm.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_CONFIG = REPO / "config" / "slurm-ci.yaml"
MULTI_NODE_CELL = "lora-bf16-sdpa-2x2-s0"
CANCELLED_CELL = "lora-bf16-sdpa-1x1-s0"
TASK_DIR = "hateful_memes/cpu"
# Snakemake ignores SIGTERM while it waits for Slurm jobs; SIGINT stops it (docs/cluster.md).
RUN_LIMIT_S = 1500


def slurm_is_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:  # sinfo blocks ~10 s per try while slurmctld is down
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


needs_slurm = pytest.mark.skipif(
    not slurm_is_up(), reason="no Slurm cluster (sinfo fails): start one with ci/slurm/install.sh && ci/slurm/up.sh"
)


def workflow_env():
    # Jobs inherit the submitting environment (--export=ALL): torchrun and snakemake from the venv.
    return dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")


def start_demo(workdir: Path, log: Path) -> subprocess.Popen:
    command = ["timeout", "-s", "INT", str(RUN_LIMIT_S), str(BIN / "snakemake"), "all", "-s", str(REPO / "Snakefile"),
               "--profile", str(REPO / "profiles" / "slurm-ci"), "--configfile", str(DEMO_CONFIG)]
    return subprocess.Popen(command, cwd=workdir, env=workflow_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)


def squeue_jobs() -> list[dict]:
    done = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True, timeout=15)
    return [dict(zip(("id", "state", "comment"), line.split("|", 2))) for line in done.stdout.splitlines()]


def cancel_when_running(process: subprocess.Popen, cell: str) -> str | None:
    """scancel the training job of ``cell`` once Slurm runs it; its job id, or None if the workflow
    ended first. The executor plugin's comment names the rule and the wildcards."""
    deadline = time.monotonic() + RUN_LIMIT_S
    while process.poll() is None and time.monotonic() < deadline:
        for job in squeue_jobs():
            if job["state"] == "RUNNING" and job["comment"].startswith("rule_train_") and cell in job["comment"]:
                time.sleep(3)  # well inside the job: the training has started
                subprocess.run(["scancel", job["id"]], check=True, timeout=15)
                return job["id"]
        time.sleep(0.5)
    return None


def job_counts(text: str) -> dict[str, int]:
    stats = text.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in text else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    wd = tmp_path_factory.mktemp("slurm-demo")
    shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    shutil.copy(REPO / "README.md", wd / "README.md")  # the readme rule fills in its results section
    first = start_demo(wd, wd / "run1.log")
    try:
        cancelled = cancel_when_running(first, CANCELLED_CELL)
        first_rc = first.wait(timeout=RUN_LIMIT_S + 60)
    finally:
        if first.poll() is None:
            first.send_signal(2)
            first.wait(timeout=120)
    after_first = {
        "multi_node_eval": (wd / "results" / TASK_DIR / MULTI_NODE_CELL / "eval_after.json").is_file(),
        "cancelled_artifact": (wd / "results" / TASK_DIR / CANCELLED_CELL / "train" / "artifact.json").is_file(),
        "tables": (wd / "results" / "tables" / "section.md").is_file(),
    }
    second = start_demo(wd, wd / "run2.log")
    second_rc = second.wait(timeout=RUN_LIMIT_S + 60)
    return SimpleNamespace(wd=wd, cancelled=cancelled, first_rc=first_rc, after_first=after_first,
                           second_rc=second_rc, run1=(wd / "run1.log").read_text(),
                           run2=(wd / "run2.log").read_text())


@needs_slurm
def test_demo_runs_a_cell_over_two_nodes_and_writes_the_tables(demo):
    assert demo.second_rc == 0, demo.run2[-3000:]
    log = (demo.wd / "logs" / TASK_DIR / MULTI_NODE_CELL / "train.log").read_text()
    # one line per rank from ftbench.torchrun_worker (lines of two processes may share a line)
    ranks = re.findall(r"ftbench rank (\d+)/(\d+) on (\S+)", log)
    assert sorted(int(r) for r, _, _ in ranks) == [0, 1, 2, 3], log[-3000:]
    assert {int(w) for _, w, _ in ranks} == {4}
    assert {node for _, _, node in ranks} == {"n1", "n2"}
    assert {n: sum(1 for *_, node in ranks if node == n) for n in ("n1", "n2")} == {"n1": 2, "n2": 2}
    assert "world_size=4" in log  # the training itself saw a world of 4
    section = (demo.wd / "results" / "tables" / "section.md").read_text()
    rows = [line for line in section.splitlines() if line.startswith("| cpu ")]
    assert {re.split(r"\s*\|\s*", row)[5] for row in rows} == {"1x1", "2x2"}, section
    assert "<td>2x2</td>" in (demo.wd / "results" / "tables" / "section.html").read_text()
    assert "| cpu " in (demo.wd / "README.md").read_text()  # the README's section was filled in


@needs_slurm
def test_a_cancelled_cell_does_not_stop_the_others_and_its_rerun_completes_it(demo):
    assert demo.cancelled, "the cell's training job was never seen running:\n" + demo.run1[-3000:]
    assert re.search(rf"SLURM-job '{demo.cancelled}' failed, SLURM status is: 'CANCELLED", demo.run1), demo.run1[-3000:]
    assert demo.first_rc != 0  # a job failed: Snakemake says so, after finishing the rest (keep-going)
    assert demo.after_first == {"multi_node_eval": True, "cancelled_artifact": False, "tables": False}
    # the rerun runs exactly the missing cell and what depends on it
    assert demo.second_rc == 0, demo.run2[-3000:]
    counts = job_counts(demo.run2)
    assert counts.get("train") == 1 and counts.get("evaluate_after") == 1, demo.run2[-3000:]
    assert CANCELLED_CELL in demo.run2 and f"cell={MULTI_NODE_CELL}" not in demo.run2
    assert (demo.wd / "results" / TASK_DIR / CANCELLED_CELL / "eval_after.json").is_file()


@needs_slurm
def test_report_has_the_result_tables(demo):
    assert demo.second_rc == 0
    done = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile", str(DEMO_CONFIG),
                           "--report", "results/report.html"], cwd=demo.wd, env=workflow_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    html = (demo.wd / "results" / "report.html").read_text()
    assert "section.html" in html and "section.md" in html and "Tables" in html


# --- dry run against the cluster config: no Slurm needed ------------------------------------------


class Resources(dict):
    """The view of a job's resources the executor plugin reads (``.get`` and attributes)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def planned_resources(stdout: str) -> dict[str, Resources]:
    """The resources Snakemake printed for each train job of a dry run, by cell."""
    planned = {}
    for block in stdout.split("\nrule ")[1:]:
        if not block.startswith("train:"):
            continue
        cell = re.search(r"cell=(\S+)", block).group(1)
        line = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
        values = Resources()
        for item in line.split(", "):
            key, value = item.split("=", 1)
            values[key] = int(value) if value.isdigit() else value
        planned[cell] = values
    return planned


def sbatch_call(resources: Resources) -> str:
    """The sbatch call snakemake-executor-plugin-slurm builds from these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    job = SimpleNamespace(resources=resources, threads=1, name="train")
    validate_slurm_extra(job)
    params = {"run_uuid": "uuid", "slurm_logfile": "log/%j.log", "comment_str": "rule_train", "account": "",
              "partition": f" -p {resources['slurm_partition']}" if "slurm_partition" in resources else "",
              "workdir": "/work"}
    return get_submit_command(job, params) + set_gres_string(job)


def test_dry_run_against_the_cluster_config_plans_sbatch_settings_of_the_hardware_table(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    cells = ("full-bf16-flash_attention_2-1x8-s0", "full-bf16-flash_attention_2-2x8-s0")
    targets = [f"results/docvqa/a100/{c}/train/artifact.json" for c in cells]
    env = dict(workflow_env(), SBATCH_PARTITION="gpu-a100")  # the site's partition, from the environment
    env.pop("SBATCH_ACCOUNT", None)
    done = subprocess.run([str(BIN / "snakemake"), *targets, "-n", "-s", str(REPO / "Snakefile"),
                           "--profile", str(REPO / "profiles" / "slurm"),
                           "--configfile", str(REPO / "config" / "cluster.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = planned_resources(done.stdout)
    assert set(planned) == set(cells), done.stdout[-3000:]

    hw = yaml.safe_load((REPO / "config" / "cluster.yaml").read_text())["hardware"]["a100"]
    gpus, gres = hw["processes_per_node"], hw["gres_type"]
    node_cpus, node_mem = gpus * hw["cpus_per_process"], gpus * hw["mem_mb_per_process"]
    common = (f"-p gpu-a100 -t {hw['train_runtime_min']} --mem {node_mem}", f"--cpus-per-task={node_cpus}")

    one_node = sbatch_call(planned[cells[0]])
    assert all(part in one_node for part in common), one_node
    assert one_node.endswith(f" --gpus={gres}:{gpus}") and "--nodes" not in one_node and "--ntasks" not in one_node

    two_nodes = sbatch_call(planned[cells[1]])
    assert all(part in two_nodes for part in common), two_nodes
    assert f"--nodes=2 --ntasks=2 --cpus-per-task={node_cpus} --gpus-per-node={gres}:{gpus}" in two_nodes
    assert "--gpus=" not in two_nodes and "--ntasks-per-gpu" not in two_nodes
    # the rule's shell starts one torchrun per node itself: the plugin must not wrap it in srun -n1
    assert planned[cells[1]]["mpi"] == "srun" and "mpi" not in planned[cells[0]]
