"""The conversion driver every converter shares.

A converter turns its source into an ordered list of *work units* (a parquet row group, a slice of
an annotation file, one video): picklable objects whose ``run()`` converts the unit, i.e. writes
its images and returns its examples and image hashes (``UnitResult``). The driver runs the workers
over ``processes`` processes (``spawn``, at most ``2 * processes`` units in flight, so memory stays
bounded), collects the results in unit order (so output and ids do not depend on scheduling), and
writes, jsonl last::

    out_dir/<task>_{train,val,test}.jsonl   out_dir/images/...
    out_dir/leakage.json                   identical images across splits (ftbench.data.leakage)
    out_dir/summary.json                   counts, source, split policy, leakage totals

Split rules map the running example index of a conversion to a split: ``Slices(n_val, n_test)`` is
the recipe's ``train[:n_val]`` cut, ``Fixed(split)`` an official split.
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftbench.atomic import atomic_path

from .common import SPLITS, SUMMARY, images_dir, jsonl_path, remove_final_outputs, write_json_atomic, write_jsonl_atomic
from .leakage import content_hash, leakage_report

SPLIT_POLICIES = ("cookbook", "official")
LEAKAGE_FILE = "leakage.json"
_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff"}


@dataclass(frozen=True)
class Slices:
    """The recipe's cut of one training split: first ``n_val`` -> val, next ``n_test`` -> test."""

    n_val: int
    n_test: int

    def __call__(self, index: int) -> str:
        if index < self.n_val:
            return "val"
        return "test" if index < self.n_val + self.n_test else "train"


@dataclass(frozen=True)
class Fixed:
    split: str

    def __call__(self, index: int) -> str:
        return self.split


@dataclass
class UnitResult:
    """What a worker returns for one unit: ``(split, example)`` pairs in order, one
    ``(split, id, sha256)`` per stored image, and the number of input rows consumed."""

    examples: list[tuple[str, dict]] = field(default_factory=list)
    hashes: list[tuple[str, str, str]] = field(default_factory=list)
    rows: int = 0


def check_split_policy(policy: str) -> str:
    if policy not in SPLIT_POLICIES:
        raise ValueError(f"unknown split policy {policy!r}; expected one of {', '.join(SPLIT_POLICIES)}")
    return policy


def image_extension(data: bytes) -> str:
    """File extension for encoded image bytes, from the format PIL detects (ValueError if none)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not a readable image ({e})") from None
    return _EXT.get(fmt, (fmt or "bin").lower())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Concurrent writers of the same file (a document shared by questions in two units) and killed
    jobs never leave a partial file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def store_image(data, img_root: Path, split: str, ex_id: str, k: int, where: str) -> tuple[str, str]:
    """Write encoded image bytes unchanged as ``<split>/<ex_id>_<k>.<ext>`` under ``img_root``; return
    (that path, relative to images/, and the bytes' sha256)."""
    if not data:
        raise ValueError(f"{where}: image {k} has no bytes")
    try:
        ext = image_extension(data)
    except ValueError as e:
        raise ValueError(f"{where}: image {k} is {e}") from None
    rel = f"{split}/{ex_id}_{k}.{ext}"
    write_bytes_atomic(img_root / rel, data)
    return rel, content_hash(data)


def ordered_map(fn: Callable[[Any], Any], units: list, processes: int) -> Iterator:
    """``fn(unit)`` for every unit, yielded in unit order; over ``processes`` spawned processes
    when ``processes > 1`` (``fn`` and the units must be picklable). A worker's exception is raised
    here and the units not started yet are cancelled."""
    if processes <= 1 or len(units) <= 1:
        for unit in units:
            yield fn(unit)
        return
    window = 2 * processes
    pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"))
    try:
        queue = iter(units)
        pending = deque(pool.submit(fn, u) for u in itertools.islice(queue, window))
        while pending:
            result = pending.popleft().result()
            for unit in queue:
                pending.append(pool.submit(fn, unit))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_output(out_dir: str | os.PathLike, task: str) -> Path:
    """Create ``out_dir`` and its split image folders; delete an earlier run's final files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_final_outputs(out, task)
    (out / LEAKAGE_FILE).unlink(missing_ok=True)
    for split in SPLITS:
        (images_dir(out) / split).mkdir(parents=True, exist_ok=True)
    return out


def run_unit(unit) -> UnitResult:
    """The worker of every conversion: units carry their own ``run()``."""
    return unit.run()


def run_conversion(
    task: str,
    units: list,
    out_dir: str | os.PathLike,
    *,
    summary: dict,
    processes: int,
    progress: bool | None = None,
    total_rows: int | None = None,
    unit_name: str = "row",
    hash_unit: str = "image",
    min_train: int = 1,
    min_val: int = 1,
) -> dict:
    """Run every unit (``unit.run() -> UnitResult``) and write the conversion; returns the summary (``summary``
    plus counts, turns, images, leakage totals, processes). Too few train or val examples is a
    ``ValueError`` raised before any jsonl is written."""
    from tqdm import tqdm

    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    out = prepare_output(out_dir, task)
    examples: dict[str, list[dict]] = {s: [] for s in SPLITS}
    hashes: list[tuple[str, str, str]] = []
    bar = tqdm(total=total_rows, desc=f"convert {task}", unit=unit_name,
               disable=(not progress) if progress is not None else None)
    try:
        for result in ordered_map(run_unit, units, processes):
            for split, ex in result.examples:
                examples[split].append(ex)
            hashes.extend(result.hashes)
            bar.update(result.rows)
    finally:
        bar.close()
    counts = {s: len(examples[s]) for s in SPLITS}
    where = summary.get("where") or summary.get("source")
    if counts["train"] < min_train:
        raise ValueError(f"{where}: the split policy leaves {counts['train']} training examples")
    if counts["val"] < min_val:
        raise ValueError(f"{where}: the split policy leaves {counts['val']} validation examples")

    report = leakage_report(hashes, unit=hash_unit)
    report["task"] = task
    write_json_atomic(out / LEAKAGE_FILE, report)
    for split in SPLITS:  # jsonl last: an interrupted conversion leaves no final jsonl
        write_jsonl_atomic(jsonl_path(out, task, split), examples[split])
    full = dict(summary)
    full.pop("where", None)
    full.update({
        "task": task,
        "counts": counts,
        "turns": {s: sum(len(e["conversations"]) for e in examples[s]) for s in SPLITS},
        "images": sum(len(t["images"]) for s in SPLITS for e in examples[s] for t in e["conversations"]),
        "leakage": {"file": LEAKAGE_FILE, "leaked_contents": report["leaked_contents"],
                    "across_splits": report["across_splits"]},
        "processes": processes,
    })
    write_json_atomic(out / SUMMARY, full)
    return full

