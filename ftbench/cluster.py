"""Slurm resources of the training and speed jobs, derived from the matrix cell and the hardware table.

The keys are those of snakemake-executor-plugin-slurm (https://snakemake.github.io/snakemake-plugin-catalog/plugins/executor/slurm.html):

- one node, G GPUs: ``gpu=G`` (+ ``gpu_model``), i.e. ``sbatch --gpus=[type:]G``; the rule runs
  ``torchrun --standalone`` inside the plugin's ``srun -n1``;
- N nodes: ``nodes=N, tasks=N, mpi="srun", tasks_per_gpu=0, slurm_extra="--gpus-per-node=[type:]G"``;
  ``mpi`` makes the plugin run the rule's shell on the first node, which starts one ``torchrun`` per
  node with its own ``srun`` (``ftbench.launch``). GPUs go through ``slurm_extra`` because ``gpu`` is a
  count for the whole job and ``tasks`` would become ``--ntasks-per-gpu`` on a GPU job;
- CPU-only hardware requests no GPUs (the embedded ``cpu`` hardware, the local CI cluster).

One Slurm task per node runs torchrun with all the node's processes, so CPUs and memory of a node
are the per-process amounts times the processes per node. Partition and account come from the
hardware entry, else from Slurm's own ``SBATCH_PARTITION`` / ``SBATCH_ACCOUNT`` environment
variables, else they are left to the plugin and the cluster's defaults. Resources never change a
result (they are not rerun triggers); the layout that does is part of the cell's path.

No torch here: the Snakefile imports this module to plan hundreds of jobs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from ftbench.config import Cell
from ftbench.schema import hardware_default

SCHEDULER_KEYS = ("cpus_per_process", "mem_mb_per_process", "train_runtime_min", "speed_runtime_min",
                  "eval_runtime_min")


# One place for the defaults: the schema, which documents the keys.
DEFAULTS = {key: hardware_default(key) for key in SCHEDULER_KEYS}
JOB_KINDS = ("train", "speed")
# Every key a rule declares; a value of None removes the key from that job's resources.
RESOURCE_KEYS = (
    "runtime", "mem_mb", "cpus_per_task", "slurm_partition", "slurm_account", "constraint",
    "gpu", "gpu_model", "nodes", "tasks", "mpi", "tasks_per_gpu", "slurm_extra",
)


def _site_setting(hw: dict, key: str, env_var: str, environ: Mapping[str, str]) -> str | None:
    return hw.get(key) or environ.get(env_var) or None


def _hardware(config: dict, hardware: str) -> dict:
    return {**DEFAULTS, **{k: v for k, v in config["hardware"][hardware].items() if v is not None}}


def _node_resources(hw: dict, procs: int, runtime: int, environ: Mapping[str, str] | None) -> dict:
    """Every resource key, with what one node of ``procs`` processes needs; GPUs and geometry unset."""
    environ = os.environ if environ is None else environ
    res = dict.fromkeys(RESOURCE_KEYS)
    res.update(
        runtime=runtime,
        mem_mb=int(hw["mem_mb_per_process"]) * procs,
        cpus_per_task=int(hw["cpus_per_process"]) * procs,
        slurm_partition=_site_setting(hw, "partition", "SBATCH_PARTITION", environ),
        slurm_account=_site_setting(hw, "account", "SBATCH_ACCOUNT", environ),
        constraint=hw.get("constraint"),
    )
    return res


def job_resources(config: dict, cell: Cell, kind: str = "train", environ: Mapping[str, str] | None = None) -> dict:
    """Slurm resources of the ``kind`` job ("train" or "speed") of ``cell``; keys with value None
    are not requested."""
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind {kind!r} is not one of {', '.join(JOB_KINDS)}")
    hw = _hardware(config, cell.hardware)
    procs = cell.procs
    res = _node_resources(hw, procs, int(hw[f"{kind}_runtime_min"]), environ)
    gpus = hw["device"] == "cuda"
    gres_type = hw.get("gres_type")
    if cell.nodes == 1:
        if gpus:
            res.update(gpu=procs, gpu_model=gres_type)
    else:
        res.update(nodes=cell.nodes, tasks=cell.nodes, mpi="srun")
        if gpus:
            per_node = f"{gres_type}:{procs}" if gres_type else str(procs)
            res.update(tasks_per_gpu=0, slurm_extra=f"--gpus-per-node={per_node}")
    return res


def rule_resources(config: dict, cell_of: Callable, kind: str) -> dict[str, Callable]:
    """``resources:`` of a rule whose wildcards name a cell: one callable per key (Snakemake drops a
    key whose callable returns None), e.g. ``resources: **rule_resources(config, cell_of, "train")``."""
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind {kind!r} is not one of {', '.join(JOB_KINDS)}")

    def value(key):
        return lambda wildcards: job_resources(config, cell_of(wildcards), kind)[key]

    return {key: value(key) for key in RESOURCE_KEYS}


def eval_resources(config: dict, hardware: str, environ: Mapping[str, str] | None = None) -> dict:
    """Slurm resources of an evaluation job on ``hardware``: one process, one GPU on GPU hardware."""
    hw = _hardware(config, hardware)
    res = _node_resources(hw, 1, int(hw["eval_runtime_min"]), environ)
    if hw["device"] == "cuda":
        res.update(gpu=1, gpu_model=hw.get("gres_type"))
    return res


def eval_rule_resources(config: dict) -> dict[str, Callable]:
    """``resources:`` of the evaluation rules (their wildcards name the hardware)."""

    def value(key):
        return lambda wildcards: eval_resources(config, wildcards.hardware)[key]

    return {key: value(key) for key in RESOURCE_KEYS}
