"""Bad input stops a command with one line that says what to fix, never with a traceback.

Workflow scripts end with ``sys.exit(run_main(main, "convert"))``: a known error (bad data, bad
config, a missing or unreadable file, a checkpoint that does not match) becomes
``convert: error: <file>:<line>: <problem>`` on stderr and exit status 1. So does a full disk,
whichever library met it: ``convert: error: disk full writing <path>: No space left on device``.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# OSError covers FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError; PIL's
# UnidentifiedImageError is an OSError too. KeyError only comes from malformed input files here.
KNOWN_ERRORS = (ValueError, OSError, KeyError)

# A full disk, and a full quota (a cluster filesystem's usual way of being full for one user).
FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}
# Libraries that wrap the OSError in an exception of their own keep its text, e.g. safetensors:
# SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)").
FULL_TEXTS = {os.strerror(code): code for code in FULL}
# torch.save to a file name writes through a C++ stream that keeps no errno (PyTorchStreamWriter,
# caffe2/serialize/inline_container.cc in https://github.com/pytorch/pytorch). On a full tmpfs,
# torch 2.13 raised RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs
# 534") from RuntimeError("basic_ios::clear: iostream error"); a large record fails with
# "PytorchStreamWriter failed writing file data/176: file write failed" (a DeepSpeed checkpoint on a
# full disk, https://github.com/hiyouga/LlamaFactory/issues/1223).
STREAM_WRITE_FAILURES = ("basic_ios::clear", "PytorchStreamWriter failed writing", "] . unexpected pos ")
# Below this much free space a write failure that names no cause is a full disk: the kernel fills
# a filesystem to the last block before it refuses a write.
FULL_BELOW_BYTES = 1 << 20

# The folders this command writes into, as check_writable proved them: a write failure that names
# no file is reported with one of them.
output_folders: list[Path] = []


def one_line(error: BaseException) -> str:
    """The error's message on one line (the first non-empty line; an OSError without a message
    gets its strerror and filename)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    elif isinstance(error, KeyError) and error.args:
        text = f"missing key {error.args[0]!r}"
    else:
        text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def free_bytes(folder: Path) -> int:
    """Space an unprivileged writer may still use in ``folder``'s filesystem (statvfs f_bavail)."""
    return shutil.disk_usage(folder).free


def written_folder() -> Path | None:
    """The output folder on the fullest filesystem: where a write that names no file most likely failed."""
    existing = [folder for folder in output_folders if folder.is_dir()]
    return min(existing, key=free_bytes) if existing else None


def write_failure(error: BaseException) -> str | None:
    """``disk full writing <path>: <reason>`` (or ``disk quota exceeded writing ...``, or ``cannot
    write <folder>: ...``) when ``error`` is a failed write, else None. ``<path>`` is the file the
    error names or, when it names none, the output folder (``check_writable``) on the fullest disk."""
    code, path, stream_failure = None, None, None
    for e in error_chain(error):
        if isinstance(e, OSError) and e.errno in FULL:
            code, path = e.errno, path or e.filename
        else:
            text = str(e)
            code = code or next((c for words, c in FULL_TEXTS.items() if words in text), None)
            if any(words in text for words in STREAM_WRITE_FAILURES):
                stream_failure = stream_failure or one_line(e)
    if code is None and stream_failure is None:
        return None
    folder = written_folder()
    where = path or folder or "an output (the error names no file)"
    if code is not None:
        return f"{FULL[code]} writing {where}: {os.strerror(code)}"
    free = free_bytes(folder) if folder is not None else None
    if free is None or free >= FULL_BELOW_BYTES:
        return f"cannot write {where}: {stream_failure}"
    return f"disk full writing {where}: {free / 2**20:.1f} MiB free there ({stream_failure})"


def run_main(main: Callable[[], int | None], prog: str) -> int:
    """Runs ``main()``; a known error or a failed write is printed as ``<prog>: error: <one line>``,
    status 1."""
    output_folders.clear()
    try:
        return int(main() or 0)
    except Exception as e:
        line = write_failure(e)
        if line is None:
            if not isinstance(e, KNOWN_ERRORS):
                raise
            line = one_line(e)
        print(f"{prog}: error: {line}", file=sys.stderr, flush=True)
        return 1


def check_writable(folder: str | os.PathLike) -> Path:
    """Creates ``folder`` if needed and proves a file can be written there, before any long work
    starts; raises ``OSError`` naming the folder otherwise. The folder is remembered as one this
    command writes into (``write_failure``)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        # errno kept: a full disk reads "disk full writing <folder>" (write_failure)
        raise OSError(e.errno, f"cannot write results here ({e.strerror or e})", str(folder)) from None
    output_folders.append(folder)
    return folder
