"""Reading a log segment back, and telling a torn tail from corruption.

A crash can leave the newest segment ending in a damaged record: cut short, or (on
file systems that extend a file before its data lands) filled with zeros or garbage.
That record was never acknowledged, so it is cut off and the log goes on. The test is
whether any valid record follows the damage: a torn write is always the end of the
log, while damage with valid records after it (or in an older segment) means
acknowledged data changed, and start-up is refused, naming the file and the offset.
A damaged final record that was acknowledged cannot be told from a torn write; that is
the one case where bytes are dropped, and it is reported.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from service.state.records import FRAME, HEADER, MAX_BODY, Record, RecordError, decode_body


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


def read_segment(
    path: Path, data: bytes, *, last: bool, expected_seq: int | None
) -> tuple[list[tuple[int, Record]], TornTail | None]:
    """Decode every record of a segment's bytes.

    Returns the (offset, record) pairs and, for the last segment only, a `TornTail`
    when its end is damaged. Raises `CorruptLogError` for any other damage.
    """
    records: list[tuple[int, Record]] = []
    offset = 0
    while offset < len(data):
        record, problem, end = _read_frame(data, offset)
        if record is not None and expected_seq is not None and record.seq != expected_seq:
            record, problem = None, f"sequence {record.seq} where {expected_seq} was expected"
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
