"""Slurm resources from the matrix cell and the hardware table; the multi-node launch command."""

import copy
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftbench.cluster import DEFAULTS, RESOURCE_KEYS, job_resources, rule_resources
from ftbench.config import Cell, ConfigError, load_config, validate_config
from ftbench.launch import torchrun_command
from ftbench.schema import SCHEMA

REPO = Path(__file__).resolve().parents[1]
NO_ENV = {}


@pytest.fixture(scope="module")
def cluster():
    return load_config(REPO / "config" / "cluster.yaml")


@pytest.fixture(scope="module")
def default():
    return load_config(REPO / "config.yaml")


def a100_cell(nodes, procs):
    return Cell("docvqa", "a100", "lora", "bf16", "flash_attention_2", nodes, procs, 0)


def requested(res):
    return {k: v for k, v in res.items() if v is not None}


def test_one_a100_node_requests_its_gpus_by_type_and_scales_cpus_and_memory(cluster):
    hw = cluster["hardware"]["a100"]
    res = job_resources(cluster, a100_cell(1, hw["processes_per_node"]), environ=NO_ENV)
    assert requested(res) == {
        "gpu": 8, "gpu_model": "a100",
        "cpus_per_task": 8 * hw["cpus_per_process"], "mem_mb": 8 * hw["mem_mb_per_process"],
        "runtime": hw["train_runtime_min"],
    }
    assert res["cpus_per_task"] == 64 and res["runtime"] == 720
    # a speed job: same geometry, its own wall time
    speed = job_resources(cluster, a100_cell(1, 8), "speed", environ=NO_ENV)
    assert speed["runtime"] == hw["speed_runtime_min"] != res["runtime"] and speed["gpu"] == 8
    # fewer processes than GPUs on the node: only those GPUs, CPUs and memory
    two = job_resources(cluster, a100_cell(1, 2), environ=NO_ENV)
    assert (two["gpu"], two["cpus_per_task"], two["mem_mb"]) == (2, 2 * hw["cpus_per_process"],
                                                                 2 * hw["mem_mb_per_process"])


def test_several_a100_nodes_take_the_mpi_path_with_gpus_per_node(cluster):
    for nodes in (2, 4):
        res = job_resources(cluster, a100_cell(nodes, 8), environ=NO_ENV)
        assert requested(res) == {
            "nodes": nodes, "tasks": nodes, "mpi": "srun", "tasks_per_gpu": 0,
            "slurm_extra": "--gpus-per-node=a100:8",
            "cpus_per_task": 64, "mem_mb": 8 * 64000, "runtime": 720,
        }
    # `gpu` would be a count for the whole job: never set on several nodes
    assert job_resources(cluster, a100_cell(2, 8), environ=NO_ENV)["gpu"] is None


def test_gpus_without_a_gres_type_are_requested_by_count(cluster):
    cfg = copy.deepcopy(cluster)
    cfg["hardware"]["a100"]["gres_type"] = None
    assert job_resources(cfg, a100_cell(1, 4), environ=NO_ENV)["gpu_model"] is None
    assert job_resources(cfg, a100_cell(2, 4), environ=NO_ENV)["slurm_extra"] == "--gpus-per-node=4"


def test_cpu_hardware_requests_no_gpus(default):
    one = job_resources(default, Cell("docvqa", "cpu", "lora", "bf16", "sdpa", 1, 2, 0), environ=NO_ENV)
    assert one["gpu"] is one["gpu_model"] is one["slurm_extra"] is one["nodes"] is one["mpi"] is None
    two = job_resources(default, Cell("docvqa", "cpu", "lora", "bf16", "sdpa", 2, 2, 0), environ=NO_ENV)
    assert requested(two) == {"nodes": 2, "tasks": 2, "mpi": "srun", "cpus_per_task": 2 * DEFAULTS["cpus_per_process"],
                              "mem_mb": 2 * DEFAULTS["mem_mb_per_process"], "runtime": DEFAULTS["train_runtime_min"]}


def test_defaults_are_the_schemas():
    entry = yaml.safe_load(SCHEMA.read_text())["properties"]["hardware"]["additionalProperties"]["properties"]
    assert DEFAULTS == {k: entry[k]["default"] for k in DEFAULTS}


