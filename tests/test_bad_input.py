"""Bad input is refused early with one line naming the file (and line or key), exit status 1, and
nothing already written is damaged (issue 7). One test per kind of bad input."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ftbench.config import Cell, ConfigError, check_runnable, load_config, train_settings
from ftbench.errors import run_main

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------ helpers


def script(name: str):
    """A workflow script as a module (its ``main`` runs in this process: no interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(f"ws_{name}", REPO / "workflow_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, argv: list[str], capsys, monkeypatch) -> tuple[int, list[str]]:
    """Runs a workflow script's main as ``python workflow_scripts/<name>.py argv`` would (exit status,
    stderr lines)."""
    module = script(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *map(str, argv)])
    capsys.readouterr()
    status = run_main(module.main, name)
    return status, capsys.readouterr().err.strip().splitlines()


def snapshot(folder: Path, hidden: bool = True) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (symlinks followed) -> (sha256, mtime_ns); ``hidden=False`` leaves
    out hidden top-level entries (a killed run's staging folder)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if not hidden and path.relative_to(folder).parts[0].startswith("."):
            continue
        if path.is_file():
            out[str(path.relative_to(folder))] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                                  path.stat().st_mtime_ns)
    return out


def assert_one_line(status: int, lines: list[str], *fragments: str) -> str:
    assert status == 1, lines
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def example(i: int, images=None, user="What colour is the block?", answer="red") -> dict:
    return {"id": f"ex-{i}", "source": "mine",
            "conversations": [{"images": [f"p{i}.png"] if images is None else images, "user": user,
                               "assistant": answer}]}


def write_dataset(root: Path, n: int = 4) -> dict[str, Path]:
    """A valid custom dataset: train/val jsonl + PNG images."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n + 2):
        Image.new("RGB", (24, 20), (40 * i % 255, 90, 200)).save(root / "images" / f"p{i}.png")
    train, val = root / "train.jsonl", root / "val.jsonl"
    train.write_text("".join(json.dumps(example(i)) + "\n" for i in range(n)))
    val.write_text("".join(json.dumps(example(i)) + "\n" for i in range(n, n + 2)))
    return {"train": train, "val": val, "images": root / "images"}


def import_args(ds: dict[str, Path], out: Path) -> list:
    return ["--task", "mine", "--train", ds["train"], "--val", ds["val"], "--images", ds["images"], "--out", out]


@pytest.fixture
def earlier(tmp_path, capsys, monkeypatch):
    """An earlier, complete conversion in ``out`` and its snapshot."""
    ds = write_dataset(tmp_path / "good")
    out = tmp_path / "results" / "data" / "mine"
    status, lines = run_script("import_custom", import_args(ds, out), capsys, monkeypatch)
    assert status == 0, lines
    return out, snapshot(out)


# ------------------------------------------------------------------------------- dataset problems


def _bad_line(ds, line):
    lines = ds["train"].read_text().splitlines()
    lines[2] = line
    ds["train"].write_text("\n".join(lines) + "\n")


def _replace_image(ds, data: bytes):
    (ds["images"] / "p2.png").write_bytes(data)


def _truncated_png(ds):
    data = (ds["images"] / "p2.png").read_bytes()
    _replace_image(ds, data[: len(data) // 2])


DATASET_PROBLEMS = {
    # kind: (how to break line 3 / its image, expected fragment, where: "line" or "image")
    "malformed_jsonl_line": (lambda ds: _bad_line(ds, '{"id": "ex-2", "source": '), "invalid JSON", "line"),
    "missing_key": (lambda ds: _bad_line(ds, json.dumps({"id": "ex-2", "source": "mine"})),
                    "missing key 'conversations'", "line"),
    "tag_image_count_mismatch": (lambda ds: _bad_line(ds, json.dumps(example(2, user="<|image_1|><|image_2|>\nSame?"))),
                                 "image tags <|image_1|>, <|image_2|> but the turn has 1 image(s)", "line"),
    "empty_answer": (lambda ds: _bad_line(ds, json.dumps(example(2, answer="  "))), "assistant is empty", "line"),
    "missing_image": (lambda ds: (ds["images"] / "p2.png").unlink(), "image file not found", "image"),
    "corrupt_image": (_truncated_png, "not a readable image", "image"),
    "zero_byte_image": (lambda ds: _replace_image(ds, b""), "empty (0 bytes)", "image"),
}


@pytest.mark.parametrize("kind", sorted(DATASET_PROBLEMS))
def test_broken_dataset_is_refused_naming_file_and_line(kind, tmp_path, earlier, capsys, monkeypatch):
    out, before = earlier
    ds = write_dataset(tmp_path / "bad")
    breaker, fragment, _ = DATASET_PROBLEMS[kind]
    breaker(ds)
    status, lines = run_script("import_custom", import_args(ds, out), capsys, monkeypatch)
    line = assert_one_line(status, lines, f"{ds['train']}:3: ", fragment)
    if DATASET_PROBLEMS[kind][2] == "image":
        assert str(ds["images"] / "p2.png") in line
    assert snapshot(out) == before  # the earlier conversion is untouched
    assert sorted(p.name for p in out.iterdir()) == sorted(["images", "manifest.json", "mine_train.jsonl",
                                                            "mine_val.jsonl", "mine_test.jsonl", "summary.json"])


def _write_avi(path: Path, frames: int) -> None:
    from ftbench.data.synthetic import write_avi

    path.parent.mkdir(parents=True, exist_ok=True)
    write_avi(str(path), [np.full((48, 64, 3), 10 * t, dtype=np.uint8) for t in range(frames)])


@pytest.mark.parametrize("kind", ["video_with_fewer_frames", "unreadable_video"])
def test_bad_video_is_refused_naming_the_file(kind, tmp_path, earlier, capsys, monkeypatch):
    out, before = earlier
    root = tmp_path / "raw" / "UCF101_subset"
    _write_avi(root / "train" / "A" / "v_A_g01_c01.avi", 12)
    bad = root / "val" / "A" / "v_A_g02_c01.avi"
    if kind == "video_with_fewer_frames":
        _write_avi(bad, 5)
        fragment = "fewer than the 8 frames asked for"
    else:
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 10)
        fragment = str(bad)
    status, lines = run_script("convert", ["--task", "ucf101", "--raw", tmp_path / "raw", "--out", out,
                                           "--num-frames", "8"], capsys, monkeypatch)
    assert_one_line(status, lines, str(bad), fragment)
    assert snapshot(out) == before


def test_unknown_task_is_one_line(tmp_path, earlier, capsys, monkeypatch):
    out, before = earlier
    status, lines = run_script("convert", ["--task", "docvqa2", "--raw", tmp_path, "--out", out], capsys, monkeypatch)
    assert_one_line(status, lines, "unknown task 'docvqa2'")
    assert snapshot(out) == before
    # in the config: the key is named
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["tasks"]["docvqa2"] = config["tasks"].pop("docvqa")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=rf"^{path}: tasks.docvqa2: unknown task 'docvqa2'.*source: custom"):
        load_config(path)


def test_interrupted_conversion_leaves_no_final_output_and_rerun_works(tmp_path, earlier):
    from ftbench.data.synthetic import make_raw

    make_raw("docvqa", tmp_path / "raw", 600, 0)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "workflow_scripts" / "convert.py"), "--task", "docvqa", "--raw",
           str(tmp_path / "raw"), "--n-val", "20", "--no-progress"]
    earlier_out, before = earlier
    for out in (tmp_path / "fresh", earlier_out):
        proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not any(out.glob(".staging-*/images/train/*")):  # converting: kill it
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        finals = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if out == earlier_out:
            assert snapshot(out, hidden=False) == before
        else:
            assert finals == []
    out = tmp_path / "fresh"
    r = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["val"] == 20
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # the killed run's staging is gone
    assert len((out / "docvqa_train.jsonl").read_text().splitlines()) == 580


# -------------------------------------------------------------------------------- config problems


@pytest.fixture
def config_file(tmp_path):
    def write(change) -> Path:
        config = yaml.safe_load((REPO / "config.yaml").read_text())
        change(config)
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def workflow_refuses(config_path: Path, tmp_path: Path, fragment: str) -> None:
    """The workflow stops while planning with one line naming the config file and the key; a results
    file written earlier keeps its bytes and mtime."""
    wd = tmp_path / "wd"
    earlier = wd / "results" / "docvqa" / "cpu" / "eval_before.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"metrics": {}}\n')
    before = snapshot(wd / "results")
    (wd / "config.yaml").write_text(config_path.read_text())
    r = _snakemake(["-n"], wd)
    assert r.returncode != 0
    lines = [line.strip() for line in (r.stdout + r.stderr).splitlines() if fragment in line]
    assert len(lines) == 1 and lines[0].startswith("config.yaml: "), r.stdout[-2000:] + r.stderr[-2000:]
    assert snapshot(wd / "results") == before


def test_unknown_strategy_names_the_key(config_file, tmp_path):
    path = config_file(lambda c: c["matrix"][0].update(strategy=["full", "lorra"]))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: matrix.0.strategy.1: 'lorra' is not one of")
    workflow_refuses(path, tmp_path, "matrix.0.strategy.1: 'lorra' is not one of")
    from ftbench.train import TrainSettings

    with pytest.raises(ValueError, match="^strategy: unknown value 'lorra'"):
        TrainSettings(strategy="lorra")


def test_config_value_of_wrong_type_names_the_key(config_file, tmp_path):
    path = config_file(lambda c: c["tasks"]["nlvr2"].update(global_batch="16"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: tasks.nlvr2.global_batch: '16' is not of type 'integer'"
    workflow_refuses(path, tmp_path, "tasks.nlvr2.global_batch: '16' is not of type 'integer'")


def _snakemake(args, cwd):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind, cell, reason", [
    ("fp16_with_flash_attention", Cell("hateful_memes", "cpu", "full", "fp16", "flash_attention_2", 1, 1, 0),
     "flash attention needs bf16"),
    ("layout_not_dividing_the_global_batch", Cell("hateful_memes", "cpu", "lora", "bf16", "sdpa", 1, 3, 0),
     "global batch 16 is not divisible by 3 processes x per-device batch 8"),
])
def test_invalid_cell_is_refused(kind, cell, reason, tmp_path):
    config = load_config(REPO / "config.yaml")
    config["hardware"]["cpu"]["processes_per_node"] = 4
    with pytest.raises(ConfigError, match=f"^cfg: {cell.path()}: this cell cannot run: {reason}"):
        check_runnable(cell, config, "cfg")
    if kind == "layout_not_dividing_the_global_batch":
        from ftbench.training.data import micro_batch_plan

        with pytest.raises(ValueError, match="global_batch 16 is not divisible by world size 3"):
            micro_batch_plan(16, 3, 8)
        return
    # asked for by its path, the workflow stops while planning, with one line naming the config
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    earlier = tmp_path / "results" / "hateful_memes" / "cpu" / "eval_before.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    mtime = earlier.stat().st_mtime_ns
    r = _snakemake(["-n", f"{cell.path()}/eval_after.json"], tmp_path)
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if "this cell cannot run" in line]
    assert len(lines) == 1 and lines[0].strip().startswith("config.yaml: ") and reason in lines[0]
    assert earlier.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------ checkpoint problems


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny model saved as a checkpoint folder (no training: only its files matter here)."""
    from ftbench.models.loading import save_base
    from ftbench.models.phi3v import Phi3VForCausalLM
    from ftbench.models.presets import tiny_config
    from ftbench.models.tokenizer import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(["What colour is the block? red green blue"] * 20, vocab_size=128)
    folder = tmp_path_factory.mktemp("ckpt") / "good"
    save_base(Phi3VForCausalLM(tiny_config(tokenizer)), tokenizer, folder)
    return folder


def _copy(folder: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(folder, dest)
    return dest


def _rename_a_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.self_attn.qkv.weight"] = tensors.pop("model.layers.0.self_attn.qkv_proj.weight")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _other_architecture(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))


def _other_shapes(folder: Path) -> None:  # a phi3_v config that the tensors do not fit
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))


