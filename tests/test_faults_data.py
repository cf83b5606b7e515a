"""Faults in the data and on the disk (issue "A result depends only on its own cell, and every fault
recovers", section 2): a refused conversion keeps the published data, a byte-identical one rebuilds
nothing, an image damaged after conversion is refused before training reads it, a full disk is one
line naming where, and results are as readable as the umask says."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_user_flows import REPO, checkout, jobs_run, run

from ftbench.atomic import atomic_path, share_like_open, write_text_atomic
from ftbench.data.manifest import MANIFEST, check_images_intact
from ftbench.data.sources import convert_source
from ftbench.data.staging import convert_staged
from ftbench.data.synthetic import make_raw
from ftbench.errors import check_writable, run_main

REDO = "rerun its conversion with snakemake --forcerun convert"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` -> (sha256, mtime_ns)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def contents(files: dict[str, tuple[str, int]]) -> dict[str, str]:
    return {name: digest for name, (digest, _) in files.items()}


def convert_docvqa(raw: Path, out: Path, n_val: int = 8, log=print) -> dict:
    def convert(staging):
        return convert_source("docvqa", "synthetic", raw, staging, n_val=n_val, progress=False)

    return convert_staged(out, "docvqa", convert, log=log)


@pytest.fixture
def raw(tmp_path) -> Path:
    make_raw("docvqa", tmp_path / "raw", 48, 0)
    return tmp_path / "raw"


# ------------------------------------------------------------------ conversions in the workflow


def data_config(rows: int) -> dict:
    """The embedded default cut to docvqa and a base built from it in seconds."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["model"]["pretrain"].update(steps=2, captions=16, tasks=["docvqa"])
    config["tasks"] = {"docvqa": dict(config["tasks"]["docvqa"], rows=rows, n_val=8)}
    config["matrix"] = [{"task": ["docvqa"], "hardware": ["cpu"], "strategy": ["lora"], "precision": ["bf16"],
                         "attention": ["sdpa"], "layout": ["1x2"], "seed": [0]}]
    config["speed"]["tasks"] = []
    return config


