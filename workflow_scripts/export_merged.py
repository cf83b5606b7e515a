#!/usr/bin/env python
"""Merge a LoRA/DoRA/QLoRA cell's adapter into its (unquantised, fp32) base and save a plain
checkpoint folder that loads like any base.

    python workflow_scripts/export_merged.py --artifact CELL/train/artifact.json --out CELL/merged
"""

import argparse
import sys
from pathlib import Path

from ftbench.errors import check_writable
from ftbench.export import export_merged


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, required=True, help="the cell's artifact.json (kind 'adapter')")
    p.add_argument("--out", type=Path, required=True, help="folder for the merged checkpoint (replaced)")
    args = p.parse_args()
    check_writable(args.out.parent)  # before any work; a full disk is then named in one line
    try:
        out = export_merged(args.artifact, args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"export_merged: {e}", file=sys.stderr)
        return 1
    print(f"export_merged: wrote {out}")
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main  # known errors (bad input) -> one line, exit 1

    sys.exit(run_main(main, "export_merged"))