CHECKPOINT_PROBLEMS = {
    "missing_weights_file": (lambda f: (f / "model.safetensors").unlink(), "no model.safetensors"),
    "missing_config_file": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "wrong_key_names": (_rename_a_tensor, "1 missing (model.layers.0.self_attn.qkv_proj.weight); "
                                          "1 unexpected (model.layers.0.self_attn.qkv.weight)"),
    "another_architecture": (_other_architecture, "model_type 'llama' is another architecture"),
    "another_architecture_shapes": (_other_shapes, "missing (model.layers.2."),
}


def evaluate_over_an_earlier_result(model, ds, tmp_path, settings, capsys, monkeypatch):
    """Runs the evaluate script on ``ds``'s val file where an earlier eval_before.json exists; returns
    its status and stderr lines and whether the results folder kept its bytes and mtimes."""
    out = tmp_path / "results" / "eval_before.json"
    out.parent.mkdir()
    out.write_text('{"metrics": {"accuracy": 0.5}}\n')
    before = snapshot(out.parent)
    status, lines = run_script("evaluate", [
        "--model", model, "--data", ds["val"], "--task", "mine", "--hardware", "cpu", "--stage", "before",
        "--settings", json.dumps(settings), "--out", out, "--predictions", out.parent / "predictions.jsonl"],
        capsys, monkeypatch)
    return status, lines, snapshot(out.parent) == before


