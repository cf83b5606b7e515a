"""The manifest of a training checkpoint: the size and sha256 of every file in its folder, written last,
so that a rerun resumes only from a checkpoint that reads back exactly as it was written.

``write_manifest`` and ``checkpoint_problem`` are collective when the cell runs on several ranks:
``all_gather(obj)`` returns every rank's ``obj`` in rank order (``[obj]`` for a world of one), and
every rank returns the same answer. The ranks share the hashing, largest file first to the
least-loaded rank, so each reads about 1/world of the bytes (on several nodes, some of them written
by another node: the checkpoint folder is on a file system all nodes share, as the rename by rank 0
already requires).

Cost: sha256 reads every byte once more at save and once at resume. It runs at about 1.3 GB/s on one
core with the SHA extensions of current x86 CPUs (measured with ``hashlib.file_digest`` on a file in
the page cache). A full fine-tune of Phi-3.5-vision (4.2B parameters) checkpoints about 8 GB of bf16
weights plus 12 bytes a parameter of fp32 master weights and Adam moments, ~58 GB: on 8 ranks about
7 GB, ~5 s, each, at save and at resume; a LoRA checkpoint (rank 64: ~0.1B trained parameters and
their Adam moments) is 1-2 GB, about a second. At save the hashing pass also fsyncs each file (the
data must be on disk before the manifest says so: otherwise a power loss could keep the manifest
and the renamed folder but lose the files' contents); that wait is the time the disk needs to write
the checkpoint anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ftbench.atomic import write_json_atomic

MANIFEST = "manifest.json"
AllGather = Callable[[object], list]


def hashing_shares(sizes: dict[str, int], world: int) -> list[list[str]]:
    """The files each rank hashes: largest first to the rank with the fewest bytes so far (ties to
    the lowest rank), the same on every rank for the same sizes."""
    shares: list[list[str]] = [[] for _ in range(world)]
    loads = [0] * world
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        rank = loads.index(min(loads))
        shares[rank].append(name)
        loads[rank] += sizes[name]
    return shares


def sha256_of(path: Path, flush_to_disk: bool = False) -> str:
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if flush_to_disk:
            os.fsync(handle.fileno())
    return digest


def file_sizes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def write_manifest(folder: Path, rank: int, world: int, all_gather: AllGather) -> None:
    """Collective, once every rank has written its files into ``folder``: records the size and
    sha256 of each file in ``folder/manifest.json`` (rank 0 writes it)."""
    # Rank 0's listing: every rank hashes from the same list, whatever its own view of the folder.
    sizes = all_gather(file_sizes(folder) if rank == 0 else None)[0]
    mine = hashing_shares(sizes, world)[rank]
    digests: dict[str, str] = {}
    for part in all_gather({name: sha256_of(folder / name, flush_to_disk=True) for name in mine}):
        digests.update(part)
    if rank == 0:
        write_json_atomic(folder / MANIFEST, {
            "files": {name: {"size": sizes[name], "sha256": digests[name]} for name in sorted(sizes)},
        })


def read_manifest(folder: Path) -> dict | str:
    """The manifest's ``{name: {"size", "sha256"}}``, or what is wrong with it."""
    path = folder / MANIFEST
    if not path.is_file():
        return f"{MANIFEST} is missing (a checkpoint of an older ftbench?)"
    try:
        files = json.loads(path.read_text())["files"]
        if all(isinstance(e["size"], int) and isinstance(e["sha256"], str) for e in files.values()):
            return files
    except OSError as e:
        return f"{MANIFEST} cannot be read ({e.strerror or e})"
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # not JSON, or not the manifest's shape
        return f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"
    return f"{MANIFEST} is unreadable (an entry without an integer size and a sha256)"


def file_problem(folder: Path, name: str, entry: dict, check_digest: bool) -> str | None:
    """What is wrong with one file against its manifest entry, or None. Never raises: every rank
    must reach the next collective with an answer."""
    path = folder / name
    try:
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["size"]:
            why = "truncated?" if size < entry["size"] else "changed after it was written"
            return f"{name} is {size} bytes, expected {entry['size']} ({why})"
        if check_digest:
            digest = sha256_of(path)
            if digest != entry["sha256"]:
                return (f"{name} has sha256 {digest[:16]}..., expected {entry['sha256'][:16]}... "
                        "(changed after it was written)")
    except OSError as e:
        return f"{name} cannot be read ({e.strerror or e})"
    return None


def checkpoint_problem(folder: Path, rank: int, world: int, all_gather: AllGather) -> str | None:
    """Collective: None when every file of the checkpoint in ``folder`` has the size and sha256 its
    manifest records, else what is wrong, naming the file (the first such file in name order, the
    same on every rank)."""
    # Rank 0 reads the manifest and checks every size (cheap: a truncated file is found without
    # hashing anything); then the ranks hash their shares.
    if rank == 0:
        manifest_or_problem = read_manifest(folder)
        if not isinstance(manifest_or_problem, str):
            sizes_wrong = (file_problem(folder, name, entry, check_digest=False)
                           for name, entry in sorted(manifest_or_problem.items()))
            manifest_or_problem = next((p for p in sizes_wrong if p is not None), manifest_or_problem)
    else:
        manifest_or_problem = None
    files = all_gather(manifest_or_problem)[0]
    if isinstance(files, str):
        return files
    mine = hashing_shares({name: entry["size"] for name, entry in files.items()}, world)[rank]
    wrong = {name: problem for name in mine
             if (problem := file_problem(folder, name, files[name], check_digest=True)) is not None}
    # Every rank gathers the same problems: the same first one everywhere.
    gathered = {}
    for part in all_gather(wrong):
        gathered.update(part)
    return gathered[min(gathered)] if gathered else None
