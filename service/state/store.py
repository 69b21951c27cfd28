"""The data directory and the durable home of each model in it.

    DATA/LOCK                          held by the one server using the directory
    DATA/models/NAME/config.json       the model's seeded architecture, written atomically
    DATA/models/NAME/wal/*.wal         write-ahead log segments
    DATA/models/NAME/snapshots/*.hsnap snapshots, the newest K kept

Creating a model writes its directory under a temp name and renames it into place;
deleting renames it out of the way first, so a crash leaves a model either fully there
or gone. Recovery of a model = its newest snapshot + replay of the log records after it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from service.state import snapshot as snapshots
from service.state.atomic import atomic_write, fsync_directory
from service.state.lock import DataDirLock
from service.state.log_reader import TornTail
from service.state.records import (
    BatchRecord,
    RequestSpan,
    ResetRecord,
    RestoreRecord,
    UpdateRecord,
)
from service.state.wal import WriteAheadLog

log = logging.getLogger(__name__)

CONFIG = "config.json"
_CREATING, _DELETING = ".creating-", ".deleted-"


class RecoveryTarget(Protocol):
    """What recovery drives: the live model that the records and snapshots rebuild."""

    def load_snapshot(self, header: dict, arrays: dict[str, np.ndarray]) -> None:
        """Replace the whole state with a snapshot's."""

    def replay_batch(self, record: BatchRecord) -> None:
        """Apply a logged micro-batch exactly as it was applied live."""

    def replay_reset(self, seed: int | None) -> None:
        """Apply a logged reset."""

    def replay_update(self, layers: tuple[dict[str, float], ...]) -> None:
        """Apply a logged hyper-parameter update."""


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery found and did."""

    snapshot: snapshots.SnapshotInfo | None
    replayed_records: int
    last_seq: int
    torn_tail: TornTail | None
    seconds: float


@dataclass(frozen=True)
class Durability:
    """Durability settings shared by every model of a data directory."""

    fsync: str = "always"
    segment_bytes: int = 64 << 20
    keep_snapshots: int = 3


class ModelStore:
    """The config, log and snapshots of one model. Used by the model's writer only (the
    thread holding its turn)."""

    def __init__(self, directory: Path, durability: Durability,
                 on_failure: Callable[[BaseException], None] | None = None):
        self.directory = Path(directory)
        self.name = self.directory.name
        self.durability = durability
        self.snapshot_dir = self.directory / "snapshots"
        self.wal = WriteAheadLog(self.directory / "wal", fsync=durability.fsync,
                                 segment_bytes=durability.segment_bytes, on_failure=on_failure)
        self.last_seq = 0
        self.last_snapshot: snapshots.SnapshotInfo | None = None

    def read_config(self) -> dict:
        """The model's config as written at creation."""
        return json.loads((self.directory / CONFIG).read_text())

    # -- start-up ----------------------------------------------------------------------------

    def recover(self, target: RecoveryTarget) -> RecoveryReport:
        """Load the newest snapshot, replay the log after it, open the log for appending.

        Raises `CorruptSnapshotError` or `CorruptLogError` rather than start on damaged
        acknowledged data.
        """
        started = time.perf_counter()
        removed = snapshots.clean(self.snapshot_dir)
        if removed:
            log.warning("model %r: removed %d unfinished snapshot file(s)", self.name, len(removed))
        paths = snapshots.list_snapshots(self.snapshot_dir)
        covered = 0
        if paths:
            header, arrays = snapshots.read_snapshot(paths[-1])
            target.load_snapshot(header, arrays)
            self.last_snapshot = snapshots.info(paths[-1])
            covered = self.last_snapshot.seq
        replayed, last = 0, covered
        for record in self.wal.recover(covered):
            if record.seq <= covered:
                continue
            if record.seq != last + 1:
                raise snapshots.CorruptSnapshotError(
                    f"model {self.name!r}: the log resumes at sequence {record.seq} but the "
                    f"newest snapshot covers only up to {covered}"
                )
            self._replay(record, target)
            replayed, last = replayed + 1, record.seq
        self.last_seq = max(last, self.wal.next_seq - 1)
        return RecoveryReport(self.last_snapshot, replayed, self.last_seq, self.wal.torn_tail,
                              time.perf_counter() - started)

    def _replay(self, record, target: RecoveryTarget) -> None:
        if isinstance(record, BatchRecord):
            target.replay_batch(record)
        elif isinstance(record, ResetRecord):
            target.replay_reset(record.seed)
        elif isinstance(record, UpdateRecord):
            target.replay_update(record.layers)
        else:
            target.load_snapshot(*self.read_snapshot(record.snapshot_id))

    # -- logging changes -------------------------------------------------------------------------

    def append_batch(self, samples: np.ndarray, learn: np.ndarray,
                     requests: tuple[RequestSpan, ...] = ()) -> int:
        """Log a micro-batch before it is applied; returns its sequence."""
        self.last_seq = self.wal.append_batch(samples, learn, requests)
        return self.last_seq

    def append_reset(self, seed: int | None) -> int:
        """Log a reset before it is applied."""
        self.last_seq = self.wal.append(lambda seq: ResetRecord(seq, seed))
        return self.last_seq

    def append_update(self, layers: tuple[dict[str, float], ...]) -> int:
        """Log a hyper-parameter update before it is applied."""
        self.last_seq = self.wal.append(lambda seq: UpdateRecord(seq, layers))
        return self.last_seq

    def append_restore(self, snapshot_id: str) -> int:
        """Log a restore before it is applied (the snapshot must exist)."""
        self.snapshot_path(snapshot_id)
        self.last_seq = self.wal.append(lambda seq: RestoreRecord(seq, snapshot_id))
        return self.last_seq

    # -- snapshots ---------------------------------------------------------------------------------

    def write_snapshot(self, step: int, arrays: dict[str, np.ndarray], header: dict,
                       seq: int | None = None) -> snapshots.SnapshotInfo:
        """Persist a state covering the log up to `seq` (default: everything logged), then
        prune old snapshots and delete the log segments it covers."""
        seq = self.last_seq if seq is None else seq
        self.wal.flush()
        info = snapshots.write_snapshot(self.snapshot_dir, seq, step, arrays,
                                        {**header, "model": self.name})
        self.last_snapshot = info
        snapshots.prune(self.snapshot_dir, self.durability.keep_snapshots)
        self.wal.drop_covered(seq)
        return info

    def snapshot_path(self, snapshot_id: str) -> Path:
        """The file of snapshot `snapshot_id`; KeyError if there is none."""
        if not re.fullmatch(r"[0-9]{1,20}", snapshot_id):  # ASCII digits only: never a path
            raise KeyError(snapshot_id)
        path = self.snapshot_dir / f"{snapshot_id}{snapshots.SUFFIX}"
        if not path.exists():
            raise KeyError(snapshot_id)
        return path

    def read_snapshot(self, snapshot_id: str) -> tuple[dict, dict[str, np.ndarray]]:
        """(header, arrays) of snapshot `snapshot_id`."""
        return snapshots.read_snapshot(self.snapshot_path(snapshot_id))

    def list_snapshots(self) -> list[snapshots.SnapshotInfo]:
        """Every kept snapshot that verifies, oldest first (safe beside the model's writer writing
        and pruning); one that fails its checks is left out with a warning, never fails
        the listing (restoring to it stays refused)."""
        found = []
        for path in snapshots.list_snapshots(self.snapshot_dir):
            try:
                found.append(snapshots.info(path))
            except FileNotFoundError:  # pruned meanwhile
                continue
            except snapshots.CorruptSnapshotError as err:
                log.warning("model %r: not listing a corrupt snapshot: %s", self.name, err)
        return found

    def close(self) -> None:
        """Flush and close the log."""
        self.wal.close()


