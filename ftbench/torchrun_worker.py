"""Runs a workflow script as one torchrun worker after printing where this rank runs.

``torchrun ... -m ftbench.torchrun_worker SCRIPT ARGS`` behaves like ``torchrun ... SCRIPT ARGS``
and adds one line per rank to the job's log, e.g. ``ftbench rank 2/4 on n2 (node rank 1, local rank 0)``:
on a multi-node Slurm job it shows which ranks run on which node. No torch import here.

``exit_when_launcher_dies()`` ends a worker whose torchrun agent is gone; the training script calls
it first thing, whether torchrun runs it directly (one node) or through this module.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys
import threading
import time


def rank_line(environ=os.environ) -> str:
    # Slurm names the node of a task (emulated nodes share one host name); elsewhere the host name.
    node = environ.get("SLURMD_NODENAME") or socket.gethostname()
    return (
        f"ftbench rank {environ.get('RANK', '?')}/{environ.get('WORLD_SIZE', '?')} on {node} "
        f"(node rank {environ.get('GROUP_RANK', '?')}, local rank {environ.get('LOCAL_RANK', '?')})"
    )


def exit_when_launcher_dies(poll_s: float = 1.0, environ=os.environ) -> None:
    """Under torchrun, starts a daemon thread that ends this process within ``poll_s`` seconds of
    its launcher's death.

    torchrun starts each worker in a session of its own (``start_new_session=True`` in
    torch/distributed/elastic/multiprocessing/subprocess_handler/subprocess_handler.py), so a
    SIGKILL of Snakemake's process group (``timeout -s KILL``, ``kill -9 -PGID``, the OOM killer
    taking the launcher) kills the agent but not its workers, and the agent is not there to end
    them: they were seen to hang on for over half an hour (and a worker that does not wait for peers
    would train on, into the folder of the cell's next attempt). An orphan is adopted by init or a
    subreaper, so its parent pid changes (getppid(2)): that is the sign. Polling rather than
    ``prctl(PR_SET_PDEATHSIG)``: that signal fires when the parent *thread* that forked exits, not
    the parent process (prctl(2), https://man7.org/linux/man-pages/man2/prctl.2.html), and polling
    leaves a line in the log. The parent is read when this is called: a launcher that died during
    the interpreter's start (~0.1 s) goes unnoticed."""
    if "TORCHELASTIC_RUN_ID" not in environ:  # torchrun sets it for its workers only
        return
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        try:
            print(f"ftbench rank {environ.get('RANK', '?')}: its launcher (torchrun, pid {launcher}) is gone: exiting",
                  file=sys.stderr, flush=True)
        except OSError:  # the log's reader may be gone too
            pass
        # No cleanup: what is half-written lies in hidden or temporary files, never in a result
        # (ftbench.atomic, the checkpoint's .partial folder), and cleanup could block on dead peers.
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-launcher-dies", daemon=True).start()


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
