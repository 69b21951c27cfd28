"""Reading a log segment back, and telling a torn tail from corruption.

A crash can leave the newest segment ending in a damaged record: cut short, or (on
file systems that extend a file before its data lands) filled with zeros or garbage.
That record was never acknowledged, so it is cut off and the log goes on. The test is
whether any valid record follows the damage: a torn write is always the end of the
log, while damage with valid records after it (or in an older segment) means
acknowledged data changed, and start-up is refused, naming the file and the offset.
A damaged final record that was acknowledged cannot be told from a torn write; that is
the one case where bytes are dropped, and it is reported.

Sequences are checked across the whole log (`read_log`): each segment is named by its
first sequence and every record follows the one before it, so a missing segment, a
segment cut on a record boundary, or a gap or repeat anywhere is corruption, never a
torn tail, and is reported with the file and the sequence.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from service.state.records import FRAME, HEADER, MAX_BODY, Record, RecordError, decode_body

SEGMENT_SUFFIX = ".wal"


def segment_paths(directory: Path) -> list[Path]:
    """The log's segment files, oldest first (each named by its first sequence)."""
    return sorted(Path(directory).glob(f"*{SEGMENT_SUFFIX}"), key=_sort_key)


def segment_name(first_seq: int) -> str:
    """The file name of a segment whose first record has sequence `first_seq`."""
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def first_seq(path: Path) -> int:
    """The sequence a segment's name says its first record has."""
    stem = Path(path).name.removesuffix(SEGMENT_SUFFIX)
    if not stem.isdigit() or not stem.isascii():
        raise CorruptLogError(path, 0, "the segment's name is not a sequence number")
    return int(stem)


def _sort_key(path: Path) -> tuple[int, str]:
    stem = path.name.removesuffix(SEGMENT_SUFFIX)
    return (int(stem) if stem.isdigit() and stem.isascii() else -1, path.name)


class CorruptLogError(RuntimeError):
    """Acknowledged log data is damaged; the server must not start on it."""

    def __init__(self, path: Path, offset: int, reason: str):
        super().__init__(f"write-ahead log {path} is corrupt at byte offset {offset}: {reason}")
        self.path, self.offset, self.reason = path, offset, reason


@dataclass(frozen=True)
class TornTail:
    """Where a segment's valid records end, and why the bytes after were dropped."""

    path: Path
    offset: int
    dropped_bytes: int
    reason: str


@dataclass(frozen=True)
class SegmentRead:
    """One segment as read back: its size, its (offset, record) pairs, a torn tail."""

    path: Path
    size: int
    records: list[tuple[int, Record]]
    torn: TornTail | None

    @property
    def next_seq(self) -> int:
        """The sequence the record after this segment's last one must have."""
        return self.records[-1][1].seq + 1 if self.records else first_seq(self.path)


def read_log(paths: list[Path], covered: int = 0) -> Iterator[SegmentRead]:
    """Read every segment in order, checking sequences across segments.

    `covered` is the sequence the newest snapshot covers: the log must start at or
    before the record after it. Only the newest segment may end in a torn record or hold
    no record at all (a crash right after it was started). Raises `CorruptLogError`
    naming the file and the sequence for a missing or cut segment, a gap or a repeat,
    or damage anywhere else.
    """
    expected: int | None = None
    if paths and first_seq(paths[0]) > covered + 1:
        raise CorruptLogError(
            paths[0], 0, f"the log starts at sequence {first_seq(paths[0])} but the newest "
            f"snapshot covers only up to sequence {covered} (records are missing)")
    for index, path in enumerate(paths):
        last = index == len(paths) - 1
        first = first_seq(path)
        if expected is not None and first != expected:
            what = "a gap: a segment is missing or was cut short" if first > expected else (
                "a repeat: segments overlap")
            raise CorruptLogError(
                path, 0, f"the segment starts at sequence {first} but the one before it ends "
                f"at sequence {expected - 1} ({what})")
        data = path.read_bytes()
        records, torn = read_segment(path, data, last=last, expected_seq=first)
        if not records and not last:
            raise CorruptLogError(path, 0, f"an older segment holds no record (sequence {first} "
                                           "expected)")
        segment = SegmentRead(path, len(data), records, torn)
        expected = segment.next_seq
        yield segment


def read_segment(
    path: Path, data: bytes, *, last: bool, expected_seq: int | None
) -> tuple[list[tuple[int, Record]], TornTail | None]:
    """Decode every record of a segment's bytes.

    Returns the (offset, record) pairs and, for the last segment only, a `TornTail`
    when its end is damaged. Raises `CorruptLogError` for any other damage; a valid
    record with another sequence than `expected_seq` is a gap or a repeat, never torn.
    """
    records: list[tuple[int, Record]] = []
    offset = 0
    while offset < len(data):
        record, problem, end = _read_frame(data, offset)
        if record is not None and expected_seq is not None and record.seq != expected_seq:
            kind = "a gap" if record.seq > expected_seq else "a repeat"
            raise CorruptLogError(path, offset, f"record has sequence {record.seq} where "
                                                f"{expected_seq} was expected ({kind})")
        if record is None:
            assert problem is not None
            if last and not _valid_record_after(data, offset + 1, expected_seq):
                return records, TornTail(path, offset, len(data) - offset, problem)
            raise CorruptLogError(path, offset, problem)
        records.append((offset, record))
        expected_seq = record.seq + 1
        offset = end
    return records, None


def _read_frame(data: bytes, offset: int) -> tuple[Record | None, str | None, int]:
    """(record, None, end) for a valid frame at `offset`, else (None, problem, -1)."""
    if len(data) - offset < FRAME.size + HEADER.size:
        return None, "incomplete record header", -1
    length, crc = FRAME.unpack_from(data, offset)
    end = offset + FRAME.size + length
    if length > MAX_BODY:
        return None, f"implausible record length {length}", -1
    if end > len(data):
        return None, f"record of {length} bytes runs past the end of the file", -1
    body = data[offset + FRAME.size : end]
    if zlib.crc32(body) != crc:
        return None, "checksum mismatch", -1
    try:
        return decode_body(body), None, end
    except RecordError as err:
        return None, str(err), -1


def _valid_record_after(data: bytes, start: int, expected_seq: int | None) -> bool:
    """Whether a valid record with a later sequence starts anywhere at or after `start`."""
    for offset in range(start, len(data) - FRAME.size - HEADER.size + 1):
        length, _ = FRAME.unpack_from(data, offset)
        if length < HEADER.size or offset + FRAME.size + length > len(data):
            continue
        seq, _ = HEADER.unpack_from(data, offset + FRAME.size)
        if expected_seq is not None and not expected_seq <= seq < expected_seq + (1 << 32):
            continue
        if _read_frame(data, offset)[0] is not None:
            return True
    return False
