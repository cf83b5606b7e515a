"""Data stage: synthetic raw datasets in the real raw layouts and converters to the common format."""

from __future__ import annotations

import os
from pathlib import Path

from .common import SPLITS, TASKS, read_examples, write_jsonl_atomic
from .synthetic import make_raw


def convert(task: str, raw: str | os.PathLike, out_dir: str | os.PathLike, *, n_val: int = 500,
            n_test: int = 0, num_frames: int = 8, progress: bool | None = None) -> dict:
    """Convert the raw data of ``task`` found under ``raw`` (a raw folder as written by
    ``make_raw``; for Cauldron tasks also the subset folder itself; for ucf101 also the tarball).
    ``n_val``/``n_test`` apply to Cauldron tasks, ``num_frames`` to ucf101."""
    from .common import check_task

    check_task(task)
    if task == "ucf101":
        from .ucf101 import convert_ucf101

        return convert_ucf101(raw, out_dir, num_frames=num_frames, progress=progress)
    from .cauldron import convert_cauldron

    raw = Path(raw)
    parquet_dir = raw / task if (raw / task).is_dir() else raw
    return convert_cauldron(task, parquet_dir, out_dir, n_val=n_val, n_test=n_test, progress=progress)


__all__ = ["SPLITS", "TASKS", "convert", "make_raw", "read_examples", "write_jsonl_atomic"]
