"""Launch commands for distributed jobs (torchrun), one node or several under Slurm."""

from __future__ import annotations

import shlex


def torchrun_command(nodes: int, procs_per_node: int, script: str, rdzv_port: int = 29500) -> str:
    """One node: ``torchrun --standalone``. Several nodes (inside a Slurm allocation): one launcher
    per node through srun with explicit geometry, c10d rendezvous on the first host."""
    if nodes == 1:
        return f"torchrun --standalone --nnodes 1 --nproc-per-node {procs_per_node} {shlex.quote(script)}"
    inner = (
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1); '
        f"exec torchrun --nnodes {nodes} --nproc-per-node {procs_per_node} "
        f'--rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$head:{rdzv_port}" '
        f'{shlex.quote(script)} "$@"'
    )
    return (
        f"srun --nodes {nodes} --ntasks {nodes} --ntasks-per-node 1 --kill-on-bad-exit=1 "
        f"bash -c {shlex.quote(inner)} torchrun"
    )
