"""Inputs that used to pass and should not: an absurdly long text field, a huge image, a symlink out of
the image folder, config files with a syntax error or a misspelled task, a matrix whose every cell is
refused. Each is refused with one line naming the file (and line or key), a non-zero exit, and
nothing written earlier is touched (as in test_bad_input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from test_bad_input import (  # noqa: F401 (earlier and tiny_checkpoint are fixtures)
    REPO,
    _bad_line,
    _snakemake,
    assert_one_line,
    earlier,
    evaluate_over_an_earlier_result,
    example,
    import_args,
    run_script,
    snapshot,
    tiny_checkpoint,
    workflow_refuses,
    write_dataset,
)

from ftbench.config import (
    ConfigError,
    check_config_files,
    custom_import_args,
    eval_settings,
    file_setting,
    load_config,
)
from ftbench.config import (
    main as check_config_main,
)
from ftbench.data.common import MAX_TEXT_CHARS

# ------------------------------------------------------------------------------------- long fields


def test_text_field_longer_than_any_context_is_refused_at_import(tmp_path, earlier, capsys, monkeypatch):
    out, before = earlier
    ds = write_dataset(tmp_path / "bad")
    _bad_line(ds, json.dumps(example(2, answer="a" * (MAX_TEXT_CHARS + 1))))  # 4 MiB: over the default limit
    status, lines = run_script("import_custom", import_args(ds, out), capsys, monkeypatch)
    assert_one_line(status, lines, f"{ds['train']}:3: conversations[0].assistant is 4,194,305 characters, "
                                   "more than 4,194,304 (131072 tokens, the longest context here")
    assert snapshot(out) == before


def _tiny_processor(num_crops: int = 1, max_length: int | None = None):
    from ftbench.models.presets import tiny_config
    from ftbench.models.processing_phi3v import Phi3VProcessor
    from ftbench.models.tokenizer import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(["What colour is the block? red green blue"] * 20, vocab_size=128)
    return Phi3VProcessor.for_model(tokenizer, tiny_config(tokenizer), num_crops, max_length=max_length)


def test_training_length_counts_image_tokens_from_headers_exactly(tmp_path):
    from ftbench.models.processing_phi3v import hd_size, hd_transform

    processor = _tiny_processor(num_crops=4)
    for size in ((24, 20), (20, 64), (300, 40), (37, 37)):
        image = Image.new("RGB", size, (10, 200, 30))
        assert hd_size(*size, 4, processor.crop_size) == hd_transform(image, 4, processor.crop_size)[1]
        image.save(tmp_path / f"{size[0]}x{size[1]}.png")
    turn = {"images": ["24x20.png", "20x64.png", "300x40.png"], "user": "Which one?", "assistant": "red"}
    encoded = processor.encode_training([turn], tmp_path)
    assert processor.training_length(turn, tmp_path) == len(encoded.input_ids)


def test_pretraining_refuses_an_example_longer_than_the_context(tmp_path, capsys, monkeypatch):
    """A long answer that import accepts still cannot be pretrained on by the tiny base (4096 tokens):
    refused before the first step, naming its line, instead of a 54 GB allocation."""
    ds = write_dataset(tmp_path / "data")
    _bad_line(ds, json.dumps(example(2, answer="red green blue " * 3000)))
    out = tmp_path / "results" / "base" / "tiny"
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}\n")  # an earlier base
    before = snapshot(out.parent)
    settings = {"steps": 1, "seed": 0, "learning_rate": 1e-3, "global_batch": 2, "captions": 4}
    status, lines = run_script("build_base", ["--train", ds["train"], "--out", out, "--settings", json.dumps(settings)],
                               capsys, monkeypatch)
    assert_one_line(status, lines, f"{ds['train']}:3: first turn of ", "more than the tiny base's context of 4096")
    assert snapshot(out.parent) == before  # no scratch folder left, the earlier base untouched


def test_evaluation_refuses_a_prompt_longer_than_max_length(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    ds = write_dataset(tmp_path / "data")
    status, lines, intact = evaluate_over_an_earlier_result(
        tiny_checkpoint, ds, tmp_path, {"num_crops": 1, "batch_size": 2, "max_new_tokens": 2, "max_length": 8},
        capsys, monkeypatch)
    assert_one_line(status, lines, f"{ds['val']}: example 'ex-4': prompt of ", "tokens, more than max_length 8 "
                                   "(prompts are never truncated")
    assert intact
    # the task's max_length reaches evaluation only when configured (other configs keep their settings)
    config = load_config(REPO / "config.yaml")
    assert "max_length" not in eval_settings(config, "docvqa")
    config["tasks"]["docvqa"]["max_length"] = 512
    assert eval_settings(config, "docvqa")["max_length"] == 512


# ------------------------------------------------------------------------------------- huge images


def test_image_over_the_default_pixel_limit_is_refused_from_its_header(tmp_path, earlier, capsys, monkeypatch):
    out, before = earlier
    ds = write_dataset(tmp_path / "bad")
    Image.new("1", (10000, 10000)).save(ds["images"] / "p2.png")  # 100 Mpx, 12 KB: only its header is read
    status, lines = run_script("import_custom", import_args(ds, out), capsys, monkeypatch)
    assert_one_line(status, lines, f"{ds['train']}:3: conversations[0].images[0] {ds['images'] / 'p2.png'}: ",
                    "10000x10000 pixels (100,000,000), more than max_image_pixels 50,000,000 "
                    "(downscale the image, or raise tasks.mine.max_image_pixels in the config)")
    assert snapshot(out) == before


def test_pixel_limit_is_configurable(tmp_path, earlier, capsys, monkeypatch):
    out, before = earlier
    ds = write_dataset(tmp_path / "bad")
    Image.new("RGB", (40, 40), (1, 2, 3)).save(ds["images"] / "p2.png")
    status, lines = run_script("import_custom", [*import_args(ds, out), "--max-image-pixels", "1000"],
                               capsys, monkeypatch)
    assert_one_line(status, lines, f"{ds['train']}:3: ", "40x40 pixels (1,600), more than max_image_pixels 1,000")
    assert snapshot(out) == before
    # the config key: passed to the import only when it is not the schema's default (no rerun otherwise)
    config = load_config(REPO / "config.yaml")
    entry = {"source": "custom", "train": str(ds["train"]), "val": str(ds["val"]), "images": str(ds["images"])}
    config["tasks"]["mine"] = entry
    assert "--max-image-pixels" not in custom_import_args(config, "mine")
    entry["max_image_pixels"] = 50_000_000
    assert "--max-image-pixels" not in custom_import_args(config, "mine")
    entry["max_image_pixels"] = 1000
    assert custom_import_args(config, "mine").endswith("--max-image-pixels 1000")
    path = tmp_path / "c.yaml"
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["tasks"]["docvqa"]["max_image_pixels"] = 200_000_000  # PIL itself would refuse to load it
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"tasks.docvqa.max_image_pixels: 200000000 is greater than the maximum"):
        load_config(path)


# ------------------------------------------------------------------------------- symlinked images


def test_symlink_out_of_the_image_folder_is_refused(tmp_path, earlier, capsys, monkeypatch):
    out, before = earlier
    ds = write_dataset(tmp_path / "bad")
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8)).save(outside)
    (ds["images"] / "p2.png").unlink()
    (ds["images"] / "p2.png").symlink_to(outside)
    (ds["images"] / "p1.png").unlink()
    (ds["images"] / "p1.png").symlink_to("p0.png")  # a link inside the folder is fine
    status, lines = run_script("import_custom", import_args(ds, out), capsys, monkeypatch)
    assert_one_line(status, lines, f"{ds['train']}:3: conversations[0].images[0] {ds['images'] / 'p2.png'}: "
                                   f"a symlink to {outside}, outside the image folder {ds['images'].resolve()}")
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------ config files


def refused_run(wd, args, fragment) -> tuple[str, str]:
    """``snakemake -n ARGS`` in ``wd`` fails with one line holding ``fragment``; an earlier results file
    keeps its bytes and mtime. Returns the line and the whole output."""
    earlier_result = wd / "results" / "docvqa" / "cpu" / "eval_before.json"
    earlier_result.parent.mkdir(parents=True, exist_ok=True)
    earlier_result.write_text('{"metrics": {}}\n')
    before = snapshot(wd / "results")
    r = _snakemake(["-n", *args], wd)
    output = r.stdout + r.stderr  # Snakemake prints workflow errors on stdout
    lines = [line.strip() for line in output.splitlines() if fragment in line]
    assert r.returncode != 0 and len(lines) == 1, output[-3000:]
    assert snapshot(wd / "results") == before
    return lines[0], output


def _workdir(tmp_path: Path, **files: str) -> Path:
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text((REPO / "config.yaml").read_text())
    for name, text in files.items():
        (wd / f"{name}.yaml").write_text(text)
    return wd


def test_yaml_error_in_config_yaml_names_file_and_line(tmp_path):
    text = (REPO / "config.yaml").read_text().splitlines()
    line = next(i for i, row in enumerate(text) if row.startswith("  pretrain:"))
    text[line] = text[line].replace(", global_batch:", " global_batch:")  # "{a: 1 b: 2}": a syntax error
    wd = _workdir(tmp_path)
    (wd / "config.yaml").write_text("\n".join(text) + "\n")
    found, _ = refused_run(wd, [], "not valid YAML")
    assert found.startswith(f"config.yaml:{line + 1}: not valid YAML")


def test_yaml_error_in_a_configfile_is_named_by_the_config_check(tmp_path, capsys):
    """Snakemake reads --configfile files before the workflow runs: its message names neither the
    file nor the line, and nothing in the workflow can add them. ``python -m ftbench.config`` does."""
    wd = _workdir(tmp_path, mine="tasks:\n  docvqa: {steps: 3 warmup_steps: 1}\n")
    refused_run(wd, ["--configfile", "mine.yaml"], "Config file is not valid JSON or YAML")
    status = check_config_main([str(wd / "config.yaml"), str(wd / "mine.yaml")])
    assert status == 1 and capsys.readouterr().err.strip().startswith(f"error: {wd / 'mine.yaml'}:2: not valid YAML")


def test_misspelled_task_is_unknown_before_its_missing_keys(tmp_path):
    wd = _workdir(tmp_path, mine="tasks:\n  hatefulmemes: {steps: 3}\n")
    found, output = refused_run(wd, ["--configfile", "mine.yaml"], "hatefulmemes")
    assert found.startswith("mine.yaml: tasks.hatefulmemes: unknown task 'hatefulmemes'; the built-in tasks are")
    assert "required property" not in output
    # the same in config.yaml itself
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["tasks"]["hatefulmemes"] = {"steps": 3}
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(config))
    workflow_refuses(path, tmp_path / "single", "tasks.hatefulmemes: unknown task 'hatefulmemes'")
    with pytest.raises(ConfigError, match=rf"^{path}: tasks.hatefulmemes: unknown task"):
        load_config(path)


def test_error_names_the_file_that_set_the_key(tmp_path, capsys):
    wd = _workdir(tmp_path, a="tasks:\n  docvqa: {steps: ten}\n", b="tasks:\n  nlvr2: {steps: 5}\n")
    found, _ = refused_run(wd, ["--configfile", "a.yaml", "b.yaml"], "tasks.docvqa.steps")
    assert found == "a.yaml: tasks.docvqa.steps: 'ten' is not of type 'integer'"
    (wd / "b.yaml").write_text("tasks:\n  docvqa: {steps: eleven}\n")  # the last file setting the key
    (wd / "results" / "docvqa" / "cpu" / "eval_before.json").unlink()
    found, _ = refused_run(wd, ["--configfile", "a.yaml", "b.yaml"], "tasks.docvqa.steps")
    assert found == "b.yaml: tasks.docvqa.steps: 'eleven' is not of type 'integer'"
    with pytest.raises(ConfigError, match=rf"^{wd / 'b.yaml'}: tasks.docvqa.steps: 'eleven'"):
        check_config_files([wd / "config.yaml", wd / "a.yaml", wd / "b.yaml"])
    assert check_config_main([str(wd / "config.yaml")]) == 0


def test_file_setting_follows_snakemakes_merge():
    layers = [("config.yaml", {"tasks": {"docvqa": {"steps": 1}}, "matrix": [{"task": ["docvqa"]}]}),
              ("a.yaml", {"tasks": {"docvqa": {"num_crops": 2}}, "matrix": [{"task": ["nlvr2"]}]}),
              ("--config", {"tasks": {"nlvr2": {"steps": 2}}})]
    assert file_setting(layers, "tasks.docvqa.steps") == "config.yaml"
    assert file_setting(layers, "tasks.docvqa.warmup_steps") == "a.yaml"  # missing: the last one setting its mapping
    assert file_setting(layers, "tasks.nlvr2") == "--config"
    assert file_setting(layers, ["matrix", 0, "task"]) == "a.yaml"  # a list is replaced whole
    assert file_setting(layers, "(top level)") == "config.yaml, a.yaml, --config"


# ------------------------------------------------------------------------------- all cells refused


def test_a_matrix_of_only_refused_cells_stops_planning_with_the_reasons(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    block = {"task": ["docvqa"], "hardware": ["cpu"], "strategy": ["lora"], "precision": ["fp16"],
             "attention": ["flash_attention_2"], "layout": ["1x1"], "seed": [0, 1]}
    config["matrix"] = [block, dict(block, precision=["bf16"], attention=["sdpa"], layout=["1x3"], seed=[0])]
    wd = _workdir(tmp_path)
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    found, output = refused_run(wd, [], "cells are refused")
    assert found == "config.yaml: matrix: all 3 cells are refused, nothing would be trained:"
    assert "2 cells: flash attention needs bf16 (the recipe's known fp16 issue)" in output
    assert "1 cell: 3 processes per node but cpu has " in output
