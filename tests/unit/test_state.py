"""Durability building blocks: records, the log and its repair, snapshots, lock, data dir."""

import errno
import os
import threading

import numpy as np
import pytest

from service.answer import Answer
from service.state import snapshot as snap
from service.state.dedup import RequestWindow
from service.state.lock import DataDirLock, DataDirLockedError
from service.state.log_reader import CorruptLogError
from service.state.records import (
    BatchRecord,
    RequestSpan,
    ResetRecord,
    RestoreRecord,
    decode_body,
    encode,
)
from service.state.store import DataDir, Durability
from service.state.wal import DurabilityError, WriteAheadLog, segment_paths

RNG = np.random.default_rng(3)


def batch(seq, n=3, width=4, ids=()):
    spans = tuple(RequestSpan(rid, i, 1) for i, rid in enumerate(ids))
    return BatchRecord(seq, RNG.normal(size=(n, width)).astype(np.float32),
                       RNG.random(n) < 0.5, spans)


def same(a, b):
    assert type(a) is type(b) and a.seq == b.seq
    if isinstance(a, BatchRecord):
        assert np.array_equal(a.samples, b.samples) and np.array_equal(a.learn, b.learn)
        assert a.requests == b.requests
    else:
        assert a == b


def write_log(directory, records, **kwargs):
    wal = WriteAheadLog(directory, **kwargs)
    assert list(wal.recover()) == []
    for record in records:
        assert wal.append(lambda seq, r=record: r) == record.seq
    wal.close()


def read_log(directory, covered=0):
    wal = WriteAheadLog(directory)
    records = list(wal.recover(covered))
    return wal, records


def test_records_round_trip_through_their_bytes():
    for record in (batch(1, ids=("a", "béta", "")), ResetRecord(2, None), ResetRecord(3, 42),
                   RestoreRecord(4, "0000000000000003")):
        same(decode_body(encode(record)[8:]), record)


def test_the_log_reads_back_every_record_and_continues_the_sequence(tmp_path):
    records = [batch(1), ResetRecord(2, 7), batch(3, ids=("x",)), RestoreRecord(4, "1")]
    write_log(tmp_path, records)
    wal, back = read_log(tmp_path)
    for a, b in zip(back, records, strict=True):
        same(a, b)
    assert wal.append(lambda seq: ResetRecord(seq, None)) == 5
    wal.close()


def test_a_torn_last_record_is_cut_at_every_byte_offset(tmp_path):
    records = [batch(1), batch(2), batch(3, n=5)]
    write_log(tmp_path, records)
    (segment,) = segment_paths(tmp_path)
    data = segment.read_bytes()
    last_start = len(data) - len(encode(records[2]))
    for cut in range(last_start, len(data)):
        segment.write_bytes(data[:cut])
        wal, back = read_log(tmp_path)
        assert [r.seq for r in back] == [1, 2], cut
        assert (wal.torn_tail is not None) == (cut > last_start)
        assert segment.stat().st_size == last_start
        assert wal.append(lambda seq: ResetRecord(seq, None)) == 3
        wal.close()


def test_a_zero_filled_tail_is_a_torn_write(tmp_path):
    write_log(tmp_path, [batch(1), batch(2)])
    (segment,) = segment_paths(tmp_path)
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(b"\0" * 100)
    wal, back = read_log(tmp_path)
    assert [r.seq for r in back] == [1, 2]
    assert segment.stat().st_size == size
    wal.close()


def test_a_flipped_byte_in_an_earlier_record_refuses_to_start_naming_file_and_offset(tmp_path):
    records = [batch(1), batch(2), batch(3)]
    write_log(tmp_path, records)
    (segment,) = segment_paths(tmp_path)
    data = bytearray(segment.read_bytes())
    second = len(encode(records[0]))
    for position in (0, 5, second + 20):  # length field, CRC field, body
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        segment.write_bytes(bytes(damaged))
        with pytest.raises(CorruptLogError) as info:
            list(WriteAheadLog(tmp_path).recover())
        expected = 0 if position < second else second
        assert info.value.offset == expected
        assert str(segment) in str(info.value) and f"offset {expected}" in str(info.value)
    segment.write_bytes(bytes(data))  # untouched file still reads


