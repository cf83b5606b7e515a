"""Converters of the real sources, on fixture files written here in the exact published layouts
(hub snapshots and `datasets` caches, the official releases), split policies, leakage reports,
parallel conversion and the hub / local-path rule."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ftbench.config import ConfigError, validate_config
from ftbench.data.common import SPLITS, read_examples
from ftbench.data.prompts import hateful_memes_prompt, nlvr2_prompt
from ftbench.data.sources import convert_source
from ftbench.data.synthetic import cauldron_schema, write_avi

REPO = Path(__file__).resolve().parents[1]
UCF_PROMPT = "Classify the video into one of the following classes: "


def png(i: int, size=(6, 5)) -> bytes:
    """A small PNG whose pixels (so bytes and hash) are unique to ``i``."""
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = i % 251, (i // 251) % 251, 7
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def examples(out: Path, task: str) -> dict[str, list[dict]]:
    return {s: read_examples(out / f"{task}_{s}.jsonl") for s in SPLITS}


def image_bytes(out: Path, example: dict, turn: int = 0) -> list[bytes]:
    return [(out / "images" / rel).read_bytes() for rel in example["conversations"][turn]["images"]]


def leakage(out: Path) -> dict:
    return json.loads((out / "leakage.json").read_text())


# ---------------------------------------------------------------------------------------------
# HuggingFaceM4/the_cauldron as saved on disk


def cauldron_rows(task: str, n: int, first: int = 0) -> list[dict]:
    rows = []
    for i in range(first, first + n):
        images = [{"bytes": png(2 * i), "path": None}]
        texts = [{"user": f"q{i}", "assistant": f"a{i}", "source": task}]
        if task == "nlvr2":
            images.append({"bytes": png(2 * i + 1), "path": None})
            texts.append({"user": f"q{i}b", "assistant": "yes", "source": task})
        rows.append({"images": images, "texts": texts})
    return rows


def write_cauldron_snapshot(root: Path, task: str, shards: list[list[dict]], row_group: int = 4) -> Path:
    """``<root>/<task>/train-0000N-of-0000M-<hash>.parquet`` as in the hub repo."""
    for k, rows in enumerate(shards):
        path = root / task / f"train-{k:05d}-of-{len(shards):05d}-{k:04x}beef.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=cauldron_schema()), path, row_group_size=row_group)
    return root


def test_cauldron_hub_snapshot_cookbook_slices_and_leakage(tmp_path):
    rows = cauldron_rows("hateful_memes", 14)
    rows[12] = dict(rows[12], images=rows[1]["images"])  # row 12 (train) shows the image of row 1 (val)
    snap = write_cauldron_snapshot(tmp_path / "the_cauldron", "hateful_memes", [rows[:9], rows[9:]])
    out = tmp_path / "out"
    s = convert_source("hateful_memes", "cauldron", snap, out, n_val=3, n_test=2, progress=False)
    assert s["counts"] == {"train": 9, "val": 3, "test": 2} and s["split_policy"] == "cookbook"
    ex = examples(out, "hateful_memes")
    assert [e["id"] for e in ex["val"]] == [f"val-{i:010d}" for i in range(3)]
    assert [e["id"] for e in ex["test"]] == ["test-0000000003", "test-0000000004"]
    assert ex["train"][0]["id"] == "train-0000000005"
    assert [e["conversations"][0]["assistant"] for e in ex["train"]] == [f"a{i}" for i in range(5, 14)]
    assert image_bytes(out, ex["train"][-1]) == [png(26)]
    report = leakage(out)
    assert report["leaked_contents"] == 1
    assert report["across_splits"]["train/val"] == {"contents": 1, "examples": {"train": 1, "val": 1}}
    assert report["across_splits"]["val/test"]["contents"] == 0
    assert report["examples"] == [{"sha256": sha(png(2)),
                                   "ids": {"train": ["train-0000000012"], "val": ["val-0000000001"]}}]
    assert s["leakage"]["leaked_contents"] == 1


def test_cauldron_datasets_cache_arrow_and_parquet_export_match_snapshot(tmp_path):
    rows = cauldron_rows("nlvr2", 10)
    snap = write_cauldron_snapshot(tmp_path / "snap", "nlvr2", [rows])
    table = pa.Table.from_pylist(rows, schema=cauldron_schema())
    # `datasets` cache: IPC stream files, record batches of 3 rows; cache-*.arrow are map() results
    cache = tmp_path / "hf" / "datasets" / "HuggingFaceM4___the_cauldron" / "nlvr2" / "0.0.0" / "0123abcd"
    cache.mkdir(parents=True)
    with pa.ipc.new_stream(str(cache / "the_cauldron-train-00000-of-00001.arrow"), table.schema) as w:
        for batch in table.to_batches(max_chunksize=3):
            w.write_batch(batch)
    (cache / "cache-0badc0de.arrow").write_bytes(b"not data")
    (cache / "dataset_info.json").write_text("{}")
    export = tmp_path / "export" / "nlvr2.parquet"  # Dataset.to_parquet("nlvr2.parquet")
    export.parent.mkdir()
    pq.write_table(table, export, row_group_size=4)

    outs = {}
    for name, src in (("snapshot", snap), ("cache", cache.parents[2]), ("export", export)):
        outs[name] = tmp_path / name / "out"
        convert_source("nlvr2", "cauldron", src, outs[name], n_val=2, n_test=0, progress=False)
    reference = examples(outs["snapshot"], "nlvr2")
    assert [len(reference[s]) for s in SPLITS] == [8, 2, 0]
    first = reference["val"][0]
    assert first["conversations"][0]["images"] == ["val/val-0000000000_0.png", "val/val-0000000000_1.png"]
    assert [(t["user"], t["images"]) for t in first["conversations"]][1] == ("q0b", [])
    assert image_bytes(outs["snapshot"], first) == [png(0), png(1)]
    for name in ("cache", "export"):
        assert examples(outs[name], "nlvr2") == reference, name


def test_parallel_conversion_is_identical_to_serial(tmp_path):
    snap = write_cauldron_snapshot(tmp_path / "snap", "docvqa",
                                   [cauldron_rows("docvqa", 11), cauldron_rows("docvqa", 6, 11)], row_group=2)
    outs = [tmp_path / f"p{p}" for p in (1, 2)]
    for p, out in zip((1, 2), outs):
        s = convert_source("docvqa", "synthetic", snap, out, n_val=4, n_test=1, processes=p, progress=False)
        assert s["processes"] == p
    for split in SPLITS:
        assert (outs[0] / f"docvqa_{split}.jsonl").read_bytes() == (outs[1] / f"docvqa_{split}.jsonl").read_bytes()
    files = sorted(p.relative_to(outs[0]) for p in (outs[0] / "images").rglob("*.png"))
    assert len(files) == 17 and files == sorted(p.relative_to(outs[1]) for p in (outs[1] / "images").rglob("*.png"))
    assert all((outs[0] / f).read_bytes() == (outs[1] / f).read_bytes() for f in files)


def test_parallel_worker_error_names_file_and_row(tmp_path):
    rows = cauldron_rows("nlvr2", 12)
    rows[9] = dict(rows[9], images=rows[9]["images"][:1])
    snap = write_cauldron_snapshot(tmp_path / "snap", "nlvr2", [rows])
    with pytest.raises(ValueError,
                       match=r"train-00000-of-00001-0000beef\.parquet: row 9: expected exactly 2 images, got 1"):
        convert_source("nlvr2", "cauldron", snap, tmp_path / "out", n_val=2, processes=2, progress=False)
    assert not list((tmp_path / "out").glob("*.jsonl"))


def test_cauldron_refuses_official_split_policy(tmp_path):
    snap = write_cauldron_snapshot(tmp_path / "snap", "nlvr2", [cauldron_rows("nlvr2", 4)])
    with pytest.raises(ValueError, match="only a train split"):
        convert_source("nlvr2", "cauldron", snap, tmp_path / "out", split_policy="official")


# ---------------------------------------------------------------------------------------------
# nielsr/docvqa_1200_examples


def nielsr_schema():
    return pa.schema([
        ("id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("query", pa.struct([(lang, pa.string()) for lang in ("de", "en", "es", "fr", "it")])),
        ("answers", pa.list_(pa.string())),
        ("words", pa.list_(pa.string())),
        ("bounding_boxes", pa.list_(pa.list_(pa.float32(), 4))),
        ("answer", pa.struct([("match_score", pa.float64()), ("matched_text", pa.string()),
                              ("start", pa.int64()), ("text", pa.string())])),
    ])


def nielsr_rows(n: int, first: int) -> list[dict]:
    return [{
        "id": f"doc{i}", "image": {"bytes": png(100 + i), "path": None},
        "query": {"de": f"Frage {i}?", "en": f"What is field {i}?", "es": "", "fr": "", "it": ""},
        "answers": [f"Value {i}", f"value {i}"], "words": ["Value", str(i)],
        "bounding_boxes": [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]],
        "answer": {"match_score": 1.0, "matched_text": f"Value {i}", "start": 0, "text": f"Value {i}"},
    } for i in range(first, first + n)]


def write_nielsr(root: Path, n_train: int = 5, n_test: int = 3) -> Path:
    """``data/{train,test}-00000-of-00001-<hash>.parquet`` as in the hub repo."""
    (root / "data").mkdir(parents=True)
    for split, n, first in (("train", n_train, 0), ("test", n_test, 1000)):
        pq.write_table(pa.Table.from_pylist(nielsr_rows(n, first), schema=nielsr_schema()),
                       root / "data" / f"{split}-00000-of-00001-5e1f{split}.parquet", row_group_size=2)
    return root


def test_nielsr_docvqa_test_is_val_with_recipe_prompt(tmp_path):
    src = write_nielsr(tmp_path / "nielsr")
    out = tmp_path / "out"
    s = convert_source("docvqa", "nielsr_docvqa", src, out, progress=False)
    assert s["counts"] == {"train": 5, "val": 3, "test": 0}
    ex = examples(out, "docvqa")
    val0 = ex["val"][0]
    assert val0["id"] == "val-0000000000" and ex["train"][0]["id"] == "train-0000000003"
    assert val0["conversations"] == [{"images": ["val/val-0000000000_0.png"],
                                      "user": "What is field 1000?\nAnswer briefly.", "assistant": "Value 1000",
                                      "answers": ["Value 1000", "value 1000"]}]
    assert image_bytes(out, val0) == [png(1100)]
    assert ex["train"][-1]["conversations"][0]["user"] == "What is field 4?\nAnswer briefly."
    assert leakage(out)["leaked_contents"] == 0


def test_nielsr_missing_columns_named(tmp_path):
    snap = write_cauldron_snapshot(tmp_path / "snap", "data", [cauldron_rows("docvqa", 3)])
    (snap / "data" / "train-00000-of-00001-0000beef.parquet").rename(snap / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) image, query, answers"):
        convert_source("docvqa", "nielsr_docvqa", snap, tmp_path / "out")


def test_cauldron_docvqa_cookbook_evaluates_on_nielsr_test_and_reports_leak(tmp_path):
    rows = cauldron_rows("docvqa", 6)
    rows[4] = dict(rows[4], images=[{"bytes": png(1101), "path": None}])  # = nielsr test row 1's page
    snap = write_cauldron_snapshot(tmp_path / "snap", "docvqa", [rows])
    nielsr = write_nielsr(tmp_path / "nielsr")
    with pytest.raises(ValueError, match="needs eval_path"):
        convert_source("docvqa", "cauldron", snap, tmp_path / "o1")
    out = tmp_path / "out"
    s = convert_source("docvqa", "cauldron", snap, out, eval_path=nielsr, progress=False)
    assert s["counts"] == {"train": 6, "val": 3, "test": 0}
    ex = examples(out, "docvqa")
    assert [e["conversations"][0]["assistant"] for e in ex["train"]] == [f"a{i}" for i in range(6)]
    assert ex["val"][1]["conversations"][0]["user"] == "What is field 1001?\nAnswer briefly."
    report = leakage(out)
    assert report["examples"] == [{"sha256": sha(png(1101)),
                                   "ids": {"train": ["train-0000000007"], "val": ["val-0000000001"]}}]


# ---------------------------------------------------------------------------------------------
# hub ids and local paths


def test_hub_id_needs_a_revision_and_local_path_never_calls_hub(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", offline)
    monkeypatch.chdir(tmp_path)
    for revision in (None, ""):
        with pytest.raises(ValueError, match=r"^path 'HuggingFaceM4/the_cauldron' is a hub id: set its revision "
                                             r"to a 40-hex commit \(listed at https://huggingface.co/datasets/"
                                             r"HuggingFaceM4/the_cauldron/commits/main\), or to a branch"):
            convert_source("nlvr2", "cauldron", "HuggingFaceM4/the_cauldron", tmp_path / "o", revision=revision)
    with pytest.raises(ValueError, match="local folder only"):
        convert_source("nlvr2", "official", "lil-lab/nlvr", tmp_path / "o", revision="a" * 40)
    snap = write_cauldron_snapshot(tmp_path / "local", "nlvr2", [cauldron_rows("nlvr2", 4)])
    s = convert_source("nlvr2", "cauldron", snap, tmp_path / "out", n_val=1, revision="a" * 40, progress=False)
    assert s["counts"]["val"] == 1  # converted from the local folder, hub untouched
    assert s["origin"] == {"source": "cauldron", "path": {"path": str(snap), "commit": None}}


def test_hub_id_with_revision_fetches_only_the_subset(tmp_path, monkeypatch):
    import huggingface_hub

    snap = write_cauldron_snapshot(tmp_path / "cache" / "snapshots" / ("f" * 40), "hateful_memes",
                                   [cauldron_rows("hateful_memes", 5)])
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)
    s = convert_source("hateful_memes", "cauldron", "HuggingFaceM4/the_cauldron", tmp_path / "out", n_val=2,
                       revision="f" * 40, progress=False)
    assert calls == [("HuggingFaceM4/the_cauldron",
                      {"repo_type": "dataset", "revision": "f" * 40, "allow_patterns": ["hateful_memes/*"]})]
    assert s["counts"] == {"train": 3, "val": 2, "test": 0}
    origin = {"source": "cauldron", "path": {"path": "HuggingFaceM4/the_cauldron", "revision": "f" * 40,
                                             "commit": "f" * 40}}
    assert s["origin"] == origin
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["origin"] == origin


def test_branch_revision_is_resolved_to_a_commit_and_recorded(tmp_path, monkeypatch):
    """A branch as revision: the commit it points to now is fetched (never the moving branch) and
    recorded; a local hub cache snapshot records the commit of its folder."""
    import huggingface_hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = write_cauldron_snapshot(tmp_path / "hub" / "datasets--HuggingFaceM4--the_cauldron" / "snapshots" / commit,
                                   "nlvr2", [cauldron_rows("nlvr2", 4)])
    asked, fetched = [], []

    def fake_dataset_info(self, repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return SimpleNamespace(sha=commit)

    def fake_snapshot_download(repo_id, **kwargs):
        fetched.append(kwargs["revision"])
        return str(snap)

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", fake_dataset_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)
    s = convert_source("nlvr2", "cauldron", "HuggingFaceM4/the_cauldron", tmp_path / "out", n_val=1,
                       revision="main", progress=False)
    assert asked == [("HuggingFaceM4/the_cauldron", "main")] and fetched == [commit]
    assert s["origin"]["path"] == {"path": "HuggingFaceM4/the_cauldron", "revision": "main", "commit": commit}
    local = convert_source("nlvr2", "cauldron", snap, tmp_path / "out2", n_val=1, progress=False)
    assert local["origin"]["path"] == {"path": str(snap), "commit": commit}


# ---------------------------------------------------------------------------------------------
# official releases


def write_docvqa_official(root: Path) -> Path:
    """``<split>/<split>_v1.0.json`` with ``data[]`` + ``<split>/documents/*.png``."""
    docs = {"train": ["ffbf0023_4", "abcd0001_1"], "val": ["zzzz0009_2"]}
    k = 0
    for split, names in docs.items():
        data = []
        for _, name in enumerate(names):
            (root / split / "documents").mkdir(parents=True, exist_ok=True)
            (root / split / "documents" / f"{name}.png").write_bytes(png(300 + k))
            for q in range(2):  # two questions per page, listed out of order
                data.append({"questionId": 9000 - 10 * k - q, "question": f"Q{k}.{q}?", "question_types": ["form"],
                             "image": f"documents/{name}.png", "docId": k, "ucsf_document_id": name[:8],
                             "ucsf_document_page_no": name[-1], "answers": [f"A{k}.{q}", f"alt{k}.{q}"],
                             "data_split": split})
            k += 1
        payload = {"dataset_name": "docvqa", "dataset_split": split, "dataset_version": "1.0", "data": data[::-1]}
        (root / split / f"{split}_v1.0.json").write_text(json.dumps(payload))
    (root / "test").mkdir()
    (root / "test" / "test_v1.0.json").write_text(json.dumps({"data": [{"questionId": 1, "question": "?",
                                                                           "image": "documents/x.png"}]}))
    return root


def test_docvqa_official_release(tmp_path):
    src = write_docvqa_official(tmp_path / "docvqa")
    with pytest.raises(ValueError, match="cookbook is not defined"):
        convert_source("docvqa", "official", src, tmp_path / "o", split_policy="cookbook")
    out = tmp_path / "out"
    s = convert_source("docvqa", "official", src, out, split_policy="official", processes=1, progress=False)
    assert s["counts"] == {"train": 4, "val": 2, "test": 0}
    ex = examples(out, "docvqa")
    # sorted by (image, questionId): abcd0001_1's questions first, lower questionId first
    assert [e["conversations"][0]["user"].split("\n")[0] for e in ex["train"]] == ["Q1.1?", "Q1.0?", "Q0.1?", "Q0.0?"]
    first = ex["train"][0]
    assert first["id"] == "train-0000000000" and first["conversations"][0]["answers"] == ["A1.1", "alt1.1"]
    assert first["conversations"][0]["assistant"] == "A1.1."  # the Cauldron's answer form (ftbench.data.prompts)
    assert first["conversations"][0]["images"] == ["train/documents/abcd0001_1.png"]
    assert ex["val"][0]["id"] == "val-0000000004" and image_bytes(out, ex["val"][0]) == [png(302)]
    assert len(list((out / "images" / "train" / "documents").iterdir())) == 2  # one file per page
    report = leakage(out)
    assert report["within_split_duplicates"] == {"train": 2, "val": 1, "test": 0} and report["leaked_contents"] == 0


def write_hateful_memes_official(root: Path) -> Path:
    """The release's ``data/`` folder: ``img/<id>.png`` + train/dev_seen/test_seen jsonl."""
    (root / "img").mkdir(parents=True)
    files = {"train.jsonl": range(0, 6), "dev_seen.jsonl": range(6, 8), "test_seen.jsonl": range(8, 10)}
    for name, ids in files.items():
        rows = []
        for i in ids:
            meme_id = 42000 + i
            (root / "img" / f"{meme_id}.png").write_bytes(png(500 + i))
            rows.append({"id": meme_id, "img": f"img/{meme_id}.png", "label": i % 2, "text": f"caption {i}"})
        jsonl(root / name, rows)
    (root / "img" / "42009.png").write_bytes(png(500 + 3))  # test_seen meme 9 = train meme 3, byte for byte
    return root


def test_hateful_memes_official_both_policies(tmp_path):
    src = write_hateful_memes_official(tmp_path / "data")
    out = tmp_path / "official"
    s = convert_source("hateful_memes", "official", tmp_path, out, split_policy="official", processes=2, progress=False)
    assert s["counts"] == {"train": 6, "val": 2, "test": 2}
    ex = examples(out, "hateful_memes")
    assert ex["val"][0]["id"] == "val-0000000006"
    assert ex["val"][0]["conversations"] == [{"images": ["val/val-0000000006_0.png"],
                                              "user": hateful_memes_prompt("img/42006.png"), "assistant": "No."}]
    assert ex["test"][1]["conversations"][0]["assistant"] == "Yes."
    assert image_bytes(out, ex["train"][4]) == [png(504)]
    report = leakage(out)
    assert report["across_splits"]["train/test"] == {"contents": 1, "examples": {"train": 1, "test": 1}}
    assert report["examples"][0]["ids"] == {"train": ["train-0000000003"], "test": ["test-0000000009"]}

    out = tmp_path / "cookbook"
    s = convert_source("hateful_memes", "official", src, out, split_policy="cookbook", n_val=2, n_test=1,
                       progress=False)
    assert s["counts"] == {"train": 3, "val": 2, "test": 1} and s["source"] == [str(src / "train.jsonl")]
    ex = examples(out, "hateful_memes")
    assert [image_bytes(out, e) for e in ex["val"]] == [[png(500)], [png(501)]]


def test_hateful_memes_bad_label_names_file_and_line(tmp_path):
    src = write_hateful_memes_official(tmp_path / "data")
    lines = (src / "dev_seen.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"label": 1', '"label": "maybe"')
    (src / "dev_seen.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"dev_seen\.jsonl:2: 'label' must be 0 or 1"):
        convert_source("hateful_memes", "official", src, tmp_path / "out", split_policy="official")


def write_nlvr2_official(root: Path) -> Path:
    """lil-lab/nlvr ``nlvr2/``: ``data/*.json`` json-lines, ``images/train/<directory>/``,
    ``dev/``, ``test1/`` with ``<split>-<set>-<pair>-img{0,1}.png``."""
    k = 0
    for stem, n in (("train", 4), ("dev", 2), ("test1", 2)):
        rows = []
        for i in range(n):
            pair = f"{stem}-{100 + i // 2}-{i % 2}"
            directory = 7 + i % 2
            folder = root / "images" / "train" / str(directory) if stem == "train" else root / stem
            folder.mkdir(parents=True, exist_ok=True)
            for side in (0, 1):
                (folder / f"{pair}-img{side}.png").write_bytes(png(700 + 2 * k + side))
            row = {"identifier": f"{pair}-{i % 2}", "sentence": f"Sentence {k}.", "label": "True" if k % 2 else "False",
                   "left_url": "http://x/l.jpg", "right_url": "http://x/r.jpg", "writer": 3, "synset": "n0",
                   "query": "q", "validation": {}, "extra_validations": {}}
            if stem == "train":
                row["directory"] = directory
            rows.append(row)
            k += 1
        jsonl(root / "data" / f"{stem}.json", rows)
    return root


def test_nlvr2_official_pairs_from_identifier(tmp_path):
    src = write_nlvr2_official(tmp_path / "nlvr2")
    out = tmp_path / "out"
    s = convert_source("nlvr2", "official", src, out, split_policy="official", progress=False)
    assert s["counts"] == {"train": 4, "val": 2, "test": 2}
    ex = examples(out, "nlvr2")
    t1 = ex["train"][1]
    assert t1["conversations"] == [{"images": ["train/train-0000000001_0.png", "train/train-0000000001_1.png"],
                                    "user": nlvr2_prompt("Sentence 1.", "train-100-1-1"), "assistant": "Yes."}]
    assert image_bytes(out, t1) == [png(702), png(703)]  # left = img0, right = img1, from images/train/8/
    assert image_bytes(out, ex["test"][0]) == [png(712), png(713)]
    assert ex["val"][0]["conversations"][0]["assistant"] == "No."

    s = convert_source("nlvr2", "official", src, tmp_path / "cb", split_policy="cookbook", n_val=1, progress=False)
    assert s["counts"] == {"train": 3, "val": 1, "test": 0}

    (src / "dev" / "dev-100-1-img1.png").unlink()
    with pytest.raises(ValueError, match=r"dev\.json:2: image dev-100-1-img1\.png not found"):
        convert_source("nlvr2", "official", src, tmp_path / "bad", split_policy="official")


def grey_video(path: Path, n_frames: int, level: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_avi(str(path), [np.full((16, 16, 3), (level + 9 * f) % 256, dtype=np.uint8) for f in range(n_frames)])


def write_ucf101_official(root: Path) -> Path:
    """``UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` + ``ucfTrainTestlist/`` (classInd, train/testlist01)."""
    videos = root / "UCF-101"
    classes = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    (root / "ucfTrainTestlist").mkdir(parents=True)
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    train, test = [], []
    for ci, cls in enumerate(classes):
        file_cls = "HandStandPushups" if cls == "HandstandPushups" else cls  # the release's own spelling
        for g in (1, 8):
            name = f"v_{file_cls}_g{g:02d}_c01.avi"
            grey_video(videos / cls / name, 8, 40 * ci + g)
            line = f"{cls}/{name.replace('HandStand', 'Handstand')}"
            (test if g == 1 else train).append(line)
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("".join(f"{entry} {1}\n" for entry in reversed(train)))
    (root / "ucfTrainTestlist" / "testlist01.txt").write_text("".join(f"{entry}\n" for entry in test))
    return root


def test_ucf101_official_release_lists_and_refuses_cookbook(tmp_path):
    src = write_ucf101_official(tmp_path / "ucf")
    with pytest.raises(ValueError, match="cookbook is not defined"):
        convert_source("ucf101", "official", src, tmp_path / "o", split_policy="cookbook")
    out = tmp_path / "out"
    s = convert_source("ucf101", "official", src, out, split_policy="official", num_frames=4, processes=2,
                       progress=False)
    assert s["counts"] == {"train": 3, "val": 3, "test": 0}
    ex = examples(out, "ucf101")
    prompt = UCF_PROMPT + "ApplyEyeMakeup, HandstandPushups, YoYo."
    assert [e["conversations"][0]["assistant"] for e in ex["train"]] == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    hs = ex["val"][1]
    assert hs["id"] == "val-0000000004" and hs["conversations"][0]["user"] == prompt
    assert hs["conversations"][0]["images"] == [f"val/HandstandPushups/v_HandStandPushups_g01_c01.{k}.jpg"
                                                for k in range(4)]
    assert all((out / "images" / p).is_file() for p in hs["conversations"][0]["images"])
    assert leakage(out)["unit"] == "video file" and leakage(out)["hashed"] == 6


def test_ucf101_subset_duplicate_video_across_splits_is_reported(tmp_path):
    root = tmp_path / "UCF101_subset"
    grey_video(root / "train" / "Archery" / "v_Archery_g01_c01.avi", 8, 10)
    grey_video(root / "train" / "Archery" / "v_Archery_g02_c01.avi", 8, 30)
    grey_video(root / "val" / "Archery" / "v_Archery_g03_c01.avi", 8, 50)
    (root / "test" / "Archery").mkdir(parents=True)
    (root / "test" / "Archery" / "v_Archery_g09_c01.avi").write_bytes(
        (root / "train" / "Archery" / "v_Archery_g02_c01.avi").read_bytes())
    s = convert_source("ucf101", "ucf101_subset", tmp_path, tmp_path / "out", progress=False)
    assert s["counts"] == {"train": 2, "val": 1, "test": 1}
    assert leakage(tmp_path / "out")["examples"] == [
        {"sha256": leakage(tmp_path / "out")["examples"][0]["sha256"],
         "ids": {"train": ["train-0000000001"], "test": ["test-0000000003"]}}]


# ---------------------------------------------------------------------------------------------
# config and CLI


def _config(**task):
    entry = {"num_crops": 1, "steps": 1, "global_batch": 1, "per_device_batch": 1, "warmup_steps": 0,
             "learning_rate": {"full": 1.0, "frozen_vision": 1.0, "lora": 1.0, "qlora": 1.0}, **task}
    return {"model": {"preset": "tiny", "source": "pretrain"}, "data": {"source": "synthetic"},
            "hardware": {"cpu": {"device": "cpu", "processes_per_node": 1}}, "tasks": {"nlvr2": entry},
            "matrix": [{"task": ["nlvr2"], "hardware": ["cpu"], "strategy": ["full"], "precision": ["bf16"],
                        "attention": ["sdpa"], "layout": ["1x1"], "seed": [0]}]}


def test_config_source_keys():
    validate_config(_config(source="official", path="/data/nlvr2", split_policy="official", processes=2))
    with pytest.raises(ConfigError, match=r"tasks\.nlvr2: 'path' is a required property"):
        validate_config(_config(source="official"))
    with pytest.raises(ConfigError, match=r"tasks\.nlvr2\.source: data source 'nielsr_docvqa' has no nlvr2"):
        validate_config(_config(source="nielsr_docvqa", path="x"))
    with pytest.raises(ConfigError, match=r"tasks\.nlvr2\.split_policy"):
        validate_config(_config(source="official", path="x", split_policy="recipe"))


def test_cli_official_source_publishes_leakage_report(tmp_path):
    src = write_hateful_memes_official(tmp_path / "data")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "workflow_scripts/convert.py", "--task", "hateful_memes",
                        "--source", "official",
                        "--split-policy", "official", "--raw", str(src), "--out", str(out), "--processes", "1"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"train": 6, "val": 2, "test": 2}
    assert leakage(out)["leaked_contents"] == 1
    r = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "convert.py"), "--task", "nlvr2",
                        "--source", "cauldron",
                        "--raw", "HuggingFaceM4/the_cauldron", "--out", str(tmp_path / "o2")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is a hub id: set its revision to a 40-hex commit" in r.stderr


def test_convert_rule_inputs_and_arguments(tmp_path):
    from ftbench.data.sources import rule_arguments, rule_input

    assert rule_input("docvqa", {"rows": 8}) == ["results/raw/docvqa"]
    assert rule_arguments("docvqa", {"rows": 8, "n_val": 40}) == (
        "--source synthetic --raw results/raw/docvqa --split-policy cookbook --n-val 40 --n-test 0")
    entry = {"source": "official", "path": str(tmp_path), "split_policy": "official", "ucf_split": 2}
    assert rule_input("ucf101", entry) == [str(tmp_path)]
    assert rule_arguments("ucf101", entry) == (
        f"--source official --raw {tmp_path} --split-policy official --num-frames 8 --ucf-split 2")
    hub = {"source": "cauldron", "path": "HuggingFaceM4/the_cauldron", "revision": "c" * 40,
           "eval_path": str(tmp_path)}
    assert rule_input("docvqa", hub) == [str(tmp_path)]  # the hub id is fetched by the job, not an input file
    assert rule_arguments("docvqa", hub).endswith(f"--revision {'c' * 40} --eval-path {tmp_path}")
