"""Checkpoints and resume: a cell killed with SIGKILL after its first checkpoint and then rerun ends
with exactly the weights, training log and metrics of an uninterrupted run with the same seed, with
the batches encoded in the training process or by loader workers (which must not disturb the RNG
that dropout draws from)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftbench.training.checkpoint import checkpoint_folders
from ftbench.training.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS, EVERY = 10, 3


def settings(strategy: str, workers: int = 0, per_device_batch: int = 1) -> dict:
    return {
        "strategy": strategy, "precision": "bf16", "attention": "sdpa", "seed": 3, "steps": STEPS,
        "global_batch": 4, "per_device_batch": per_device_batch, "learning_rate": 2e-3, "warmup_steps": 2,
        "num_crops": 1, "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.1, "log_every": 1,
        "loader_workers": workers,
    }


def start(tiny_base, data, out: Path, strategy: str, procs: int, every: int, stdout: Path, workers: int = 0,
          per_device_batch: int = 1) -> subprocess.Popen:
    cmd = [
        str(BIN / "torchrun"), "--standalone", "--nnodes", "1", "--nproc-per-node", str(procs),
        "workflow_scripts/train.py", "--base", str(tiny_base), "--train", str(data),
        "--out", str(out), "--settings", json.dumps(settings(strategy, workers, per_device_batch)),
        "--provenance", str(out.parent / f"{out.name}-provenance.json"), "--checkpoint-every", str(every),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}:{os.environ['PATH']}")
    with open(stdout, "w") as handle:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every rank at once, like a preemption (torchrun starts its workers in
    sessions of their own, so a process-group kill would miss them)."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)
    proc.wait()


def wait(proc: subprocess.Popen, stdout: Path, timeout: float = 600) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    text = stdout.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def logged_step(stdout: Path) -> int:
    steps = [int(line.split()[1].split("/")[0]) for line in stdout.read_text().splitlines() if line.startswith("step ")]
    return max(steps, default=0)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(f))
    assert tensors, f"no safetensors in {folder}"
    return tensors


def without_timing(log: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "data_wait_s")}
            for line in log.read_text().splitlines()]


@pytest.mark.parametrize("strategy,procs,workers,per_device_batch", [
    ("lora", 2, 0, 1), ("full", 1, 0, 1), ("lora", 2, 2, 2),
], ids=["lora-2procs", "full-1proc", "lora-2procs-2workers-batch2"])
def test_sigkill_then_rerun_equals_uninterrupted(tiny_base, tiny_data, tmp_path, strategy, procs, workers,
                                                 per_device_batch):
    data = tiny_data["hateful_memes"] / "hateful_memes_train.jsonl"
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    loader = {"workers": workers, "per_device_batch": per_device_batch}
    wait(start(tiny_base, data, reference, strategy, procs, 0, tmp_path / "reference.out", **loader),
         tmp_path / "reference.out")
    assert not (reference / "checkpoint").exists()

    # Kill at a random step after the first checkpoint (written after step EVERY).
    kill_after = random.randint(EVERY + 1, STEPS - 2)
    out = tmp_path / "first.out"
    proc = start(tiny_base, data, interrupted, strategy, procs, EVERY, out, **loader)
    deadline = time.monotonic() + 600
    while logged_step(out) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    kill_tree(proc)
    reached = logged_step(out)
    assert reached < STEPS, f"the run finished before the kill (kill planned after step {kill_after})"
    assert not (interrupted / "artifact.json").exists()
    checkpoints = checkpoint_folders(interrupted)
    assert checkpoints, out.read_text()[-3000:]
    checkpoint = checkpoints[0]
    saved_step = int(checkpoint.name.split("_")[1])
    assert saved_step % EVERY == 0 and EVERY <= saved_step <= reached

    text = wait(start(tiny_base, data, interrupted, strategy, procs, EVERY, tmp_path / "rerun.out", **loader),
                tmp_path / "rerun.out")
    assert f"resumed from {checkpoint} at step {saved_step}/{STEPS}" in text
    artifact = json.loads((interrupted / "artifact.json").read_text())
    assert artifact["resumed_from_step"] == saved_step
    assert not (interrupted / "checkpoint").exists()  # the finished model replaces it

    folder = "adapter" if strategy == "lora" else "model"
    expected, got = weights(reference / folder), weights(interrupted / folder)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"killed after step {reached}, resumed at {saved_step}: {different[:5]} differ"
    assert without_timing(interrupted / "train_log.jsonl") == without_timing(reference / "train_log.jsonl")

    from ftbench.evaluate import evaluate

    val = tiny_data["hateful_memes"] / "hateful_memes_val.jsonl"
    metrics = [evaluate(run / "artifact.json", val, "hateful_memes", num_crops=1, batch_size=16,
                        max_new_tokens=4)["metrics"]
               for run in (reference, interrupted)]
    assert metrics[0] == metrics[1]


def test_checkpoint_of_other_settings_is_not_resumed(tiny_base, tiny_data, tmp_path):
    """A checkpoint left by a run with other result-changing settings is discarded, not resumed."""
    from ftbench.train import train_cell

    data = [tiny_data["hateful_memes"] / "hateful_memes_train.jsonl"]

    class Crash(Exception):
        pass

    def crash_after_checkpoint(message: str) -> None:
        if message.startswith("checkpoint "):
            raise Crash

    with pytest.raises(Crash):
        train_cell(TrainSettings(**{**settings("lora"), "steps": 4}), tiny_base, data, tmp_path,
                   log=crash_after_checkpoint, checkpoint_every=2)
    assert checkpoint_folders(tmp_path)
    changed = TrainSettings(**{**settings("lora"), "steps": 4, "learning_rate": 1e-3})
    lines = []
    info = train_cell(changed, tiny_base, data, tmp_path, log=lines.append, checkpoint_every=0)
    assert any("written with other settings" in m for m in lines)
    assert info["resumed_from_step"] is None
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == 4
