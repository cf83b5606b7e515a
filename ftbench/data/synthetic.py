"""Deterministic synthetic stand-ins for the four recipe datasets, in their real raw layouts.

Every task is answerable only from the pixels (the text is independent of the label). The labels
depend on small features among distractors, their sizes drawn from wide ranges so that the embedded
default's tiny model (56 px crops of 14 px patches) learns each task only partly within its budget
of 80-250 optimizer steps: the strategies land at different accuracies between chance and 100
instead of all at 100, which is what a benchmark of fine-tuning strategies needs (the sizes are the
``DOCVQA_STAMP``, ``HATEFUL_STICKER``, ``NLVR2_SQUARE`` and ``UCF_SIDE`` knobs below):

* docvqa: the colour (red/green/blue/yellow) of one stamp (a 12-32 px square) on a page of grey
  text lines and 1-3 grey figure blocks (distractors).
* hateful_memes: ``yes`` iff a sticker (a 4-24 px square, anywhere) is red (``no``: blue); the big
  circle or square under or beside it is green or yellow, independent of the label (distractors).
* nlvr2: ``True`` iff at least one of the two images holds a red square, each image holding 1-3
  squares of 5-17 px, the others green/blue/yellow.
* ucf101: the square's colour tells the axis only (red/green: MoveLeft/MoveRight, blue/yellow:
  MoveDown/MoveUp, drawn at random), so the direction has to be read from where the square sits: it
  starts near the edge opposite to its motion and crosses 75-95% of the frame, so the first (or last)
  frame alone reveals it.

* ``docvqa``, ``hateful_memes``, ``nlvr2``: one Cauldron subset, i.e.
  ``<raw_dir>/<task>/train-00000-of-00001.parquet`` with columns
  ``images: list<struct<bytes: binary, path: string>>`` and
  ``texts: list<struct<user: string, assistant: string, source: string>>``.
* ``ucf101``: ``<raw_dir>/UCF101_subset.tar.gz`` with ``UCF101_subset/{train,val,test}/<Class>/*.avi``.

All randomness comes from one ``numpy.random.Generator(PCG64(seed))`` per call, so the same
(task, n_rows, seed) gives byte-identical files with the same library versions.
"""

from __future__ import annotations

import colorsys
import gzip
import io
import json
import math
import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .common import CAULDRON_TASKS, SPLITS, check_task
from .prompts import DOCVQA_QUESTIONS, HATEFUL_QUESTION, NLVR2_FOLLOWUP, NLVR2_STATEMENT
from .ucf101 import ROOT_NAME as UCF_ROOT
from .ucf101 import TARBALL_NAME as UCF_TARBALL

# --------------------------------------------------------------------------------------------
# constants

PARQUET_NAME = "train-00000-of-00001.parquet"
ROWS_PER_GROUP = 64  # parquet row-group size

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 30),
}
COLOUR_NAMES = tuple(COLOURS)

NLVR2_FOLLOWUP_RATE = 0.3
HATEFUL_COLOURS = {"yes": "red", "no": "blue"}  # answer -> colour of the big shape
NLVR2_TARGET = "red"
NLVR2_OTHERS = tuple(c for c in COLOUR_NAMES if c != NLVR2_TARGET)  # green, blue, yellow
# Difficulty knobs (sizes in px of the raw images; the tiny model sees 56 px crops, 14 px patches).
# Each size is drawn uniformly from a wide range: the large ones keep the rule learnable from the
# first steps (a narrow range of small sizes left some cells stuck at one constant answer), the
# small ones keep accuracy below 100.
DOCVQA_STAMP = (12, 32)  # side of the coloured stamp
DOCVQA_FIGURES = (1, 3)  # grey distractor blocks per page
DOCVQA_JITTER = 18
HATEFUL_STICKER = (4, 24)  # side of the red/blue sticker
HATEFUL_DISTRACTORS = ("green", "yellow")  # colours of the big shape
NLVR2_SQUARE = (5, 17)  # side of each square
NLVR2_COUNT = (1, 3)  # squares per image

