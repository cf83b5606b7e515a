"""Runs a workflow script as one torchrun worker after printing where this rank runs.

``torchrun ... -m ftbench.torchrun_worker SCRIPT ARGS`` behaves like ``torchrun ... SCRIPT ARGS``
and adds one line per rank to the job's log, e.g. ``ftbench rank 2/4 on n2 (node rank 1, local rank 0)``:
on a multi-node Slurm job it shows which ranks run on which node. No torch import here.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys


def rank_line(environ=os.environ) -> str:
    # Slurm names the node of a task (emulated nodes share one host name); elsewhere the host name.
    node = environ.get("SLURMD_NODENAME") or socket.gethostname()
    return (
        f"ftbench rank {environ.get('RANK', '?')}/{environ.get('WORLD_SIZE', '?')} on {node} "
        f"(node rank {environ.get('GROUP_RANK', '?')}, local rank {environ.get('LOCAL_RANK', '?')})"
    )


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m ftbench.torchrun_worker SCRIPT [ARGS...]")
    script = argv[0]
    print(rank_line(), flush=True)
    # As `python SCRIPT ARGS` would: the script's folder first on the path, its name as argv[0].
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
