"""The write-ahead log of one model: segments of records, appended and fsynced.

Only the model's writer (the thread holding its turn) appends, one record per
micro-batch, so a batch of requests costs one write and (with fsync "always") one fsync: group
commit. The fsync policy mirrors Redis' appendfsync: "always" (durable before
acknowledged), "everysec" (a background flush each second: a crash may lose the last
second), "no" (the OS decides). A failed fsync, or a write that fails for any reason but
a full disk, poisons the log: nothing more is appended, the error goes to `on_failure`
(the server exits), and nothing is ever retried. A write refused for lack of space
(ENOSPC, EDQUOT) is undone (the segment is cut back to its last whole record) and raises
`LogFullError`: nothing was logged, the log stays usable, and the next append tries
again (`has_space` says whether the disk has room again).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from service.state.atomic import fsync_directory
from service.state.log_reader import (
    SEGMENT_SUFFIX,
    TornTail,
    first_seq,
    read_log,
    segment_name,
    segment_paths,
)
from service.state.records import Record, RequestSpan, encode, encode_batch

__all__ = ["SEGMENT_SUFFIX", "DurabilityError", "LogFullError", "WriteAheadLog", "segment_paths"]

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "everysec", "no")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
SPACE_MARGIN = 1 << 20  # free bytes beyond the refused record before the disk counts as usable


class DurabilityError(RuntimeError):
    """A write or fsync of the log failed; nothing after it may be acknowledged."""


class LogFullError(DurabilityError):
    """The disk had no room for a record: nothing was logged, the log is still usable."""


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
        self.out_of_space: OSError | None = None  # the last write refused for lack of space
        self._needed = 0  # bytes of the record that was refused
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # held by a flush until its fsync is done
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

        Returns its sequence. Raises `LogFullError` if the disk has no room for it (nothing
        logged, try again later) and `DurabilityError` if the log is or becomes unusable.
        """
        return self._append(_encode_made, make_record)

    def append_batch(self, samples: np.ndarray, learn: np.ndarray,
                     requests: tuple[RequestSpan, ...] = ()) -> int:
        """`append` of a `BatchRecord` of these fields (encoded without building one)."""
        return self._append(encode_batch, samples, learn, requests)

    def _append(self, frame: Callable[..., bytes], *args: object) -> int:
        """Append the record framed by `frame(seq, *args)` (see `append`)."""
        with self._lock:
            if self._failure is not None:
                raise DurabilityError(f"write-ahead log unusable after: {self._failure}")
            seq = self.next_seq
            data = frame(seq, *args)
            roll = self._size > 0 and self._size + len(data) > self.segment_bytes
            try:
                if roll:
                    os.fsync(self._fd)  # the full segment is complete and durable
            except OSError as err:
                raise self._fatal(err) from err
            try:
                if roll:
                    self._start_segment()
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as err:
                if err.errno in _NO_SPACE and self._cut_back():
                    raise self._no_space(err, len(data)) from err
                raise self._fatal(err) from err
            self._size += len(data)
            try:
                if self.fsync == "always":
                    os.fdatasync(self._fd)
                else:
                    self._dirty = True
            except OSError as err:
                raise self._fatal(err) from err
            if self.out_of_space is not None:
                log.info("write-ahead log %s: space is back, logging again", self.directory)
                self.out_of_space = None
            self.next_seq = seq + 1
            return seq

    def _start_segment(self) -> None:
        """Continue in a new segment; the old one stays open if the new cannot be made."""
        fd = os.open(self.directory / segment_name(self.next_seq),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.close(self._fd)
        self._fd, self._size = fd, 0
        fsync_directory(self.directory)

    def _cut_back(self) -> bool:
        """Drop what a refused write left after the last whole record; False if impossible."""
        try:
            os.ftruncate(self._fd, self._size)
            return True
        except OSError:
            return False

    def _no_space(self, err: OSError, needed: int) -> LogFullError:
        if self.out_of_space is None:
            log.error("write-ahead log %s: no space left (%s); learning is refused until "
                      "space is freed", self.directory, err.strerror)
        self.out_of_space, self._needed = err, needed
        return LogFullError(
            f"no space left on the data directory's disk for the write-ahead log "
            f"({err.strerror}); nothing was logged or applied, and learning is refused "
            "until space is freed"
        )

    def _fatal(self, err: OSError) -> DurabilityError:
        self._fail(err)
        return DurabilityError(f"write-ahead log write failed: {err}")

    def has_space(self) -> bool:
        """False while the last write was refused for lack of space and the disk still has
        no room for it (and a margin); True once it has, or if nothing was refused."""
        with self._lock:
            if self.out_of_space is None:
                return True
            try:
                stats = os.statvfs(self.directory)
            except OSError:
                return False
            if stats.f_bavail * stats.f_frsize < self._needed + SPACE_MARGIN:
                return False
            log.info("write-ahead log %s: space is back", self.directory)
            self.out_of_space = None
            return True

    def _flush_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.flush()

    def flush(self) -> None:
        """fsync what was written (the everysec flusher and shutdown call this).

        Appends go on while it runs: the fsync is made on a duplicate of the segment's
        descriptor, outside the lock (an fsync can take many milliseconds, and `everysec`
        must not stall the answers once a second). A segment rolled meanwhile was fsynced
        by the append that rolled it; what is appended meanwhile is flushed next time. A
        second flush (a snapshot's) waits for one in progress, so that it never returns
        before what was written until then is synced."""
        with self._flushing:  # a flush returns once what was written before it is synced
            with self._lock:
                if not self._dirty or self._fd is None or self._failure is not None:
                    return
                try:
                    fd = os.dup(self._fd)
                except OSError:  # no descriptor to spare: flush under the lock, as appends do
                    self._sync_locked()
                    return
                self._dirty = False
            try:
                os.fdatasync(fd)
            except OSError as err:
                with self._lock:
                    if self._failure is None:
                        self._fail(err)
            finally:
                os.close(fd)

    def _sync_locked(self) -> None:
        """(lock held) fsync the open segment; a failure makes the log unusable."""
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


def _encode_made(seq: int, make_record: Callable[[int], Record]) -> bytes:
    """The framed bytes of the record `make_record(seq)`."""
    return encode(make_record(seq))
