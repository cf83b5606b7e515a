"""A dataset of your own, declared in the config, brought into the workflow without code changes.

    tasks:
      receipts:
        source: custom
        train: my/receipts_train.jsonl      # common format (docs/datasets.md)
        val: my/receipts_val.jsonl
        images: my/images                   # the jsonl image paths are relative to this folder
        prompt: "Answer briefly.\\n{user}"  # optional template of every user turn
        metric: anls                        # accuracy | anls | auroc

``import_custom`` writes ``<task>_{train,val,test}.jsonl`` (``source`` set to the task, the prompt
template applied) and links ``images`` to the given folder (nothing is copied). The given files are
validated first (``ftbench.data.validate``: errors name their lines); through
``ftbench.data.staging.convert_staged`` nothing is published unless all of it is valid.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import SPLITS, SUMMARY, jsonl_path, write_json_atomic, write_jsonl_atomic
from .validate import checked_examples

USER_PLACEHOLDER = "{user}"


def apply_prompt(example: dict, task: str, prompt: str | None) -> dict:
    turns = [dict(turn, user=prompt.replace(USER_PLACEHOLDER, turn["user"])) if prompt else dict(turn)
             for turn in example["conversations"]]
    return dict(example, source=task, conversations=turns)


def import_custom(task: str, splits: dict[str, str | os.PathLike], images: str | os.PathLike,
                  out_dir: str | os.PathLike, prompt: str | None = None, *, metric: str,
                  max_image_pixels: int | None = None) -> dict:
    """``splits`` maps ``train``/``val`` (required) and ``test`` (optional) to common-format jsonl
    files; ``max_image_pixels`` (default the schema's) bounds every image. Returns the summary, also
    written to ``out_dir/summary.json``."""
    if prompt is not None and USER_PLACEHOLDER not in prompt:
        raise ValueError(f"prompt {prompt!r} has no {USER_PLACEHOLDER} placeholder for the dataset's text")
    for split in ("train", "val"):
        if split not in splits:
            raise ValueError(f"custom task {task}: no {split} file given")
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"custom task {task}: unknown split(s) {', '.join(sorted(unknown))}")
    images = Path(images).resolve()
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    link = out / "images"
    if link.is_symlink() or link.exists():
        raise FileExistsError(f"{link}: already exists (import into an empty folder)")
    link.symlink_to(images, target_is_directory=True)
    # The user's own files are checked (every image decoded), so errors name their lines, and read
    # in the same pass.
    given = {split: checked_examples(path, images, allow_empty=split == "test", max_image_pixels=max_image_pixels,
                                     task=task)
             for split, path in splits.items()}
    counts = {}
    for split in SPLITS:
        examples = given.get(split, [])
        counts[split] = write_jsonl_atomic(jsonl_path(out, task, split),
                                           (apply_prompt(e, task, prompt) for e in examples))
    summary = {
        "task": task,
        "source": "custom",
        "files": {split: str(Path(path).resolve()) for split, path in sorted(splits.items())},
        "images": str(images),
        "prompt": prompt,
        "metric": metric,
        "counts": counts,
    }
    write_json_atomic(out / SUMMARY, summary)
    return summary
