"""Faults of a training job that must not block its cell: a damaged checkpoint (each kind of file it
holds) is reported in one line naming the file, and the rerun ends with the weights of an
uninterrupted run; a SIGKILL of the launcher's process group ends the torchrun workers too."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from test_resume import BIN, EVERY, REPO, kill_tree, settings, start, wait, weights, without_timing

from ftbench.checkpoint_files import MANIFEST, checkpoint_problem, hashing_shares, sha256_of, write_manifest
from ftbench.training.checkpoint import checkpoint_folders

SAVED = re.compile(r"^checkpoint (\S+/step_(\d+))$", re.MULTILINE)
RANKS = 2  # DDP: rank 0 writes state.pt; ZeRO-2: every rank writes its optimizer shard


def run_until_checkpoint(tiny_base, data, out: Path, strategy: str, after_step: int, stdout: Path) -> Path:
    """Starts a checkpointed run, SIGKILLs it once it has saved a checkpoint past ``after_step``, and
    returns that checkpoint."""
    proc = start(tiny_base, data, out, strategy, RANKS, EVERY, stdout)
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(int(step) > after_step for _, step in SAVED.findall(stdout.read_text())):
                break
            time.sleep(0.02)
    finally:
        kill_tree(proc)
    assert not (out / "artifact.json").exists(), "the run finished before the kill"
    newest = checkpoint_folders(out)[0]
    assert int(newest.name.split("_")[1]) > after_step, stdout.read_text()[-3000:]
    return newest


@pytest.fixture(scope="module")
def runs(tiny_base, tiny_data, tmp_path_factory):
    """``runs(strategy)``: an uninterrupted run and a run killed after its first checkpoint, made once
    per strategy for all tests here."""
    made = {}

    def make(strategy: str) -> dict:
        if strategy not in made:
            root = tmp_path_factory.mktemp(f"faults-{strategy}")
            data = tiny_data["hateful_memes"] / "hateful_memes_train.jsonl"
            wait(start(tiny_base, data, root / "reference", strategy, RANKS, 0, root / "reference.out"),
                 root / "reference.out")
            run_until_checkpoint(tiny_base, data, root / "killed", strategy, 0, root / "killed.out")
            made[strategy] = {"data": data, "reference": root / "reference", "killed": root / "killed"}
        return made[strategy]

    return make


def assert_same_result(reference: Path, got: Path, strategy: str) -> None:
    folder = "adapter" if strategy in ("lora", "qlora", "dora") else "model"
    expected, actual = weights(reference / folder), weights(got / folder)
    assert expected.keys() == actual.keys()
    assert not [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert without_timing(got / "train_log.jsonl") == without_timing(reference / "train_log.jsonl")
    assert not (got / "checkpoint").exists()


def truncate(path: Path) -> str:
    """Cuts ``path`` to half its size; returns the problem the rerun must name."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    return f"{path.name} is {size // 2} bytes, expected {size} (truncated?)"


def flip_last_byte(path: Path) -> str:
    """Changes the last byte (same size: only the hash can tell); returns the problem to name."""
    expected = json.loads((path.parent / MANIFEST).read_text())["files"][path.name]["sha256"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    return (f"{path.name} has sha256 {sha256_of(path)[:16]}..., expected {expected[:16]}... "
            "(changed after it was written)")


@pytest.mark.parametrize("strategy,name,damage", [
    ("lora", "state.pt", truncate),
    ("lora", "rng_rank1.json", flip_last_byte),
    ("full", "mp_rank_00_model_states.pt", truncate),
    # Rank 1's optimizer shard; "bf16_" because the run is bf16 (DeepSpeed's _get_rank_zero_ckpt_name,
    # github.com/deepspeedai/DeepSpeed deepspeed/runtime/engine.py).
    ("full", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", truncate),
], ids=["ddp-state", "rng-json-hash", "deepspeed-model-states", "deepspeed-optimizer-shard-rank1"])
def test_damaged_checkpoint_is_named_and_the_cell_starts_over(runs, tiny_base, tmp_path, strategy, name, damage):
    run = runs(strategy)
    out = tmp_path / "cell"
    shutil.copytree(run["killed"], out)
    checkpoint = checkpoint_folders(out)[0]
    problem = damage(checkpoint / name)
    text = wait(start(tiny_base, run["data"], out, strategy, RANKS, EVERY, tmp_path / "rerun.out"),
                tmp_path / "rerun.out")
    assert f"checkpoint {checkpoint}: {problem}: starting over\n" in text, text[-3000:]
    assert "Traceback" not in text and "resumed from" not in text
    assert json.loads((out / "artifact.json").read_text())["resumed_from_step"] is None
    assert_same_result(run["reference"], out, strategy)


def test_damaged_checkpoint_with_loader_workers(runs, tiny_base, tmp_path):
    """The rerun encodes its batches in 2 loader workers (the killed run and the reference encoded them
    in the training process: a setting that leaves the result unchanged): the damaged checkpoint
    is named and removed, and the result is the reference's."""
    run = runs("lora")
    out = tmp_path / "cell"
    shutil.copytree(run["killed"], out)
    checkpoint = checkpoint_folders(out)[0]
    problem = truncate(checkpoint / "state.pt")
    text = wait(start(tiny_base, run["data"], out, "lora", RANKS, EVERY, tmp_path / "rerun.out", workers=2),
                tmp_path / "rerun.out")
    assert f"checkpoint {checkpoint}: {problem}: starting over\n" in text, text[-3000:]
    assert "loader_workers=2" in text and "Traceback" not in text
    assert_same_result(run["reference"], out, "lora")


def test_checkpoint_of_other_loader_settings_is_resumed(runs, tiny_base, tmp_path):
    """Loader settings never change a result: a checkpoint written with 0 workers resumes with 2."""
    run = runs("lora")
    out = tmp_path / "cell"
    shutil.copytree(run["killed"], out)
    checkpoint = checkpoint_folders(out)[0]
    text = wait(start(tiny_base, run["data"], out, "lora", RANKS, EVERY, tmp_path / "rerun.out", workers=2),
                tmp_path / "rerun.out")
    assert f"resumed from {checkpoint} at step " in text, text[-3000:]
    assert_same_result(run["reference"], out, "lora")


def test_damaged_newest_checkpoint_falls_back_to_the_older_one(runs, tiny_base, tmp_path):
    """Two checkpoints (as after a kill between the rename of the newer and the removal of the
    older): a damaged newer one (here its training log) gives way to the older one. The fallback
    does not depend on the engine: tested once, with DDP."""
    run = runs("lora")
    out = tmp_path / "cell"
    shutil.copytree(run["killed"], out)
    older = checkpoint_folders(out)[0]
    older_step = int(older.name.split("_")[1])
    shutil.copytree(older, tmp_path / older.name)
    newer = run_until_checkpoint(tiny_base, run["data"], out, "lora", older_step, tmp_path / "second.out")
    shutil.copytree(tmp_path / older.name, older)
    problem = truncate(newer / "train_log.jsonl")
    text = wait(start(tiny_base, run["data"], out, "lora", RANKS, EVERY, tmp_path / "rerun.out"),
                tmp_path / "rerun.out")
    assert f"checkpoint {newer}: {problem}: trying {older.name}\n" in text, text[-3000:]
    assert f"resumed from {older} at step {older_step}/" in text
    assert json.loads((out / "artifact.json").read_text())["resumed_from_step"] == older_step
    assert_same_result(run["reference"], out, "lora")


def test_manifest_names_what_is_wrong(tmp_path):
    """The messages for what a training run cannot easily produce, in a world of one."""
    def alone(obj):
        return [obj]

    folder = tmp_path / "step_000002"
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    (folder / "state.pt").write_bytes(b"weights")
    assert checkpoint_problem(folder, 0, 1, alone) == f"{MANIFEST} is missing (a checkpoint of an older ftbench?)"
    write_manifest(folder, 0, 1, alone)
    assert checkpoint_problem(folder, 0, 1, alone) is None
    (folder / "state.pt").write_bytes(b"weights, and more")
    assert checkpoint_problem(folder, 0, 1, alone) == "state.pt is 17 bytes, expected 7 (changed after it was written)"
    (folder / "state.pt").unlink()
    assert checkpoint_problem(folder, 0, 1, alone) == "state.pt is missing"
    (folder / MANIFEST).write_text('{"files": {"state.pt": {"size": "7"}}}')
    assert checkpoint_problem(folder, 0, 1, alone).startswith(f"{MANIFEST} is unreadable")


def test_hashing_is_shared_largest_first():
    sizes = {"model.pt": 80, "shard0.pt": 50, "shard1.pt": 50, "rng0.json": 1, "rng1.json": 1}
    assert hashing_shares(sizes, 2) == [["model.pt", "rng0.json", "rng1.json"], ["shard0.pt", "shard1.pt"]]
    assert hashing_shares(sizes, 1) == [sorted(sizes, key=lambda n: (-sizes[n], n))]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE  # a zombie has ended
    except psutil.NoSuchProcess:
        return False


def test_sigkill_of_the_launchers_process_group_ends_the_workers(tiny_base, tiny_data, tmp_path):
    """As Snakemake runs the train rule: a shell in Snakemake's process group runs torchrun, whose
    workers run in sessions of their own. ``kill -9 -PGID`` (``timeout -s KILL``, an OOM kill) takes
    the shell and torchrun; the workers must notice and end within seconds."""
    data = tiny_data["hateful_memes"] / "hateful_memes_train.jsonl"
    out, log = tmp_path / "train", tmp_path / "train.log"
    cmd = (
        f"torchrun --standalone --nnodes 1 --nproc-per-node 2 workflow_scripts/train.py --base {tiny_base} "
        f"--train {data} --out {out} --settings '{json.dumps({**settings('lora'), 'steps': 100000})}' "
        f"--provenance {tmp_path / 'provenance.json'} --checkpoint-every 0 > {log} 2>&1"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}:{os.environ['PATH']}")
    group = subprocess.Popen(["bash", "-c", cmd], cwd=REPO, env=env, start_new_session=True)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while "step 1/" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            assert group.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        agent = [p for p in descendants(group.pid) if "torchrun" in " ".join(p.cmdline())]
        assert agent, "no torchrun agent"
        workers = agent[0].children()
        assert len(workers) == 2 and all(os.getsid(w.pid) == w.pid for w in workers)  # sessions of their own
        os.killpg(group.pid, signal.SIGKILL)
        group.wait()
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w.pid for w in workers if alive(w)], "workers outlived their launcher by 10 s"
        # The first rank to notice exits; the other may see its peer gone first and fail on that.
        assert "its launcher (torchrun, pid " in log.read_text(), log.read_text()[-3000:]
    finally:
        for process in [*descendants(group.pid), *workers]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        if group.poll() is None:
            os.killpg(group.pid, signal.SIGKILL)
            group.wait()
