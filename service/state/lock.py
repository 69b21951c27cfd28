"""One process per data directory: an exclusive, non-blocking lock file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirLockedError(RuntimeError):
    """Another process holds the data directory."""


class DataDirLock:
    """Holds `DIR/LOCK` with `flock(LOCK_EX | LOCK_NB)` for the life of the process.

    The kernel drops the lock when the process dies, even by SIGKILL, so a crash never
    leaves a stale lock behind.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `DataDirLockedError` naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLockedError(
                f"data directory {self.path.parent} is in use by another server (pid {holder}); "
                "one process per data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel at exit)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
