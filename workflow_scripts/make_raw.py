#!/usr/bin/env python
"""Generate a synthetic raw dataset in the real raw layout.

    python workflow_scripts/make_raw.py --task docvqa --out RAW_DIR --rows 200 --seed 0

Cauldron tasks write RAW_DIR/<task>/train-00000-of-00001.parquet with --rows rows.
ucf101 writes RAW_DIR/UCF101_subset.tar.gz; --rows is videos per class per split, either
one number (same for train/val/test) or TRAIN,VAL,TEST (e.g. 30,3,5).
"""

from __future__ import annotations

import argparse
import sys


def _rows(text: str):
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or TRAIN,VAL,TEST, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 3:
        return dict(zip(("train", "val", "test"), values))
    raise argparse.ArgumentTypeError(f"expected N or TRAIN,VAL,TEST, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    from ftbench.data.common import TASKS
    from ftbench.data.synthetic import make_raw
    from ftbench.schema import schema_default

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True, choices=TASKS)
    ap.add_argument("--out", required=True, help="raw data folder")
    ap.add_argument("--rows", required=True, type=_rows,
                    help="rows (Cauldron tasks) or videos per class per split (ucf101: N or TRAIN,VAL,TEST)")
    ap.add_argument("--seed", type=int, default=schema_default("data.seed"), help="default %(default)s (data.seed)")
    args = ap.parse_args(argv)
    if isinstance(args.rows, dict) and args.task != "ucf101":
        ap.error("--rows TRAIN,VAL,TEST is only valid for ucf101")
    try:
        path = make_raw(args.task, args.out, args.rows, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"make_raw.py: error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main  # known errors (bad input) -> one line, exit 1

    sys.exit(run_main(main, "make_raw.py"))
