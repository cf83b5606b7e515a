#!/usr/bin/env python
"""Convert a raw dataset to the common jsonl format.

    python workflow_scripts/convert.py --task nlvr2 --raw RAW_DIR --out OUT_DIR --n-val 500 --n-test 0
    python workflow_scripts/convert.py --task ucf101 --raw RAW_DIR --out OUT_DIR --num-frames 8

Cauldron tasks read RAW_DIR/<task>/*.parquet (or RAW_DIR itself if it is the subset folder);
first --n-val rows -> val, next --n-test rows -> test, rest -> train (an option not given is the
config schema's default, here 500 and 0: the recipe's train[:500] evaluation). ucf101 reads RAW_DIR/UCF101_subset/ or
RAW_DIR/UCF101_subset.tar.gz (or a path to either); its splits come from the archive folders.

Real sources (docs/datasets.md): --source cauldron|nielsr_docvqa|ucf101_subset|official with
--raw the local folder (or a hub id plus --revision <40-hex commit>), --split-policy
cookbook|official, --processes N; e.g.

    python workflow_scripts/convert.py --task nlvr2 --source official --split-policy official \
        --raw /data/nlvr/nlvr2 --out OUT_DIR --processes 2
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from ftbench.data.common import TASKS, check_task
    from ftbench.data.sources import convert_source
    from ftbench.data.staging import convert_staged
    from ftbench.schema import task_default

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    ap.add_argument("--raw", required=True, help="raw data folder (or the ucf101 tarball)")
    ap.add_argument("--out", required=True, help="output folder (one per task)")
    # Defaults: the config schema's of tasks.<task>.<option> (None: not given, the schema's then).
    ap.add_argument("--n-val", type=int, default=None,
                    help=f"Cauldron tasks: rows for val (default {task_default('n_val')})")
    ap.add_argument("--n-test", type=int, default=None,
                    help=f"Cauldron tasks: rows for test (default {task_default('n_test')})")
    ap.add_argument("--num-frames", type=int, default=None,
                    help=f"ucf101: frames per video (default {task_default('num_frames')})")
    ap.add_argument("--source", default=task_default("source"),
                    help="synthetic, cauldron, nielsr_docvqa, ucf101_subset or official (default %(default)s)")
    ap.add_argument("--split-policy", default=task_default("split_policy"), choices=("cookbook", "official"))
    ap.add_argument("--revision", default=None, help="pinned hub commit when --raw is a hub id")
    ap.add_argument("--eval-path", default=None,
                    help="docvqa from the Cauldron: nielsr/docvqa_1200_examples copy (its test rows -> val)")
    ap.add_argument("--eval-revision", default=None, help="pinned hub commit when --eval-path is a hub id")
    ap.add_argument("--ucf-split", type=int, default=task_default("ucf_split"), choices=(1, 2, 3),
                    help="official UCF-101 split list")
    ap.add_argument("--processes", type=int, default=task_default("processes"),
                    help="conversion processes (default %(default)s)")
    ap.add_argument("--max-image-pixels", type=int, default=None,
                    help="refuse larger images (default: the schema's tasks.<task>.max_image_pixels)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="tqdm bars (default: only on a terminal)")
    args = ap.parse_args(argv)
    check_task(args.task)  # one line, unlike argparse's usage block
    if args.task == "ucf101" and (args.n_val is not None or args.n_test is not None):
        ap.error("--n-val/--n-test do not apply to ucf101 (splits come from the archive)")
    if args.task != "ucf101" and args.num_frames is not None:
        ap.error("--num-frames only applies to ucf101")
    kwargs = {"progress": args.progress, "processes": args.processes, "split_policy": args.split_policy,
              "revision": args.revision, "eval_path": args.eval_path, "eval_revision": args.eval_revision,
              "ucf_split": args.ucf_split}
    given = {"num_frames": args.num_frames} if args.task == "ucf101" else {"n_val": args.n_val, "n_test": args.n_test}
    # else convert_source's (the schema's)
    kwargs.update({key: value for key, value in given.items() if value is not None})
    # Converted into a staging folder, validated (images too), then moved into --out: bad input, a
    # full disk or a kill leaves an earlier conversion there intact, and a byte-identical one leaves
    # it as it is (same mtimes). manifest.json beside the jsonl lets training refuse damaged images.
    # The other tasks' images are the source's bytes, decoded once to check them; ucf101's are JPEGs
    # the converter encoded itself from decoded frames, checked from their headers only.
    summary = convert_staged(args.out, args.task,
                             lambda staging: convert_source(args.task, args.source, args.raw, staging, **kwargs),
                             max_image_pixels=args.max_image_pixels, decode_images=args.task != "ucf101")
    print(json.dumps(summary["counts"]))
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main

    sys.exit(run_main(main, "convert.py"))
