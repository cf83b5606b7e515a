"""Data stage: synthetic raw datasets in the real raw layouts and converters to the common format."""

from __future__ import annotations

import os

from .common import SPLITS, TASKS, read_examples, write_jsonl_atomic
from .synthetic import make_raw


def convert(task: str, raw: str | os.PathLike, out_dir: str | os.PathLike, *, n_val: int = 500,
            n_test: int = 0, num_frames: int = 8, progress: bool | None = None, processes: int = 1,
            source: str = "synthetic", **options) -> dict:
    """Convert the raw data of ``task`` found under ``raw`` into ``out_dir``.

    ``source`` "synthetic" (default): a raw folder as written by ``make_raw`` (for Cauldron tasks
    also the subset folder itself; for ucf101 also the tarball). Other sources (``cauldron``,
    ``nielsr_docvqa``, ``ucf101_subset``, ``official``) and ``options`` (``split_policy``,
    ``revision``, ``eval_path``, ``ucf_split``): see ``ftbench.data.sources.convert_source``.
    ``n_val``/``n_test`` apply to the recipe's train[:n_val] cut, ``num_frames`` to ucf101."""
    from .sources import convert_source

    return convert_source(task, source, raw, out_dir, n_val=n_val, n_test=n_test, num_frames=num_frames,
                          progress=progress, processes=processes, **options)


__all__ = ["SPLITS", "TASKS", "convert", "make_raw", "read_examples", "write_jsonl_atomic"]
