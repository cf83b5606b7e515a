"""``ftbench validate`` reports every problem of a dataset with its line (issue 4); a conversion whose
output does not validate publishes nothing; the workflow refuses a broken custom dataset before any
training starts; a custom task declared in the config is planned and imported without code changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ftbench.cli import main as ftbench_main
from ftbench.data.staging import convert_staged
from ftbench.data.validate import dataset_problems

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def example(i, images=("p0.png",), user="Which colour?", answer="red", **extra):
    return dict({"id": f"ex-{i}", "source": "mine",
                 "conversations": [{"images": list(images), "user": user, "assistant": answer}]}, **extra)


def write_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (16, 12), (200, 30 * i, 10)).save(folder / f"p{i}.png")
    Image.new("RGB", (16, 12), (0, 0, 200)).save(folder / "broken.jpg")
    data = (folder / "broken.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    return folder


BROKEN_LINES = [  # (line content, problem reported for it); line 1 is valid
    (json.dumps(example(0)), None),
    ('{"id": "ex-1", "source": "mine", "conversations": [', "invalid JSON"),
    (json.dumps({"id": "ex-2", "conversations": []}), "missing key 'source'"),
    (json.dumps(example(3, images=["p0.png", "p1.png"], user="<|image_1|>\nWhich colour?")),
     "image tags <|image_1|> but the turn has 2 image(s)"),
    (json.dumps(example(4, images=["gone.png"])), "gone.png: image file not found"),
    (json.dumps(example(5, images=["broken.jpg"])), "broken.jpg: not a readable image"),
    (json.dumps(example(6, images=["empty.png"])), "empty.png: image file is empty (0 bytes)"),
    (json.dumps(example(7, answer="")), "conversations[0].assistant is empty"),
    (json.dumps(example(0, images=["p2.png"])), "duplicate id 'ex-0' (first on line 1)"),
    (json.dumps(example(9, images=["p0.png", "p1.png"], user="<|image_2|> vs <|image_1|>: same?")), None),
]


@pytest.fixture
def broken(tmp_path):
    images = write_images(tmp_path / "images")
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(line for line, _ in BROKEN_LINES) + "\n")
    return path, images


def test_validate_prints_every_problem_with_file_and_line(broken, capsys):
    path, images = broken
    assert ftbench_main(["validate", str(path), str(images)]) == 1
    out, err = capsys.readouterr()
    expected = [(n, what) for n, (_, what) in enumerate(BROKEN_LINES, start=1) if what]
    lines = out.strip().splitlines()
    assert len(lines) == len(expected)
    for line, (n, what) in zip(lines, expected):
        assert line.startswith(f"{path}:{n}: ") and what in line, (line, what)
    assert err.strip() == f"{path}: {len(expected)} problem(s)"


def test_validate_accepts_a_clean_dataset_with_default_image_folder(tmp_path, capsys):
    write_images(tmp_path / "images")
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(example(0)) + "\n\n" + json.dumps(example(1, images=[])) + "\n")
    assert ftbench_main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: ok"
    assert list(dataset_problems(tmp_path / "nope.jsonl")) != []
    (tmp_path / "empty.jsonl").write_text("")
    assert [str(p) for p in dataset_problems(tmp_path / "empty.jsonl")] == [
        f"{tmp_path / 'empty.jsonl'}: no examples (the file is empty)"]
    assert list(dataset_problems(tmp_path / "empty.jsonl", allow_empty=True)) == []


def test_a_conversion_whose_output_does_not_validate_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier\n")

    def converter(staging: Path) -> dict:  # a converter bug: line 2 of train names an image it never wrote
        write_images(staging / "images")
        (staging / "t_train.jsonl").write_text(json.dumps(example(0)) + "\n"
                                               + json.dumps(example(1, images=["x.png"])) + "\n")
        (staging / "t_val.jsonl").write_text(json.dumps(example(2)) + "\n")
        (staging / "summary.json").write_text("{}")
        return {}

    with pytest.raises(ValueError,
                       match=rf"^{out}/t_train.jsonl:2: conversations\[0\].images\[0\] .*x.png: image file not found"):
        convert_staged(out, "t", converter)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def _snakemake(args, cwd):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def custom_workdir(tmp_path):
    """A working directory whose config declares one custom task, ``receipts``."""
    images = write_images(tmp_path / "my" / "images")
    (tmp_path / "my" / "train.jsonl").write_text("".join(json.dumps(example(i, images=[f"p{i % 3}.png"])) + "\n"
                                                         for i in range(6)))
    (tmp_path / "my" / "val.jsonl").write_text(json.dumps(example(6, images=["p1.png"], answer="green")) + "\n")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    task = dict(config["tasks"]["hateful_memes"], source="custom", train="my/train.jsonl", val="my/val.jsonl",
                images="my/images", metric="accuracy", prompt="Answer with one word.\n{user}")
    for key in ("rows", "n_val"):
        task.pop(key, None)
    config["tasks"] = {"receipts": task}
    config["matrix"] = [{"task": ["receipts"], "hardware": ["cpu"], "strategy": ["lora", "full"], "precision": ["bf16"],
                         "attention": ["sdpa"], "layout": ["1x1"], "seed": [0]}]
    config["speed"] = {"tasks": []}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path, images


def test_custom_task_is_planned_and_imported_without_code_changes(custom_workdir):
    wd, images = custom_workdir
    r = _snakemake(["-n"], wd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    counts = dict(line.split() for line in r.stdout.splitlines() if line.split()[:1] and len(line.split()) == 2
                  and line.split()[1].isdigit())
    assert counts["import_custom"] == "1" and counts["train"] == "2" and counts["evaluate_after"] == "2"
    assert counts["evaluate_before"] == "1" and "convert" not in counts and "make_raw" not in counts
    r = _snakemake(["--cores", "1", "results/data/receipts/summary.json"], wd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = wd / "results" / "data" / "receipts"
    assert (out / "images").resolve() == images.resolve()  # linked, not copied
    train = [json.loads(line) for line in (out / "receipts_train.jsonl").read_text().splitlines()]
    assert len(train) == 6 and train[0]["source"] == "receipts"
    assert train[0]["conversations"][0]["user"] == "Answer with one word.\nWhich colour?"
    assert (out / "receipts_test.jsonl").read_text() == ""
    assert json.loads((out / "summary.json").read_text())["counts"] == {"train": 6, "val": 1, "test": 0}


def test_workflow_refuses_a_broken_custom_dataset_before_training(custom_workdir):
    wd, _ = custom_workdir
    lines = (wd / "my" / "train.jsonl").read_text().splitlines()
    lines[3] = json.dumps(example(3, images=["missing.png"]))
    (wd / "my" / "train.jsonl").write_text("\n".join(lines) + "\n")
    r = _snakemake(["--cores", "1", "results/receipts/cpu/lora-bf16-sdpa-1x1-s0/train/artifact.json"], wd)
    assert r.returncode != 0
    log = (wd / "logs" / "convert" / "receipts.log").read_text().strip().splitlines()
    assert (len(log) == 1 and log[0].startswith("import_custom.py: error: my/train.jsonl:4: ")
            and "missing.png" in log[0])
    assert not (wd / "results" / "receipts").exists()  # no training started
    assert not (wd / "results" / "base").exists()
    assert list((wd / "results" / "data" / "receipts").glob("*")) == []  # nothing published
