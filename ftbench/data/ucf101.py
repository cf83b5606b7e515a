"""Convert the UCF-101 subset (``sayakpaul/ucf101-subset``) and the official UCF-101 release
(``convert_ucf101_official``: ``UCF-101/<Class>/*.avi`` plus ``ucfTrainTestlist/``) to the common
format. Videos are the units of parallel work (``processes``); the leakage report hashes video files.

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
from dataclasses import dataclass
from pathlib import Path

from ftbench.schema import task_default

from .common import SPLITS, example_id, images_dir, remove_final_outputs
from .pipeline import UnitResult, run_conversion
from .prompts import ucf101_prompt

TASK = "ucf101"
ROOT_NAME = "UCF101_subset"
TARBALL_NAME = "UCF101_subset.tar.gz"
OFFICIAL_VIDEO_DIR = "UCF-101"
LISTS_DIR = "ucfTrainTestlist"


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


@dataclass(frozen=True)
class VideoUnit:
    """One video: decode, keep ``num_frames`` frames as JPEG, hash the video file."""

    path: str
    name: str  # for error messages (``<tarball>:<member>`` inside a tarball)
    split: str
    cls: str
    index: int
    num_frames: int
    prompt: str
    img_root: str

    def run(self) -> UnitResult:
        from .leakage import file_hash

        path = Path(self.path)
        _, _, frames = sample_frames(path, self.num_frames, name=self.name)
        folder = Path(self.img_root) / self.split / self.cls
        folder.mkdir(parents=True, exist_ok=True)
        rels = []
        for k, img in enumerate(frames):
            rel = f"{self.split}/{self.cls}/{path.stem}.{k}.jpg"
            img.save(Path(self.img_root) / rel, format="JPEG")
            rels.append(rel)
        ex_id = example_id(self.split, self.index)
        example = {"id": ex_id, "source": TASK,
                   "conversations": [{"images": rels, "user": self.prompt, "assistant": self.cls}]}
        return UnitResult(examples=[(self.split, example)], hashes=[(self.split, ex_id, file_hash(path))], rows=1)


def convert_ucf101(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_frames: int = task_default("num_frames"),
    progress: bool | None = None,
    processes: int = task_default("processes"),
) -> dict:
    """Convert ``UCF101_subset.tar.gz`` or an extracted folder into ``out_dir``.

    ``source`` may be the tarball, a folder holding ``UCF101_subset/`` (preferred) or the
    tarball, or the ``UCF101_subset`` folder itself. A tarball is extracted into a temporary
    folder inside ``out_dir``, removed afterwards. Videos are decoded over ``processes``
    processes. Returns the summary also written to ``out_dir/summary.json``.
    """
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
        prompt = ucf101_prompt(classes)
        units = []
        for split in SPLITS:
            for cls, path in videos[split]:
                rel_video = path.relative_to(root).as_posix()
                name = f"{tarball}:{ROOT_NAME}/{rel_video}" if tarball is not None else str(path)
                units.append(VideoUnit(str(path), name, split, cls, len(units), num_frames, prompt,
                                       str(images_dir(out))))
        summary = {"source": str(tarball if tarball is not None else root), "split_policy": "cookbook",
                   "num_frames": num_frames, "classes": classes}
        return run_conversion(TASK, units, out, summary=summary, processes=processes, progress=progress,
                              total_rows=len(units), unit_name="video", hash_unit="video file", min_val=0)
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the official UCF-101 release


def _official_layout(source: Path) -> tuple[Path, Path]:
    """(folder of the class folders, ucfTrainTestlist folder)."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such directory")
    video_root = source / OFFICIAL_VIDEO_DIR if (source / OFFICIAL_VIDEO_DIR).is_dir() else source
    for lists in (source / LISTS_DIR, source.parent / LISTS_DIR, video_root / LISTS_DIR, source):
        if (lists / "classInd.txt").is_file():
            return video_root, lists
    raise FileNotFoundError(f"{source}: no {LISTS_DIR}/classInd.txt (expected UCF-101/ and {LISTS_DIR}/)")


def read_class_index(path: Path) -> list[str]:
    classes = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<index> <ClassName>'")
        classes.append(parts[1])
    if not classes:
        raise ValueError(f"{path}: no classes")
    return classes


def _resolve_video(video_root: Path, rel: str, listing: dict) -> Path | None:
    """``video_root/rel``, else the same path matched case-insensitively (the official lists write
    ``HandstandPushups/v_HandStandPushups_*.avi`` while the files are spelt differently)."""
    exact = video_root / rel
    if exact.is_file():
        return exact
    folder, _, name = rel.partition("/")
    key = folder.lower()
    if key not in listing:
        dirs = {p.name.lower(): p for p in video_root.iterdir() if p.is_dir()}
        listing[key] = {f.name.lower(): f for f in dirs[key].iterdir()} if key in dirs else {}
    return listing[key].get(name.lower())


def read_split_list(path: Path, video_root: Path, classes: list[str]) -> list[tuple[str, Path]]:
    """``[(class, video)]`` of a trainlist/testlist file, sorted by class then file name."""
    canonical = {c.lower(): c for c in classes}
    listing: dict = {}
    entries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rel = line.split()[0]
        cls = canonical.get(rel.partition("/")[0].lower())
        if "/" not in rel or cls is None:
            raise ValueError(f"{path}:{lineno}: {rel!r} is not <Class>/<video>.avi of a class in classInd.txt")
        video = _resolve_video(video_root, rel, listing)
        if video is None:
            raise ValueError(f"{path}:{lineno}: video {rel} not found under {video_root}")
        entries.append((cls, video))
    return sorted(entries, key=lambda cv: (cv[0], cv[1].name))


def convert_ucf101_official(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split_policy: str,
    ucf_split: int,
    num_frames: int,
    progress: bool | None = None,
    processes: int,
) -> dict:
    """Convert the official UCF-101 release: ``trainlist0<ucf_split>.txt`` -> train,
    ``testlist0<ucf_split>.txt`` -> val (the split the workflow evaluates); test stays empty."""
    from .pipeline import check_split_policy

    check_split_policy(split_policy)
    if split_policy == "cookbook":
        raise ValueError(
            f"{source}: split policy cookbook is not defined for the official UCF-101 release (the recipe "
            "uses sayakpaul/ucf101-subset); use split_policy official or source ucf101_subset"
        )
    if ucf_split not in (1, 2, 3):
        raise ValueError(f"ucf_split must be 1, 2 or 3, got {ucf_split}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    video_root, lists = _official_layout(Path(source))
    classes = read_class_index(lists / "classInd.txt")
    prompt = ucf101_prompt(sorted(classes))
    out = Path(out_dir)
    files = {"train": lists / f"trainlist0{ucf_split}.txt", "val": lists / f"testlist0{ucf_split}.txt"}
    units = []
    for split, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing")
        for cls, video in read_split_list(path, video_root, classes):
            units.append(VideoUnit(str(video), str(video), split, cls, len(units), num_frames, prompt,
                                   str(images_dir(out))))
    summary = {"source": str(video_root), "split_policy": split_policy, "ucf_split": ucf_split,
               "lists": {s: str(p) for s, p in files.items()}, "num_frames": num_frames,
               "classes": sorted(classes)}
    return run_conversion(TASK, units, out, summary=summary, processes=processes, progress=progress,
                          total_rows=len(units), unit_name="video", hash_unit="video file")
