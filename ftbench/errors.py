"""Bad input stops a command with one line that says what to fix, never with a traceback.

Workflow scripts end with ``sys.exit(run_main(main, "convert"))``: a known error (bad data, bad
config, a missing or unreadable file, a checkpoint that does not match) becomes
``convert: error: <file>:<line>: <problem>`` on stderr and exit status 1. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# OSError covers FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError; PIL's
# UnidentifiedImageError is an OSError too. KeyError only comes from malformed input files here.
KNOWN_ERRORS = (ValueError, OSError, KeyError)


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


def run_main(main: Callable[[], int | None], prog: str) -> int:
    """Runs ``main()``; a known error is printed as ``<prog>: error: <one line>``, status 1."""
    try:
        return int(main() or 0)
    except KNOWN_ERRORS as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr, flush=True)
        return 1


def check_writable(folder: str | os.PathLike) -> Path:
    """Creates ``folder`` if needed and proves a file can be written there, before any long work
    starts; raises ``OSError`` naming the folder otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OSError(f"{folder}: cannot write results here ({e.strerror or e})") from None
    return folder