def test_damage_in_an_older_segment_is_corruption_even_at_its_end(tmp_path):
    write_log(tmp_path, [batch(i, n=20) for i in range(1, 7)], segment_bytes=1000)
    paths = segment_paths(tmp_path)
    assert len(paths) > 2
    first = paths[0]
    first.write_bytes(first.read_bytes()[:-3])
    with pytest.raises(CorruptLogError, match=str(first)):
        list(WriteAheadLog(tmp_path).recover())


def test_segments_roll_and_covered_segments_are_dropped(tmp_path):
    write_log(tmp_path, [batch(i, n=20) for i in range(1, 9)], segment_bytes=1000)
    wal, back = read_log(tmp_path)
    assert [r.seq for r in back] == list(range(1, 9))
    before = segment_paths(tmp_path)
    wal.drop_covered(5)
    after = segment_paths(tmp_path)
    assert len(after) < len(before) and after[-1] == before[-1]
    wal.close()
    _, rest = read_log(tmp_path, covered=5)
    assert rest[0].seq <= 6 and rest[-1].seq == 8
    with pytest.raises(CorruptLogError, match="newest snapshot covers only up to sequence 0"):
        read_log(tmp_path)  # without the snapshot, the dropped records are missing


def test_a_failed_fsync_poisons_the_log_and_is_never_retried(tmp_path, monkeypatch):
    failures = []
    wal = WriteAheadLog(tmp_path, on_failure=failures.append)
    list(wal.recover())
    wal.append(lambda seq: ResetRecord(seq, None))

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", no_space)
    with pytest.raises(DurabilityError, match="No space left"):
        wal.append(lambda seq: ResetRecord(seq, None))
    monkeypatch.undo()
    with pytest.raises(DurabilityError, match="unusable"):
        wal.append(lambda seq: ResetRecord(seq, None))
    assert len(failures) == 1 and failures[0].errno == errno.ENOSPC


def test_an_everysec_flush_never_stops_appends_and_a_second_waits_for_its_fsync(
    tmp_path, monkeypatch
):
    wal = WriteAheadLog(tmp_path, fsync="everysec")
    list(wal.recover())
    first = batch(1)
    wal.append(lambda seq: first)
    inside, release = threading.Event(), threading.Event()

    def slow_fsync(fd):  # a slow disk: the fsync returns only when the test says so
        inside.set()
        assert release.wait(600)  # longer than the append is given below

    monkeypatch.setattr(os, "fdatasync", slow_fsync)
    flusher = threading.Thread(target=wal.flush)
    flusher.start()
    assert inside.wait(60)
    # a second flush (a snapshot's) with nothing new written: it may not return, the
    # snapshot then trusting the log, before the first one's fsync is done
    second_flush = threading.Thread(target=wal.flush)
    second_flush.start()
    second_flush.join(0.5)
    second = batch(2)
    appender = threading.Thread(target=wal.append, args=(lambda seq: second,))
    appender.start()
    appender.join(60)
    try:
        assert second_flush.is_alive(), "a second flush returned during the first's fsync"
        assert not appender.is_alive(), "the append waited for the flush's fsync"
    finally:
        release.set()
        flusher.join(60)
        second_flush.join(60)
    monkeypatch.undo()
    wal.close()  # flushes the second record too
    _, back = read_log(tmp_path)
    for want, got in zip([first, second], back, strict=True):
        same(want, got)


def test_a_failed_everysec_flush_poisons_the_log(tmp_path, monkeypatch):
    failures = []
    wal = WriteAheadLog(tmp_path, fsync="everysec", on_failure=failures.append)
    list(wal.recover())
    wal.append(lambda seq: ResetRecord(seq, None))

    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    wal.flush()
    monkeypatch.undo()
    with pytest.raises(DurabilityError, match="unusable"):
        wal.append(lambda seq: ResetRecord(seq, None))
    assert len(failures) == 1 and failures[0].errno == errno.EIO
    wal.close()