def jobs_ran(output: str) -> list[str]:
    """The rules of the jobs Snakemake started, as it logs them (``localrule convert:``)."""
    return sorted(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", output, re.M))


def test_a_refused_conversion_keeps_the_data_and_an_identical_one_rebuilds_nothing(tmp_path):
    root = checkout(tmp_path, data_config(rows=48))
    command = ("snakemake --profile profiles/local --cores 1 "
               "results/data/docvqa/docvqa_train.jsonl results/base/tiny/config.json")
    data, base = root / "results" / "data" / "docvqa", root / "results" / "base" / "tiny" / "config.json"
    r = run(command, root)
    assert r.returncode == 0, r.stdout[-3000:]
    assert jobs_ran(r.stdout) == ["base_model", "convert", "make_raw"]
    published, built = snapshot(data), base.stat().st_mtime_ns
    assert MANIFEST in published

    # Too few rows for n_val: refused in one line; the published data keeps its bytes, and its images
    # (no declared output, untouched by Snakemake's restore) their mtimes too.
    (root / "config.yaml").write_text(yaml.safe_dump(data_config(rows=3)))
    r = run(command, root)
    assert r.returncode != 0
    log = (root / "logs" / "convert" / "docvqa.log").read_text().strip().splitlines()
    assert log == ["convert.py: error: results/raw/docvqa/docvqa: 3 rows, "
                   "but n_val=8 + n_test=0 leave no training rows"]
    kept = snapshot(data)
    assert contents(kept) == contents(published)
    assert all(kept[name] == published[name] for name in published if name.startswith("images/"))
    assert base.stat().st_mtime_ns == built

    # The fix reconverts to the same bytes: the base planned downstream is dropped, nothing is left to do.
    (root / "config.yaml").write_text(yaml.safe_dump(data_config(rows=48)))
    r = run(command, root)
    assert r.returncode == 0, r.stdout[-3000:]
    assert jobs_ran(r.stdout) == ["convert", "make_raw"]
    assert "byte-identical to the published one: kept as it is" in (
        (root / "logs" / "convert" / "docvqa.log").read_text()
    )
    assert contents(snapshot(data)) == contents(published) and base.stat().st_mtime_ns == built
    assert "Nothing to be done" in run(command + " -n", root).stdout
    r = run(command + " --forcerun convert", root)
    assert r.returncode == 0 and jobs_ran(r.stdout) == ["convert"], r.stdout[-3000:]
    assert base.stat().st_mtime_ns == built

    # A conversion that changes the data rebuilds what was built on it.
    (root / "config.yaml").write_text(yaml.safe_dump(data_config(rows=56)))
    r = run(command, root)
    assert r.returncode == 0, r.stdout[-3000:]
    assert jobs_ran(r.stdout) == ["base_model", "convert", "make_raw"]
    assert contents(snapshot(data)) != contents(published) and base.stat().st_mtime_ns > built
    assert jobs_run(run(command + " -n", root).stdout) == {}


def test_an_identical_conversion_publishes_nothing_and_a_different_one_replaces_all(tmp_path, raw):
    out = tmp_path / "out"
    convert_docvqa(raw, out)
    published = snapshot(out)
    said = []
    convert_docvqa(raw, out, log=said.append)
    assert snapshot(out) == published  # same bytes, same mtimes
    assert said == [f"{out}: the conversion is byte-identical to the published one: kept as it is"]
    convert_docvqa(raw, out, n_val=10, log=said.append)
    assert len(said) == 1
    convert_docvqa(raw, tmp_path / "fresh", n_val=10)
    assert contents(snapshot(out)) == contents(snapshot(tmp_path / "fresh")) != contents(published)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or replaced folder left


# ------------------------------------------------------------ images damaged after conversion


def test_an_image_damaged_after_conversion_is_refused_in_one_line(tmp_path, raw, capsys):
    out = tmp_path / "out"
    convert_docvqa(raw, out)
    train = out / "docvqa_train.jsonl"
    check_images_intact(train)
    recorded = json.loads((out / MANIFEST).read_text())
    assert recorded["rule"] == "convert"
    rel, size = next((rel, size) for rel, size in recorded["images"].items() if rel.startswith("train/"))
    image = out / "images" / rel
    assert image.stat().st_size == size

    image.write_bytes(image.read_bytes()[: size // 2])  # a copy that ran out of space
    with pytest.raises(ValueError) as refused:
        check_images_intact(train)
    assert str(refused.value) == (f"{image}: {size // 2} bytes, conversion wrote {size} "
                                  f"(damaged after conversion?): {REDO}")
    # what the train script prints, through run_main
    assert run_main(lambda: check_images_intact(train), "train") == 1
    assert capsys.readouterr().err == f"train: error: {refused.value}\n"

    image.unlink()
    with pytest.raises(ValueError) as refused:
        check_images_intact(out / "docvqa_val.jsonl")  # the evaluation's file: the same conversion
    assert str(refused.value) == f"{image}: missing, conversion wrote {size} bytes (deleted after conversion?): {REDO}"

    convert_docvqa(raw, out)  # what the line says to do
    check_images_intact(train)
    assert image.stat().st_size == size


def test_a_dataset_without_manifest_is_not_checked(tmp_path, raw):
    out = tmp_path / "out"
    convert_source("docvqa", "synthetic", raw, out, n_val=8, progress=False)  # not through staging: no manifest
    assert not (out / MANIFEST).exists()
    check_images_intact(out / "docvqa_train.jsonl")


def test_a_converted_file_is_checked_again_only_when_edited_after_its_conversion(tmp_path, raw, monkeypatch):
    from ftbench.data import common
    from ftbench.data.manifest import converted_examples

    out = tmp_path / "out"
    convert_docvqa(raw, out, log=lambda m: None)
    train = out / "docvqa_train.jsonl"
    checks = []
    real_check = common.validate_example
    monkeypatch.setattr(common, "validate_example", lambda obj: checks.append(1) or real_check(obj))
    examples = converted_examples(train)
    assert examples and checks == []  # as checked when the conversion published it: only parsed

    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    broken = json.loads(lines[2])
    del broken["conversations"]
    lines[2] = json.dumps(broken) + "\n"
    train.write_text("".join(lines), encoding="utf-8")  # edited by hand after the conversion
    with pytest.raises(ValueError, match=rf"^{re.escape(str(train))}:3: missing key 'conversations'$"):
        converted_examples(train)
    assert len(checks) >= 3


# ----------------------------------------------------------------------------------- full disk


def private_tmpfs_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True).returncode == 0


needs_tmpfs = pytest.mark.skipif(not private_tmpfs_works(), reason="no user and mount namespace to mount a small tmpfs")


def on_small_disk(disk: Path, size: str, code: str, *args: str) -> dict:
    """Runs Python ``code`` with a tmpfs of ``size`` mounted on ``disk``, in a mount namespace of its
    own (util-linux unshare; a user namespace makes this user root there, so it needs no privilege and
    the mount disappears with the process). ``code`` reads ``sys.argv[1:] == [disk, *args]`` and
    prints its findings as JSON: what is on the tmpfs cannot be seen from outside."""
    disk.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                        f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"',
                        str(disk), sys.executable, "-c", code, str(disk), *args],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


LIBRARY_WRITES = """
import contextlib, io, json, shutil, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from ftbench.atomic import write_json_atomic
from ftbench.errors import check_writable, run_main

disk = Path(sys.argv[1])
tensors = {"weight": torch.zeros(1 << 20)}  # 4 MiB, twice what the disk holds
writers = {
    "safetensors": lambda out: save_file(tensors, out / "model.safetensors"),
    "torch": lambda out: torch.save(tensors, out / "state.pt"),
    "atomic": lambda out: write_json_atomic(out / "log.json", ["0" * 1024] * 4096),
}
found = {}
for name, write in writers.items():
    out = disk / name

    def main():
        check_writable(out)
        write(out)
        (out / "DONE").write_text("")  # the marker a stage writes last (artifact.json, summary.json)

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = run_main(main, "stage")
    found[name] = {"status": status, "stderr": stderr.getvalue(), "files": sorted(p.name for p in out.iterdir())}
    shutil.rmtree(out)  # room for the next writer
print(json.dumps(found))
"""


@needs_tmpfs
def test_a_full_disk_is_one_line_naming_where_whichever_library_writes(tmp_path):
    disk = tmp_path / "disk"
    found = on_small_disk(disk, "2m", LIBRARY_WRITES)
    assert found["safetensors"] == {
        "status": 1, "stderr": f"stage: error: disk full writing {disk}/safetensors: No space left on device\n",
        "files": []}
    # torch.save leaves what it wrote of state.pt; no marker says it is complete.
    torch_line = found["torch"]["stderr"]
    assert found["torch"]["status"] == 1 and found["torch"]["files"] == ["state.pt"]
    assert re.fullmatch(rf"stage: error: disk full writing {disk}/torch: 0\.\d MiB free there "
                        r"\(\[enforce fail at inline_container\.cc:\d+\] \. unexpected pos \d+ vs \d+\)\n", torch_line)
    assert found["atomic"] == {
        "status": 1, "stderr": f"stage: error: disk full writing {disk}/atomic: No space left on device\n",
        "files": []}  # neither the file nor its temporary


TRAIN_SETTINGS = {"strategy": "lora", "precision": "bf16", "attention": "sdpa", "seed": 0, "steps": 2,
                  "global_batch": 4, "per_device_batch": 1, "learning_rate": 1e-3, "warmup_steps": 1,
                  "num_crops": 1, "lora_rank": 4, "lora_alpha": 8}
TRAIN = f"""
import json, subprocess, sys
from pathlib import Path

disk, base, data, every = sys.argv[1:]
out = Path(disk) / "train"
r = subprocess.run([sys.executable, "workflow_scripts/train.py", "--base", base, "--train", data, "--out", str(out),
                    "--settings", json.dumps({TRAIN_SETTINGS!r}), "--provenance", str(Path(disk) / "provenance.json"),
                    "--checkpoint-every", every], capture_output=True, text=True)
print(json.dumps({{"status": r.returncode, "stderr": r.stderr, "done": (out / "artifact.json").exists()}}))
"""


@needs_tmpfs
@pytest.mark.parametrize("every,library", [(1, "torch"), (0, "safetensors")], ids=["checkpoint", "adapter"])
def test_training_on_a_full_disk_is_one_line_naming_the_cell(tmp_path, tiny_base, tiny_data, every, library):
    """16 KiB: full at the first checkpoint (torch.save) or, without checkpoints, at the adapter
    (safetensors)."""
    disk = tmp_path / "disk"
    found = on_small_disk(disk, "16k", TRAIN, str(tiny_base), str(tiny_data["docvqa"] / "docvqa_train.jsonl"),
                          str(every))
    assert found["status"] == 1 and not found["done"]
    last = found["stderr"].strip().splitlines()[-1]
    assert last.startswith(f"train: error: disk full writing {disk}/train: "), found["stderr"][-2000:]
    if library == "torch":
        assert "MiB free there ([enforce fail at inline_container.cc" in last
    else:
        assert last.endswith(": No space left on device")
    assert "Traceback" not in found["stderr"]


CONVERSIONS = """
import json, subprocess, sys
from pathlib import Path

disk, small, large = map(Path, sys.argv[1:])
out = disk / "data" / "docvqa"
command = [sys.executable, "workflow_scripts/convert.py", "--task", "docvqa", "--out", str(out), "--n-val", "8"]

def snapshot():
    return {str(p.relative_to(out)): (p.read_bytes().hex(), p.stat().st_mtime_ns)
            for p in out.rglob("*") if p.is_file()}

first = subprocess.run(command + ["--raw", str(small)], capture_output=True, text=True)
before = snapshot()
second = subprocess.run(command + ["--raw", str(large), "--processes", "2"], capture_output=True, text=True)
print(json.dumps({"first": first.returncode, "status": second.returncode, "stderr": second.stderr,
                  "intact": snapshot() == before, "entries": sorted(p.name for p in out.iterdir())}))
"""


@needs_tmpfs
def test_a_conversion_that_fills_the_disk_is_one_line_and_keeps_the_earlier_one(tmp_path):
    make_raw("docvqa", tmp_path / "small", 48, 0)  # about 240 KiB converted
    make_raw("docvqa", tmp_path / "large", 400, 0)  # about 1.7 MiB converted
    disk = tmp_path / "disk"
    found = on_small_disk(disk, "1m", CONVERSIONS, str(tmp_path / "small"), str(tmp_path / "large"))
    assert found["first"] == 0
    assert found["status"] == 1 and found["intact"]
    assert found["stderr"] == f"convert.py: error: disk full writing {disk}/data/docvqa: No space left on device\n"
    assert found["entries"] == ["docvqa_test.jsonl", "docvqa_train.jsonl", "docvqa_val.jsonl", "images",
                                "leakage.json", MANIFEST, "summary.json"]  # no staging folder left


def test_a_full_quota_and_other_write_failures_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys):
    out = tmp_path / "cell"

    def fails_with(error: BaseException):
        def main():
            check_writable(out)
            raise error
        return main

    assert run_main(fails_with(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))), "train") == 1
    assert capsys.readouterr().err == f"train: error: disk quota exceeded writing {out}: Disk quota exceeded\n"
    assert run_main(fails_with(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "x.png"))), "convert") == 1
    assert capsys.readouterr().err == f"convert: error: disk full writing {out / 'x.png'}: No space left on device\n"
    # torch's stream error with room to spare on the disk: a failed write, not a full disk
    stream = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert run_main(fails_with(stream), "train") == 1
    assert capsys.readouterr().err == f"train: error: cannot write {out}: {stream}\n"
    with pytest.raises(RuntimeError, match="a bug"):
        run_main(fails_with(RuntimeError("a bug")), "train")


