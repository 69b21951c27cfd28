"""Snapshot files: a model's full state at a log sequence, checksummed, written atomically.

Layout: ``MAGIC`` + ``<u32 version><u32 header length>`` + header (JSON: model, seq,
step, time, counters, ...) + ``<u64 payload length>`` + payload (an ``.npz`` of the
state arrays, read back with ``allow_pickle=False``) + SHA-256 of everything before it.
A snapshot with id S covers log records up to sequence S.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.state.atomic import atomic_write, fsync_directory, remove_temp_files

MAGIC = b"HEBSNAP\x00"
VERSION = 1
SUFFIX = ".hsnap"
_HEAD = struct.Struct("<II")
_LEN = struct.Struct("<Q")
_DIGEST = hashlib.sha256().digest_size


class CorruptSnapshotError(RuntimeError):
    """A snapshot file failed verification."""


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot file says about itself."""

    snapshot_id: str
    seq: int
    step: int
    create_time: float
    path: Path


def snapshot_id(seq: int) -> str:
    """The id (and file stem) of the snapshot covering the log up to `seq`."""
    return f"{seq:016d}"


def write_snapshot(directory: Path, seq: int, step: int, arrays: dict[str, np.ndarray],
                   header: dict | None = None) -> SnapshotInfo:
    """Write the state `arrays` covering log sequence `seq`, atomically."""
    directory = Path(directory)
    data, created = encode_snapshot(seq, step, arrays, header)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{snapshot_id(seq)}{SUFFIX}"
    atomic_write(path, data)
    return SnapshotInfo(snapshot_id(seq), int(seq), int(step), created, path)


def encode_snapshot(seq: int, step: int, arrays: dict[str, np.ndarray],
                    header: dict | None = None) -> tuple[bytes, float]:
    """(the bytes of a snapshot file, its creation time): what `write_snapshot` writes, and
    what a slot move carries from one shard to another (`decode_snapshot` checks it)."""
    for name, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise ValueError(f"snapshot array {name!r} holds Python objects; only numbers")
    created = time.time()
    meta = {**(header or {}), "seq": int(seq), "step": int(step), "create_time": created}
    meta_bytes = json.dumps(meta, sort_keys=True).encode()
    payload = io.BytesIO()
    np.savez(payload, **arrays)
    body = b"".join([
        MAGIC, _HEAD.pack(VERSION, len(meta_bytes)), meta_bytes,
        _LEN.pack(payload.getbuffer().nbytes), payload.getvalue(),
    ])
    return body + hashlib.sha256(body).digest(), created


def read_snapshot(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a snapshot file; raises `CorruptSnapshotError` if it fails checks."""
    return decode_snapshot(Path(path).read_bytes(), f"snapshot {path}")


def decode_snapshot(data: bytes, where: str = "snapshot") -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of the bytes of a snapshot file (`where` names them in errors);
    raises `CorruptSnapshotError` if they fail the checks."""
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if len(data) < len(MAGIC) + _HEAD.size + _DIGEST or not body.startswith(MAGIC):
        raise CorruptSnapshotError(f"{where} is not a snapshot file (bad magic)")
    if hashlib.sha256(body).digest() != digest:
        raise CorruptSnapshotError(f"{where} failed its checksum")
    version, meta_len = _HEAD.unpack_from(body, len(MAGIC))
    if version != VERSION:
        raise CorruptSnapshotError(f"{where} has version {version}; expected {VERSION}")
    offset = len(MAGIC) + _HEAD.size
    try:  # the checksum matched: what fails to parse here was written wrong
        meta = json.loads(body[offset : offset + meta_len])
        offset += meta_len
        (payload_len,) = _LEN.unpack_from(body, offset)
        offset += _LEN.size
        with np.load(io.BytesIO(body[offset : offset + payload_len]), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        for key in ("seq", "step", "create_time"):
            if not isinstance(meta.get(key), int | float):
                raise ValueError(f"header has no {key}")
    except (ValueError, KeyError, struct.error, OSError, EOFError, zipfile.BadZipFile) as err:
        raise CorruptSnapshotError(f"{where} does not decode: {err}") from err
    return meta, arrays


def list_snapshots(directory: Path) -> list[Path]:
    """Snapshot files, oldest (lowest sequence) first; temp files are never listed."""
    directory = Path(directory)
    return sorted(directory.glob(f"*{SUFFIX}")) if directory.exists() else []


def info(path: Path) -> SnapshotInfo:
    """A verified snapshot's `SnapshotInfo`."""
    meta, _ = read_snapshot(path)
    return SnapshotInfo(Path(path).stem, meta["seq"], meta["step"], meta["create_time"], Path(path))


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` snapshots; returns the deleted paths."""
    paths = list_snapshots(directory)
    doomed = paths[: max(0, len(paths) - keep)]
    for path in doomed:
        path.unlink()
    if doomed:
        fsync_directory(Path(directory))
    return doomed


def clean(directory: Path) -> list[Path]:
    """Remove temp files a crash left during a snapshot write."""
    directory = Path(directory)
    return remove_temp_files(directory) if directory.exists() else []
