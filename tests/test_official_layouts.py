"""The official releases in the layouts they are published in today, and the Cauldron's task form
of their examples (issue section 4, "Published layouts that fail today", and section 5, "prompts of
the official releases"). Fixtures are written here in the exact published layouts; refusals are one
line naming the file, exit status 1, and leave an earlier conversion untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_bad_input import assert_one_line, run_script, snapshot
from test_sources import examples, image_bytes, jsonl, png, write_hateful_memes_official, write_nlvr2_official

from ftbench.data.prompts import (
    DOCVQA_BREVITY_HINTS,
    HATEFUL_MEMES_QUESTIONS,
    NLVR2_PREFIX,
    NLVR2_STATEMENTS,
    NLVR2_SUFFIX,
    cauldron_casing,
    pick,
)
from ftbench.data.sources import convert_source

# ------------------------------------------------------------------------------------ DocVQA


def write_spdocvqa(root: Path) -> Path:
    """SP-DocVQA as the RRC downloads page ships it: ``spdocvqa_qas/{train,val}_v1.0_withQT.json``,
    ``spdocvqa_qas/test_v1.0.json`` (no answers), ``spdocvqa_images/<doc>.png``,
    ``spdocvqa_ocr/<doc>.json``; each question's ``image`` still reads ``documents/<doc>.png``."""
    pages = {"train": ["ffbf0023_4", "abcd0001_1"], "val": ["zzzz0009_2"], "test": ["tttt0001_3"]}
    for folder in ("spdocvqa_qas", "spdocvqa_images", "spdocvqa_ocr"):
        (root / folder).mkdir(parents=True)
    k = 0
    for split, names in pages.items():
        data = []
        for name in names:
            (root / "spdocvqa_images" / f"{name}.png").write_bytes(png(900 + k))
            ocr = {"status": "Succeeded", "recognitionResults": []}
            (root / "spdocvqa_ocr" / f"{name}.json").write_text(json.dumps(ocr))
            question = {"questionId": 4000 + k, "question": f"what is the total on page {k}?",
                        "question_types": ["table/list"],
                        "image": f"documents/{name}.png", "docId": k, "ucsf_document_id": name[:8],
                        "ucsf_document_page_no": name[-1], "data_split": split}
            if split != "test":
                question["answers"] = [f"total {k}", f"${k}.00"]
            data.append(question)
            k += 1
        name = "test_v1.0.json" if split == "test" else f"{split}_v1.0_withQT.json"
        payload = {"dataset_name": "docvqa", "dataset_split": split, "dataset_version": "1.0", "data": data}
        (root / "spdocvqa_qas" / name).write_text(json.dumps(payload))
    return root


def convert_args(task: str, raw: Path, out: Path) -> list:
    return ["--task", task, "--source", "official", "--split-policy", "official", "--raw", raw, "--out", out]


def test_docvqa_rrc_layout_converts_in_the_cauldron_form_and_skips_the_unanswered_test(tmp_path):
    root = write_spdocvqa(tmp_path / "docvqa")
    out = tmp_path / "out"
    s = convert_source("docvqa", "official", root, out, split_policy="official", progress=False)
    assert s["counts"] == {"train": 2, "val": 1, "test": 0}
    assert s["splits"] == {"train": "train_v1.0_withQT.json", "val": "val_v1.0_withQT.json"}
    assert s["skipped"] == {"test": f"{root / 'spdocvqa_qas' / 'test_v1.0.json'}: no answers "
                                    "(the RRC scores test predictions online)"}
    assert json.loads((out / "summary.json").read_text())["skipped"] == s["skipped"]
    ex = examples(out, "docvqa")
    first = ex["train"][0]["conversations"][0]  # abcd0001_1 sorts first
    assert first["images"] == ["train/documents/abcd0001_1.png"] and image_bytes(out, ex["train"][0]) == [png(901)]
    # the Cauldron's docvqa form: capitalised question + a brevity hint; answer capitalised, final '.'
    assert first["user"] == "What is the total on page 1?" + pick(DOCVQA_BREVITY_HINTS, "4001")
    assert first["user"] == "What is the total on page 1?\nKeep it short and to the point."  # same on every machine
    assert first["assistant"] == "Total 1." and first["answers"] == ["total 1", "$1.00"]  # gold answers unchanged
    assert image_bytes(out, ex["val"][0]) == [png(902)]
    # the json folder itself as path: the images are found beside it
    again = convert_source("docvqa", "official", root / "spdocvqa_qas", tmp_path / "again", split_policy="official",
                           progress=False)
    assert again["counts"] == s["counts"] and examples(tmp_path / "again", "docvqa") == ex


