"""Convert the official NLVR2 release (lil-lab/nlvr, ``nlvr2/``) to the common format.

Layout (``root`` = the ``nlvr2`` folder)::

    data/train.json  data/dev.json  data/test1.json     (json-lines; also accepted in root itself)
    images/train/<directory>/<pair>-img0.png, -img1.png  (train: 100 folders, ``directory`` field)
    dev/<pair>-img0.png ...   test1/<pair>-img0.png ...  (also accepted under images/)

Each line: ``identifier`` ``<split>-<set>-<pair>-<sentence>`` (e.g. ``train-10171-0-0``),
``sentence``, ``label`` ``"True"``/``"False"``, ``directory`` (train), urls and annotator fields.
The left and right images of a line are ``<split>-<set>-<pair>-img0.png`` and ``-img1.png``
(the identifier without its sentence number).

Example: both images (left, right), prompt ``sentence + "\\nTrue or False?"`` (the form of the
synthetic stand-in), answer ``True``/``False``.

Split policies: ``cookbook`` cuts ``train.json`` like the recipe cuts the Cauldron's nlvr2 (built
from NLVR2 train): first ``n_val`` lines -> val, next ``n_test`` -> test, rest -> train.
``official``: train.json -> train, dev.json -> val, test1.json -> test.
"""

from __future__ import annotations

import os
from pathlib import Path

from .annotations import ImageRow, first_existing, read_json_lines, row_units
from .common import images_dir
from .pipeline import Fixed, Slices, check_split_policy, run_conversion

TASK = "nlvr2"
OFFICIAL_FILES = {"train": "train.json", "val": "dev.json", "test": "test1.json"}
PROMPT_SUFFIX = "\nTrue or False?"
LABELS = {"true": "True", "false": "False"}


def prompt_for(sentence: str) -> str:
    return sentence + PROMPT_SUFFIX


def annotation_file(root: Path, name: str) -> Path:
    found = first_existing([root / "data" / name, root / name])
    if found is None:
        raise FileNotFoundError(f"{root}: no data/{name} (expected the nlvr2 folder of lil-lab/nlvr)")
    return found


def image_pair(identifier: str, where: str) -> tuple[str, str]:
    parts = identifier.split("-")
    if len(parts) != 4:
        raise ValueError(f"{where}: identifier {identifier!r} is not <split>-<set>-<pair>-<sentence>")
    stem = "-".join(parts[:3])
    return f"{stem}-img0.png", f"{stem}-img1.png"


def image_dirs(root: Path, file_stem: str, directory) -> list[Path]:
    bases = [root / "images" / file_stem, root / file_stem]
    dirs = []
    for base in bases:
        if directory is not None:
            dirs.append(base / str(directory))
        dirs.append(base)
    return dirs


def read_rows(path: Path, root: Path, split_rule, start: int) -> list[ImageRow]:
    rows = []
    for lineno, obj in read_json_lines(path):
        where = f"{path}:{lineno}"
        identifier, sentence = obj.get("identifier"), obj.get("sentence")
        if not isinstance(identifier, str) or not isinstance(sentence, str):
            raise ValueError(f"{where}: missing 'identifier' or 'sentence'")
        label = LABELS.get(str(obj.get("label")).lower())
        if label is None:
            raise ValueError(f"{where}: 'label' must be True or False, got {obj.get('label')!r}")
        dirs = image_dirs(root, path.stem, obj.get("directory"))
        images = []
        for name in image_pair(identifier, where):
            found = first_existing([d / name for d in dirs])
            if found is None:
                raise ValueError(f"{where}: image {name} not found in {', '.join(str(d) for d in dirs)}")
            images.append(str(found))
        index = start + len(rows)
        rows.append(ImageRow(index, split_rule(index), where, tuple(images), prompt_for(sentence), label))
    return rows


def convert_nlvr2_official(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                           split_policy: str = "official", n_val: int = 500, n_test: int = 0,
                           progress: bool | None = None, processes: int = 1) -> dict:
    check_split_policy(split_policy)
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    if split_policy == "cookbook":
        files = {"train": annotation_file(root, OFFICIAL_FILES["train"])}
        rows = read_rows(files["train"], root, Slices(n_val, n_test), 0)
        extra = {"n_val": n_val, "n_test": n_test}
    else:
        files = {s: annotation_file(root, name) for s, name in OFFICIAL_FILES.items()}
        rows = []
        for split, path in files.items():
            rows += read_rows(path, root, Fixed(split), len(rows))
        extra = {"splits": {s: p.name for s, p in files.items()}}
    units = row_units(TASK, rows, images_dir(out_dir))
    summary = {"where": str(root), "source": [str(p) for p in files.values()], "split_policy": split_policy, **extra}
    return run_conversion(TASK, units, out_dir, summary=summary, processes=processes, progress=progress,
                          total_rows=len(rows))
