"""The common example format shared by every converter, trainer and evaluator.

One conversion writes, for a task ``T`` into ``out_dir``::

    out_dir/T_train.jsonl  out_dir/T_val.jsonl  out_dir/T_test.jsonl
    out_dir/images/...      (files referenced by the jsonl, paths relative to this folder)
    out_dir/summary.json

Each jsonl line is one example::

    {"id": "val-0000000003", "source": "T",
     "conversations": [{"images": ["val/val-0000000003_0.png"], "user": "...", "assistant": "..."},
                       {"images": [], "user": "...", "assistant": "..."}]}

``user`` needs no ``<|image_N|>`` tags: the processor prepends one tag per image of the turn. Converters
write none; a custom dataset may place them itself, exactly ``<|image_1|>..<|image_n|>`` for the turn's
``n`` images.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ftbench.atomic import atomic_open, write_json_atomic  # noqa: F401

TASKS = ("docvqa", "hateful_memes", "nlvr2", "ucf101")
CAULDRON_TASKS = ("docvqa", "hateful_memes", "nlvr2")
SPLITS = ("train", "val", "test")
SUMMARY = "summary.json"  # beside the split files: what a conversion read, kept and skipped
IMAGE_TAG_PREFIX = "<|image_"  # an image tag is <|image_N|>, N = 1, 2, ... (image_tag)
IMAGE_TAG_RE = re.compile(re.escape(IMAGE_TAG_PREFIX) + r"(\d+)\|>")
# The longest text a turn's user or assistant field may hold. No model here reads more than 131072
# tokens (the longest context of the presets, ftbench/models/presets.py), and English text averages
# about 4 characters a token: a field longer than 131072 x 32 characters could fit that context only
# if its tokens averaged 8 times longer. Refused when the file is read, so a 50 MB answer stops the
# import at its line instead of reaching a 54 GB allocation in the base's pretraining.
MAX_TEXT_CHARS = 131072 * 32


def image_tag(n: int) -> str:
    """The tag of a turn's ``n``-th image in its user text (``<|image_1|>`` first)."""
    return f"{IMAGE_TAG_PREFIX}{n}|>"


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task


def example_id(split: str, index: int) -> str:
    """Id of the ``index``-th example of a conversion (running counter over all splits)."""
    return f"{split}-{index:010d}"


def jsonl_path(out_dir: str | os.PathLike, task: str, split: str) -> Path:
    return Path(out_dir) / f"{task}_{split}.jsonl"


def images_dir(out_dir: str | os.PathLike) -> Path:
    """Folder the ``images`` entries of a conversion are relative to."""
    return Path(out_dir) / "images"


def image_root_for(jsonl: str | os.PathLike) -> Path:
    """``images/`` folder next to a common-format jsonl file."""
    return Path(jsonl).parent / "images"


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write ``records`` one JSON object per line to ``path`` via ``path.tmp`` + ``os.replace``.

    Returns the number of lines written.
    """
    count = 0
    with atomic_open(Path(path), newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, separators=(", ", ": ")))
            f.write("\n")
            count += 1
    return count


def remove_final_outputs(out_dir: str | os.PathLike, task: str) -> None:
    """Delete a previous conversion's final files so an interrupted rerun leaves none behind."""
    for split in SPLITS:
        p = jsonl_path(out_dir, task, split)
        if p.exists():
            p.unlink()
    summary = Path(out_dir) / SUMMARY
    if summary.exists():
        summary.unlink()