def test_partition_and_account_come_from_the_hardware_entry_then_the_environment(cluster):
    cell = a100_cell(1, 8)
    env = {"SBATCH_PARTITION": "gpu", "SBATCH_ACCOUNT": "proj1"}
    res = job_resources(cluster, cell, environ=env)
    assert (res["slurm_partition"], res["slurm_account"]) == ("gpu", "proj1")
    cfg = copy.deepcopy(cluster)
    cfg["hardware"]["a100"].update(partition="a100q", account="ml", constraint="nvlink")
    res = job_resources(cfg, cell, environ=env)
    assert (res["slurm_partition"], res["slurm_account"], res["constraint"]) == ("a100q", "ml", "nvlink")
    # neither: left to the cluster's default partition and the plugin's account guess
    res = job_resources(cluster, cell, environ=NO_ENV)
    assert res["slurm_partition"] is None and res["slurm_account"] is None
    # the process environment is the default
    old = os.environ.get("SBATCH_PARTITION")
    os.environ["SBATCH_PARTITION"] = "from-env"
    try:
        assert job_resources(cluster, cell)["slurm_partition"] == "from-env"
    finally:
        os.environ.pop("SBATCH_PARTITION") if old is None else os.environ.__setitem__("SBATCH_PARTITION", old)


def test_hardware_table_values_are_validated(cluster):
    cfg = copy.deepcopy(cluster)
    cfg["hardware"]["a100"]["mem_mb_per_process"] = 0
    with pytest.raises(ConfigError, match=r"hardware\.a100\.mem_mb_per_process"):
        validate_config(cfg)
    cfg = copy.deepcopy(cluster)
    cfg["hardware"]["a100"]["gres_type"] = "a100 80g"  # sbatch --gpus=TYPE:N takes no spaces
    with pytest.raises(ConfigError, match=r"hardware\.a100\.gres_type"):
        validate_config(cfg)


def test_rule_resources_are_one_callable_per_key(cluster):
    class Wildcards:
        task, hardware, cell = "docvqa", "a100", "lora-bf16-flash_attention_2-2x8-s0"

    def cell_of(wc):
        return Cell.parse(wc.task, wc.hardware, wc.cell)

    callables = rule_resources(cluster, cell_of, "train")
    assert set(callables) == set(RESOURCE_KEYS)
    values = {k: f(Wildcards()) for k, f in callables.items()}
    assert values == job_resources(cluster, cell_of(Wildcards()), "train")
    with pytest.raises(ValueError, match="job kind"):
        job_resources(cluster, cell_of(Wildcards()), "evaluate")
    with pytest.raises(ValueError, match="job kind"):
        rule_resources(cluster, cell_of, "evaluate")


def fake_tool(folder: Path, name: str, body: str):
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_multi_node_command_finds_the_head_inside_srun_and_passes_the_arguments(tmp_path):
    """Runs the generated command with stand-ins for srun, scontrol and torchrun: srun sets the
    allocation's node list (as a real srun does inside the job), torchrun prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # srun: drop its options, run the command once per node with Slurm's per-task variables
    fake_tool(bin_dir, "srun", 'echo "srun $*" >&2\nwhile [ "$1" != bash ]; do shift; done\n'
              'for node in 0 1; do SLURM_JOB_NODELIST="n[1-2]" SLURM_NODEID=$node "$@" || exit 1; done\n')
    fake_tool(bin_dir, "scontrol", '[ "$*" = "show hostnames n[1-2]" ] && printf "n1\\nn2\\n"\n')
    fake_tool(bin_dir, "torchrun", 'echo "torchrun node $SLURM_NODEID: $*"\n')
    command = torchrun_command(2, 4, "/w/train.py")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="123456")
    env.pop("SLURM_JOB_NODELIST", None)  # scrubbed by the executor plugin before the rule's shell
    done = subprocess.run(f"{command} --out 'a b' --settings '{{\"x\": 1}}'", shell=True, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "srun --nodes 2 --ntasks 2 --ntasks-per-node 1 --kill-on-bad-exit=1" in done.stderr
    lines = done.stdout.splitlines()
    expected = ("--nnodes 2 --nproc-per-node 4 --rdzv-id 123456 --rdzv-backend c10d --rdzv-endpoint n1:29956 "
                '-m ftbench.torchrun_worker /w/train.py --out a b --settings {"x": 1}')
    assert lines == [f"torchrun node 0: {expected}", f"torchrun node 1: {expected}"]
    # one node: standalone, no srun
    assert torchrun_command(1, 8, "/w/train.py") == "torchrun --standalone --nnodes 1 --nproc-per-node 8 /w/train.py"


def test_worker_prints_the_rank_and_runs_the_script_as_main(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import sys\nprint('main' if __name__ == '__main__' else __name__, sys.argv)\nsys.exit(3)\n")
    env = dict(os.environ, RANK="2", WORLD_SIZE="4", LOCAL_RANK="0", GROUP_RANK="1", SLURMD_NODENAME="n2",
               PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "ftbench.torchrun_worker", str(script), "--x", "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == [
        "ftbench rank 2/4 on n2 (node rank 1, local rank 0)",
        f"main {[str(script), '--x', '1']}",
    ]
