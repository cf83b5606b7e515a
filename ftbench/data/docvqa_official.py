"""Convert the official DocVQA release (Task 1, single page; rrc.cvc.uab.es) to the common format.

Layout (``root`` may hold the split folders or the files directly)::

    train/train_v1.0.json   train/documents/<doc>.png
    val/val_v1.0.json       val/documents/<doc>.png
    test/test_v1.0.json     (no answers: not converted)

Each json: ``{"dataset_name": "docvqa", "dataset_split": "train", "dataset_version": "1.0",
"data": [{"questionId": 52212, "question": "...", "image": "documents/txpn0095_1.png",
"docId": 1968, "answers": ["..."], ...}]}``; ``image`` is relative to the folder of the json
(else to ``root``).

Example: the page, prompt ``question + "\\nAnswer briefly."`` (the recipe's DocVQA prompt),
assistant ``answers[0]``, every gold answer in ``answers``. Questions sorted by (image,
questionId), so the questions of one page are adjacent; a page is stored once per split at
``images/<split>/documents/<file name>``.

Split policy: only ``official`` (train -> train, val -> val). The recipe's DocVQA slices come from
``nielsr/docvqa_1200_examples`` and the Cauldron, not from this release: ``cookbook`` is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .annotations import ImageRow, first_existing, row_units
from .common import images_dir
from .nielsr_docvqa import prompt_for
from .pipeline import check_split_policy, run_conversion

TASK = "docvqa"
OFFICIAL_FILES = {"train": "train_v1.0.json", "val": "val_v1.0.json"}


def annotation_file(root: Path, split: str, name: str) -> Path:
    found = first_existing([root / split / name, root / name])
    if found is None:
        raise FileNotFoundError(f"{root}: no {split}/{name} (expected the DocVQA Task 1 release)")
    return found


def read_rows(path: Path, root: Path, split: str, start: int) -> list[ImageRow]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ValueError(f"{path}: no 'data' list")
    items = []
    for k, q in enumerate(data):
        where = f"{path}: data[{k}]"
        if not isinstance(q, dict):
            raise ValueError(f"{where}: not an object")
        qid, question, image = q.get("questionId"), q.get("question"), q.get("image")
        answers = [a for a in (q.get("answers") or []) if isinstance(a, str) and a.strip()]
        if qid is None or not isinstance(question, str) or not isinstance(image, str):
            raise ValueError(f"{where}: needs questionId, question and image")
        if not answers:
            raise ValueError(f"{where}: questionId {qid}: no answers")
        src = first_existing([path.parent / image, root / image])
        if src is None:
            raise ValueError(f"{where}: questionId {qid}: image {image} not found next to {path.name} or in {root}")
        items.append((image, str(qid), where, str(src), question, tuple(answers)))
    items.sort(key=lambda it: (it[0], it[1].zfill(12)))
    return [ImageRow(start + i, split, where, (src,), prompt_for(question), answers[0], answers)
            for i, (_, _, where, src, question, answers) in enumerate(items)]


def convert_docvqa_official(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                            split_policy: str = "official", progress: bool | None = None,
                            processes: int = 1) -> dict:
    check_split_policy(split_policy)
    if split_policy == "cookbook":
        raise ValueError(
            f"{source}: split policy cookbook is not defined for the official DocVQA release (the recipe's "
            "DocVQA data is nielsr/docvqa_1200_examples); use split_policy official or source nielsr_docvqa"
        )
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    files = {s: annotation_file(root, s, name) for s, name in OFFICIAL_FILES.items()}
    rows = []
    for split, path in files.items():
        rows += read_rows(path, root, split, len(rows))
    units = row_units(TASK, rows, images_dir(out_dir), naming="document")
    summary = {"where": str(root), "source": [str(p) for p in files.values()], "split_policy": split_policy,
               "splits": {s: p.name for s, p in files.items()}}
    return run_conversion(TASK, units, out_dir, summary=summary, processes=processes, progress=progress,
                          total_rows=len(rows))