def _check_turn(turn: Any, t: int) -> str | None:
    if not isinstance(turn, dict):
        return f"conversations[{t}] is not an object"
    for key in ("images", "user", "assistant"):
        if key not in turn:
            return f"conversations[{t}] is missing key {key!r}"
    images = turn["images"]
    if not isinstance(images, list):
        return f"conversations[{t}].images is not a list"
    for k, img in enumerate(images):
        if not isinstance(img, str) or not img:
            return f"conversations[{t}].images[{k}] is not a non-empty string"
        p = PurePosixPath(img)
        if p.is_absolute() or ".." in p.parts or "\\" in img:
            return f"conversations[{t}].images[{k}] = {img!r} is not a relative path inside images/"
    for key in ("user", "assistant"):
        if not isinstance(turn[key], str):
            return f"conversations[{t}].{key} is not a string"
        if len(turn[key]) > MAX_TEXT_CHARS:
            return (f"conversations[{t}].{key} is {len(turn[key]):,} characters, more than {MAX_TEXT_CHARS:,} "
                    "(131072 tokens, the longest context here, at 32 characters a token)")
    if not turn["assistant"].strip():
        return f"conversations[{t}].assistant is empty (nothing to train on or score against)"
    # Tags are optional (the processor prepends <|image_1|>..<|image_n|>); explicit ones, as in the
    # recipe's own jsonl, must name each image of the turn exactly once.
    user = turn["user"]
    tags = sorted(int(n) for n in IMAGE_TAG_RE.findall(user))
    if user.count(IMAGE_TAG_PREFIX) != len(tags):
        return f"conversations[{t}].user has a malformed image tag (expected <|image_N|>)"
    if tags and tags != list(range(1, len(images) + 1)):
        found = ", ".join(f"<|image_{n}|>" for n in tags)
        return (f"conversations[{t}].user has image tags {found} but the turn has {len(images)} image(s); "
                f"expected no tags or each of <|image_1|>..<|image_{len(images)}|> once")
    return None


def validate_example(obj: Any) -> str | None:
    """Return a description of what is wrong with one example, or None if it is valid."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for key in ("id", "source", "conversations"):
        if key not in obj:
            return f"missing key {key!r}"
    if not isinstance(obj["id"], str) or not obj["id"]:
        return "'id' is not a non-empty string"
    if not isinstance(obj["source"], str):
        return "'source' is not a string"
    convs = obj["conversations"]
    if not isinstance(convs, list) or not convs:
        return "'conversations' is not a non-empty list"
    for t, turn in enumerate(convs):
        err = _check_turn(turn, t)
        if err:
            return err
    return None


def json_values(path: str | os.PathLike) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, value, None)`` for every non-blank line of a json-lines file, or ``(line number,
    None, problem)`` for a line that is not UTF-8 text or not JSON. Lines end at ``\\n`` only."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, f"not UTF-8 text (byte {e.start + 1})"
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, None, f"invalid JSON ({e.msg} at column {e.colno})"
                continue
            yield lineno, value, None


def json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a json-lines file; a line that is not
    JSON raises ``ValueError("<path>:<line>: invalid JSON (...)")`` (not UTF-8: likewise)."""
    for lineno, value, problem in json_values(path):
        if problem:
            raise ValueError(f"{path}:{lineno}: {problem}")
        yield lineno, value


def example_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line number, example, problem)`` for every non-blank line of a common-format jsonl file, in
    order. ``problem`` is None for a valid example, else what is wrong with the line: not UTF-8 or
    not JSON (``json_values``), not an example (``validate_example``; ``example`` is then None), or
    the id of an earlier line (``example`` is given: what it references can still be checked)."""
    first_line_of: dict[str, int] = {}
    for lineno, value, problem in json_values(path):
        if problem is None:
            problem = validate_example(value)
        if problem:
            yield lineno, None, problem
            continue
        first = first_line_of.setdefault(value["id"], lineno)
        yield lineno, value, None if first == lineno else f"duplicate id {value['id']!r} (first on line {first})"


def read_examples(jsonl_path: str | os.PathLike) -> list[dict]:
    """Parse a common-format jsonl file.

    Blank lines are skipped. Any malformed line raises
    ``ValueError("<path>:<lineno>: <what is wrong>")`` (``example_lines``). Duplicate ids are an error too.
    """
    path = Path(jsonl_path)
    examples: list[dict] = []
    for lineno, example, problem in example_lines(path):
        if problem:
            raise ValueError(f"{path}:{lineno}: {problem}")
        examples.append(example)
    return examples
