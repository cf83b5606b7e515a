"""Convert the official DocVQA release (SP-DocVQA, Task 1; rrc.cvc.uab.es/?ch=17) to the common format.

Two published layouts, found per split (``root`` = the folder holding them; the json files may
also sit in ``root`` itself)::

    spdocvqa_qas/train_v1.0_withQT.json   spdocvqa_images/<doc>.png   spdocvqa_ocr/<doc>.json
    spdocvqa_qas/val_v1.0_withQT.json     (the packages of the RRC downloads page today,
    spdocvqa_qas/test_v1.0.json            https://rrc.cvc.uab.es/?ch=17&com=downloads)

    train/train_v1.0.json   train/documents/<doc>.png      (the earlier per-split tarballs)
    val/val_v1.0.json       val/documents/<doc>.png
    test/test_v1.0.json

Each json (format: https://rrc.cvc.uab.es/?ch=17&com=tasks; file names as
google-research/big_vision ``big_vision/datasets/docvqa/docvqa.py`` reads them):
``{"dataset_name": "docvqa", "dataset_split": "train", "dataset_version": "1.0", "data":
[{"questionId": 52212, "question": "...", "question_types": ["..."], "image":
"documents/txpn0095_1.png", "docId": 1968, "answers": ["..."], ...}]}``. ``image`` reads
``documents/<doc>.png`` in both layouts: it is looked up relative to the json's folder, to
``root``, and as ``spdocvqa_images/<doc>.png`` beside the json's folder or in ``root``. The OCR
files are not read.

Example: the page, the Cauldron's docvqa form (``ftbench.data.prompts``): prompt = the question
with its first letter capitalised plus a brevity hint, assistant = ``answers[0]`` (the RRC's
advice for one training answer) capitalised and ended with ``.``; every gold answer, unchanged, in
``answers`` (what ANLS scores against). Questions sorted by (image, questionId), so the questions
of one page are adjacent; a page is stored once per split at ``images/<split>/documents/<file name>``.

Split policy: only ``official`` (train -> train, val -> val). The test json has no answers (the
RRC scores test predictions online): it is skipped, and ``summary.json`` says so under
``skipped``. The recipe's DocVQA slices come from ``nielsr/docvqa_1200_examples`` and the
Cauldron, not from this release: ``cookbook`` is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from .annotations import ImageRow, first_existing, row_units
from .common import images_dir
from .pipeline import check_split_policy, run_conversion
from .prompts import docvqa_answer, docvqa_prompt

TASK = "docvqa"
# split -> (json in the earlier per-split tarballs, json in today's spdocvqa_qas package)
RELEASE_FILES = {
    "train": ("train_v1.0.json", "train_v1.0_withQT.json"),
    "val": ("val_v1.0.json", "val_v1.0_withQT.json"),
}
TEST_FILE = "test_v1.0.json"
QAS_DIR, IMAGES_DIR = "spdocvqa_qas", "spdocvqa_images"


def candidate_files(root: Path, split: str, names: tuple[str, ...]) -> list[Path]:
    earlier, current = names[0], names[-1]
    return [root / split / earlier, root / earlier, root / QAS_DIR / current, root / current]


def annotation_file(root: Path, split: str) -> Path:
    found = first_existing(candidate_files(root, split, RELEASE_FILES[split]))
    if found is None:
        earlier, current = RELEASE_FILES[split]
        raise FileNotFoundError(f"{root}: no {QAS_DIR}/{current} or {split}/{earlier} "
                                "(expected the DocVQA Task 1 release)")
    return found


def image_candidates(path: Path, root: Path, image: str) -> list[Path]:
    name = PurePosixPath(image).name
    candidates = [path.parent / image, root / image, path.parent.parent / IMAGES_DIR / name, root / IMAGES_DIR / name]
    return list(dict.fromkeys(candidates))


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
        src = first_existing(image_candidates(path, root, image))
        if src is None:
            raise ValueError(f"{where}: questionId {qid}: image {image} not found next to {path.name}, "
                             f"in {root} or in {IMAGES_DIR}/")
        items.append((image, str(qid), where, str(src), question, tuple(answers)))
    items.sort(key=lambda it: (it[0], it[1].zfill(12)))
    return [ImageRow(start + i, split, where, (src,), docvqa_prompt(question, qid), docvqa_answer(answers[0]), answers)
            for i, (_, qid, where, src, question, answers) in enumerate(items)]


def convert_docvqa_official(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                            split_policy: str, progress: bool | None = None, processes: int) -> dict:
    check_split_policy(split_policy)
    if split_policy == "cookbook":
        raise ValueError(
            f"{source}: split policy cookbook is not defined for the official DocVQA release (the recipe's "
            "DocVQA data is nielsr/docvqa_1200_examples); use split_policy official or source nielsr_docvqa"
        )
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    files = {s: annotation_file(root, s) for s in RELEASE_FILES}
    rows = []
    for split, path in files.items():
        rows += read_rows(path, root, split, len(rows))
    units = row_units(TASK, rows, images_dir(out_dir), naming="document")
    summary = {"where": str(root), "source": [str(p) for p in files.values()], "split_policy": split_policy,
               "splits": {s: p.name for s, p in files.items()}}
    test = first_existing(candidate_files(root, "test", (TEST_FILE,)))
    if test is not None:
        summary["skipped"] = {"test": f"{test}: no answers (the RRC scores test predictions online)"}
    return run_conversion(TASK, units, out_dir, summary=summary, processes=processes, progress=progress,
                          total_rows=len(rows))
