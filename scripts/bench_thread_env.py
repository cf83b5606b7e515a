#!/usr/bin/env python
"""Training speed of a multi-process cell with the thread counts Snakemake leaves, against one thread each.

    make run    # once: the tiny base and the converted hateful_memes data under results/
    nice .venv/bin/python scripts/bench_thread_env.py                       # lora and full, 2 processes
    .venv/bin/python scripts/bench_thread_env.py --strategies lora --repeats 1   # a quick look

Snakemake gives a job with ``threads: N`` OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, ... = N.
The rules override each of them with 1 for every process (``ftbench.launch.ONE_THREAD``); before,
they overrode OMP_NUM_THREADS only. This runs ``workflow_scripts/speed.py`` under torchrun exactly as
the speed rule does, for each strategy, with (a) every variable at 1 and (b) OMP_NUM_THREADS=1 with
the others at the process count (what a Snakemake job of ``--procs`` threads got), alternating the
variants ``--repeats`` times, and prints images/s (median, min-max) with the machine and versions.
A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ftbench.config import Cell, load_config, loader_settings, train_settings  # noqa: E402
from ftbench.launch import THREAD_VARIABLES  # noqa: E402
from ftbench.provenance import cpu_model  # noqa: E402


def run_speed(cell: Cell, settings: dict, base: Path, train: Path, env: dict, warmup: int, measured: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speed.json"
        command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nnodes", "1",
                   "--nproc-per-node", str(cell.procs), str(REPO / "workflow_scripts" / "speed.py"),
                   "--base", str(base), "--train", str(train), "--settings", json.dumps(settings),
                   "--task", cell.task, "--hardware", cell.hardware, "--cell", json.dumps(cell.as_record()),
                   "--warmup-steps", str(warmup), "--measured-steps", str(measured), "--out", str(out)]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
        return json.loads(out.read_text())["images_per_s"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=REPO / "config.yaml")
    p.add_argument("--task", default="hateful_memes")
    p.add_argument("--strategies", nargs="+", default=["lora", "full"])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--base", type=Path, default=REPO / "results" / "base" / "tiny")
    p.add_argument("--train", type=Path, help="default: results/data/TASK/TASK_train.jsonl")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--measured-steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    train = args.train or REPO / "results" / "data" / args.task / f"{args.task}_train.jsonl"
    config = load_config(args.config)
    import torch

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}, torch {torch.__version__}; {args.task}, {args.procs} processes, "
          f"{args.warmup_steps} warm-up + {args.measured_steps} measured steps, {args.repeats} repeats")
    one = {name: "1" for name in THREAD_VARIABLES}
    left = {name: "1" if name == "OMP_NUM_THREADS" else str(args.procs) for name in THREAD_VARIABLES}
    variants = {"every variable 1": one, f"OMP 1, the others {args.procs}": left}
    for strategy in args.strategies:
        cell = Cell(args.task, "cpu", strategy, "bf16", "sdpa", 1, args.procs, 0)
        settings = train_settings(config, cell) | loader_settings(config, "cpu")
        figures: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, values in variants.items():
                env = dict(os.environ, **values)
                figures[name].append(run_speed(cell, settings, args.base, train, env, args.warmup_steps,
                                               args.measured_steps))
        for name, values in figures.items():
            print(f"{strategy:>6} {name:<22} img/s median {statistics.median(values):7.1f} "
                  f"(min {min(values):.1f}, max {max(values):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
