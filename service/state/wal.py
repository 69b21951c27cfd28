"""The write-ahead log of one model: segments of records, appended and fsynced.

Only the model's learner thread appends, one record per micro-batch, so a batch of
requests costs one write and (with fsync "always") one fsync: group commit. The fsync
policy mirrors Redis' appendfsync: "always" (durable before acknowledged), "everysec"
(a background flush each second: a crash may lose the last second), "no" (the OS
decides). Any failed write or fsync poisons the log: nothing more is appended, the
error goes to `on_failure` (the server exits), and nothing is ever retried.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from service.state.atomic import fsync_directory
from service.state.log_reader import (
    SEGMENT_SUFFIX,
    TornTail,
    first_seq,
    read_log,
    segment_name,
    segment_paths,
)
from service.state.records import Record, encode

__all__ = ["SEGMENT_SUFFIX", "DurabilityError", "WriteAheadLog", "segment_paths"]

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "everysec", "no")


class DurabilityError(RuntimeError):
    """A write or fsync of the log failed; nothing after it may be acknowledged."""


class WriteAheadLog:
    """Appends framed records to size-limited segment files in `directory`.

    Call `recover` once before the first `append`: it reads every record back, cuts a
    torn tail off the newest segment and positions the log after the last record.
    """

    def __init__(
        self,
        directory: Path,
        *,
        fsync: str = "always",
        segment_bytes: int = 64 << 20,
        on_failure: Callable[[BaseException], None] | None = None,
    ):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}; got {fsync!r}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = int(segment_bytes)
        self.next_seq = 1
        self.torn_tail: TornTail | None = None
        self._on_failure = on_failure
        self._fd: int | None = None
        self._size = 0
        self._dirty = False
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    # -- start-up --------------------------------------------------------------------------

    def recover(self, covered: int = 0) -> Iterator[Record]:
        """Yield every record in order, repairing a torn tail; then the log is open.

        `covered` is the sequence a durable snapshot covers: when the log ends before it
        (every record compacted away), the segments are all covered and the log goes on
        in a new segment named `covered + 1`, so names and sequences always agree.
        Raises `CorruptLogError` (from the reader) when acknowledged data is damaged.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        paths = segment_paths(self.directory)
        next_seq = 1
        for segment in read_log(paths, covered):
            for _, record in segment.records:
                yield record
            next_seq = segment.next_seq
            torn = segment.torn
            if torn is not None:
                log.warning(
                    "write-ahead log %s: dropped a torn record of %d bytes at offset %d (%s)",
                    torn.path, torn.dropped_bytes, torn.offset, torn.reason,
                )
                with open(torn.path, "r+b") as f:
                    f.truncate(torn.offset)
                    os.fsync(f.fileno())
                self.torn_tail = torn
        if next_seq <= covered:
            for path in paths:
                path.unlink()
            paths, next_seq = [], covered + 1
        self.next_seq = next_seq
        self._open_segment(paths[-1] if paths else None)
        if self.fsync == "everysec":
            self._flusher = threading.Thread(target=self._flush_every_second, daemon=True,
                                             name=f"wal-flush-{self.directory.parent.name}")
            self._flusher.start()

    def _open_segment(self, path: Path | None) -> None:
        if path is None:
            path = self.directory / segment_name(self.next_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = os.fstat(self._fd).st_size
        fsync_directory(self.directory)

    # -- appending -------------------------------------------------------------------------

    def append(self, make_record: Callable[[int], Record]) -> int:
        """Append the record `make_record(seq)` and make it as durable as the policy says.

        Returns its sequence. Raises `DurabilityError` if the log is or becomes unusable.
        """
        with self._lock:
            if self._failure is not None:
                raise DurabilityError(f"write-ahead log unusable after: {self._failure}")
            seq = self.next_seq
            data = encode(make_record(seq))
            try:
                if self._size > 0 and self._size + len(data) > self.segment_bytes:
                    self._roll()
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
                self._size += len(data)
                if self.fsync == "always":
                    os.fdatasync(self._fd)
                else:
                    self._dirty = True
            except OSError as err:
                self._fail(err)
                raise DurabilityError(f"write-ahead log write failed: {err}") from err
            self.next_seq = seq + 1
            return seq

    def _roll(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        self._open_segment(None)

    def _flush_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.flush()

    def flush(self) -> None:
        """fsync what was written (the everysec flusher and shutdown call this)."""
        with self._lock:
            if not self._dirty or self._fd is None or self._failure is not None:
                return
            try:
                os.fdatasync(self._fd)
                self._dirty = False
            except OSError as err:
                self._fail(err)

    def _fail(self, err: BaseException) -> None:
        self._failure = err
        log.critical("write-ahead log %s failed: %s", self.directory, err)
        if self._on_failure is not None:
            self._on_failure(err)

    # -- compaction and shutdown -------------------------------------------------------------

    def drop_covered(self, seq: int) -> list[Path]:
        """Delete segments whose records all have sequence <= `seq` (a durable snapshot
        covers them). The open segment is always kept. Returns the deleted paths."""
        paths = segment_paths(self.directory)
        deleted = []
        for path, following in itertools.pairwise(paths):
            if first_seq(following) - 1 <= seq:
                path.unlink()
                deleted.append(path)
        if deleted:
            fsync_directory(self.directory)
        return deleted

    def size_bytes(self) -> int:
        """Bytes in all segments."""
        return sum(p.stat().st_size for p in segment_paths(self.directory))

    def close(self) -> None:
        """Flush, stop the flusher and close the open segment."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