def test_docvqa_earlier_per_split_layout_still_converts_and_records_its_skipped_test(tmp_path):
    from test_sources import write_docvqa_official

    root = write_docvqa_official(tmp_path / "docvqa")
    s = convert_source("docvqa", "official", root, tmp_path / "out", split_policy="official", progress=False)
    assert s["counts"] == {"train": 4, "val": 2, "test": 0}
    assert s["splits"] == {"train": "train_v1.0.json", "val": "val_v1.0.json"}
    assert s["skipped"]["test"].startswith(f"{root / 'test' / 'test_v1.0.json'}: no answers")


def test_docvqa_refusals_are_one_line_and_keep_the_earlier_conversion(tmp_path, capsys, monkeypatch):
    root = write_spdocvqa(tmp_path / "docvqa")
    out = tmp_path / "results" / "data" / "docvqa"
    status, lines = run_script("convert", convert_args("docvqa", root, out), capsys, monkeypatch)
    assert status == 0, lines
    before = snapshot(out)

    (root / "spdocvqa_images" / "zzzz0009_2.png").unlink()
    status, lines = run_script("convert", convert_args("docvqa", root, out), capsys, monkeypatch)
    assert_one_line(status, lines, f"{root / 'spdocvqa_qas' / 'val_v1.0_withQT.json'}: data[0]: questionId 4002: "
                                   "image documents/zzzz0009_2.png not found")
    (root / "spdocvqa_qas" / "train_v1.0_withQT.json").unlink()
    status, lines = run_script("convert", convert_args("docvqa", root, out), capsys, monkeypatch)
    assert_one_line(status, lines, f"{root}: no spdocvqa_qas/train_v1.0_withQT.json or train/train_v1.0.json")
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------- NLVR2


def write_nlvr2_vilt(root: Path) -> Path:
    """ViLT's DATA.md layout: a lil-lab/nlvr clone (``nlvr2/data/*.json``) with the image zips
    extracted at its root: ``images/train/<directory>/``, ``dev/``, ``test1/``."""
    write_nlvr2_official(root / "nlvr2")
    for folder in ("images", "dev", "test1"):
        shutil.move(root / "nlvr2" / folder, root / folder)
    (root / "nlvr").mkdir()
    (root / "README.md").write_text("# Cornell NLVR and NLVR2\n")
    return root


def test_nlvr2_vilt_layout_from_the_clone_or_its_nlvr2_folder_in_the_cauldron_form(tmp_path):
    root = write_nlvr2_vilt(tmp_path / "nlvr")
    outs = {}
    for name, path in (("clone", root), ("nlvr2", root / "nlvr2")):
        outs[name] = tmp_path / name
        s = convert_source("nlvr2", "official", path, outs[name], split_policy="official", progress=False)
        assert s["counts"] == {"train": 4, "val": 2, "test": 2}
    ex = examples(outs["clone"], "nlvr2")
    assert examples(outs["nlvr2"], "nlvr2") == ex
    t1 = ex["train"][1]["conversations"][0]
    assert image_bytes(outs["clone"], ex["train"][1]) == [png(702), png(703)]  # from images/train/8/
    assert image_bytes(outs["clone"], ex["test"][0]) == [png(712), png(713)]  # from test1/
    # the Cauldron's nlvr2 form: left/right preamble, a statement template, "Answer yes or no."; Yes./No.
    template = pick(NLVR2_STATEMENTS, "train-100-1-1")
    assert t1["user"] == f"{NLVR2_PREFIX} {template.format(caption='Sentence 1.')} {NLVR2_SUFFIX}"
    assert t1["user"] == ("The first image is the image on the left, the second image is the image on the right. "
                          'Considering the images on both sides, is "Sentence 1." valid? Answer yes or no.')
    assert t1["assistant"] == "Yes." and ex["val"][0]["conversations"][0]["assistant"] == "No."