# ----------------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_results_are_as_readable_as_the_umask_says(tmp_path, raw, umask):
    import torch
    from safetensors.torch import save_file

    earlier = os.umask(umask)
    try:
        convert_docvqa(raw, tmp_path / "data")
        write_text_atomic(tmp_path / "out" / "eval.json", "{}")
        with atomic_path(tmp_path / "out" / "plot.png") as tmp:
            tmp.write_bytes(b"png")
        (tmp_path / "adapter").mkdir()
        save_file({"w": torch.zeros(2)}, tmp_path / "adapter" / "adapter_model.safetensors")  # written 0o600
        share_like_open(tmp_path / "adapter")
        replaced = tmp_path / "out" / "README.md"
        replaced.write_text("old")
        replaced.chmod(0o640)
        write_text_atomic(replaced, "new")
    finally:
        os.umask(earlier)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")
             if p != replaced and not p.is_relative_to(raw)}
    files = {p: m for p, m in modes.items() if (tmp_path / p).is_file()}
    folders = {p: m for p, m in modes.items() if (tmp_path / p).is_dir()}
    assert len(files) > 50 and set(files.values()) == {0o666 & ~umask}, files
    assert set(folders.values()) == {0o777 & ~umask}, folders
    assert stat.S_IMODE(replaced.stat().st_mode) == 0o640 and replaced.read_text() == "new"


