"""Recovery tells a torn tail (only the last record of the newest segment) from a log
with a gap: a missing segment, a segment cut on a record boundary, a repeat or an empty
older segment refuse to start naming the file and the sequence, and `check-data`'s
report says the same."""

from __future__ import annotations

import numpy as np
import pytest

from service.state.inspect import inspect_model
from service.state.log_reader import CorruptLogError
from service.state.records import BatchRecord, encode
from service.state.wal import WriteAheadLog, segment_paths

RNG = np.random.default_rng(5)


def record(seq: int) -> BatchRecord:
    return BatchRecord(seq, RNG.normal(size=(20, 4)).astype(np.float32), np.ones(20, bool))


def write(directory, count: int = 12) -> list[BatchRecord]:
    """`count` records in segments of ~3 records each."""
    wal = WriteAheadLog(directory, segment_bytes=1200)
    assert list(wal.recover()) == []
    records = [record(i) for i in range(1, count + 1)]
    for r in records:
        wal.append(lambda seq, r=r: r)
    wal.close()
    assert len(segment_paths(directory)) >= 4
    return records


def refused(directory, covered: int = 0) -> CorruptLogError:
    with pytest.raises(CorruptLogError) as info:
        list(WriteAheadLog(directory).recover(covered))
    if not covered:  # check-data (no snapshot here) reports the same
        report = inspect_model(directory.parent)
        assert not report.ok and str(info.value) in report.problems
    return info.value


@pytest.fixture
def model_dir(tmp_path):
    directory = tmp_path / "m" / "wal"
    directory.mkdir(parents=True)
    return directory


def test_a_deleted_older_segment_is_a_gap_not_a_torn_tail(model_dir):
    write(model_dir)
    paths = segment_paths(model_dir)
    paths[-2].unlink()
    error = refused(model_dir)
    assert error.path == paths[-1]
    assert "starts at sequence" in error.reason and "a gap" in error.reason


def test_a_deleted_second_newest_segment_with_one_record_in_the_newest(model_dir):
    records = write(model_dir, 10)
    paths = segment_paths(model_dir)
    newest = paths[-1]
    one = encode(records[int(newest.name.removesuffix(".wal")) - 1])
    newest.write_bytes(one)  # the newest segment holds exactly one record
    paths[-2].unlink()
    error = refused(model_dir)
    assert error.path == newest and "a gap" in error.reason


def test_a_segment_cut_on_a_record_boundary_is_a_gap(model_dir):
    records = write(model_dir)
    paths = segment_paths(model_dir)
    middle = paths[1]
    first = int(middle.name.removesuffix(".wal"))
    middle.write_bytes(encode(records[first - 1]))  # keeps only its first record
    error = refused(model_dir)
    assert error.path == paths[2]
    assert f"ends at sequence {first}" in error.reason


def test_a_repeated_sequence_inside_a_segment_is_corruption(model_dir):
    records = write(model_dir)
    newest = segment_paths(model_dir)[-1]
    data = newest.read_bytes()
    newest.write_bytes(data + encode(records[-1]))  # the last record once more
    error = refused(model_dir)
    assert error.path == newest and "a repeat" in error.reason
    assert f"sequence {records[-1].seq} where {records[-1].seq + 1} was expected" in error.reason


def test_a_segment_whose_name_disagrees_with_its_first_record_is_corruption(model_dir):
    write(model_dir)
    paths = segment_paths(model_dir)
    renamed = paths[-1].with_name(f"{int(paths[-1].name[:-4]) + 1:020d}.wal")
    paths[-1].rename(renamed)
    error = refused(model_dir)
    assert error.path == renamed and "a gap" in error.reason


def test_an_empty_older_segment_is_corruption(model_dir):
    write(model_dir)
    paths = segment_paths(model_dir)
    last_first = int(paths[-1].name[:-4])
    paths[-1].write_bytes(b"")
    (model_dir / f"{last_first + 1:020d}.wal").write_bytes(b"")
    error = refused(model_dir)
    assert error.path == paths[-1] and "holds no record" in error.reason


def test_a_log_that_starts_after_the_snapshot_is_missing_records(model_dir):
    write(model_dir)
    paths = segment_paths(model_dir)
    paths[0].unlink()
    second = int(paths[1].name[:-4])
    error = refused(model_dir, covered=second - 2)
    assert f"starts at sequence {second}" in error.reason
    wal = WriteAheadLog(model_dir)
    seqs = [r.seq for r in wal.recover(second - 1)]  # covered by a snapshot: fine
    assert seqs[0] == second
    wal.close()


def test_the_torn_last_record_is_still_only_dropped(model_dir):
    records = write(model_dir)
    newest = segment_paths(model_dir)[-1]
    newest.write_bytes(newest.read_bytes()[:-7])
    wal = WriteAheadLog(model_dir)
    assert [r.seq for r in wal.recover()] == [r.seq for r in records[:-1]]
    assert wal.torn_tail is not None and wal.torn_tail.path == newest
    wal.close()


def test_a_log_compacted_past_its_end_continues_in_a_segment_named_after_the_snapshot(
    model_dir,
):
    write(model_dir)
    wal = WriteAheadLog(model_dir)
    assert len(list(wal.recover(covered=40))) == 12  # all covered by a snapshot at 40
    assert wal.append(lambda seq: record(seq)) == 41
    wal.close()
    (segment,) = segment_paths(model_dir)
    assert segment.name == f"{41:020d}.wal"
    again = WriteAheadLog(model_dir)
    assert [r.seq for r in again.recover(covered=40)] == [41]
    again.close()