def test_nlvr2_missing_image_is_one_line_and_keeps_the_earlier_conversion(tmp_path, capsys, monkeypatch):
    root = write_nlvr2_vilt(tmp_path / "nlvr")
    out = tmp_path / "results" / "data" / "nlvr2"
    status, lines = run_script("convert", convert_args("nlvr2", root, out), capsys, monkeypatch)
    assert status == 0, lines
    before = snapshot(out)
    (root / "test1" / "test1-100-1-img1.png").unlink()
    status, lines = run_script("convert", convert_args("nlvr2", root, out), capsys, monkeypatch)
    assert_one_line(status, lines, f"{root / 'nlvr2' / 'data' / 'test1.json'}:2: image test1-100-1-img1.png not found",
                    str(root / "test1"))
    assert snapshot(out) == before


# ------------------------------------------------------------------------------ Hateful Memes


def drop_labels(path: Path, lines: range | None = None) -> None:
    """The release's test files: no ``label`` key (on the given 0-based lines, else on all)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for k, row in enumerate(rows):
        if lines is None or k in lines:
            row.pop("label")
    jsonl(path, rows)


def test_hateful_memes_unlabelled_test_is_skipped_and_said_so(tmp_path, capsys, monkeypatch):
    root = write_hateful_memes_official(tmp_path / "data")
    drop_labels(root / "test_seen.jsonl")
    out = tmp_path / "out"
    status, lines = run_script("convert", convert_args("hateful_memes", root, out), capsys, monkeypatch)
    assert status == 0, lines
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"train": 6, "val": 2, "test": 0}
    reason = "no 'label' (the release labels train and dev only)"
    assert summary["skipped"] == {"test": f"{root / 'test_seen.jsonl'}: {reason}"}
    assert summary["splits"] == {"train": "train.jsonl", "val": "dev_seen.jsonl"}
    assert summary["source"] == [str(root / "train.jsonl"), str(root / "dev_seen.jsonl")]
    ex = examples(out, "hateful_memes")
    # the Cauldron's hateful_memes form: one of its questions + "\nAnswer yes or no.", no meme text; Yes./No.
    val0 = ex["val"][0]["conversations"][0]
    assert val0["user"] == pick(HATEFUL_MEMES_QUESTIONS, "img/42006.png") + "\nAnswer yes or no."
    assert val0["user"] == "Is the language used in this meme hateful?\nAnswer yes or no."  # same on every machine
    assert [e["conversations"][0]["assistant"] for e in ex["train"]] == ["No.", "Yes."] * 3
    assert not any("caption" in e["conversations"][0]["user"] for split in ex.values() for e in split)


@pytest.mark.parametrize("file, unlabelled, line", [("test_seen.jsonl", range(1, 2), 2), ("dev_seen.jsonl", None, 1)])
def test_hateful_memes_missing_label_where_needed_is_one_line(file, unlabelled, line, tmp_path, capsys, monkeypatch):
    root = write_hateful_memes_official(tmp_path / "data")
    out = tmp_path / "results" / "data" / "hateful_memes"
    status, lines = run_script("convert", convert_args("hateful_memes", root, out), capsys, monkeypatch)
    assert status == 0, lines
    before = snapshot(out)
    drop_labels(root / file, unlabelled)
    status, lines = run_script("convert", convert_args("hateful_memes", root, out), capsys, monkeypatch)
    assert_one_line(status, lines, f"{root / file}:{line}: no 'label'")
    assert snapshot(out) == before


# ----------------------------------------------------------------------------------- prompts


def test_cauldron_casing_and_template_draw():
    """build_ds_sft.py's correct_casing, and a draw that uses every template about equally."""
    assert cauldron_casing("what is the ITC total?", is_question=True) == "What is the itc total?"
    assert cauldron_casing("ITC Limited") == "ITC Limited." and cauldron_casing("itc limited") == "Itc limited."
    assert cauldron_casing("3.5.") == "3.5." and cauldron_casing("", is_question=True) == ""
    counts = {t: 0 for t in NLVR2_STATEMENTS}
    for i in range(4000):
        counts[pick(NLVR2_STATEMENTS, f"dev-{i}-0-0")] += 1
    assert min(counts.values()) > 0.8 * 4000 / len(NLVR2_STATEMENTS)
