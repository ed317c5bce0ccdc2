"""Files the service writes that others must not read: created private from the start.

A file is made with mode 0600 and a directory with 0700 by the call that creates it (not
chmod-ed afterwards, which leaves a moment when anyone may open it). Existing files and
directories are left as they are.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) readable by the owner alone; no-op when it exists."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # (made meanwhile by another process)
            directory.mkdir(mode=PRIVATE_DIR_MODE)


def create_private_file(path: Path) -> bool:
    """Create an empty `path` with mode 0600 unless it exists; True when it was created."""
    make_private_dir(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    os.close(descriptor)
    return True


def write_private_file(path: Path, data: bytes) -> None:
    """Write a new file with mode 0600 (FileExistsError if it is there already)."""
    make_private_dir(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