_CAPTION_SUBJECTS = (
    "my cat", "the weekend", "grandma", "a tiny robot", "my houseplant", "coffee",
    "the office printer", "our dog", "a pigeon", "the pizza delivery", "my alarm clock",
    "the group chat", "a sleepy panda", "my code", "the neighbour's goose",
)
_CAPTION_PREDICATES = (
    "when it finally rains", "on a monday morning", "trying to do yoga", "after one cup of tea",
    "at the beach", "learning to juggle", "waiting for the bus", "discovering snacks",
    "in slow motion", "right before the deadline", "at a birthday party", "after the update",
)

UCF_CLASSES = ("MoveDown", "MoveLeft", "MoveRight", "MoveUp")
UCF_DIRECTIONS = {"MoveDown": (0, 1), "MoveLeft": (-1, 0), "MoveRight": (1, 0), "MoveUp": (0, -1)}
# The square's colour, drawn at random from its class's palette, tells the axis of the motion but not
# its sign: colour alone gives 50% at most (chance 25%), the rest needs the square's position. (Measured
# earlier: position alone, one random colour for every class, stayed at chance after 60 steps.)
UCF_CLASS_COLOURS = {"MoveDown": ("blue", "yellow"), "MoveLeft": ("red", "green"), "MoveRight": ("red", "green"),
                     "MoveUp": ("blue", "yellow")}
UCF_SIDE = (26, 30)
UCF_FRAMES = 16
UCF_WIDTH, UCF_HEIGHT = 64, 48
UCF_FPS = 25
UCF_CLIPS_PER_GROUP = 4
UCF_START_MAX = 0.10  # start within the first 10% of the span from the edge opposite to the motion
UCF_TRAVEL = (0.75, 0.95)  # fraction of the span travelled over the clip

# Hugging Face `datasets` feature description stored in the parquet metadata, so that
# `datasets.load_dataset("parquet", ...)` decodes `images` as Image features like the real data.
_HF_FEATURES = {
    "info": {
        "features": {
            "images": {"feature": {"_type": "Image"}, "_type": "Sequence"},
            "texts": [
                {
                    "user": {"dtype": "string", "_type": "Value"},
                    "assistant": {"dtype": "string", "_type": "Value"},
                    "source": {"dtype": "string", "_type": "Value"},
                }
            ],
        }
    }
}


def cauldron_schema():
    """The exact arrow schema of a Cauldron subset (without the HF metadata)."""
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn = pa.struct([("user", pa.string()), ("assistant", pa.string()), ("source", pa.string())])
    return pa.schema([("images", pa.list_(image)), ("texts", pa.list_(turn))])


# --------------------------------------------------------------------------------------------
# small helpers


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``n`` labels in ``range(k)``, each used n//k or n//k+1 times, in random order."""
    return rng.permutation(np.arange(n) % k)


def _jitter(rng: np.random.Generator, rgb: Sequence[int], amount: int = 18) -> tuple[int, int, int]:
    arr = np.asarray(rgb, dtype=int) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(arr, 0, 255))


def _saturated(rng: np.random.Generator, v_low: float = 0.8) -> tuple[int, int, int]:
    h = rng.random()
    s = rng.uniform(0.8, 1.0)
    v = rng.uniform(v_low, 1.0)
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v))


def _png(arr_or_img) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# image generators (each returns (png bytes, ...) and the answer)


