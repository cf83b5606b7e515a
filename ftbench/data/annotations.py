"""Shared parts of the converters of official releases: annotation files that name image files.

An official release is read as a list of ``ImageRow`` (one example: its split, running index, the
image files it shows, prompt and answer), built in the main process from the small annotation
files, then converted in units of ``UNIT_ROWS`` rows by ``ImageRowsUnit`` workers that copy the
image bytes unchanged into ``images/`` and hash them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .common import example_id, json_lines
from .leakage import content_hash
from .pipeline import Fixed, Slices, UnitResult, image_extension, write_bytes_atomic

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


def split_policy_rows(split_policy: str, splits: Iterable[str], file_of: Callable[[str], Path],
                      read_rows: Callable[[Path, Callable[[int], str], int], list[ImageRow]], *, n_val: int,
                      n_test: int, skip: Callable[[dict[str, Path]], dict[str, str]] | None = None,
                      ) -> tuple[dict[str, Path], list[ImageRow], dict]:
    """The rows of a release whose annotation files are its splits, under ``split_policy``: ``(files
    read, rows, the summary's keys of the policy)``. ``cookbook``: the recipe's cut of the train file,
    ``Slices(n_val, n_test)``. ``official``: the file of each of ``splits`` (``file_of(split)``, all
    looked up first) is that split, in that order, except the ones ``skip(files)`` returns as
    ``{split: why}`` (recorded under ``skipped``). ``read_rows(path, split_rule, start)`` numbers the
    rows of one file from ``start``."""
    if split_policy == "cookbook":
        files = {"train": file_of("train")}
        return files, read_rows(files["train"], Slices(n_val, n_test), 0), {"n_val": n_val, "n_test": n_test}
    files = {split: file_of(split) for split in splits}
    skipped = skip(files) if skip is not None else {}
    extra = {"skipped": skipped} if skipped else {}
    files = {split: path for split, path in files.items() if split not in skipped}
    rows: list[ImageRow] = []
    for split, path in files.items():
        rows += read_rows(path, Fixed(split), len(rows))
    extra["splits"] = {split: path.name for split, path in files.items()}
    return files, rows, extra
