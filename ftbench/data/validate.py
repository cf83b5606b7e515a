"""Checks a dataset in the common format (``ftbench validate <jsonl> [<image_dir>]``).

Every problem is reported with its file and line: malformed JSON, missing keys, ``<|image_N|>`` tags
that do not match the turn's images, empty answers, text fields longer than any model reads
(``common.MAX_TEXT_CHARS``), duplicate ids, and images that are missing, empty, symlinks out of the
image folder, larger than ``max_image_pixels`` or cannot be decoded. Conversions end with
``check_dataset`` so that the workflow refuses a broken dataset before any training starts. An empty
file is a problem, except a split that may be empty (``may_be_empty``: the test split, which
conversions write empty when ``n_test`` is 0), so ``ftbench validate`` accepts every file a
conversion publishes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ftbench.schema import task_default

from .common import SPLITS, example_lines, image_root_for

# Splits that must hold examples: the workflow trains on train and evaluates on val.
REQUIRED_SPLITS = ("train", "val")


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int | None  # None: the problem is about the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"


def may_be_empty(jsonl: str | os.PathLike) -> bool:
    """Whether a file may hold no example: a split file named as conversions name it
    (``<task>_<split>.jsonl``, ``ftbench.data.common.jsonl_path``) of a split other than train and val."""
    name = Path(jsonl).name
    return any(name.endswith(f"_{split}.jsonl") for split in SPLITS if split not in REQUIRED_SPLITS)


@contextmanager
def without_pil_pixel_limit():
    """PIL's decompression-bomb check off: it warns above 89.5 Mpx and refuses above twice that
    before the size can be read, while the limit here is ``max_image_pixels``, named in the message."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def link_problem(path: Path, folder: Path) -> str | None:
    """A symlink on the way to ``path`` that leads out of the (resolved) image ``folder`` is refused as
    a ``../`` path is (``common._check_turn``): the dataset would read a file it does not hold."""
    target = path.resolve()
    if not target.is_relative_to(folder):
        return f"a symlink to {target}, outside the image folder {folder} (copy the file into the folder)"
    return None


def image_problem(path: Path, max_pixels: int, task: str = "<task>", decode: bool = True) -> str | None:
    """What is wrong with an image file, or None when it decodes and has at most ``max_pixels``
    pixels (read from its header, before decoding). ``decode=False`` reads the header only: for
    images the project encoded itself, which decoding again would not check anything of."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "image file not found"
    if not path.is_file():
        return "not a file"
    if size == 0:
        return "image file is empty (0 bytes)"
    try:
        with without_pil_pixel_limit(), Image.open(path) as image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                return (f"{image.width}x{image.height} pixels ({pixels:,}), more than max_image_pixels {max_pixels:,} "
                        f"(downscale the image, or raise tasks.{task}.max_image_pixels in the config)")
            if not decode:
                return None
            # JPEGs decode at 1/8 scale: every entropy-coded block is still read (a truncated or
            # corrupt file fails), at a fraction of the cost of a full decode.
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"not a readable image ({reason})"
    return None


def _checked(jsonl: str | os.PathLike, image_dir: str | os.PathLike | None, allow_empty: bool,
             max_image_pixels: int | None, task: str, decode_images: bool) -> Iterator[Problem | dict]:
    """Every problem of a jsonl file and the images it references (``dataset_problems``), and every
    example that has none, in line order."""
    path = Path(jsonl)
    root = Path(image_dir) if image_dir is not None else image_root_for(path)
    if max_image_pixels is None:
        max_image_pixels = task_default("max_image_pixels")
    if not path.is_file():
        yield Problem(path, None, "no such file")
        return
    if not root.is_dir():
        yield Problem(root, None, "image folder not found")
        return
    folder = root.resolve()  # the folder itself may be a link (a custom import's images/)
    checked: dict[str, str | None] = {}  # an image shared by several examples is decoded once
    lines = 0
    for lineno, example, problem in example_lines(path):
        lines += 1
        if problem:
            yield Problem(path, lineno, problem)
        if example is None:
            continue
        ok = problem is None
        for t, turn in enumerate(example["conversations"]):
            for k, rel in enumerate(turn["images"]):
                if rel not in checked:
                    checked[rel] = (link_problem(root / rel, folder)
                                    or image_problem(root / rel, max_image_pixels, task, decode_images))
                if checked[rel]:
                    ok = False
                    yield Problem(path, lineno, f"conversations[{t}].images[{k}] {root / rel}: {checked[rel]}")
        if ok:
            yield example
    if lines == 0 and not allow_empty:
        yield Problem(path, None, "no examples (the file is empty)")


def dataset_problems(jsonl: str | os.PathLike, image_dir: str | os.PathLike | None = None,
                     allow_empty: bool = False, max_image_pixels: int | None = None,
                     task: str = "<task>", decode_images: bool = True) -> Iterator[Problem]:
    """Every problem of a common-format jsonl file and the images it references (relative to
    ``image_dir``, by default the ``images/`` folder next to the file), in line order. A file without
    any example is a problem unless ``allow_empty`` (e.g. an unused test split). ``max_image_pixels``
    defaults to the schema's ``tasks.<task>.max_image_pixels``; ``task`` names that key in messages.
    ``decode_images=False``: images are checked from their headers only (``image_problem``)."""
    for item in _checked(jsonl, image_dir, allow_empty, max_image_pixels, task, decode_images):
        if isinstance(item, Problem):
            yield item


def check_dataset(jsonl: str | os.PathLike, image_dir: str | os.PathLike | None = None,
                  allow_empty: bool = False, max_image_pixels: int | None = None, task: str = "<task>",
                  decode_images: bool = True) -> None:
    """Raises ``ValueError`` with the first problem (``<file>:<line>: <problem>``), if any."""
    for problem in dataset_problems(jsonl, image_dir, allow_empty, max_image_pixels, task, decode_images):
        raise ValueError(str(problem))


def checked_examples(jsonl: str | os.PathLike, image_dir: str | os.PathLike | None = None,
                     allow_empty: bool = False, max_image_pixels: int | None = None,
                     task: str = "<task>") -> list[dict]:
    """The examples of a file ``check_dataset`` accepts, read in the same pass; raises as it does."""
    examples = []
    for item in _checked(jsonl, image_dir, allow_empty, max_image_pixels, task, decode_images=True):
        if isinstance(item, Problem):
            raise ValueError(str(item))
        examples.append(item)
    return examples
