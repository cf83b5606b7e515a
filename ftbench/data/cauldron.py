"""Convert a HuggingFaceM4/the_cauldron subset to the common format.

Source: the subset folder of a hub snapshot (``<snapshot>/<task>/train-0000N-of-0000M-*.parquet``;
the snapshot root works too), a parquet export, or ``datasets`` arrow files (cache or
``save_to_disk``); see ``ftbench.data.tables``. The Cauldron has a train split only. The files read
must be one dataset (``subset_files``): one folder, one complete shard series or one file, of this
subset; a cluttered folder is refused naming its files, and ``summary.json`` lists the files read.

Split policy "cookbook": rows are numbered over all files in sorted order; the first ``n_val`` rows
are ``val`` (the recipe evaluates hateful_memes and nlvr2 on ``train[:500]``), the next ``n_test``
rows ``test``, the rest ``train``. For docvqa the recipe's ``--full_train`` trains on every Cauldron
row and evaluates on the 200 ``nielsr/docvqa_1200_examples`` test rows: pass ``eval_source``
(that dataset) and those rows become ``val`` (numbered first), all Cauldron rows ``train``.

* docvqa, hateful_memes: first image and first text turn only (as the recipe).
* nlvr2: exactly two images per row (else ``ValueError``); every turn is kept, the first turn
  carries both images, later turns have ``images: []``.

Image bytes are stored unchanged at ``images/<split>/<id>_<k>.<ext>``. Parquet row groups (arrow
record batches) are the units of parallel work and are streamed 64 rows at a time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ftbench.schema import task_default

from .common import CAULDRON_TASKS, example_id, images_dir
from .nielsr_docvqa import nielsr_files, nielsr_units
from .pipeline import Fixed, Slices, UnitResult, run_conversion, store_image
from .tables import Chunk, find_table_files, iter_chunk_rows, list_chunks, split_of_file, table_schema

COLUMNS = ["images", "texts"]


def subset_dir(source: str | os.PathLike, task: str) -> Path:
    """``source/<task>`` when ``source`` is a snapshot root holding that subset, else ``source``."""
    source = Path(source)
    return source / task if (source / task).is_dir() else source


# Shard names of one split of one dataset: the hub's ``train-00000-of-00007-<hash>``, the ``datasets``
# cache's ``<name>-train-00000-of-00002`` and save_to_disk's ``data-00000-of-00001`` (huggingface/datasets,
# src/datasets/builder.py ``_prepare_split``, src/datasets/arrow_dataset.py ``save_to_disk``), and the
# parquet branch's ``<config>/<split>/0000`` (refs/convert/parquet).
SHARD_NAME = re.compile(r"^(?P<series>.*?)-?(?P<index>\d{5})-of-(?P<total>\d{5})(?:-\w+)?$")
BRANCH_SHARD_NAME = re.compile(r"^\d{4}$")


def export_name_of(stem: str) -> str:
    """The subset a ``Dataset.to_parquet`` export is named after (``nlvr2``, ``nlvr2_train``,
    ``nlvr2-train``), else ``stem`` itself."""
    return re.sub(r"[-_.]train$", "", stem)


def shard_series_problem(files: list[Path], task: str) -> str | None:
    """Why the files of one folder are not the shards of one dataset (None: they are). A series with
    a missing shard is refused too: an interrupted download would silently lose its rows."""
    branch = [p for p in files if BRANCH_SHARD_NAME.match(p.stem)]
    if len(branch) == len(files):
        numbers = sorted(int(p.stem) for p in branch)
        if numbers != list(range(len(files))):
            return f"parquet-branch shards {numbers}, not 0..{len(files) - 1} (an interrupted download?)"
        return None
    shards = [SHARD_NAME.match(p.stem) for p in files]
    if not all(shards) or len({(m["series"], m["total"]) for m in shards}) != 1:
        return (f"not the shards of one dataset; point path at one (in a folder of to_parquet exports, name "
                f"the {task} one {task}.parquet)")
    total = int(shards[0]["total"])
    missing = sorted(set(range(total)) - {int(m["index"]) for m in shards})
    if missing:
        return f"shard(s) {', '.join(f'{i:05d}' for i in missing)} of {total:05d} missing (an interrupted download?)"
    if len(files) != total:
        return "two files for one shard (two downloads in one folder?)"
    return None


def subset_files(parquet_dir: str | os.PathLike, task: str) -> list[Path]:
    """The data files of the Cauldron subset ``task`` in ``parquet_dir``, sorted: in a folder of
    ``to_parquet`` exports, the one named after ``task`` (``<task>.parquet``, ``<task>_train.parquet``);
    else the train split files (when named), which must be one dataset. Refused, each with one
    ``ValueError`` line naming the files: data files in several folders (two ``datasets`` cache
    fingerprint folders of one config hold every row twice; several subsets), files of one folder that
    are not one complete shard series, and the folder or export of another Cauldron task."""
    root = Path(parquet_dir)
    files = find_table_files(root)

    def listing(paths) -> str:
        return ", ".join(p.relative_to(root).as_posix() for p in paths)

    exports = [p for p in files if export_name_of(p.stem) == task]
    if len(exports) > 1:
        raise ValueError(f"{root}: {len(exports)} data files named after {task} ({listing(exports)}); "
                         "point path at one")
    if exports and not root.is_file():
        return exports
    named = [p for p in files if split_of_file(p) is not None]
    if named:
        files = [p for p in files if split_of_file(p) == "train"]
        if not files:
            raise FileNotFoundError(f"{parquet_dir}: no train split files (the Cauldron has only train)")
    if root.is_file():
        return files
    folders = sorted({p.parent for p in files})
    if len(folders) > 1:
        raise ValueError(f"{root}: data files in {len(folders)} folders ({listing(folders)}): one dataset is one "
                         "folder (two datasets-cache fingerprint folders hold the rows twice); point path at one")
    problem = shard_series_problem(files, task) if len(files) > 1 or SHARD_NAME.match(files[0].stem) else None
    if problem:
        raise ValueError(f"{root}: {listing(files)}: {problem}")
    names = set(files[0].relative_to(root).parent.parts) | {export_name_of(files[0].stem)}
    others = sorted(names & (set(CAULDRON_TASKS) - {task}))
    if others and task not in names:
        raise ValueError(f"{root}: the data files ({listing(files)}) are the Cauldron's {others[0]} subset, not {task}")
    return files


def check_schema(path: Path, schema) -> None:
    import pyarrow as pa

    def is_list(t):
        return pa.types.is_list(t) or pa.types.is_large_list(t)

    def struct_fields(t):
        return {t.field(i).name: t.field(i).type for i in range(t.num_fields)}

    for col in COLUMNS:
        if col not in schema.names:
            raise ValueError(f"{path}: missing column {col!r} (columns: {', '.join(schema.names)})")
    images = schema.field("images").type
    if not (is_list(images) and pa.types.is_struct(images.value_type)):
        raise ValueError(f"{path}: column 'images' has type {images}, expected list<struct<bytes, path>>")
    f = struct_fields(images.value_type)
    if "bytes" not in f or not (pa.types.is_binary(f["bytes"]) or pa.types.is_large_binary(f["bytes"])):
        raise ValueError(f"{path}: column 'images' has type {images}, expected list<struct<bytes: binary, ...>>")
    texts = schema.field("texts").type
    if not (is_list(texts) and pa.types.is_struct(texts.value_type)):
        raise ValueError(f"{path}: column 'texts' has type {texts}, expected list<struct<user, assistant, ...>>")
    f = struct_fields(texts.value_type)
    for key in ("user", "assistant"):
        if key not in f:
            raise ValueError(f"{path}: column 'texts' has no field {key!r} ({texts})")


@dataclass(frozen=True)
class CauldronUnit:
    task: str
    chunk: Chunk
    start: int  # running example index of the chunk's first row
    take: int  # rows of the chunk to convert (max_rows may cut the last chunk)
    split_rule: Slices | Fixed
    img_root: str

    @property
    def rows(self) -> int:
        return self.take

    def run(self) -> UnitResult:
        result = UnitResult(rows=self.take)
        img_root = Path(self.img_root)
        for i, (r, row) in enumerate(iter_chunk_rows(self.chunk, COLUMNS)):
            if i >= self.take:
                break
            where = f"{self.chunk.path}: row {r}"
            images, texts = row["images"] or [], row["texts"] or []
            if self.task == "nlvr2":
                if len(images) != 2:
                    raise ValueError(f"{where}: expected exactly 2 images, got {len(images)}")
            elif not images:
                raise ValueError(f"{where}: no image")
            if not texts:
                raise ValueError(f"{where}: no text turn")
            keep_images = images if self.task == "nlvr2" else images[:1]
            keep_turns = texts if self.task == "nlvr2" else texts[:1]
            index = self.start + i
            split = self.split_rule(index)
            ex_id = example_id(split, index)
            rels = []
            for k, img in enumerate(keep_images):
                rel, digest = store_image((img or {}).get("bytes"), img_root, split, ex_id, k, where)
                rels.append(rel)
                result.hashes.append((split, ex_id, digest))
            conversations = []
            for t, turn in enumerate(keep_turns):
                user, answer = (turn or {}).get("user"), (turn or {}).get("assistant")
                if not isinstance(user, str) or not isinstance(answer, str):
                    raise ValueError(f"{where}: text turn {t} lacks a user or assistant string")
                conversations.append({"images": rels if t == 0 else [], "user": user, "assistant": answer})
            result.examples.append((split, {"id": ex_id, "source": self.task, "conversations": conversations}))
        return result


def cauldron_units(task: str, files: list[Path], img_root: Path, split_rule, start: int = 0,
                   max_rows: int | None = None) -> tuple[list[CauldronUnit], int]:
    """Units over ``files`` numbered from ``start``; returns (units, rows covered)."""
    for path in files:
        check_schema(path, table_schema(path))
    units, taken = [], 0
    for chunk in list_chunks(files):
        take = chunk.rows if max_rows is None else min(chunk.rows, max_rows - taken)
        if take <= 0:
            break
        units.append(CauldronUnit(task, chunk, start + taken, take, split_rule, str(img_root)))
        taken += take
    return units, taken


def convert_cauldron(
    task: str,
    parquet_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    n_val: int = task_default("n_val"),
    n_test: int = task_default("n_test"),
    max_rows: int | None = None,
    progress: bool | None = None,
    processes: int = task_default("processes"),
    eval_source: str | os.PathLike | None = None,
) -> dict:
    """Convert the Cauldron subset in ``parquet_dir`` (e.g. ``raw/docvqa``) into ``out_dir``.

    ``max_rows`` stops after that many rows (smoke tests on big real subsets). ``progress``:
    tqdm bar; None shows it only on a terminal. ``eval_source`` (docvqa only): a
    ``nielsr/docvqa_1200_examples`` copy whose test rows become ``val`` (``n_val``/``n_test`` are
    then unused). Returns the summary also written to ``out_dir/summary.json``.
    """
    if task not in CAULDRON_TASKS:
        raise ValueError(f"{task!r} is not a Cauldron task ({', '.join(CAULDRON_TASKS)})")
    if n_val < 0 or n_test < 0:
        raise ValueError(f"n_val and n_test must be >= 0 (got {n_val}, {n_test})")
    if eval_source is not None and task != "docvqa":
        raise ValueError(f"eval_source applies to docvqa only, not {task!r}")
    parquet_dir = subset_dir(parquet_dir, task)
    files = subset_files(parquet_dir, task)
    img_root = images_dir(out_dir)
    units: list = []
    start = 0
    summary = {"where": str(parquet_dir), "source": [str(p) for p in files], "split_policy": "cookbook"}
    if eval_source is not None:
        eval_files = nielsr_files(eval_source, "test")
        units, start = nielsr_units(eval_files, img_root, Fixed("val"), start=0)
        summary.update({"eval_source": [str(p) for p in eval_files],
                        "splits": {"train": "Cauldron docvqa train (all rows)",
                                   "val": "nielsr/docvqa_1200_examples test"}})
        split_rule = Fixed("train")
    else:
        split_rule = Slices(n_val, n_test)
        summary.update({"n_val": n_val, "n_test": n_test})
    train_units, taken = cauldron_units(task, files, img_root, split_rule, start=start, max_rows=max_rows)
    if eval_source is None and taken <= n_val + n_test:
        raise ValueError(
            f"{parquet_dir}: {taken} rows, but n_val={n_val} + n_test={n_test} leave no training rows"
        )
    units += train_units
    return run_conversion(task, units, out_dir, summary=summary, processes=processes, progress=progress,
                          total_rows=sum(u.rows for u in units), min_val=0 if eval_source is None else 1)
