"""Launch commands for distributed jobs (torchrun), one node or several under Slurm."""

from __future__ import annotations

import shlex

# The thread counts Snakemake sets to a job's ``threads`` (snakemake/shell.py). A job of N threads runs N
# torchrun processes, each of which would take all N: every command that starts PyTorch sets each to 1
# (with the others left at 2, two-process LoRA training on two cores ran 10x slower: scripts/bench_thread_env.py).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
ONE_THREAD = " ".join(f"{name}=1" for name in THREAD_VARIABLES)


def torchrun_command(nodes: int, procs_per_node: int, script: str, rdzv_port: int = 29500) -> str:
    """One node: ``torchrun --standalone``. Several nodes (the shell of a Slurm job whose resources
    set ``mpi``, see ``ftbench.cluster``): one torchrun per node through
    ``srun`` with explicit geometry, because the executor plugin removed the allocation's ``SLURM_*``
    variables from the job's environment; c10d rendezvous on the first host of the allocation,
    computed inside the srun'd command where srun sets ``SLURM_JOB_NODELIST`` again; the port varies
    with the job id so that jobs sharing a head node do not collide. Each rank first prints where it
    runs (``ftbench.torchrun_worker``), so the job's log shows the layout. Since Slurm 22.05 srun does
    not pass the job's --cpus-per-task on to its steps: the rule sets ``SRUN_CPUS_PER_TASK`` from its
    resources (a scheduler setting, so not in this command). The rule passes the command as a param
    derived from its resources, which Snakemake does not compare (no rerun when the checkout moves); the
    layout it launches is in the cell's path."""
    if nodes == 1:
        return f"torchrun --standalone --nnodes 1 --nproc-per-node {procs_per_node} {shlex.quote(script)}"
    inner = (
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1); '
        f"port=$(({rdzv_port} + SLURM_JOB_ID % 1000)); "
        f"exec torchrun --nnodes {nodes} --nproc-per-node {procs_per_node} "
        '--rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$head:$port" '
        f'-m ftbench.torchrun_worker {shlex.quote(script)} "$@"'
    )
    # bash -c '...' torchrun ARGS: "torchrun" is $0, the script's arguments are "$@".
    return (
        f"srun --nodes {nodes} --ntasks {nodes} --ntasks-per-node 1 --kill-on-bad-exit=1 "
        f"bash -c {shlex.quote(inner)} torchrun"
    )
