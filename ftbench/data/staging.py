"""Conversions that cannot damage what is already there.

A converter writes into a hidden staging folder inside ``OUT`` (same filesystem: moves are renames).
Only when it finished and every split validates (``ftbench.data.validate``) is the staged output
moved into ``OUT``: images and side files first, then the split jsonl files, ``summary.json`` last.
So a conversion that fails on bad input, or is killed, leaves an earlier conversion in ``OUT``
untouched (same bytes, same mtimes) and no new final file; the next run removes the leftover
staging folder. A conversion whose every file is byte-identical to the published one publishes
nothing: ``OUT`` keeps its files, inodes and mtimes (Snakemake then touches the rule's declared
outputs; the cells downstream stay done through its recorded input checksums, rules/data.smk).
The staged conversion also gets ``manifest.json`` (``ftbench.data.manifest``): the image sizes
that training checks before it reads the data.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ftbench.errors import check_writable

from .common import SPLITS, SUMMARY, jsonl_path
from .manifest import write_manifest
from .validate import REQUIRED_SPLITS, check_dataset

STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".replaced-"


def remove_leftovers(out: Path) -> None:
    """Staging and replaced folders of an earlier, killed run (``rmtree`` never follows a symlink
    inside them, so linked image folders of custom datasets are left alone)."""
    for entry in out.iterdir():
        if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def validate_staged(staging: Path, out: Path, task: str, max_image_pixels: int | None = None,
                    decode_images: bool = True) -> None:
    """The first problem of any split (file and line), as ``ValueError``; images are checked too
    (``max_image_pixels``: None is the schema's default; ``decode_images=False``: from their headers
    only, ``check_dataset``). The message names the file as it would have been published in ``out``."""
    for split in SPLITS:
        path = jsonl_path(staging, task, split)
        if not path.exists() and split not in REQUIRED_SPLITS:
            continue
        try:
            check_dataset(path, staging / "images", allow_empty=split not in REQUIRED_SPLITS,
                          max_image_pixels=max_image_pixels, task=task, decode_images=decode_images)
        except ValueError as e:
            raise ValueError(str(e).replace(str(staging), str(out))) from None


def publish(staging: Path, out: Path, task: str) -> None:
    """Moves a validated staging folder's content into ``out``, final markers last."""
    finals = [jsonl_path(staging, task, s).name for s in SPLITS] + [SUMMARY]
    # Before anything is removed: on a full disk even a folder may not be created.
    trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=out))
    # An old final file must not sit next to new images: remove those first.
    for name in finals:
        (out / name).unlink(missing_ok=True)
    try:
        for entry in sorted(staging.iterdir()):
            if entry.name in finals:
                continue
            target = out / entry.name
            if target.is_symlink() or target.exists():
                os.replace(target, trash / entry.name)
            os.replace(entry, target)
        for name in finals:
            if (staging / name).exists():
                os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def same_entry(staged: Path, published: Path) -> bool:
    """Whether ``published`` holds exactly what ``staged`` holds: the same link target, the same
    names in a folder (recursively), the same bytes in a file."""
    if staged.is_symlink() or published.is_symlink():
        return staged.is_symlink() and published.is_symlink() and os.readlink(staged) == os.readlink(published)
    if staged.is_dir():
        if not published.is_dir():
            return False
        names = sorted(os.listdir(staged))
        return names == sorted(os.listdir(published)) and all(same_entry(staged / n, published / n) for n in names)
    return published.is_file() and filecmp.cmp(staged, published, shallow=False)


def same_as_published(staging: Path, out: Path) -> bool:
    """Whether every entry of the staging folder is already in ``out``, byte for byte."""
    # Files first: a changed jsonl is found before thousands of images are read.
    entries = sorted(staging.iterdir(), key=lambda entry: (entry.is_dir(), entry.name))
    return all(same_entry(entry, out / entry.name) for entry in entries)


def convert_staged(out_dir: str | os.PathLike, task: str, convert_into: Callable[[Path], dict],
                   validate: bool = True, log: Callable[[str], None] = print,
                   max_image_pixels: int | None = None, decode_images: bool = True) -> dict:
    """Runs ``convert_into(staging_folder) -> summary``, validates the result (unless ``convert_into``
    validated its input itself; ``decode_images=False``: its images from their headers only, for a
    converter that encoded every image itself), records its images (``manifest.json``) and publishes
    it into ``out_dir``, unless ``out_dir`` holds the same bytes already. Any error leaves
    ``out_dir``'s earlier content as it was."""
    out = check_writable(out_dir)
    remove_leftovers(out)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        summary = convert_into(staging)
        if validate:
            validate_staged(staging, out, task, max_image_pixels, decode_images)
        # A custom dataset is redone by its import rule (rules/data.smk), every other by convert.
        write_manifest(staging, task, rule="import_custom" if summary.get("source") == "custom" else "convert")
        if same_as_published(staging, out):
            log(f"{out}: the conversion is byte-identical to the published one: kept as it is")
        else:
            publish(staging, out, task)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
