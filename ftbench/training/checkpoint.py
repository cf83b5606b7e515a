"""A cell's checkpoints: what the next step depends on, written so that a kill at any moment leaves a
usable one, and the decision which one to resume from.

Each checkpoint (every ``checkpoint_every`` optimizer steps) is a folder ``checkpoint/step_NNNNNN``
holding the engine's state (trained weights, optimizer, schedule, loss scaler), every rank's RNG
states, the training log so far and ``meta.json`` (step, world size, engine, the result-changing
settings). The data position is the step itself: the sample order is a function of the seed. A
rerun resumes from the newest checkpoint whose files match its manifest (``ftbench.checkpoint_files``)
and ends with the same weights as an uninterrupted run; a damaged checkpoint is reported in one line
naming the file and removed, and the cell falls back to an older one or starts over.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ftbench.atomic import write_json_atomic, write_text_atomic
from ftbench.checkpoint_files import checkpoint_problem, write_manifest
from ftbench.training.distributed import Distributed, all_gather, barrier
from ftbench.training.engines import Engine
from ftbench.training.settings import TrainSettings, result_settings

CHECKPOINT_DIR = "checkpoint"


def rng_states() -> dict:
    """This process's RNG states as JSON-able values (no pickle in checkpoints)."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    state = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_states(state: dict) -> None:
    def tensor(b64: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(b64)), dtype=torch.uint8)

    torch.set_rng_state(tensor(state["torch"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


def checkpoint_folders(out_dir: Path) -> list[Path]:
    """A cell's checkpoints, newest first. Each was renamed into place only once complete, with its
    manifest; there are two only after a kill between that rename and the removal of the older one."""
    return sorted((p for p in (Path(out_dir) / CHECKPOINT_DIR).glob("step_*") if p.is_dir()), reverse=True)


def save_checkpoint(engine: Engine, settings: TrainSettings, dist_info: Distributed, step: int, out_dir: Path,
                    records: list[dict]) -> Path:
    """Collective, after optimizer step ``step``: every rank writes its part into a hidden folder,
    the ranks record every file's size and sha256 in its manifest, and rank 0 renames it into place,
    then removes older checkpoints. A kill at any moment leaves the previous checkpoint intact."""
    root = Path(out_dir) / CHECKPOINT_DIR
    name = f"step_{step:06d}"
    partial_root = root / ".partial"
    partial = partial_root / name
    if dist_info.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()
    engine.save_state(partial_root, name)
    write_json_atomic(partial / f"rng_rank{dist_info.rank}.json", rng_states())
    if dist_info.is_main:
        write_text_atomic(partial / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        write_json_atomic(partial / "meta.json", {
            "step": step, "world_size": dist_info.world_size, "engine": settings.engine,
            "settings": result_settings(settings),
        })
    barrier()
    write_manifest(partial, dist_info.rank, dist_info.world_size, all_gather)
    if dist_info.is_main:
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in root.glob("step_*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return root / name


def load_checkpoint(engine: Engine, settings: TrainSettings, dist_info: Distributed,
                    folder: Path) -> tuple[int, list[dict]] | None:
    """Restores a checkpoint written by ``save_checkpoint``; returns its step and the training log up
    to it, or None when it belongs to other settings or another world size (then the cell starts over)."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta["settings"] != result_settings(settings) or meta["world_size"] != dist_info.world_size:
        return None
    engine.load_state(folder)
    restore_rng_states(json.loads((folder / f"rng_rank{dist_info.rank}.json").read_text()))
    log_path = folder / "train_log.jsonl"
    return meta["step"], [json.loads(line) for line in log_path.read_text().splitlines()]


def resumable_checkpoint(dist_info: Distributed, out_dir: Path, log) -> Path | None:
    """Collective: the newest checkpoint of the cell whose files match its manifest, or None. A
    damaged one is reported in one line naming the file and removed (all ranks decide alike: they
    verify together)."""
    # Rank 0's listing, so that every rank verifies the same folders.
    folders = all_gather(checkpoint_folders(out_dir) if dist_info.is_main else None)[0]
    for i, folder in enumerate(folders):
        problem = checkpoint_problem(folder, dist_info.rank, dist_info.world_size, all_gather)
        if problem is None:
            return folder
        if dist_info.is_main:
            then = f"trying {folders[i + 1].name}" if i + 1 < len(folders) else "starting over"
            log(f"checkpoint {folder}: {problem}: {then}")
            shutil.rmtree(folder, ignore_errors=True)
        barrier()
    return None


def resume(engine: Engine, settings: TrainSettings, dist_info: Distributed, out_dir: Path,
           log) -> tuple[int, list[dict]]:
    """Collective: restores the cell's newest usable checkpoint; returns the steps done and the
    training log so far (0 and [] when there is none, or it was written with other settings)."""
    checkpoint = resumable_checkpoint(dist_info, out_dir, log)
    if checkpoint is None:
        return 0, []
    restored = load_checkpoint(engine, settings, dist_info, checkpoint)
    if restored is None:
        barrier()
        if dist_info.is_main:
            log(f"checkpoint {checkpoint} was written with other settings or world size: starting over")
            shutil.rmtree(checkpoint.parent, ignore_errors=True)
        barrier()
        return 0, []
    step, records = restored
    if dist_info.is_main:
        log(f"resumed from {checkpoint} at step {step}/{settings.steps}")
    return step, records


def remove_checkpoints(out_dir: Path) -> None:
    """The finished model replaces the checkpoints (at full size it is several times larger)."""
    shutil.rmtree(Path(out_dir) / CHECKPOINT_DIR, ignore_errors=True)
