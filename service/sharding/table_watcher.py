"""The slot table of a running server, reloaded without a restart when its file changes.

Kubernetes updates a mounted ConfigMap by swapping a symlink (`..data`), which leaves the
file's own mtime meaningless, so the watcher compares the file's content: every
`interval` seconds it reads the file, and when the bytes differ from the table in use it
parses them. A new table that is invalid (or a file that cannot be read) is logged and
the table in use is kept; the next valid content replaces it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from service.sharding.slot_table import SlotTable, SlotTableError

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 2.0


class SlotTableWatcher:
    """The table from `path`, read once at construction, then polled by `start`.

    Args:
      path: the slot table file.
      interval: seconds between two reads of the file.
      on_change: called with the new table after each reload.

    Raises:
      SlotTableError: the file cannot be read or holds no valid table at construction.
    """

    def __init__(
        self,
        path: Path,
        interval: float = DEFAULT_POLL_S,
        on_change: Callable[[SlotTable], None] | None = None,
    ):
        self.path = Path(path)
        self.interval = interval
        self._on_change = on_change
        self._content = self._read()
        self._table = SlotTable.parse(self._content.decode("utf-8", "replace"),
                                      f"slot table {self.path}")
        self._bad: bytes | None = None  # the last content refused (logged once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def table(self) -> SlotTable:
        """The table in use."""
        return self._table

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as err:
            raise SlotTableError(f"cannot read slot table {self.path}: {err.strerror}") from None

    def check(self) -> bool:
        """Read the file once; True if a new table was taken."""
        try:
            content = self._read()
        except SlotTableError as err:
            if self._bad != b"":
                log.error("%s; keeping the slot table in use", err)
                self._bad = b""
            return False
        if content == self._content or content == self._bad:
            return False
        try:
            table = SlotTable.parse(content.decode("utf-8", "replace"), f"slot table {self.path}")
        except SlotTableError as err:
            log.error("%s; keeping the slot table in use", err)
            self._bad = content
            return False
        self._content, self._bad, self._table = content, None, table
        log.info("slot table %s reloaded: %d range(s)", self.path, len(table.ranges))
        if self._on_change is not None:
            self._on_change(table)
        return True

    def start(self) -> SlotTableWatcher:
        """Poll the file in a daemon thread until `stop`."""
        self._thread = threading.Thread(target=self._run, name="slot-table", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the watcher die: the old table stays in use
                log.exception("slot table check failed")

    def stop(self) -> None:
        """End the polling thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
