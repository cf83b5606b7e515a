"""Convert the official NLVR2 release (lil-lab/nlvr, ``nlvr2/``) to the common format.

Annotations (lil-lab/nlvr ``nlvr2/README.md``): ``nlvr2/data/train.json``, ``dev.json``,
``test1.json``, json-lines; ``root`` may be the clone (``root/nlvr2/data/``), its ``nlvr2`` folder
(``root/data/``) or the folder of the files. Images (sent on request, as zips), found in the
folder holding ``data/`` or in the folder above it::

    images/train/<directory>/<pair>-img0.png, -img1.png   (train: 100 folders, ``directory`` field)
    dev/<pair>-img0.png ...   test1/<pair>-img0.png ...    (also accepted under images/)

ViLT's DATA.md (dandelin/ViLT ``DATA.md``, read by ``vilt/utils/write_nlvr2.py``), like most
loaders, has the zips extracted at the clone's root, beside ``nlvr2/``: ``images/train/<directory>/``,
``dev/``, ``test1/``; extracted inside ``nlvr2/`` they are found too.

Each line: ``identifier`` ``<split>-<set>-<pair>-<sentence>`` (e.g. ``train-10171-0-0``),
``sentence``, ``label`` ``"True"``/``"False"``, ``directory`` (train), urls and annotator fields.
The left and right images of a line are ``<split>-<set>-<pair>-img0.png`` and ``-img1.png``
(the identifier without its sentence number; "not all images are actually PNGs", so a stored
copy takes the extension of its bytes).

Example: both images (left, right), the Cauldron's nlvr2 form (``ftbench.data.prompts``): its
left/right preamble, one of its statement templates around ``sentence`` (drawn from a hash of
``identifier``) and ``Answer yes or no.``; answer ``Yes.`` (True) / ``No.`` (False).

Split policies: ``cookbook`` cuts ``train.json`` like the recipe cuts the Cauldron's nlvr2 (built
from NLVR2 train): first ``n_val`` lines -> val, next ``n_test`` -> test, rest -> train.
``official``: train.json -> train, dev.json -> val, test1.json -> test.
"""

from __future__ import annotations

import os
from pathlib import Path

from .annotations import ImageRow, first_existing, read_json_lines, row_units, split_policy_rows
from .common import images_dir
from .pipeline import check_split_policy, run_conversion
from .prompts import nlvr2_prompt, yes_no

TASK = "nlvr2"
OFFICIAL_FILES = {"train": "train.json", "val": "dev.json", "test": "test1.json"}
LABELS = {"true": True, "false": False}


def annotation_file(root: Path, name: str) -> Path:
    found = first_existing([root / "data" / name, root / name, root / "nlvr2" / "data" / name])
    if found is None:
        raise FileNotFoundError(f"{root}: no data/{name} or nlvr2/data/{name} "
                                "(expected lil-lab/nlvr or its nlvr2 folder)")
    return found


def image_bases(annotation: Path) -> list[Path]:
    """The folder holding ``data/`` (``nlvr2/``) and the one above it (ViLT's dataset root)."""
    release = annotation.parent.parent if annotation.parent.name == "data" else annotation.parent
    return [release, release.parent]


def image_pair(identifier: str, where: str) -> tuple[str, str]:
    parts = identifier.split("-")
    if len(parts) != 4:
        raise ValueError(f"{where}: identifier {identifier!r} is not <split>-<set>-<pair>-<sentence>")
    stem = "-".join(parts[:3])
    return f"{stem}-img0.png", f"{stem}-img1.png"


def image_dirs(bases: list[Path], file_stem: str, directory) -> list[Path]:
    dirs = []
    for base in bases:
        for folder in (base / "images" / file_stem, base / file_stem):
            if directory is not None:
                dirs.append(folder / str(directory))
            dirs.append(folder)
    return dirs


def read_rows(path: Path, split_rule, start: int) -> list[ImageRow]:
    bases = image_bases(path)
    rows = []
    for lineno, obj in read_json_lines(path):
        where = f"{path}:{lineno}"
        identifier, sentence = obj.get("identifier"), obj.get("sentence")
        if not isinstance(identifier, str) or not isinstance(sentence, str):
            raise ValueError(f"{where}: missing 'identifier' or 'sentence'")
        label = LABELS.get(str(obj.get("label")).lower())
        if label is None:
            raise ValueError(f"{where}: 'label' must be True or False, got {obj.get('label')!r}")
        dirs = image_dirs(bases, path.stem, obj.get("directory"))
        images = []
        for name in image_pair(identifier, where):
            found = first_existing([d / name for d in dirs])
            if found is None:
                raise ValueError(f"{where}: image {name} not found in {', '.join(str(d) for d in dirs)}")
            images.append(str(found))
        index = start + len(rows)
        rows.append(ImageRow(index, split_rule(index), where, tuple(images), nlvr2_prompt(sentence, identifier),
                             yes_no(label)))
    return rows


def convert_nlvr2_official(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                           split_policy: str, n_val: int, n_test: int, progress: bool | None = None,
                           processes: int) -> dict:
    check_split_policy(split_policy)
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    files, rows, extra = split_policy_rows(split_policy, OFFICIAL_FILES,
                                           lambda split: annotation_file(root, OFFICIAL_FILES[split]), read_rows,
                                           n_val=n_val, n_test=n_test)
    units = row_units(TASK, rows, images_dir(out_dir))
    summary = {"where": str(root), "source": [str(p) for p in files.values()], "split_policy": split_policy, **extra}
    return run_conversion(TASK, units, out_dir, summary=summary, processes=processes, progress=progress,
                          total_rows=len(rows))