def test_the_train_and_evaluate_scripts_refuse_a_damaged_image_before_any_work(tmp_path, raw, tiny_base):
    """The check is wired where the data is read: both scripts stop with the one line, exit 1, and
    write nothing."""
    out = tmp_path / "out"
    convert_docvqa(raw, out)
    recorded = json.loads((out / MANIFEST).read_text())
    rel, size = next((rel, size) for rel, size in recorded["images"].items() if rel.startswith("val/"))
    image = out / "images" / rel
    image.write_bytes(image.read_bytes()[: size // 2])
    expected = f"{image}: {size // 2} bytes, conversion wrote {size} (damaged after conversion?): {REDO}"
    cell = tmp_path / "cell"
    commands = {
        "train": [sys.executable, str(REPO / "workflow_scripts" / "train.py"), "--base", str(tiny_base),
                  "--train", str(out / "docvqa_train.jsonl"), "--out", str(cell / "train"),
                  "--settings", json.dumps(TRAIN_SETTINGS), "--provenance", str(cell / "provenance.json")],
        "evaluate": [sys.executable, str(REPO / "workflow_scripts" / "evaluate.py"), "--model", str(tiny_base),
                     "--data", str(out / "docvqa_val.jsonl"), "--task", "docvqa", "--hardware", "cpu",
                     "--stage", "before", "--settings", json.dumps({"num_crops": 1, "batch_size": 4}),
                     "--out", str(cell / "eval_before.json"), "--predictions", str(cell / "predictions.jsonl")],
    }
    for name, command in commands.items():
        r = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1, r.stderr[-2000:]
        assert r.stderr.strip().splitlines() == [f"{name}: error: {expected}"], r.stderr[-2000:]
    assert not [p for p in cell.rglob("*") if p.is_file()]  # nothing written
