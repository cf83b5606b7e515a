"""Draw the results figures (throughput per GPU count, accuracy per peak memory) from results files."""

import argparse
import sys
from pathlib import Path

from ftbench.plots import accuracy_vs_memory, throughput_by_gpus
from ftbench.report import load_results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--speed", type=Path, nargs="*", default=[], help="speed.json files")
    p.add_argument("--after", type=Path, nargs="*", default=[], help="eval_after.json files")
    p.add_argument("--throughput", type=Path, required=True, help="output PNG: img/s against GPUs")
    p.add_argument("--accuracy", type=Path, required=True, help="output PNG: accuracy against peak memory")
    args = p.parse_args()
    speeds = load_results(args.speed)
    throughput_by_gpus(speeds, args.throughput)
    accuracy_vs_memory(load_results(args.after), speeds, args.accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
