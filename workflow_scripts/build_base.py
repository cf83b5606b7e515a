"""Build the tiny base model of the embedded default (tokenizer + pretraining, see ftbench.pretrain)."""

import argparse
import json
import sys
from pathlib import Path

from ftbench.errors import check_writable
from ftbench.pretrain import build_tiny_base


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--train", type=Path, nargs="+", required=True, help="the tasks' training jsonl files")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--settings", required=True, help="JSON: steps, learning_rate, global_batch, captions, seed")
    args = p.parse_args()
    check_writable(args.out.parent)  # before any work; a full disk is then named in one line
    try:
        info = build_tiny_base(args.train, args.out, **json.loads(args.settings), log=lambda m: print(m, flush=True))
    except (ValueError, FileNotFoundError) as e:
        print(f"build_base: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main  # known errors (bad input) -> one line, exit 1

    sys.exit(run_main(main, "build_base"))