def test_a_write_refused_for_lack_of_space_is_cut_back_and_the_log_stays_usable(
    tmp_path, monkeypatch
):
    from service.state.wal import LogFullError

    failures = []
    wal = WriteAheadLog(tmp_path, on_failure=failures.append, segment_bytes=400)
    list(wal.recover())
    first = batch(1)
    wal.append(lambda seq: first)
    real_write = os.write

    def torn_then_full(fd, data):
        real_write(fd, bytes(data[:5]))  # part of the record lands, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", torn_then_full)
    with pytest.raises(LogFullError, match="nothing was logged"):
        wal.append(lambda seq: batch(seq))
    with pytest.raises(LogFullError):  # also when the record would start a new segment
        wal.append(lambda seq: batch(seq, n=20))
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 10, 1, 1,
                                                                         0, 0, 0, 0, 255)))
    assert not wal.has_space() and wal.out_of_space is not None
    monkeypatch.undo()
    assert wal.append(lambda seq: ResetRecord(seq, 5)) == 2  # the same sequence, retried
    assert wal.out_of_space is None and wal.has_space()
    wal.close()
    assert failures == []  # never fatal
    _, back = read_log(tmp_path)
    assert [r.seq for r in back] == [1, 2] and back[1] == ResetRecord(2, 5)


def test_snapshots_round_trip_and_verify_their_checksum(tmp_path):
    arrays = {"layer0.kernel": RNG.normal(size=(4, 2)).astype(np.float32),
              "layer0.step": np.array(7, np.int64)}
    info = snap.write_snapshot(tmp_path, 12, 7, arrays, {"counters": [1, 2]})
    assert info.snapshot_id == "0000000000000012"
    meta, back = snap.read_snapshot(info.path)
    assert meta["seq"] == 12 and meta["step"] == 7 and meta["counters"] == [1, 2]
    assert all(np.array_equal(back[k], v) for k, v in arrays.items())
    data = bytearray(info.path.read_bytes())
    data[len(data) // 2] ^= 1
    info.path.write_bytes(bytes(data))
    with pytest.raises(snap.CorruptSnapshotError, match="checksum"):
        snap.read_snapshot(info.path)


def test_snapshot_files_never_hold_pickles(tmp_path):
    with pytest.raises(ValueError):
        snap.write_snapshot(tmp_path, 1, 0, {"evil": np.array([object()], dtype=object)})
    assert not snap.list_snapshots(tmp_path)


def test_temp_files_are_never_listed_and_are_cleaned_and_old_snapshots_pruned(tmp_path):
    for seq in range(1, 6):
        snap.write_snapshot(tmp_path, seq, seq, {"x": np.zeros(1)})
    (tmp_path / "0000000000000009.hsnap.tmp").write_bytes(b"half a snapshot")
    assert [p.stem for p in snap.list_snapshots(tmp_path)][-1] == "0000000000000005"
    assert snap.clean(tmp_path) and not list(tmp_path.glob("*.tmp"))
    snap.prune(tmp_path, 2)
    assert [p.stem for p in snap.list_snapshots(tmp_path)] == ["0000000000000004",
                                                              "0000000000000005"]


def test_one_process_per_data_directory(tmp_path):
    first = DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(DataDirLockedError, match=f"in use by another server \\(pid {os.getpid()}"):
        DataDirLock(tmp_path).acquire()
    first.release()
    second = DataDirLock(tmp_path)
    second.acquire()
    second.release()


class Recorder:
    """A recovery target that records what it was told."""

    def __init__(self):
        self.events = []

    def load_snapshot(self, header, arrays):
        self.events.append(("snapshot", header["seq"]))

    def replay_batch(self, record):
        self.events.append(("batch", record.seq))

    def replay_reset(self, seed):
        self.events.append(("reset", seed))


def test_a_model_recovers_from_its_newest_snapshot_plus_the_log_after_it(tmp_path):
    data = DataDir(tmp_path, Durability(segment_bytes=600))
    data.open()
    store = data.create_model("m", {"input_dim": 4})
    assert store.recover(Recorder()).replayed_records == 0
    for _ in range(4):
        store.append_batch(RNG.normal(size=(5, 4)).astype(np.float32), np.ones(5, bool))
    store.write_snapshot(20, {"x": np.zeros(1)}, {})
    store.append_reset(9)
    store.append_batch(RNG.normal(size=(5, 4)).astype(np.float32), np.ones(5, bool))
    store.append_restore("0000000000000004")
    store.close()
    data.close()

    data = DataDir(tmp_path)
    data.open()
    assert data.model_names() == ["m"]
    target = Recorder()
    report = data.store("m").recover(target)
    assert target.events == [("snapshot", 4), ("reset", 9), ("batch", 6), ("snapshot", 4)]
    assert report.last_seq == 7 and report.replayed_records == 3
    data.close()


def test_unfinished_creations_and_deletions_are_cleaned_on_open(tmp_path):
    data = DataDir(tmp_path)
    data.open()
    data.create_model("keep", {})
    data.create_model("gone", {})
    data.delete_model("gone")
    (data.models_dir / ".creating-half-1234").mkdir()
    (data.models_dir / ".deleted-old-1234").mkdir()
    data.close()
    data = DataDir(tmp_path)
    data.open()
    assert data.model_names() == ["keep"]
    assert sorted(p.name for p in data.models_dir.iterdir()) == ["keep"]
    data.close()


def test_the_request_window_is_bounded_and_survives_a_snapshot():
    window = RequestWindow(max_requests=3)
    for i in range(5):
        window.add(f"r{i}", Answer(np.full((2, 3), i, np.float32), np.array([i], np.int32), i))
    assert len(window) == 3 and window.get("r1") is None and window.get("r4").step == 4
    ids, arrays = window.to_arrays()
    copy = RequestWindow()
    copy.load_arrays(ids, arrays)
    assert ids == ["r2", "r3", "r4"]
    assert np.array_equal(copy.get("r3").activations, np.full((2, 3), 3, np.float32))
    assert copy.get("r3").skipped.tolist() == [3]


def test_the_request_window_is_bounded_in_bytes_ids_included():
    from service.state.dedup import ENTRY_OVERHEAD, entry_bytes

    window = RequestWindow(max_requests=100_000, max_bytes=64 * 1024)
    empty = Answer(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), 0)
    for i in range(3000):  # inference-only answers: nothing but the ids is stored
        window.add(f"{i:06d}".ljust(256, "x"), empty)
        assert window.nbytes <= window.max_bytes
    assert entry_bytes("é", empty) == 2 + ENTRY_OVERHEAD
    assert len(window) == 64 * 1024 // (256 + ENTRY_OVERHEAD)
    ids, _ = window.to_arrays()
    assert sum(len(i) for i in ids) < window.max_bytes  # and so is a snapshot's share


