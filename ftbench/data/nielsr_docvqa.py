"""Convert ``nielsr/docvqa_1200_examples`` (the recipe's default DocVQA data) to the common format.

Hub layout: parquet files per split (``data/train-00000-of-00001-*.parquet`` with 1,000 rows,
``data/test-00000-of-00001-*.parquet`` with 200), or the same as ``datasets`` arrow files. Columns
(dataset card): ``id`` string, ``image`` Image (``struct<bytes, path>``), ``query``
``struct<de, en, es, fr, it>``, ``answers`` ``list<string>``, ``words``, ``bounding_boxes``,
``answer`` (struct); the recipe drops ``id``, ``words``, ``bounding_boxes`` and ``answer``.

Both split policies give the recipe's (= the dataset's) splits: train -> ``train``, test -> ``val``
(the recipe's 200 evaluation questions). Per row: prompt ``query["en"] + "\\nAnswer briefly."``
(the recipe's evaluation and mini-training prompt), assistant ``answers[0]``, and every gold answer
in the turn's ``answers`` (ANLS takes the max over them, ``ftbench.evaluate.gold_answers``). The
recipe's training draws one of the gold answers at random on every visit; a fixed first answer keeps
the conversion deterministic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .common import example_id, images_dir
from .pipeline import Fixed, UnitResult, check_split_policy, run_conversion, store_image
from .prompts import docvqa_recipe_prompt
from .tables import Chunk, find_table_files, iter_chunk_rows, list_chunks, split_of_file, table_schema

TASK = "docvqa"
COLUMNS = ["image", "query", "answers"]
LANGUAGE = "en"


def nielsr_files(source: str | os.PathLike, split: str) -> list[Path]:
    files = [p for p in find_table_files(source) if split_of_file(p) == split]
    if not files:
        raise FileNotFoundError(f"{source}: no {split} split files (expected e.g. data/{split}-00000-of-00001.parquet)")
    for path in files:
        names = table_schema(path).names
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(names)}); "
                             "not a nielsr/docvqa_1200_examples file")
    return files


def question_of(query, where: str) -> str:
    if isinstance(query, str):
        question = query
    elif isinstance(query, dict):
        question = query.get(LANGUAGE)
    else:
        question = None
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: query has no {LANGUAGE!r} question")
    return question


@dataclass(frozen=True)
class NielsrUnit:
    chunk: Chunk
    start: int
    split_rule: Fixed
    img_root: str

    @property
    def rows(self) -> int:
        return self.chunk.rows

    def run(self) -> UnitResult:
        result = UnitResult(rows=self.chunk.rows)
        for i, (r, row) in enumerate(iter_chunk_rows(self.chunk, COLUMNS)):
            where = f"{self.chunk.path}: row {r}"
            index = self.start + i
            split = self.split_rule(index)
            ex_id = example_id(split, index)
            answers = [a for a in (row["answers"] or []) if isinstance(a, str) and a.strip()]
            if not answers:
                raise ValueError(f"{where}: no answer")
            question = question_of(row["query"], where)
            rel, digest = store_image((row["image"] or {}).get("bytes"), Path(self.img_root), split, ex_id, 0, where)
            result.hashes.append((split, ex_id, digest))
            result.examples.append((split, {
                "id": ex_id, "source": TASK,
                "conversations": [{"images": [rel], "user": docvqa_recipe_prompt(question), "assistant": answers[0],
                                   "answers": answers}],
            }))
        return result


def nielsr_units(files: list[Path], img_root: Path, split_rule: Fixed, start: int = 0) -> tuple[list, int]:
    units, n = [], start
    for chunk in list_chunks(files):
        units.append(NielsrUnit(chunk, n, split_rule, str(img_root)))
        n += chunk.rows
    return units, n


def convert_nielsr_docvqa(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                          split_policy: str, progress: bool | None = None, processes: int) -> dict:
    """Convert a local copy of ``nielsr/docvqa_1200_examples``: test -> val (numbered first, like
    the Cauldron's train[:n_val]), train -> train, under either split policy (they agree here)."""
    check_split_policy(split_policy)
    test_files, train_files = nielsr_files(source, "test"), nielsr_files(source, "train")
    img_root = images_dir(out_dir)
    val_units, n = nielsr_units(test_files, img_root, Fixed("val"), 0)
    train_units, _ = nielsr_units(train_files, img_root, Fixed("train"), n)
    units = val_units + train_units
    summary = {"where": str(source), "source": [str(p) for p in test_files + train_files],
               "split_policy": split_policy, "splits": {"train": "train", "val": "test"}}
    return run_conversion(TASK, units, out_dir, summary=summary, processes=processes, progress=progress,
                          total_rows=sum(u.rows for u in units))
