"""Atomic file writes: a killed job never leaves a half-written final file behind (readers and
Snakemake see either the old file or the complete new one).

A new file gets the permission bits ``open()`` gives one (0o666 less the umask, or what the folder's
default ACL says), so that collaborators on a shared filesystem read results like any other file;
a file replaced keeps its bits (a tracked README.md stays as git has it). ``share_like_open``
does the same for files a library wrote itself."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# tempfile's own bound on name clashes (TMP_MAX) in https://github.com/python/cpython/blob/3.11/Lib/tempfile.py
NAME_TRIES = 10000


def create_beside(path: Path) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` in ``path``'s folder. Created with mode 0o666 for
    the kernel to apply the umask and default ACL, as ``open()`` does: ``tempfile.mkstemp`` creates
    0o600 files whatever the umask (https://docs.python.org/3/library/tempfile.html#tempfile.mkstemp)."""
    for _ in range(NAME_TRIES):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (matplotlib, tarfile);
    renamed over ``path`` on success, removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        replaced_mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        replaced_mode = None
    tmp = create_beside(path)
    try:
        yield tmp
        if replaced_mode is not None:
            os.chmod(tmp, replaced_mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, newline: str = "") -> Iterator:
    """Text handle on a temporary file beside ``path``, renamed over ``path`` on success and
    removed on error."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def new_file_mode(folder: Path) -> int:
    """The permission bits ``open()`` gives a new file in ``folder`` (the umask and the folder's
    default ACL applied), found by creating one: reading the umask means setting it (``os.umask``),
    which is not safe while other threads create files."""
    probe = create_beside(folder / "mode-probe")
    try:
        return probe.stat().st_mode & 0o777
    finally:
        probe.unlink()


def share_like_open(folder: str | os.PathLike) -> None:
    """Gives every file under ``folder`` the bits ``open()`` gives a new file there. For what a
    library wrote with private bits: safetensors 0.8's ``save_file`` writes a 0o600 temporary file
    and renames it into place (seen with strace), so saved weights were unreadable to collaborators
    whatever the umask."""
    folder = Path(folder)
    mode = new_file_mode(folder)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
