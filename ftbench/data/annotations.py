"""Shared parts of the converters of official releases: annotation files that name image files.

An official release is read as a list of ``ImageRow`` (one example: its split, running index, the
image files it shows, prompt and answer), built in the main process from the small annotation
files, then converted in units of ``UNIT_ROWS`` rows by ``ImageRowsUnit`` workers that copy the
image bytes unchanged into ``images/`` and hash them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .common import example_id, json_lines
from .leakage import content_hash
from .pipeline import UnitResult, image_extension, write_bytes_atomic

UNIT_ROWS = 64


def read_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a json-lines file; a bad line raises
    ``ValueError("<path>:<line>: ...")``."""
    for lineno, obj in json_lines(path):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object")
        yield lineno, obj


def first_existing(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


@dataclass(frozen=True)
class ImageRow:
    index: int  # running example index of the conversion
    split: str
    where: str  # "<annotation file>:<line>" for error messages
    images: tuple[str, ...]  # source image files
    user: str
    assistant: str
    answers: tuple[str, ...] | None = None  # every gold answer (DocVQA)

    @property
    def id(self) -> str:
        return example_id(self.split, self.index)


@dataclass(frozen=True)
class ImageRowsUnit:
    task: str
    rows: tuple[ImageRow, ...]
    img_root: str
    # "example": images/<split>/<id>_<k>.<ext>; "document": images/<split>/documents/<file name>,
    # for releases where many questions share one document image (stored once per split)
    naming: str = "example"

    def run(self) -> UnitResult:
        result = UnitResult(rows=len(self.rows))
        img_root = Path(self.img_root)
        written: dict[tuple[str, str], tuple[str, str]] = {}
        for row in self.rows:
            rels = []
            for k, src in enumerate(row.images):
                key = (row.split, src)
                if self.naming == "document" and key in written:
                    rel, digest = written[key]
                else:
                    try:
                        data = Path(src).read_bytes()
                    except OSError as e:
                        raise ValueError(f"{row.where}: cannot read image {src} ({e.strerror})") from None
                    try:
                        ext = image_extension(data)
                    except ValueError as e:
                        raise ValueError(f"{row.where}: image {src} is {e}") from None
                    if self.naming == "document":
                        rel = f"{row.split}/documents/{Path(src).name}"
                    else:
                        rel = f"{row.split}/{row.id}_{k}.{ext}"
                    write_bytes_atomic(img_root / rel, data)
                    digest = content_hash(data)
                    written[key] = (rel, digest)
                rels.append(rel)
                result.hashes.append((row.split, row.id, digest))
            turn = {"images": rels, "user": row.user, "assistant": row.assistant}
            if row.answers is not None:  # every gold answer (read by ftbench.evaluate.gold_answers)
                turn["answers"] = list(row.answers)
            result.examples.append((row.split, {"id": row.id, "source": self.task, "conversations": [turn]}))
        return result


def row_units(task: str, rows: list[ImageRow], img_root: str | os.PathLike, naming: str = "example",
              size: int = UNIT_ROWS) -> list[ImageRowsUnit]:
    return [ImageRowsUnit(task, tuple(rows[i:i + size]), str(img_root), naming) for i in range(0, len(rows), size)]


def find_file(root: Path, name: str, subdirs: tuple[str, ...] = ()) -> Path | None:
    """``root/name`` or ``root/<subdir>/name`` for the first subdir that has it."""
    return first_existing([root / name] + [root / d / name for d in subdirs])
