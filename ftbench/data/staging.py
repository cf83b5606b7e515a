"""Conversions that cannot damage what is already there.

A converter writes into a hidden staging folder inside ``OUT`` (same filesystem: moves are renames).
Only when it finished and every split validates (``ftbench.data.validate``) is the staged output
moved into ``OUT``: images and side files first, then the split jsonl files, ``summary.json`` last.
So a conversion that fails on bad input, or is killed, leaves an earlier conversion in ``OUT``
untouched (same bytes, same mtimes) and no new final file; the next run removes the leftover
staging folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ftbench.errors import check_writable

from .common import SPLITS, jsonl_path
from .validate import REQUIRED_SPLITS, check_dataset

STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".replaced-"
SUMMARY = "summary.json"


def remove_leftovers(out: Path) -> None:
    """Staging and replaced folders of an earlier, killed run (``rmtree`` never follows a symlink
    inside them, so linked image folders of custom datasets are left alone)."""
    for entry in out.iterdir():
        if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def validate_staged(staging: Path, out: Path, task: str) -> None:
    """The first problem of any split (file and line), as ``ValueError``; images are checked too. The
    message names the file as it would have been published in ``out``."""
    for split in SPLITS:
        path = jsonl_path(staging, task, split)
        if not path.exists() and split not in REQUIRED_SPLITS:
            continue
        try:
            check_dataset(path, staging / "images", allow_empty=split not in REQUIRED_SPLITS)
        except ValueError as e:
            raise ValueError(str(e).replace(str(staging), str(out))) from None


def publish(staging: Path, out: Path, task: str) -> None:
    """Moves a validated staging folder's content into ``out``, final markers last."""
    finals = [jsonl_path(staging, task, s).name for s in SPLITS] + [SUMMARY]
    # An old final file must not sit next to new images: remove those first.
    for name in finals:
        (out / name).unlink(missing_ok=True)
    trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=out))
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


def convert_staged(out_dir: str | os.PathLike, task: str, convert_into: Callable[[Path], dict],
                   validate: bool = True) -> dict:
    """Runs ``convert_into(staging_folder) -> summary``, validates the result (unless ``convert_into``
    validated its input itself) and publishes it into ``out_dir``. Any error leaves ``out_dir``'s
    earlier content as it was."""
    out = check_writable(out_dir)
    remove_leftovers(out)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        summary = convert_into(staging)
        if validate:
            validate_staged(staging, out, task)
        publish(staging, out, task)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
