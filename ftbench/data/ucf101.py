"""Convert the UCF-101 subset (``sayakpaul/ucf101-subset``) to the common format.

Follows the recipe's ``convert_ucf101.py`` except that files are processed in sorted order, so
ids are stable across machines:

* splits train, val, test in that order; videos ``<split>/<Class>/*.avi`` sorted; one running
  counter over all videos gives ids ``<split>-<i:010d>``;
* classes = sorted class folder names (union over the splits);
* frames: ``total`` = frame count of the first video stream from the container header
  (``stream.frames``; counted by decoding when 0); kept indices ``floor(k*total/num_frames)``,
  k = 0..num_frames-1; frames decoded sequentially, converted to RGB, not resized, saved as JPEG
  (PIL defaults) at ``images/<split>/<Class>/<video_stem>.<k>.jpg``;
* prompt ``"Classify the video into one of the following classes: " + ", ".join(classes) + "."``,
  answer the class name.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from .common import (
    SPLITS,
    example_id,
    images_dir,
    jsonl_path,
    remove_final_outputs,
    write_json_atomic,
    write_jsonl_atomic,
)

TASK = "ucf101"
ROOT_NAME = "UCF101_subset"
TARBALL_NAME = "UCF101_subset.tar.gz"
PROMPT_PREFIX = "Classify the video into one of the following classes: "


def prompt_for(classes: list[str]) -> str:
    return PROMPT_PREFIX + ", ".join(classes) + "."


def frame_indices(total: int, num_frames: int) -> list[int]:
    """The recipe's uniform-stride sample: ``floor(k * total / num_frames)`` for k < num_frames.

    Exact integer arithmetic (the recipe's float ``arange`` can rarely yield an extra index).
    """
    return [(k * total) // num_frames for k in range(num_frames)]


def _is_tarball(p: Path) -> bool:
    return p.is_file() and (p.name.endswith((".tar.gz", ".tgz", ".tar")))


def _split_root(folder: Path) -> Path | None:
    """``folder`` if it holds split folders, else ``folder/UCF101_subset`` if that does."""
    for cand in (folder, folder / ROOT_NAME):
        if cand.is_dir() and any((cand / s).is_dir() for s in SPLITS):
            return cand
    return None


def _resolve_source(source: Path) -> tuple[Path | None, Path | None]:
    """Return (extracted root folder, tarball); exactly one is not None."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    if source.is_file():
        if not _is_tarball(source):
            raise ValueError(f"{source}: expected {TARBALL_NAME} (a .tar.gz) or a folder")
        return None, source
    root = _split_root(source)
    if root is not None:
        return root, None
    if (source / TARBALL_NAME).is_file():
        return None, source / TARBALL_NAME
    raise FileNotFoundError(
        f"{source}: holds neither {ROOT_NAME}/{{train,val,test}}, train/val/test folders, nor {TARBALL_NAME}"
    )


def _extract(tarball: Path, dest: Path) -> Path:
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{tarball}: cannot extract ({e})") from None
    root = _split_root(dest)
    if root is None:
        raise ValueError(f"{tarball}: archive has no {ROOT_NAME}/{{train,val,test}} folders")
    return root


def list_videos(root: Path) -> dict[str, list[tuple[str, Path]]]:
    """``{split: [(class, path), ...]}`` sorted by class then file name."""
    out: dict[str, list[tuple[str, Path]]] = {}
    for split in SPLITS:
        d = root / split
        vids = [(p.parent.name, p) for p in d.glob("*/*.avi")] if d.is_dir() else []
        out[split] = sorted(vids, key=lambda cp: (cp[0], cp[1].name))
    return out


def count_frames_by_decoding(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def sample_frames(path: Path, num_frames: int, name: str | None = None):
    """Decode ``path`` and return ``(total, indices, [PIL RGB images])`` for the kept frames.

    Raises ``ValueError("<name>: ...")`` when fewer than ``num_frames`` distinct frames result.
    """
    import av

    name = name or str(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise ValueError(f"{name}: no video stream")
            total = int(c.streams.video[0].frames or 0)
        if total <= 0:
            total = count_frames_by_decoding(path)
        indices = frame_indices(total, num_frames)
        wanted = sorted(set(indices))
        if len(wanted) < num_frames:
            raise ValueError(f"{name}: {total} frames, fewer than the {num_frames} frames asked for")
        images = []
        pos = 0
        with av.open(str(path)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                if i == wanted[pos]:
                    images.append(frame.to_image().convert("RGB"))
                    pos += 1
                    if pos == len(wanted):
                        break
    except av.error.FFmpegError as e:
        raise ValueError(f"{name}: cannot decode video ({e})") from None
    if len(images) < num_frames:
        raise ValueError(
            f"{name}: yielded {len(images)} of {num_frames} frames (header says {total} frames)"
        )
    return total, indices, images


def convert_ucf101(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_frames: int = 8,
    progress: bool | None = None,
) -> dict:
    """Convert ``UCF101_subset.tar.gz`` or an extracted folder into ``out_dir``.

    ``source`` may be the tarball, a folder holding ``UCF101_subset/`` (preferred) or the
    tarball, or the ``UCF101_subset`` folder itself. A tarball is extracted into a temporary
    folder inside ``out_dir``, removed afterwards. Returns the summary also written to
    ``out_dir/summary.json``.
    """
    from tqdm import tqdm

    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    source = Path(source)
    root, tarball = _resolve_source(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_final_outputs(out, TASK)

    tmp_dir = None
    try:
        if tarball is not None:
            tmp_dir = Path(tempfile.mkdtemp(prefix=".extract-", dir=out))
            root = _extract(tarball, tmp_dir)
        videos = list_videos(root)
        classes = sorted({cls for split in SPLITS for cls, _ in videos[split]})
        if not classes:
            raise ValueError(f"{tarball or root}: no <split>/<Class>/*.avi videos")
        prompt = prompt_for(classes)
        img_root = images_dir(out)
        records: dict[str, list[dict]] = {s: [] for s in SPLITS}
        n_total = sum(len(v) for v in videos.values())
        index = 0
        with tqdm(total=n_total, desc="convert ucf101", unit="video",
                  disable=(not progress) if progress is not None else None) as bar:
            for split in SPLITS:
                for cls, path in videos[split]:
                    rel_video = path.relative_to(root).as_posix()
                    name = f"{tarball}:{ROOT_NAME}/{rel_video}" if tarball is not None else str(path)
                    _, _, frames = sample_frames(path, num_frames, name=name)
                    folder = img_root / split / cls
                    folder.mkdir(parents=True, exist_ok=True)
                    rels = []
                    for k, img in enumerate(frames):
                        rel = f"{split}/{cls}/{path.stem}.{k}.jpg"
                        img.save(img_root / rel, format="JPEG")
                        rels.append(rel)
                    records[split].append({
                        "id": example_id(split, index),
                        "source": TASK,
                        "conversations": [{"images": rels, "user": prompt, "assistant": cls}],
                    })
                    index += 1
                    bar.update(1)
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    for split in SPLITS:  # jsonl last: an interrupted conversion leaves no final jsonl
        write_jsonl_atomic(jsonl_path(out, TASK, split), records[split])
    summary = {
        "task": TASK,
        "source": str(tarball if tarball is not None else root),
        "num_frames": num_frames,
        "classes": classes,
        "counts": {s: len(records[s]) for s in SPLITS},
        "images": sum(len(r["conversations"][0]["images"]) for s in SPLITS for r in records[s]),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary
