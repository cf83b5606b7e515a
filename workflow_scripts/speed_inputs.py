"""No-download speed inputs: `base` writes the preset's full architecture with random weights,
`docvqa-shape` writes synthetic pages with the DocVQA shape (ftbench/speed_inputs.py)."""

import argparse
import json
import sys
from pathlib import Path

from ftbench.speed_inputs import build_random_base, write_docvqa_shape


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="what", required=True)
    base = sub.add_parser("base", help="random-weight base checkpoint")
    base.add_argument("--preset", required=True)
    base.add_argument("--out", type=Path, required=True)
    base.add_argument("--seed", type=int, default=0)
    pages = sub.add_parser("docvqa-shape", help="DocVQA-shaped samples in the common format")
    pages.add_argument("--samples", type=int, required=True)
    pages.add_argument("--out", type=Path, required=True)
    pages.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.what == "base":
        print(json.dumps(build_random_base(args.preset, args.out, seed=args.seed)))
    else:
        print(write_docvqa_shape(args.out, args.samples, seed=args.seed))
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main  # known errors (bad input) -> one line, exit 1

    sys.exit(run_main(main, "speed_inputs"))