class DataDir:
    """The server's data directory: the process lock and one `ModelStore` per model."""

    def __init__(self, root: Path, durability: Durability | None = None,
                 on_failure: Callable[[BaseException], None] | None = None):
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.durability = durability or Durability()
        self._on_failure = on_failure
        self._lock = DataDirLock(self.root)

    def open(self) -> None:
        """Take the lock and finish or roll back model creations/deletions a crash cut short."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        for leftover in self.models_dir.iterdir():
            if leftover.name.startswith((_CREATING, _DELETING)):
                shutil.rmtree(leftover)
                log.warning("data directory: removed unfinished %s", leftover.name)

    def close(self) -> None:
        """Release the lock."""
        self._lock.release()

    def model_names(self) -> list[str]:
        """Names of the models stored here."""
        if not self.models_dir.exists():
            return []
        return sorted(p.name for p in self.models_dir.iterdir()
                      if not p.name.startswith(".") and (p / CONFIG).exists())

    def store(self, name: str) -> ModelStore:
        """The store of an existing model."""
        return ModelStore(self.models_dir / name, self.durability, self._on_failure)

    def create_model(self, name: str, config: dict,
                     initial: tuple[int, dict[str, np.ndarray], dict] | None = None
                     ) -> ModelStore:
        """Create a model's directory with its config, atomically.

        `initial` (step, arrays, header) is a state the model starts from (CreateModel
        with layers): it is written as the model's first snapshot (covering no log record)
        inside the directory before it is renamed into place, so the model appears with
        that state or not at all.
        """
        staging = self.models_dir / f"{_CREATING}{name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        atomic_write(staging / CONFIG, json.dumps(config, indent=2, sort_keys=True).encode())
        (staging / "wal").mkdir()
        (staging / "snapshots").mkdir()
        if initial is not None:
            step, arrays, header = initial
            try:
                snapshots.write_snapshot(staging / "snapshots", 0, step, arrays,
                                         {**header, "model": name})
            except OSError:  # e.g. a full disk: nothing was created
                shutil.rmtree(staging, ignore_errors=True)
                raise
        staging.rename(self.models_dir / name)
        fsync_directory(self.models_dir)
        return self.store(name)

    def delete_model(self, name: str) -> None:
        """Remove a model and everything it stored, atomically."""
        doomed = self.models_dir / f"{_DELETING}{name}-{uuid.uuid4().hex[:8]}"
        (self.models_dir / name).rename(doomed)
        fsync_directory(self.models_dir)
        shutil.rmtree(doomed)