@pytest.mark.parametrize("kind", sorted(CHECKPOINT_PROBLEMS))
def test_bad_checkpoint_is_refused_by_evaluate(kind, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    folder = _copy(tiny_checkpoint, tmp_path / "ckpt")
    breaker, fragment = CHECKPOINT_PROBLEMS[kind]
    breaker(folder)
    ds = write_dataset(tmp_path / "data")
    status, lines, intact = evaluate_over_an_earlier_result(
        folder, ds, tmp_path, {"num_crops": 1, "batch_size": 2, "max_new_tokens": 2}, capsys, monkeypatch)
    assert_one_line(status, lines, str(folder), fragment)
    assert intact


def test_sequence_longer_than_max_length_refused_or_truncated(tiny_checkpoint, tmp_path, config_file):
    from ftbench.models.loading import load_model, load_tokenizer
    from ftbench.models.phi3v import IGNORE_INDEX
    from ftbench.models.processing_phi3v import Phi3VProcessor

    ds = write_dataset(tmp_path / "data")
    turns = [{"images": ["p0.png"], "user": "What colour is the block? " * 6, "assistant": "red green blue"}]
    tokenizer = load_tokenizer(tiny_checkpoint)
    config = load_model(tiny_checkpoint).config
    full = Phi3VProcessor.for_model(tokenizer, config, 1).encode_training(turns, ds["images"])
    assert len(full.input_ids) <= config.max_position_embeddings  # the default limit: the model's context
    limit = len(full.input_ids) - 3
    refuse = Phi3VProcessor.for_model(tokenizer, config, 1, max_length=limit)
    with pytest.raises(ValueError, match=rf"^train.jsonl:7: {len(full.input_ids)} tokens, more than max_length {limit} "
                                         r"\(truncation: refuse"):
        refuse.encode_training(turns, ds["images"], where="train.jsonl:7")
    truncate = Phi3VProcessor.for_model(tokenizer, config, 1, max_length=limit, truncation="truncate")
    cut = truncate.encode_training(turns, ds["images"])
    assert cut.input_ids == full.input_ids[:limit] and cut.labels == full.labels[:limit]
    assert any(label != IGNORE_INDEX for label in cut.labels)
    too_short = Phi3VProcessor.for_model(tokenizer, config, 1, max_length=5, truncation="truncate")
    with pytest.raises(ValueError, match="would cut image tokens"):
        too_short.encode_training(turns, ds["images"], where="x")
    # the config keys: validated, and passed to training only when set
    cfg = load_config(config_file(lambda c: c["tasks"]["docvqa"].update(max_length=512, truncation="truncate")))
    settings = train_settings(cfg, Cell("docvqa", "cpu", "lora", "bf16", "sdpa", 1, 1, 0))
    assert (settings["max_length"], settings["truncation"]) == (512, "truncate")
    assert "max_length" not in train_settings(cfg, Cell("nlvr2", "cpu", "lora", "bf16", "sdpa", 1, 1, 0))
    with pytest.raises(ConfigError, match=r"tasks.docvqa.truncation: 'cut' is not one of"):
        load_config(config_file(lambda c: c["tasks"]["docvqa"].update(truncation="cut")))


def test_train_refuses_a_sequence_over_max_length_naming_file_and_example(tiny_checkpoint, tmp_path, capsys,
                                                                          monkeypatch):
    ds = write_dataset(tmp_path / "data")
    out = tmp_path / "cell" / "train"
    out.mkdir(parents=True)
    (out / "train_log.jsonl").write_text('{"step": 1}\n')  # left by an earlier run
    before = snapshot(out.parent)
    settings = {"strategy": "lora", "precision": "bf16", "steps": 1, "global_batch": 2, "per_device_batch": 2,
                "num_crops": 1, "lora_rank": 2, "lora_alpha": 4, "max_length": 12}
    status, lines = run_script("train", [
        "--base", tiny_checkpoint, "--train", ds["train"], "--out", out, "--settings", json.dumps(settings),
        "--provenance", out.parent / "provenance.json"], capsys, monkeypatch)
    ours = [line for line in lines if line.startswith("train:")]
    assert status == 1 and len(ours) == 1, lines
    assert f"{ds['train']}: example 'ex-" in ours[0] and "more than max_length 12 (truncation: refuse" in ours[0]
    assert snapshot(out.parent) == before  # no artifact, no provenance, the earlier file untouched


def test_unwritable_results_folder_is_refused_before_work(tmp_path, earlier, capsys, monkeypatch):
    # Root may write anywhere: a results "folder" under a regular file is unwritable for everyone.
    blocker = tmp_path / "results_file"
    blocker.write_text("not a folder\n")
    ds = write_dataset(tmp_path / "data")
    status, lines = run_script("import_custom", import_args(ds, blocker / "data" / "mine"), capsys, monkeypatch)
    assert_one_line(status, lines, f"{blocker}/data/mine: cannot write results here")
    status, lines = run_script("evaluate", [
        "--model", tmp_path / "no-model", "--data", ds["val"], "--task", "mine", "--hardware", "cpu",
        "--stage", "before", "--settings", "{}", "--out", blocker / "eval_before.json",
        "--predictions", blocker / "predictions.jsonl"], capsys, monkeypatch)
    assert_one_line(status, lines, f"{blocker}: cannot write results here")  # before the model is looked for
    assert blocker.read_text() == "not a folder\n"
