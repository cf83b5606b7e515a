"""Convert the official Hateful Memes release (Facebook AI, 2020) to the common format.

Layout (the release's ``data/`` folder; ``root`` may be it or hold it; the release README, e.g.
mirrored at https://huggingface.co/datasets/neuralcatcher/hateful_memes/blob/main/README.md)::

    img/<id>.png
    train.jsonl  dev_seen.jsonl  test_seen.jsonl      (also dev_unseen/test_unseen, unused)

one JSON object per line: ``{"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}``;
``img`` is relative to the folder of the jsonl files, ``label`` 1 = hateful, "provided for train
and dev" (README): a test file may have no ``label`` at all.

Example: the meme image, the Cauldron's hateful_memes form (``ftbench.data.prompts``): one of its
questions (drawn from a hash of ``img``) plus ``"\\nAnswer yes or no."``, answer ``Yes.`` (label 1)
or ``No.`` (label 0). Like the Cauldron's prompt, it leaves out ``text`` (the meme's own words,
which are in the image).

Split policies: ``cookbook`` cuts ``train.jsonl`` like the recipe cuts the Cauldron's
hateful_memes (which holds the same 8,500 training memes): first ``n_val`` lines -> val, next
``n_test`` -> test, rest -> train. ``official``: train.jsonl -> train, dev_seen.jsonl -> val,
test_seen.jsonl -> test; a test file with no ``label`` on any line is skipped (nothing to train on
or score against) and ``summary.json`` says so under ``skipped``; a file with labels on some lines
only is refused. Lines keep their file order; ids number them in that order.
"""

from __future__ import annotations

import os
from pathlib import Path

from .annotations import ImageRow, read_json_lines, row_units, split_policy_rows
from .common import images_dir
from .pipeline import check_split_policy, run_conversion
from .prompts import hateful_memes_prompt, yes_no

TASK = "hateful_memes"
OFFICIAL_FILES = {"train": "train.jsonl", "val": "dev_seen.jsonl", "test": "test_seen.jsonl"}
LABELS = (0, 1)


def release_root(source: str | os.PathLike) -> Path:
    source = Path(source)
    for cand in (source, source / "data", source / "hateful_memes"):
        if (cand / "train.jsonl").is_file():
            return cand
    raise FileNotFoundError(
        f"{source}: no train.jsonl (expected the Hateful Memes data/ folder: img/, train.jsonl, ...)"
    )


def unlabelled(path: Path) -> bool:
    """No line of ``path`` has a ``label`` (the release's test files)."""
    return not any("label" in obj for _, obj in read_json_lines(path))


def read_rows(path: Path, root: Path, split_rule, start: int) -> list[ImageRow]:
    rows = []
    for lineno, obj in read_json_lines(path):
        where = f"{path}:{lineno}"
        img, label = obj.get("img"), obj.get("label")
        if not isinstance(img, str) or not img:
            raise ValueError(f"{where}: missing 'img'")
        if "label" not in obj:
            raise ValueError(f"{where}: no 'label' (needed on every line of a file that is trained on or scored)")
        if label not in LABELS or isinstance(label, bool):
            raise ValueError(f"{where}: 'label' must be 0 or 1, got {label!r}")
        index = start + len(rows)
        rows.append(ImageRow(index, split_rule(index), where, (str(root / img),), hateful_memes_prompt(img),
                             yes_no(label == 1)))
    return rows


def convert_hateful_memes_official(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                                   split_policy: str, n_val: int, n_test: int, progress: bool | None = None,
                                   processes: int) -> dict:
    check_split_policy(split_policy)
    root = release_root(source)

    def file_of(split: str) -> Path:
        path = root / OFFICIAL_FILES[split]
        if not path.is_file():  # train.jsonl is (release_root)
            raise FileNotFoundError(
                f"{path}: missing (split policy official needs {', '.join(OFFICIAL_FILES.values())})"
            )
        return path

    def skip(files: dict[str, Path]) -> dict[str, str]:
        if unlabelled(files["test"]):
            return {"test": f"{files['test']}: no 'label' (the release labels train and dev only)"}
        return {}

    files, rows, extra = split_policy_rows(split_policy, OFFICIAL_FILES, file_of,
                                           lambda path, split_rule, start: read_rows(path, root, split_rule, start),
                                           n_val=n_val, n_test=n_test, skip=skip)
    units = row_units(TASK, rows, images_dir(out_dir))
    summary = {"where": str(root), "source": [str(p) for p in files.values()], "split_policy": split_policy, **extra}
    return run_conversion(TASK, units, out_dir, summary=summary, processes=processes, progress=progress,
                          total_rows=len(rows))