def test_check_data_reports_without_changing_anything(tmp_path):
    from service.state.inspect import inspect_data_dir

    data = DataDir(tmp_path)
    data.open()
    store = data.create_model("m", {"input_dim": 4, "layers": [{"units": 2}]})
    store.recover(Recorder())
    for _ in range(3):
        store.append_batch(RNG.normal(size=(2, 4)).astype(np.float32), np.ones(2, bool))
    store.write_snapshot(6, {"x": np.zeros(1)}, {})
    store.append_reset(None)
    store.close()
    data.close()
    (segment,) = segment_paths(tmp_path / "models/m/wal")
    segment.write_bytes(segment.read_bytes()[:-2])
    before = segment.read_bytes()
    (report,) = inspect_data_dir(tmp_path)
    assert report.ok and report.input_dim == 4 and report.layers == 1
    assert [s.seq for s in report.snapshots] == [3]
    assert report.records_to_replay == 0 and "dropped on start" in report.torn_tail
    assert segment.read_bytes() == before
    damaged = bytearray(before)
    damaged[10] ^= 1
    segment.write_bytes(bytes(damaged))
    segment.write_bytes(bytes(damaged) + encode(ResetRecord(5, None)))
    (report,) = inspect_data_dir(tmp_path)
    assert not report.ok and "corrupt at byte offset" in report.problems[0]
