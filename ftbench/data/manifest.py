"""What a conversion wrote, so that damage done afterwards is refused before training reads the data.

A conversion records, in ``manifest.json`` beside its jsonl files, the size of every image its
examples reference (paths relative to ``images/``)::

    {"rule": "convert", "images": {"train/train-0000000007_0.png": 5678, ...}}

``check_images_intact(jsonl)`` compares the images with it and refuses, in one line naming the
image, one that is gone or whose size changed (a file deleted, or truncated by a full disk or a
killed copy). Sizes and not hashes: one ``stat`` per image costs well under a second for the
largest task, where reading every image back would cost minutes before every training and
evaluation; a same-size overwrite goes unnoticed. Not mtimes either: copying a results folder
(``cp -r``, ``rsync`` without ``-t``) changes them and leaves the data as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .common import SPLITS, image_root_for, json_lines, jsonl_path, write_json_atomic

MANIFEST = "manifest.json"


def image_sizes(folder: Path, task: str) -> dict[str, int]:
    """Size of every image the split files in ``folder`` reference, by path relative to ``images/``."""
    root = image_root_for(jsonl_path(folder, task, SPLITS[0]))
    sizes = {}
    for split in SPLITS:
        path = jsonl_path(folder, task, split)
        if not path.is_file():
            continue
        for _, example in json_lines(path):
            for turn in example["conversations"]:
                for rel in turn["images"]:
                    if rel not in sizes:
                        sizes[rel] = (root / rel).stat().st_size
    return dict(sorted(sizes.items()))


def write_manifest(folder: Path, task: str, rule: str) -> None:
    """``folder/manifest.json`` of a finished conversion; ``rule`` is the workflow rule that redoes it."""
    write_json_atomic(folder / MANIFEST, {"rule": rule, "images": image_sizes(folder, task)})


def check_images_intact(jsonl: str | os.PathLike) -> None:
    """Raises ``ValueError`` naming the first image, among those the conversion of ``jsonl`` wrote,
    that is missing or not the size the conversion wrote. A dataset without a manifest (converted
    before manifests were written) is not checked."""
    folder = Path(jsonl).parent
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    recorded = json.loads(manifest.read_text(encoding="utf-8"))
    root = image_root_for(jsonl)
    redo = f"rerun its conversion with snakemake --forcerun {recorded['rule']}"
    for rel, size in recorded["images"].items():
        path = root / rel
        try:
            found = path.stat().st_size
        except FileNotFoundError:
            raise ValueError(f"{path}: missing, conversion wrote {size} bytes (deleted after conversion?): "
                             f"{redo}") from None
        if found != size:
            raise ValueError(f"{path}: {found} bytes, conversion wrote {size} (damaged after conversion?): {redo}")
