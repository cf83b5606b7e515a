#!/usr/bin/env python
"""Bring a custom task's common-format dataset into the workflow (results/data/<task>/).

    python workflow_scripts/import_custom.py --task receipts --train my/train.jsonl --val my/val.jsonl \
        --images my/images --out results/data/receipts [--test my/test.jsonl] [--prompt "Answer.\n{user}"]

Every file and image is validated first (the first problem is printed with its file and line, exit 1);
an earlier import in --out stays intact unless the new one is complete.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from ftbench.data.custom import import_custom
    from ftbench.data.staging import convert_staged

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--train", required=True, help="training jsonl (common format)")
    ap.add_argument("--val", required=True, help="evaluation jsonl")
    ap.add_argument("--test", default=None, help="optional test jsonl")
    ap.add_argument("--images", required=True, help="folder the jsonl image paths are relative to")
    ap.add_argument("--out", required=True, help="output folder, results/data/<task>")
    ap.add_argument("--prompt", default=None, help="template of every user turn; {user} = the dataset's text")
    # The workflow always passes the task's metric (the schema requires it of a custom task, with no
    # default: eval_settings passes it only when configured); accuracy is for an import run by hand.
    ap.add_argument("--metric", default="accuracy", choices=["accuracy", "anls", "auroc"])
    ap.add_argument("--max-image-pixels", type=int, default=None,
                    help="refuse larger images (default: the schema's tasks.<task>.max_image_pixels)")
    args = ap.parse_args(argv)
    splits = {"train": args.train, "val": args.val}
    if args.test:
        splits["test"] = args.test
    summary = convert_staged(
        args.out, args.task,
        lambda staging: import_custom(args.task, splits, args.images, staging, prompt=args.prompt, metric=args.metric,
                                      max_image_pixels=args.max_image_pixels),
        validate=False,  # import_custom validated the given files and images itself
    )
    print(json.dumps(summary["counts"]))
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main

    sys.exit(run_main(main, "import_custom.py"))
