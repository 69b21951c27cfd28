"""Write-ahead log records: what each one holds and its byte layout.

A record on disk is a frame ``<u32 body length><u32 CRC-32 of body>`` followed by the
body ``<u64 sequence><u8 kind>`` + payload, all little-endian. Sequences of one log
are consecutive from 1. A batch record holds a micro-batch exactly as the engine
applied it (samples, per-sample learn flags, and the request ids it answered), so
replaying it reproduces the weights bit for bit. An update record holds a change of
hyper-parameters (one JSON object of settings per layer), so replay applies it between
the same batches it came between live.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

FRAME = struct.Struct("<II")  # body length, crc32(body)
HEADER = struct.Struct("<QB")  # sequence, kind
_BATCH = struct.Struct("<II")  # n samples, width
_BATCH_HEAD = struct.Struct("<QBII")  # HEADER and _BATCH in one
_COUNT = struct.Struct("<I")  # request spans in a batch
_REQUEST = struct.Struct("<IIH")  # first sample, sample count, id length
_RESET = struct.Struct("<Bq")  # has seed, seed
_TEXT = struct.Struct("<H")
_JSON = struct.Struct("<I")  # length of a UTF-8 JSON payload

BATCH, RESET, RESTORE, UPDATE = 1, 2, 3, 4
MAX_BODY = 1 << 30


class RecordError(ValueError):
    """A record body that does not decode (its CRC matched, so this is a bug or tampering)."""


@dataclass(frozen=True)
class RequestSpan:
    """The samples of one acknowledged request inside a batch, for exactly-once delivery."""

    request_id: str
    start: int
    count: int


@dataclass(frozen=True)
class BatchRecord:
    """A micro-batch as applied: samples (n, width) float32 and learn flags (n,) bool."""

    seq: int
    samples: np.ndarray
    learn: np.ndarray
    requests: tuple[RequestSpan, ...] = ()


@dataclass(frozen=True)
class ResetRecord:
    """The model was re-initialised (`seed` None: each layer's configured seed)."""

    seq: int
    seed: int | None


@dataclass(frozen=True)
class RestoreRecord:
    """The model was returned to the state of snapshot `snapshot_id`."""

    seq: int
    snapshot_id: str


@dataclass(frozen=True)
class UpdateRecord:
    """The model's hyper-parameters changed: one dict of new settings per layer, input
    layer first (an empty dict: that layer unchanged); see `service.model.updates`."""

    seq: int
    layers: tuple[dict[str, float], ...]


Record = BatchRecord | ResetRecord | RestoreRecord | UpdateRecord


def encode(record: Record) -> bytes:
    """The framed bytes of `record`."""
    if isinstance(record, BatchRecord):
        return encode_batch(record.seq, record.samples, record.learn, record.requests)
    if isinstance(record, ResetRecord):
        seed = -1 if record.seed is None else record.seed
        parts = [HEADER.pack(record.seq, RESET), _RESET.pack(record.seed is not None, seed)]
    elif isinstance(record, UpdateRecord):
        text = json.dumps([dict(layer) for layer in record.layers], sort_keys=True).encode()
        parts = [HEADER.pack(record.seq, UPDATE), _JSON.pack(len(text)), text]
    else:
        sid = record.snapshot_id.encode()
        parts = [HEADER.pack(record.seq, RESTORE), _TEXT.pack(len(sid)), sid]
    return _framed(parts)


def encode_batch(seq: int, samples: np.ndarray, learn: np.ndarray,
                 requests: tuple[RequestSpan, ...] = ()) -> bytes:
    """The framed bytes of `BatchRecord(seq, samples, learn, requests)`, without building
    one (the log writes one per micro-batch)."""
    samples = np.ascontiguousarray(samples, dtype="<f4")
    n, width = samples.shape
    learn = np.asarray(learn)
    flags = (learn.view(np.uint8) if learn.dtype == np.bool_ and learn.flags.c_contiguous
             else np.ascontiguousarray(learn, np.uint8))  # numpy's bools are bytes 0/1
    table = [_COUNT.pack(len(requests))]
    for span in requests:
        rid = span.request_id.encode()
        table += [_REQUEST.pack(span.start, span.count, len(rid)), rid]
    # samples: their buffer, copied once, into the frame
    return _framed([_BATCH_HEAD.pack(seq, BATCH, n, width), flags, samples, b"".join(table)])


def _framed(parts: list) -> bytes:
    """The frame of a body given in parts (bytes or C-contiguous arrays): the CRC and the
    length are taken over the parts where they are, so that a batch's samples are copied
    once, into the frame."""
    crc = length = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
        length += memoryview(part).nbytes
    return b"".join([FRAME.pack(length, crc), *parts])


def decode_body(body: bytes) -> Record:
    """The record held by a frame body whose CRC already matched."""
    try:
        seq, kind = HEADER.unpack_from(body, 0)
        offset = HEADER.size
        if kind == BATCH:
            n, width = _BATCH.unpack_from(body, offset)
            offset += _BATCH.size
            learn = np.frombuffer(body, np.uint8, n, offset).astype(bool)
            offset += n
            samples = np.frombuffer(body, "<f4", n * width, offset).reshape(n, width)
            offset += 4 * n * width
            (count,) = _COUNT.unpack_from(body, offset)
            offset += 4
            spans = []
            for _ in range(count):
                start, size, length = _REQUEST.unpack_from(body, offset)
                offset += _REQUEST.size
                spans.append(RequestSpan(body[offset : offset + length].decode(), start, size))
                offset += length
            record: Record = BatchRecord(seq, samples.astype(np.float32), learn, tuple(spans))
        elif kind == RESET:
            has_seed, seed = _RESET.unpack_from(body, offset)
            offset += _RESET.size
            record = ResetRecord(seq, seed if has_seed else None)
        elif kind == RESTORE:
            (length,) = _TEXT.unpack_from(body, offset)
            offset += _TEXT.size
            record = RestoreRecord(seq, body[offset : offset + length].decode())
            offset += length
        elif kind == UPDATE:
            (length,) = _JSON.unpack_from(body, offset)
            offset += _JSON.size
            record = UpdateRecord(seq, _update_layers(body[offset : offset + length]))
            offset += length
        else:
            raise RecordError(f"unknown record kind {kind}")
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise RecordError(f"undecodable record: {err}") from err
    if offset != len(body):
        raise RecordError(f"record has {len(body) - offset} trailing bytes")
    return record


def _update_layers(text: bytes) -> tuple[dict[str, float], ...]:
    """The per-layer settings of an update record's JSON payload."""
    layers = json.loads(text)
    if not isinstance(layers, list) or not all(
        isinstance(layer, dict) and all(
            isinstance(value, int | float) and not isinstance(value, bool)
            for value in layer.values()
        )
        for layer in layers
    ):
        raise ValueError("an update record holds one object of numbers per layer")
    return tuple({str(key): float(value) for key, value in layer.items()} for layer in layers)
