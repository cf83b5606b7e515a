"""What a conversion wrote, so that damage done afterwards is refused before training reads the data.

A conversion records, in ``manifest.json`` beside its jsonl files, the size of every image its
examples reference (paths relative to ``images/``)::

    {"rule": "convert", "images": {"train/train-0000000007_0.png": 5678, ...},
     "examples": {"docvqa_train.jsonl": "<sha256>", ...}}

``check_images_intact(jsonl)`` compares the images with it and refuses, in one line naming the
image, one that is gone or whose size changed (a file deleted, or truncated by a full disk or a
killed copy). Sizes and not hashes: one ``stat`` per image costs well under a second for the
largest task, where reading every image back would cost minutes before every training and
evaluation; a same-size overwrite goes unnoticed. Not mtimes either: copying a results folder
(``cp -r``, ``rsync`` without ``-t``) changes them and leaves the data as it was.

A converter's manifest is written only once every line of the jsonl files it publishes was checked
(``ftbench.data.staging``), with each file's sha256: ``converted_examples`` reads a file that is still
what was checked without checking it again, and checks one edited since (errors name file and line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .common import SPLITS, image_root_for, json_lines, jsonl_path, read_examples, write_json_atomic
from .leakage import file_hash

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


def example_hashes(folder: Path, task: str) -> dict[str, str]:
    """The sha256 of each split file in ``folder``, by file name: what was checked when it was written."""
    paths = (jsonl_path(folder, task, split) for split in SPLITS)
    return {path.name: file_hash(path) for path in paths if path.is_file()}


def write_manifest(folder: Path, task: str, rule: str) -> None:
    """``folder/manifest.json`` of a finished conversion; ``rule`` is the workflow rule that redoes it."""
    write_json_atomic(folder / MANIFEST, {"rule": rule, "images": image_sizes(folder, task),
                                          "examples": example_hashes(folder, task)})


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


def converted_examples(jsonl: str | os.PathLike) -> list[dict]:
    """The examples of ``jsonl``. A file a converter published (its manifest's rule is ``convert``)
    and unchanged since (the sha256 it recorded) was checked line by line as it was published, and is
    only parsed. Any other file is checked as ``read_examples`` checks it (errors name the file and
    line): one without a manifest, one edited after its conversion, or a custom import's, where the
    user's files were checked but not what the prompt template made of them."""
    jsonl = Path(jsonl)
    manifest = jsonl.parent / MANIFEST
    recorded = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    checked = recorded.get("rule") == "convert" and recorded.get("examples", {}).get(jsonl.name) == file_hash(jsonl)
    if not checked:
        return read_examples(jsonl)
    return [example for _, example in json_lines(jsonl)]
