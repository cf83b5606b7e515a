"""Provenance of one result: package versions, machine, git state, seed, config hash.

Package versions come from installed metadata (``importlib.metadata``), so
building a provenance record never imports torch or any other heavy package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "bitsandbytes",
    "deepspeed",
    "snakemake",
    "numpy",
    "pillow",
    "av",
    "pyarrow",
)


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name as Linux reports it ("AMD EPYC ..."), else what ``platform`` knows."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, ``None`` where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def config_hash(config: Any) -> str:
    """sha256 of the canonical JSON of ``config`` (sorted keys, no spaces).

    ``config`` must be JSON-serialisable (dicts, lists, str, numbers, bools, None).
    """
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(directory: str | Path | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git repository holding ``directory``.

    Defaults to the repository containing this file.  ``(None, None)`` when it
    is not a git repository, has no commits or git is unavailable.  ``dirty``
    is True when tracked files differ from HEAD (untracked files, such as
    results, do not count).
    """
    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent
    head = _git(directory, "rev-parse", "--verify", "--quiet", "HEAD")
    if head is None or not head.strip():
        return None, None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return head.strip(), (None if status is None else bool(status.strip()))


def collect_provenance(
    *,
    seed: int | None = None,
    config: Any = None,
    device: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-ready provenance record for ``provenance.json``.

    ``device`` is stored as given (a string or a dict the caller built, e.g.
    from torch).  ``extra`` adds keys; it may not overwrite a standard key.
    """
    commit, dirty = git_state()
    record: dict[str, Any] = {
        "packages": package_versions(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_commit": commit,
        "git_dirty": dirty,
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "config_sha256": None if config is None else config_hash(config),
        "device": device,
    }
    if extra:
        clash = sorted(set(extra) & set(record))
        if clash:
            raise ValueError(f"extra provenance keys {clash} would overwrite standard keys")
        record.update(extra)
    return record
