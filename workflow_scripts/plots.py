"""Draw the results figures (headline metric per cell, accuracy per peak memory, throughput per GPU
count, training loss per step) from the results files."""

import argparse
import sys
from pathlib import Path

from ftbench.plots import (
    accuracy_vs_memory,
    class_counts,
    headline_by_cell,
    load_train_logs,
    loss_by_step,
    throughput_by_gpus,
)
from ftbench.report import load_results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--before", type=Path, nargs="*", default=[], help="eval_before.json files")
    p.add_argument("--after", type=Path, nargs="*", default=[], help="eval_after.json files")
    p.add_argument("--speed", type=Path, nargs="*", default=[], help="speed.json files")
    p.add_argument("--train-log", type=Path, nargs="*", default=[], help="train/train_log.jsonl files")
    p.add_argument("--summary", type=Path, nargs="*", default=[],
                   help="results/data/<task>/summary.json files (a classification task's classes: its chance level)")
    p.add_argument("--headline", type=Path, required=True, help="output PNG: headline metric per cell")
    p.add_argument("--accuracy-memory", type=Path, required=True, help="output PNG: accuracy against peak memory")
    p.add_argument("--throughput", type=Path, required=True, help="output PNG: img/s against GPUs")
    p.add_argument("--loss", type=Path, required=True, help="output PNG: training loss against step")
    args = p.parse_args()
    try:
        befores, afters, speeds = (load_results(paths) for paths in (args.before, args.after, args.speed))
        summaries = load_results(args.summary)
        logs = load_train_logs(args.train_log)
    except (OSError, ValueError) as err:  # a bad results file: one line naming it, no figure written
        print(f"plots: {err}", file=sys.stderr)
        return 1
    classes = class_counts(summaries)
    headline_by_cell(befores, afters, args.headline, classes)
    accuracy_vs_memory(afters, speeds, args.accuracy_memory, classes)
    throughput_by_gpus(speeds, args.throughput)
    loss_by_step(logs, args.loss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
