"""Tests of the data stage: synthetic raw datasets, converters and the common format."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ftbench.data.cauldron import convert_cauldron
from ftbench.data.common import SPLITS, read_examples, write_jsonl_atomic
from ftbench.data.prompts import NLVR2_FOLLOWUP, NLVR2_STATEMENT
from ftbench.data.sources import convert_source
from ftbench.data.synthetic import (
    COLOURS,
    DOCVQA_STAMP,
    HATEFUL_COLOURS,
    HATEFUL_DISTRACTORS,
    HATEFUL_STICKER,
    NLVR2_COUNT,
    NLVR2_OTHERS,
    NLVR2_SQUARE,
    NLVR2_TARGET,
    UCF_CLASS_COLOURS,
    UCF_CLASSES,
    UCF_DIRECTIONS,
    make_raw,
    moving_square_frames,
    write_avi,
)
from ftbench.data.ucf101 import convert_ucf101, frame_indices

REPO = Path(__file__).resolve().parents[1]
CAULDRON = ("docvqa", "hateful_memes", "nlvr2")
UCF_COUNTS = {"train": 3, "val": 1, "test": 2}  # videos per class


# ---------------------------------------------------------------------------------------------
# pixel oracles: recover the label from the image alone


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _nearest_colour(rgb) -> str:
    return min(COLOURS, key=lambda c: np.sum((np.asarray(COLOURS[c]) - rgb) ** 2))


def _saturated_mask(a: np.ndarray) -> np.ndarray:
    return (a.max(axis=2) - a.min(axis=2)) > 80


def docvqa_oracle(data: bytes) -> tuple[str, float]:
    a = _rgb(data)
    mask = _saturated_mask(a)
    return _nearest_colour(a[mask].mean(axis=0)), float(mask.mean())


def _colour_map(a: np.ndarray) -> np.ndarray:
    """Per pixel: the index in COLOURS of its nearest named colour, -1 for unsaturated pixels."""
    names = list(COLOURS)
    ref = np.array([COLOURS[c] for c in names])
    nearest = np.argmin(((a[:, :, None, :] - ref[None, None]) ** 2).sum(axis=3), axis=2)
    return np.where(_saturated_mask(a), nearest, -1)


def colour_areas(data: bytes) -> Counter:
    """{named colour: number of saturated pixels nearest to it}."""
    cmap = _colour_map(_rgb(data))
    names = list(COLOURS)
    return Counter({names[i]: int((cmap == i).sum()) for i in range(len(names)) if (cmap == i).any()})


def meme_oracle(data: bytes) -> tuple[str, str, int, str]:
    """(answer read from the sticker's colour, the big shape's colour, sticker area, 'circle' or 'square')."""
    a = _rgb(data)
    cmap = _colour_map(a)
    names = list(COLOURS)
    areas = {c: int((cmap == names.index(c)).sum()) for c in COLOURS}
    sticker = max(HATEFUL_COLOURS.values(), key=lambda c: areas[c])
    answer = {v: k for k, v in HATEFUL_COLOURS.items()}[sticker]
    shape_colour = max(HATEFUL_DISTRACTORS, key=lambda c: areas[c])
    # the shape's bounding box from its own pixels; a square fills its corners (or the sticker covers
    # one), a circle leaves them to the background
    ys, xs = np.nonzero(cmap == names.index(shape_colour))
    corners = [(ys.min(), xs.min()), (ys.min(), xs.max()), (ys.max(), xs.min()), (ys.max(), xs.max())]
    background_corners = sum(cmap[y, x] == -1 for y, x in corners)
    return answer, shape_colour, areas[sticker], "circle" if background_corners >= 2 else "square"


def frame_centroid(a: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(a.max(axis=2) > 110)
    return np.array([xs.mean(), ys.mean()])


def centroid(path: Path) -> np.ndarray:
    return frame_centroid(np.asarray(Image.open(path).convert("RGB")).astype(int))


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    make_raw("docvqa", d, 48, seed=1)
    make_raw("hateful_memes", d, 48, seed=2)
    make_raw("nlvr2", d, 100, seed=3)
    make_raw("ucf101", d, UCF_COUNTS, seed=4)
    return d


def _rows(raw_dir: Path, task: str) -> list[dict]:
    return pq.read_table(raw_dir / task / "train-00000-of-00001.parquet").to_pylist()


@pytest.fixture(scope="module")
def ucf_out(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("ucf_tar")
    summary = convert_ucf101(raw / "UCF101_subset.tar.gz", out, num_frames=8)
    return out, summary


# ---------------------------------------------------------------------------------------------
# synthetic raw data


def test_parquet_schema_is_cauldron_layout(raw):
    image = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    turn = pa.struct([pa.field("user", pa.string()), pa.field("assistant", pa.string()),
                      pa.field("source", pa.string())])
    expected = pa.schema([pa.field("images", pa.list_(image)), pa.field("texts", pa.list_(turn))])
    for task in CAULDRON:
        files = sorted((raw / task).glob("*.parquet"))
        assert [f.name for f in files] == ["train-00000-of-00001.parquet"]
        schema = pq.read_schema(files[0])
        assert schema.remove_metadata().equals(expected), (task, schema)
        assert json.loads(schema.metadata[b"huggingface"])["info"]["features"]["images"]
    assert pq.ParquetFile(raw / "nlvr2" / "train-00000-of-00001.parquet").metadata.num_row_groups == 2


def test_docvqa_rows_solvable_and_balanced(raw):
    rows = _rows(raw, "docvqa")
    assert len(rows) == 48
    answers = []
    by_question = {}
    for row in rows:
        assert len(row["images"]) == 1 and len(row["texts"]) == 1
        assert row["images"][0]["path"] is None
        t = row["texts"][0]
        img = Image.open(io.BytesIO(row["images"][0]["bytes"]))
        assert img.format == "PNG" and img.height > img.width  # portrait page
        colour, area = docvqa_oracle(row["images"][0]["bytes"])
        assert colour == t["assistant"]
        # one stamp (a square of DOCVQA_STAMP px) is the only saturated area: grey figures are distractors
        w, h = img.size
        assert DOCVQA_STAMP[0] ** 2 <= round(area * w * h) <= DOCVQA_STAMP[1] ** 2
        assert t["source"] == "synthetic-docvqa"
        assert "colour" in t["user"] and t["assistant"] not in t["user"]
        answers.append(t["assistant"])
        by_question.setdefault(t["user"], set()).add(t["assistant"])
    counts = Counter(answers)
    assert set(counts) == set(COLOURS) and max(counts.values()) - min(counts.values()) <= 1
    # the question never determines the answer
    assert all(len(v) > 1 for v in by_question.values())


def test_hateful_memes_rows_solvable_and_balanced(raw):
    rows = _rows(raw, "hateful_memes")
    answers = []
    shapes = Counter()
    shape_colours = Counter()
    for row in rows:
        assert len(row["images"]) == 1 and len(row["texts"]) == 1
        t = row["texts"][0]
        caption, question = t["user"].split("\n")
        assert caption and question == "Is this meme hateful? Answer yes or no."
        assert not re.search(r"\b(circle|square|round|red|blue)\b", caption)
        data = row["images"][0]["bytes"]
        assert Image.open(io.BytesIO(data)).size == (64, 64)
        # the label is the colour of the small sticker: red <=> yes, blue <=> no; the big shape is
        # green or yellow, a circle or a square, independent of the label (distractors)
        answer, shape_colour, sticker_area, shape = meme_oracle(data)
        assert answer == t["assistant"], (t["assistant"], answer)
        areas = colour_areas(data)
        assert areas[HATEFUL_COLOURS["yes" if answer == "no" else "no"]] == 0  # one sticker colour only
        assert HATEFUL_STICKER[0] ** 2 <= sticker_area <= HATEFUL_STICKER[1] ** 2
        assert areas[shape_colour] >= 0.2 * 64 * 64 - HATEFUL_STICKER[1] ** 2  # a big shape
        shapes[(t["assistant"], shape)] += 1
        shape_colours[(t["assistant"], shape_colour)] += 1
        answers.append(t["assistant"])
    assert Counter(answers) == {"yes": 24, "no": 24}
    # the shape is a distractor: both shapes occur with both labels
    assert set(shapes) == {(a, s) for a in ("yes", "no") for s in ("circle", "square")}, shapes
    assert set(shape_colours) == {(a, c) for a in ("yes", "no") for c in HATEFUL_DISTRACTORS}, shape_colours


def test_nlvr2_rows_solvable_balanced_multiturn(raw):
    rows = _rows(raw, "nlvr2")
    answers = []
    multi = 0
    red_pattern = Counter()  # (left red, right red) over True rows
    others = Counter()  # colours seen besides red
    for row in rows:
        assert len(row["images"]) == 2
        areas = [colour_areas(im["bytes"]) for im in row["images"]]
        reds = [a[NLVR2_TARGET] > 0 for a in areas]
        any_red = any(reds)
        for a in areas:  # 1-3 small squares per image, a red one at most
            assert NLVR2_COUNT[0] * NLVR2_SQUARE[0] ** 2 <= sum(a.values()) <= NLVR2_COUNT[1] * NLVR2_SQUARE[1] ** 2
            assert a[NLVR2_TARGET] == 0 or NLVR2_SQUARE[0] ** 2 <= a[NLVR2_TARGET] <= NLVR2_SQUARE[1] ** 2
            others.update(c for c in a if c != NLVR2_TARGET)
        first = row["texts"][0]
        assert first["user"] == NLVR2_STATEMENT
        assert first["assistant"] == ("True" if any_red else "False")
        answers.append(first["assistant"])
        if any_red:
            red_pattern[tuple(reds)] += 1
        if len(row["texts"]) > 1:
            multi += 1
            assert len(row["texts"]) == 2
            assert row["texts"][1]["user"] == NLVR2_FOLLOWUP
            assert row["texts"][1]["assistant"] == ("yes" if any_red else "no")
    assert Counter(answers) == {"True": 50, "False": 50}
    assert 15 <= multi <= 45
    # True rows: left only, right only and both red all occur; non-red images use the other colours
    assert set(red_pattern) == {(True, False), (False, True), (True, True)}, red_pattern
    assert set(others) == set(NLVR2_OTHERS)


def test_labels_follow_the_pixels_over_many_rows(tmp_path):
    # the label is recomputed from the image content alone (the oracles above) on every row of a larger
    # draw, labels balanced, and the text never depends on the label
    make_raw("hateful_memes", tmp_path, 200, seed=11)
    make_raw("nlvr2", tmp_path, 200, seed=12)
    texts = Counter()
    for row in _rows(tmp_path, "hateful_memes"):
        t = row["texts"][0]
        assert meme_oracle(row["images"][0]["bytes"])[0] == t["assistant"]
        texts[t["assistant"]] += 1
    assert texts == {"yes": 100, "no": 100}
    for row in _rows(tmp_path, "nlvr2"):
        any_red = any(colour_areas(im["bytes"])[NLVR2_TARGET] > 0 for im in row["images"])
        assert row["texts"][0] == {"user": NLVR2_STATEMENT, "assistant": "True" if any_red else "False",
                                   "source": "synthetic-nlvr2"}


def test_ucf101_axis_colours_cover_both_directions():
    # each axis has two colours shared by its two directions, so the colour alone never names the class
    axes = {}
    for cls, (dx, _) in UCF_DIRECTIONS.items():
        axes.setdefault(dx != 0, set()).add(tuple(UCF_CLASS_COLOURS[cls]))
    assert all(len(v) == 1 for v in axes.values())  # same palette for both directions of an axis
    assert not set(*axes[True]) & set(*axes[False])  # the palettes differ between axes


def test_make_raw_deterministic(tmp_path, raw):
    for task in CAULDRON:
        n = 100 if task == "nlvr2" else 48
        seed = {"docvqa": 1, "hateful_memes": 2, "nlvr2": 3}[task]
        p = make_raw(task, tmp_path / "a", n, seed=seed)
        assert p.read_bytes() == (raw / task / p.name).read_bytes()
        assert make_raw(task, tmp_path / "b", n, seed=seed + 100).read_bytes() != p.read_bytes()
    p = make_raw("ucf101", tmp_path / "a", UCF_COUNTS, seed=4)
    assert p.read_bytes() == (raw / "UCF101_subset.tar.gz").read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_ucf101_tarball_layout(raw):
    with tarfile.open(raw / "UCF101_subset.tar.gz") as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    assert len(names) == 4 * sum(UCF_COUNTS.values())
    pat = re.compile(r"^UCF101_subset/(train|val|test)/(\w+)/v_(\w+)_g\d\d+_c\d\d\.avi$")
    seen = Counter()
    for n in names:
        m = pat.match(n)
        assert m and m.group(2) == m.group(3) and m.group(2) in UCF_CLASSES, n
        seen[(m.group(1), m.group(2))] += 1
    assert seen == {(s, c): UCF_COUNTS[s] for s in SPLITS for c in UCF_CLASSES}
    assert len(set(Path(n).name for n in names)) == len(names)  # clip names unique across splits


def test_ucf101_video_format(raw, tmp_path):
    import av

    with tarfile.open(raw / "UCF101_subset.tar.gz") as tar:
        member = next(m for m in tar.getmembers() if m.isfile())
        data = tar.extractfile(member).read()
    with av.open(io.BytesIO(data)) as c:
        assert c.format.name == "avi"
        st = c.streams.video[0]
        assert st.codec_context.name == "mpeg4" and st.frames == 16
        frames = list(c.decode(st))
    assert len(frames) == 16 and (frames[0].width, frames[0].height) == (64, 48)
    assert frames[0].format.name == "yuv420p"


# ---------------------------------------------------------------------------------------------
# Cauldron converter


@pytest.mark.parametrize("task", CAULDRON)
def test_convert_cauldron_splits_ids_images(raw, tmp_path, task):
    n_val, n_test = 10, 6
    out = tmp_path / task
    summary = convert_cauldron(task, raw / task, out, n_val=n_val, n_test=n_test)
    n = 100 if task == "nlvr2" else 48
    assert summary["counts"] == {"train": n - 16, "val": 10, "test": 6}
    assert json.loads((out / "summary.json").read_text())["counts"] == summary["counts"]
    assert sorted(p.name for p in out.glob("*.jsonl")) == sorted(f"{task}_{s}.jsonl" for s in SPLITS)
    assert not list(out.rglob("*.tmp"))

    rows = _rows(raw, task)
    expected_ranges = {"val": range(0, 10), "test": range(10, 16), "train": range(16, n)}
    for split in SPLITS:
        exs = read_examples(out / f"{task}_{split}.jsonl")
        assert [e["id"] for e in exs] == [f"{split}-{i:010d}" for i in expected_ranges[split]]
        for e, i in zip(exs, expected_ranges[split]):
            assert e["source"] == task
            row = rows[i]
            convs = e["conversations"]
            first = convs[0]
            if task == "nlvr2":
                assert len(first["images"]) == 2
                assert len(convs) == len(row["texts"])
                assert all(t["images"] == [] for t in convs[1:])
            else:
                assert len(convs) == 1 and len(first["images"]) == 1
            assert [(t["user"], t["assistant"]) for t in convs] == [
                (t["user"], t["assistant"]) for t in row["texts"][: len(convs)]]
            for k, rel in enumerate(first["images"]):
                assert rel == f"{split}/{e['id']}_{k}.png"
                path = out / "images" / rel
                assert path.read_bytes() == row["images"][k]["bytes"]  # stored bytes unchanged
    if task == "nlvr2":
        train = read_examples(out / "nlvr2_train.jsonl")
        assert any(len(e["conversations"]) == 2 for e in train)


def _write_parquet(path: Path, rows: list[dict]) -> None:
    from ftbench.data.synthetic import cauldron_schema

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=cauldron_schema()), path)


def test_convert_cauldron_multiple_shards_sorted(raw, tmp_path):
    rows = _rows(raw, "docvqa")
    sub = tmp_path / "raw" / "docvqa"
    # written in reverse order: conversion must follow sorted file names
    _write_parquet(sub / "train-00001-of-00002.parquet", rows[20:])
    _write_parquet(sub / "train-00000-of-00002.parquet", rows[:20])
    out = tmp_path / "out"
    s = convert_source("docvqa", "synthetic", tmp_path / "raw", out, n_val=5, n_test=5)
    assert s["counts"] == {"train": 38, "val": 5, "test": 5}
    assert len(s["source"]) == 2 and s["source"][0].endswith("train-00000-of-00002.parquet")
    train = read_examples(out / "docvqa_train.jsonl")
    assert train[0]["id"] == "train-0000000010"
    assert train[0]["conversations"][0]["assistant"] == rows[10]["texts"][0]["assistant"]
    assert train[-1]["conversations"][0]["assistant"] == rows[47]["texts"][0]["assistant"]


def test_nlvr2_wrong_image_count_raises_and_leaves_no_jsonl(raw, tmp_path):
    rows = _rows(raw, "nlvr2")[:30]
    rows[25] = dict(rows[25], images=rows[25]["images"] + rows[0]["images"][:1])
    bad = tmp_path / "raw" / "nlvr2" / "train-00000-of-00001.parquet"
    _write_parquet(bad, rows)
    out = tmp_path / "out"
    out.mkdir()
    (out / "nlvr2_val.jsonl").write_text("stale\n")  # from an earlier run
    with pytest.raises(ValueError, match=re.escape(str(bad)) + r": row 25: expected exactly 2 images, got 3"):
        convert_cauldron("nlvr2", bad.parent, out, n_val=5, n_test=5)
    assert not list(out.glob("*.jsonl")) and not (out / "summary.json").exists()


def test_cauldron_too_few_rows_and_missing_dir(raw, tmp_path):
    with pytest.raises(ValueError, match="no training rows"):
        convert_cauldron("docvqa", raw / "docvqa", tmp_path / "o", n_val=40, n_test=8)
    with pytest.raises(FileNotFoundError):
        convert_cauldron("docvqa", tmp_path / "nope", tmp_path / "o2", n_val=1, n_test=1)


# ---------------------------------------------------------------------------------------------
# UCF-101 converter


def test_frame_indices():
    assert frame_indices(16, 8) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert frame_indices(20, 8) == [0, 2, 5, 7, 10, 12, 15, 17]
    assert frame_indices(164, 8) == [int(np.floor(k * 164 / 8)) for k in range(8)]
    for total in range(8, 400):
        idx = frame_indices(total, 8)
        assert len(idx) == 8 and idx == sorted(set(idx)) and idx[-1] < total


def test_convert_ucf101_layout_and_ids(ucf_out):
    out, summary = ucf_out
    classes = sorted(UCF_CLASSES)
    assert summary["counts"] == {s: 4 * UCF_COUNTS[s] for s in SPLITS}
    assert summary["classes"] == classes
    assert not [p for p in out.iterdir() if p.name.startswith(".extract")]  # temp folder removed
    prompt = "Classify the video into one of the following classes: " + ", ".join(classes) + "."
    i = 0
    for split in SPLITS:
        exs = read_examples(out / f"ucf101_{split}.jsonl")
        stems = []
        for e in exs:
            assert e["id"] == f"{split}-{i:010d}"
            i += 1
            (turn,) = e["conversations"]
            assert turn["user"] == prompt and turn["assistant"] in classes
            stem = Path(turn["images"][0]).name.rsplit(".", 2)[0]
            stems.append((turn["assistant"], stem))
            assert turn["images"] == [f"{split}/{turn['assistant']}/{stem}.{k}.jpg" for k in range(8)]
            assert stem.startswith(f"v_{turn['assistant']}_g")
            for rel in turn["images"]:
                with Image.open(out / "images" / rel) as im:
                    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 48)
        assert stems == sorted(stems)
        assert Counter(c for c, _ in stems) == {c: UCF_COUNTS[split] for c in classes}
    n_jpg = len(list((out / "images").rglob("*.jpg")))
    assert n_jpg == 8 * 4 * sum(UCF_COUNTS.values())


def test_ucf101_direction_recoverable(ucf_out):
    out, _ = ucf_out
    for split in SPLITS:
        for e in read_examples(out / f"ucf101_{split}.jsonl"):
            turn = e["conversations"][0]
            c = [centroid(out / "images" / p) for p in turn["images"]]
            dx, dy = c[-1] - c[0]
            guess = ("MoveRight" if dx > 0 else "MoveLeft") if abs(dx) > abs(dy) else \
                ("MoveDown" if dy > 0 else "MoveUp")
            assert guess == turn["assistant"], (e["id"], dx, dy)
            assert max(abs(dx), abs(dy)) > 10
            # the first frame alone gives the direction: the square starts in the half of the frame
            # opposite to the motion (and the last kept frame lies in the other half)
            w, h = 64, 48
            ddx, ddy = UCF_DIRECTIONS[turn["assistant"]]
            axis, mid, sign = (0, w / 2, ddx) if ddx else (1, h / 2, ddy)
            assert sign * (c[0][axis] - mid) < 0, (e["id"], c[0])
            assert sign * (c[-1][axis] - mid) > 0, (e["id"], c[-1])
            # the colour tells the axis only (two colours per axis, drawn at random): the side of the
            # frame the square starts on tells the direction
            first = np.asarray(Image.open(out / "images" / turn["images"][0]).convert("RGB")).astype(int)
            colour = _nearest_colour(first[first.max(axis=2) > 110].mean(axis=0))
            assert colour in UCF_CLASS_COLOURS[turn["assistant"]], (e["id"], colour)


def test_moving_square_starts_at_opposite_edge_and_crosses_frame():
    for seed in range(60):
        rng = np.random.Generator(np.random.PCG64(seed))
        cls = UCF_CLASSES[seed % len(UCF_CLASSES)]
        dx, dy = UCF_DIRECTIONS[cls]
        frames = moving_square_frames(rng, (dx, dy))
        assert len(frames) == 16 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
        axis, size, sign = (1, 64, dx) if dx else (0, 48, dy)
        # dark background at the far edge of the first frame (the square starts at the other edge)
        far = frames[0][0, 63 if sign > 0 else 0] if axis == 1 else frames[0][47 if sign > 0 else 0, 0]
        assert far.max() <= 40
        lo, hi = [], []
        for f in frames:
            idx = np.nonzero((f.max(axis=2) > 110).any(axis=1 - axis))[0]
            lo.append(int(idx.min()))
            hi.append(int(idx.max()) + 1)
        side = hi[0] - lo[0]
        assert 26 <= side <= 30 and all(b - a == side for a, b in zip(lo, hi))
        span = size - side
        pos = np.array(lo if sign > 0 else [span - v for v in lo])  # distance from the start edge
        assert pos[0] <= 0.1 * span + 0.5, (cls, seed, pos[0], span)
        assert np.all(np.diff(pos) >= 0)  # steady, one-way motion
        travel = pos[-1] - pos[0]
        assert 0.75 * span - 1 <= travel <= 0.95 * span + 1, (cls, seed, travel, span)
        assert 0 <= pos.min() and pos.max() <= span
        # first frame alone: square centred in the half opposite to the motion
        c0 = frame_centroid(frames[0].astype(int))
        assert sign * (c0[1 - axis] - size / 2) < 0


def test_ucf101_folder_source_matches_tarball(raw, ucf_out, tmp_path):
    out_tar, _ = ucf_out
    extracted = tmp_path / "extracted"
    with tarfile.open(raw / "UCF101_subset.tar.gz") as tar:
        tar.extractall(extracted, filter="data")
    for src in (extracted, extracted / "UCF101_subset"):
        out = tmp_path / f"out_{src.name}"
        convert_ucf101(src, out)
        for split in SPLITS:
            name = f"ucf101_{split}.jsonl"
            assert (out / name).read_text() == (out_tar / name).read_text()
    # a raw folder holding only the tarball (as make_raw writes it) works too
    out = tmp_path / "out_rawdir"
    convert_source("ucf101", "synthetic", raw, out)
    assert (out / "ucf101_val.jsonl").read_text() == (out_tar / "ucf101_val.jsonl").read_text()


def _grey_video(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_avi(str(path), [np.full((48, 64, 3), 8 + 12 * t, dtype=np.uint8) for t in range(n)])


def test_ucf101_samples_exact_frame_indices(tmp_path):
    # frame t is uniformly grey at level 8 + 12 t, so each saved jpg tells which frame it is
    root = tmp_path / "UCF101_subset"
    _grey_video(root / "train" / "Grey" / "v_Grey_g01_c01.avi", 20)
    _grey_video(root / "val" / "Grey" / "v_Grey_g02_c01.avi", 16)
    out = tmp_path / "out"
    convert_ucf101(tmp_path, out, num_frames=8)
    for split, total in (("train", 20), ("val", 16)):
        (e,) = read_examples(out / f"ucf101_{split}.jsonl")
        got = [int(round((np.asarray(Image.open(out / "images" / p)).mean() - 8) / 12))
               for p in e["conversations"][0]["images"]]
        assert got == [k * total // 8 for k in range(8)]
    assert read_examples(out / "ucf101_test.jsonl") == []


def test_ucf101_short_video_raises_naming_file(tmp_path):
    root = tmp_path / "UCF101_subset"
    _grey_video(root / "train" / "A" / "v_A_g01_c01.avi", 12)
    short = root / "train" / "B" / "v_B_g01_c01.avi"
    _grey_video(short, 5)
    with pytest.raises(ValueError, match=re.escape(str(short)) + ": "):
        convert_ucf101(root, tmp_path / "out", num_frames=8)
    assert not list((tmp_path / "out").glob("*.jsonl"))
    # the same video is fine when fewer frames are asked for
    s = convert_ucf101(root, tmp_path / "out4", num_frames=4)
    assert s["counts"]["train"] == 2


def test_ucf101_short_video_in_tarball_names_member(tmp_path):
    root = tmp_path / "src" / "UCF101_subset"
    _grey_video(root / "val" / "B" / "v_B_g01_c01.avi", 3)
    tgz = tmp_path / "UCF101_subset.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(root, arcname="UCF101_subset")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=re.escape(f"{tgz}:UCF101_subset/val/B/v_B_g01_c01.avi")):
        convert_ucf101(tgz, out)
    assert [p.name for p in out.iterdir()] == ["images"] or not list(out.iterdir())  # no temp left


# ---------------------------------------------------------------------------------------------
# common format


def _example(i: int) -> dict:
    return {"id": f"train-{i:010d}", "source": "docvqa",
            "conversations": [{"images": [f"train/{i}.png"], "user": "q?", "assistant": "a"}]}


def test_write_and_read_examples_roundtrip(tmp_path):
    p = tmp_path / "x_train.jsonl"
    recs = [_example(i) for i in range(3)]
    recs[1]["conversations"][0]["user"] = "Qu'est-ce que c'est ?\nUn café\u2028?"  # line breaks stay inside the record
    assert write_jsonl_atomic(p, iter(recs)) == 3
    assert read_examples(p) == recs
    assert len(p.read_bytes().split(b"\n")) == 4  # one line per record
    assert not (tmp_path / "x_train.jsonl.tmp").exists()


@pytest.mark.parametrize("bad_line, what", [
    ("{not json", "invalid JSON"),
    (json.dumps({"id": "x", "source": "s"}), "missing key 'conversations'"),
    (json.dumps({"source": "s", "conversations": []}), "missing key 'id'"),
    (json.dumps({"id": "x", "source": "s", "conversations": [{"images": [], "user": "u"}]}),
     "missing key 'assistant'"),
    (json.dumps({"id": "x", "source": "s", "conversations": [{"user": "u", "assistant": "a"}]}),
     "missing key 'images'"),
    (json.dumps({"id": "x", "source": "s", "conversations": [{"images": "a.png", "user": "u", "assistant": "a"}]}),
     "images is not a list"),
    (json.dumps({"id": "x", "source": "s", "conversations": [{"images": ["/abs.png"], "user": "u", "assistant": "a"}]}),
     "not a relative path"),
    (json.dumps({"id": "x", "source": "s",
                 "conversations": [{"images": [], "user": "<|image_1|>\nq", "assistant": "a"}]}),
     "image tag"),
    (json.dumps(_example(0)), "duplicate id"),
])
def test_read_examples_reports_file_and_line(tmp_path, bad_line, what):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(_example(0)) + "\n\n" + bad_line + "\n")
    with pytest.raises(ValueError) as ei:
        read_examples(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:3: ") and what in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# CLIs


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_cli_make_raw_and_convert(tmp_path):
    r = _cli("workflow_scripts/make_raw.py", "--task", "hateful_memes", "--out", str(tmp_path / "raw"),
             "--rows", "20", "--seed", "0")
    assert r.returncode == 0, r.stderr
    r = _cli("workflow_scripts/convert.py", "--task", "hateful_memes", "--raw", str(tmp_path / "raw"),
             "--out", str(tmp_path / "out"), "--n-val", "4", "--n-test", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"train": 14, "val": 4, "test": 2}
    assert len(read_examples(tmp_path / "out" / "hateful_memes_val.jsonl")) == 4

    r = _cli("workflow_scripts/make_raw.py", "--task", "ucf101", "--out", str(tmp_path / "raw"),
             "--rows", "1,1,0", "--seed", "0")
    assert r.returncode == 0, r.stderr
    r = _cli("workflow_scripts/convert.py", "--task", "ucf101", "--raw", str(tmp_path / "raw"),
             "--out", str(tmp_path / "ucf"), "--num-frames", "8")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"train": 4, "val": 4, "test": 0}


def test_cli_errors_are_one_line(tmp_path):
    r = _cli("workflow_scripts/convert.py", "--task", "docvqa", "--raw", str(tmp_path / "missing"),
             "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "missing") in r.stderr
    root = tmp_path / "UCF101_subset"
    _grey_video(root / "train" / "A" / "v_A_g01_c01.avi", 4)
    r = _cli("workflow_scripts/convert.py", "--task", "ucf101", "--raw", str(tmp_path), "--out", str(tmp_path / "u"))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "v_A_g01_c01.avi" in r.stderr
