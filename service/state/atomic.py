"""Crash-safe file replacement: the one recipe every durable file goes through."""

from __future__ import annotations

import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (creations, renames, deletions) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file.

    1. Write a temp file beside the target: a crash now leaves only a stray temp file,
       which readers never use and start-up removes.
    2. fsync the temp file: its bytes are on disk before its name can point at them.
    3. rename over the target: atomic on POSIX, readers see old or new, never a mix.
    4. fsync the directory: the rename itself survives a power cut.
    """
    path = Path(path)
    temp = path.with_name(path.name + TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError:
        temp.unlink(missing_ok=True)  # a full disk: give back the space the attempt took
        raise
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_directory(path.parent)


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete temp files left by a crash during `atomic_write`; returns what was removed."""
    removed = []
    for temp in Path(directory).glob(f"*{TEMP_SUFFIX}"):
        temp.unlink()
        removed.append(temp)
    if removed:
        fsync_directory(Path(directory))
    return removed