def docvqa_image(rng: np.random.Generator, colour: str) -> bytes:
    """A white portrait page with thin grey text lines, grey "figure" blocks (distractors) and one
    small "stamp" of ``colour`` (a square of side ``DOCVQA_STAMP`` px at a random place, drawn last)."""
    w = int(rng.integers(48, 57))
    h = int(rng.integers(64, 73))
    page = np.full((h, w, 3), int(rng.integers(245, 256)), dtype=np.uint8)
    for _ in range(int(rng.integers(5, 10))):
        y = int(rng.integers(3, h - 4))
        x0 = int(rng.integers(3, w // 3))
        x1 = int(rng.integers(w // 2, w - 3))
        grey = int(rng.integers(90, 170))
        page[y : y + int(rng.integers(1, 3)), x0:x1] = grey
    for _ in range(int(rng.integers(DOCVQA_FIGURES[0], DOCVQA_FIGURES[1] + 1))):
        fw = int(rng.integers(w // 5, w // 2))
        fh = int(rng.integers(h // 6, h // 3))
        fx = int(rng.integers(0, w - fw + 1))
        fy = int(rng.integers(0, h - fh + 1))
        page[fy : fy + fh, fx : fx + fw] = int(rng.integers(110, 200))
    side = int(rng.integers(DOCVQA_STAMP[0], DOCVQA_STAMP[1] + 1))
    bx = int(rng.integers(0, w - side + 1))
    by = int(rng.integers(0, h - side + 1))
    page[by : by + side, bx : bx + side] = _jitter(rng, COLOURS[colour], DOCVQA_JITTER)
    return _png(page)


def meme_image(rng: np.random.Generator, circle: bool, colour: str | None = None) -> bytes:
    """64x64 light background with one big circle (``circle``) or square of a distractor colour
    (``HATEFUL_DISTRACTORS``, never red or blue) and, drawn on top at a random place, one small
    sticker (a square of side ``HATEFUL_STICKER`` px) of ``COLOURS[colour]`` (or a random saturated
    colour if ``colour`` is None), jittered a little."""
    size = 64
    bg = tuple(int(v) for v in rng.integers(195, 250, size=3))
    img = Image.new("RGB", (size, size), bg)
    d = int(rng.integers(36, 49))
    x0 = int(rng.integers(2, size - d - 1))
    y0 = int(rng.integers(2, size - d - 1))
    box = [x0, y0, x0 + d - 1, y0 + d - 1]
    shape_fill = _jitter(rng, COLOURS[HATEFUL_DISTRACTORS[int(rng.integers(len(HATEFUL_DISTRACTORS)))]])
    draw = ImageDraw.Draw(img)
    if circle:
        draw.ellipse(box, fill=shape_fill)
    else:
        draw.rectangle(box, fill=shape_fill)
    side = int(rng.integers(HATEFUL_STICKER[0], HATEFUL_STICKER[1] + 1))
    sx = int(rng.integers(0, size - side + 1))
    sy = int(rng.integers(0, size - side + 1))
    fill = _saturated(rng, v_low=0.7) if colour is None else _jitter(rng, COLOURS[colour])
    draw.rectangle([sx, sy, sx + side - 1, sy + side - 1], fill=fill)
    return _png(img)


def square_image(rng: np.random.Generator, colours: Sequence[str]) -> bytes:
    """48x48 light-grey background with one small square (side ``NLVR2_SQUARE`` px) per entry of
    ``colours``, at random places, never overlapping."""
    size = 48
    g = int(rng.integers(190, 241))
    arr = np.full((size, size, 3), g, dtype=np.uint8)
    taken = np.zeros((size, size), dtype=bool)
    for colour in colours:
        s = int(rng.integers(NLVR2_SQUARE[0], NLVR2_SQUARE[1] + 1))
        while True:  # rejection sampling of a free place (a 1 px gap around each square)
            x = int(rng.integers(0, size - s + 1))
            y = int(rng.integers(0, size - s + 1))
            if not taken[max(0, y - 1) : y + s + 1, max(0, x - 1) : x + s + 1].any():
                break
        taken[y : y + s, x : x + s] = True
        arr[y : y + s, x : x + s] = _jitter(rng, COLOURS[colour])
    return _png(arr)


def random_caption(rng: np.random.Generator) -> str:
    subj = _CAPTION_SUBJECTS[int(rng.integers(len(_CAPTION_SUBJECTS)))]
    pred = _CAPTION_PREDICATES[int(rng.integers(len(_CAPTION_PREDICATES)))]
    return f"{subj} {pred}"


# --------------------------------------------------------------------------------------------
# Cauldron rows


def _turn(user: str, assistant: str, task: str) -> dict:
    return {"user": user, "assistant": assistant, "source": f"synthetic-{task}"}


def _image(png: bytes) -> dict:
    return {"bytes": png, "path": None}


def cauldron_rows(task: str, n_rows: int, seed: int):
    """Yield ``n_rows`` rows ``{"images": [...], "texts": [...]}`` of a synthetic Cauldron subset."""
    if task not in CAULDRON_TASKS:
        raise ValueError(f"{task!r} is not a Cauldron task ({', '.join(CAULDRON_TASKS)})")
    rng = _rng(seed)
    if task == "docvqa":
        labels = balanced_labels(rng, n_rows, len(COLOUR_NAMES))
        for lab in labels:
            colour = COLOUR_NAMES[int(lab)]
            png = docvqa_image(rng, colour)
            q = DOCVQA_QUESTIONS[int(rng.integers(len(DOCVQA_QUESTIONS)))]
            yield {"images": [_image(png)], "texts": [_turn(q, colour, task)]}
    elif task == "hateful_memes":
        labels = balanced_labels(rng, n_rows, 2)
        for lab in labels:
            answer = "yes" if lab == 1 else "no"
            circle = bool(rng.integers(2))  # distractor, independent of the label
            png = meme_image(rng, circle, HATEFUL_COLOURS[answer])
            user = f"{random_caption(rng)}\n{HATEFUL_QUESTION}"
            yield {"images": [_image(png)], "texts": [_turn(user, answer, task)]}
    else:  # nlvr2
        labels = balanced_labels(rng, n_rows, 2)
        for lab in labels:
            true = bool(lab == 1)
            counts = [int(rng.integers(NLVR2_COUNT[0], NLVR2_COUNT[1] + 1)) for _ in range(2)]
            pair = [[NLVR2_OTHERS[int(rng.integers(len(NLVR2_OTHERS)))] for _ in range(k)] for k in counts]
            if true:  # 0: a red square on the left, 1: on the right, 2: both
                which = int(rng.integers(3))
                for k in (0, 1):
                    if which in (k, 2):
                        pair[k][int(rng.integers(counts[k]))] = NLVR2_TARGET
            images = [_image(square_image(rng, c)) for c in pair]
            texts = [_turn(NLVR2_STATEMENT, "True" if true else "False", task)]
            if rng.random() < NLVR2_FOLLOWUP_RATE:
                texts.append(_turn(NLVR2_FOLLOWUP, "yes" if true else "no", task))
            yield {"images": images, "texts": texts}


def write_cauldron_parquet(task: str, raw_dir: str | os.PathLike, n_rows: int, seed: int) -> Path:
    """Write ``<raw_dir>/<task>/train-00000-of-00001.parquet`` (row groups of 64 rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    out = Path(raw_dir) / task / PARQUET_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = cauldron_schema().with_metadata({"huggingface": json.dumps(_HF_FEATURES)})
    tmp = out.with_name(out.name + ".tmp")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            chunk: list[dict] = []
            for row in cauldron_rows(task, n_rows, seed):
                chunk.append(row)
                if len(chunk) == ROWS_PER_GROUP:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    chunk = []
            if chunk:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------------------------
# UCF-101 subset


def write_avi(target, frames: Sequence[np.ndarray], fps: int = UCF_FPS) -> None:
    """Encode RGB uint8 frames (H, W, 3) as MPEG-4 Part 2 / yuv420p in an AVI container.

    ``target`` is a path or a seekable binary file object. The high bit rate makes the encoder use
    its finest quantiser on these tiny frames (mean abs error ~2.4/255; only chroma edges of the
    4:2:0 subsampling differ more), so the solid colours survive.
    """
    import av

    h, w = frames[0].shape[:2]
    container = av.open(target, mode="w", format="avi")
    try:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = w
        stream.height = h
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()


def moving_square_frames(
    rng: np.random.Generator,
    direction: tuple[int, int],
    n_frames: int = UCF_FRAMES,
    width: int = UCF_WIDTH,
    height: int = UCF_HEIGHT,
    colour: str | None = None,
) -> list[np.ndarray]:
    """Frames of a coloured square (``colour`` from COLOURS, else random) moving steadily along
    ``direction`` on a dark background.

    The square starts within the first 10% of its span (``size - side``) from the edge opposite to
    the motion and travels 75-95% of the span (never past the far edge), so the first frame alone
    (and the last frame alone) shows the direction.
    """
    dx, dy = direction
    bg = rng.integers(0, 41, size=3).astype(np.uint8)
    colour = np.array(_saturated(rng, v_low=0.85) if colour is None else _jitter(rng, COLOURS[colour]), dtype=np.uint8)
    side = int(rng.integers(UCF_SIDE[0], UCF_SIDE[1] + 1))
    horizontal = dx != 0
    span = (width if horizontal else height) - side  # positions 0..span along the motion axis
    sign = dx if horizontal else dy
    travel_frac = rng.uniform(*UCF_TRAVEL)
    start_frac = rng.uniform(0, min(UCF_START_MAX, 1.0 - travel_frac))  # distance from start edge
    travel = travel_frac * span
    start = start_frac * span if sign > 0 else span - start_frac * span
    cross = int(rng.integers(0, (height if horizontal else width) - side + 1))
    frames = []
    for t in range(n_frames):
        pos = int(round(start + sign * travel * t / max(n_frames - 1, 1)))
        x, y = (pos, cross) if horizontal else (cross, pos)
        arr = np.empty((height, width, 3), dtype=np.uint8)
        arr[:] = bg
        arr[y : y + side, x : x + side] = colour
        frames.append(arr)
    return frames


def _ucf_counts(n: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(n, Mapping):
        unknown = set(n) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown ucf101 split(s) {sorted(unknown)}; expected {SPLITS}")
        counts = {s: int(n.get(s, 0)) for s in SPLITS}
    else:
        counts = {s: int(n) for s in SPLITS}
    if any(v < 0 for v in counts.values()) or counts["train"] < 1:
        raise ValueError(f"ucf101 videos per class must be >= 0 (train >= 1), got {counts}")
    return counts


def _tarinfo(name: str, size: int = 0, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o644
        info.size = size
    return info


def write_ucf101_tarball(raw_dir: str | os.PathLike, n: int | Mapping[str, int], seed: int) -> Path:
    """Write ``<raw_dir>/UCF101_subset.tar.gz`` with ``n`` videos per class per split.

    ``n`` is an int (same count for train, val and test) or a mapping such as
    ``{"train": 30, "val": 3, "test": 5}``. Videos are 16 frames, 64x48, 25 fps. Each class's clips
    are numbered ``g<GG>_c<CC>`` with 4 clips per group; groups never straddle splits.
    """
    counts = _ucf_counts(n)
    rng = _rng(seed)
    out = Path(raw_dir) / UCF_TARBALL
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            tar.addfile(_tarinfo(UCF_ROOT, is_dir=True))
            next_group = {c: 1 for c in UCF_CLASSES}
            for split in SPLITS:
                tar.addfile(_tarinfo(f"{UCF_ROOT}/{split}", is_dir=True))
                for cls in UCF_CLASSES:
                    tar.addfile(_tarinfo(f"{UCF_ROOT}/{split}/{cls}", is_dir=True))
                    g0 = next_group[cls]
                    for j in range(counts[split]):
                        g = g0 + j // UCF_CLIPS_PER_GROUP
                        c = j % UCF_CLIPS_PER_GROUP + 1
                        buf = io.BytesIO()
                        palette = UCF_CLASS_COLOURS[cls]
                        colour = palette[int(rng.integers(len(palette)))]
                        write_avi(buf, moving_square_frames(rng, UCF_DIRECTIONS[cls], colour=colour))
                        data = buf.getvalue()
                        name = f"{UCF_ROOT}/{split}/{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi"
                        tar.addfile(_tarinfo(name, size=len(data)), io.BytesIO(data))
                    next_group[cls] = g0 + math.ceil(counts[split] / UCF_CLIPS_PER_GROUP)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------------------------
# entry point


def make_raw(task: str, raw_dir: str | os.PathLike, n_rows: int | Mapping[str, int], seed: int) -> Path:
    """Generate the raw synthetic dataset of ``task`` under ``raw_dir``; return the written file.

    Cauldron tasks: ``n_rows`` rows in ``<raw_dir>/<task>/train-00000-of-00001.parquet``.
    ucf101: ``n_rows`` videos per class *per split* (int) or a ``{"train", "val", "test"}`` mapping,
    in ``<raw_dir>/UCF101_subset.tar.gz``.
    """
    check_task(task)
    if task == "ucf101":
        return write_ucf101_tarball(raw_dir, n_rows, seed)
    if isinstance(n_rows, Mapping):
        raise ValueError(f"{task}: n_rows must be an int")
    return write_cauldron_parquet(task, raw_dir, int(n_rows), seed)
