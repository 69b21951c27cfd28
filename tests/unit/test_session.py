"""The model session, without threads or sockets: micro-batches of whole requests, log
first, exactly-once, snapshots, and recovery through the same code that applied the
batches live."""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest

from service.errors import DomainError, NotFoundError, UnavailableError
from service.model import HebbianStack, StackConfig
from service.server.core.live_model import LiveModel
from service.server.core.session import ModelSession, SampleRequest, SnapshotSchedule
from service.server.core.snapshot_timer import SnapshotTimer
from service.server.observability.metrics import ServerMetrics
from service.state.records import BatchRecord, RequestSpan, ResetRecord
from service.state.store import DataDir, ModelStore
from service.state.wal import WriteAheadLog

CONFIG = StackConfig(6, ({"units": 3, "rule": "sanger", "learning_rate": 0.01, "seed": 5},))
RNG = np.random.default_rng(1)


class ProbedStore(ModelStore):
    """A real store that also notes the model's step whenever a batch is logged."""

    def __init__(self, store: ModelStore, stack: HebbianStack):
        super().__init__(store.directory, store.durability, None)
        self.stack, self.steps_at_log = stack, []

    def append_batch(self, samples, learn, requests=()):
        self.steps_at_log.append(self.stack.engine.step)
        return super().append_batch(samples, learn, requests)


@pytest.fixture
def data_dir(tmp_path):
    data = DataDir(tmp_path)
    data.open()
    data.create_model("m", CONFIG.to_dict())
    yield data
    data.close()


def make_session(data_dir, schedule=None, probe=False, store=None) -> ModelSession:
    stack = HebbianStack(CONFIG)
    store = store or data_dir.store("m")
    if probe:
        store = ProbedStore(store, stack)
    session = ModelSession("m", stack, store=store, observer=ServerMetrics().model("m"),
                           schedule=schedule)
    session.recover()
    return session


def process(session: ModelSession, x, learn=True, request_id=""):
    """One request alone; its answer (or raise its error)."""
    (result,) = session.process([SampleRequest(x, learn, request_id)])
    if isinstance(result, DomainError):
        raise result
    return result


def logged(data_dir) -> list:
    wal = WriteAheadLog(data_dir.store("m").directory / "wal")
    records = list(wal.recover())
    wal.close()
    return records


def samples(n):
    return RNG.normal(size=(n, 6)).astype(np.float32)


def test_requests_waiting_together_form_one_logged_micro_batch_with_per_request_answers(
    data_dir,
):
    session = make_session(data_dir, probe=True)
    parts = [samples(n) for n in (3, 2, 4)]
    learn = [True, False, True]
    ids = ["a", "", "c"]
    outcomes = session.process(
        [SampleRequest(x, f, i) for x, f, i in zip(parts, learn, ids, strict=True)]
    )
    session.close(final_snapshot=False)

    (record,) = logged(data_dir)
    np.testing.assert_array_equal(record.samples, np.concatenate(parts))
    assert record.learn.tolist() == [True] * 3 + [False] * 2 + [True] * 4
    spans = (RequestSpan("a", 0, 3), RequestSpan("", 3, 2), RequestSpan("c", 5, 4))
    assert record.requests == spans
    assert session.store.steps_at_log == [0]  # logged before it was applied
    assert [o.step for o in outcomes] == [3, 3, 7]
    twin = HebbianStack(CONFIG)
    expected = twin.engine.process(np.concatenate(parts), record.learn).activations
    np.testing.assert_array_equal(np.concatenate([o.activations for o in outcomes]), expected)
    status = session.status()
    assert (status.step, status.samples_inferred, status.samples_skipped) == (7, 2, 0)


def test_reset_is_logged_and_zeroes_the_counters(data_dir):
    session = make_session(data_dir)
    process(session, np.ones((5, 6), np.float32))
    status = session.reset(seed=11)
    session.close(final_snapshot=False)

    assert isinstance(logged(data_dir)[-1], ResetRecord) and logged(data_dir)[-1].seed == 11
    assert status.step == 0 and status.samples_inferred == 0
    assert status.config.layers[0]["seed"] == 11
    assert session.stack.engine.step == 0


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_log_write_fails_the_requests_and_leaves_the_model_untouched(
    data_dir, monkeypatch, code
):
    failures = []
    store = ModelStore(data_dir.store("m").directory, data_dir.durability, failures.append)
    session = make_session(data_dir, store=store)
    stack = session.stack
    before = stack.layer_states()[0].kernel

    def failing(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(UnavailableError, match=os.strerror(code)):
        process(session, np.ones((2, 6), np.float32))
    monkeypatch.undo()
    session.close(final_snapshot=False)
    assert len(failures) == (code != errno.ENOSPC)  # a full disk is not fatal, EIO is
    assert stack.engine.step == 0
    np.testing.assert_array_equal(stack.layer_states()[0].kernel, before)


def test_on_a_full_disk_learning_and_resets_are_refused_and_inference_is_answered(
    data_dir, monkeypatch
):
    session = make_session(data_dir)
    process(session, samples(2), request_id="before")
    real_write = os.write

    def full_disk(fd, data):
        if len(data) > 8:  # a torn write: part of the record lands, then the disk is full
            real_write(fd, bytes(data[:8]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    x = samples(3)
    learning, with_id, reading = session.process([
        SampleRequest(x, True), SampleRequest(x, False, "needs-a-record"), SampleRequest(x, False)
    ])
    assert isinstance(learning, UnavailableError)
    assert "nothing was logged or applied" in learning.message
    assert isinstance(with_id, UnavailableError)
    # needs no record: answered from the weights
    assert reading.step == 2 and reading.activations.shape == (3, 3)
    with pytest.raises(UnavailableError, match="Reset not logged, nothing changed"):
        session.reset(3)
    monkeypatch.undo()
    assert process(session, x, request_id="after").step == 5
    session.close(final_snapshot=False)
    # the refused write was cut back: the log holds exactly the two acknowledged batches
    assert [r.requests[0].request_id for r in logged(data_dir)] == ["before", "after"]


def test_a_repeated_request_id_gets_the_first_answer_and_is_applied_once(data_dir):
    session = make_session(data_dir)
    x = samples(4)
    first = process(session, x, request_id="sensor-7:41")
    again = process(session, samples(4), request_id="sensor-7:41")
    twice = session.process([SampleRequest(x, True, "twice")] * 2)  # in one batch
    session.close(final_snapshot=False)

    assert again.step == first.step == 4
    np.testing.assert_array_equal(again.activations, first.activations)
    assert twice[0].step == twice[1].step == 8
    assert session.status().step == 8
    assert sum(len(r.samples) for r in logged(data_dir) if isinstance(r, BatchRecord)) == 8


def test_recovery_replays_the_log_to_bit_identical_weights_counters_and_request_ids(data_dir):
    live = make_session(data_dir)
    for i in range(30):
        x = samples(int(RNG.integers(1, 9)))
        process(live, x, bool(i % 4), request_id=f"r{i}" if i % 3 else "")
        if i == 12:
            live.reset(seed=3)
    bad = samples(3)
    bad[1] = 1e30  # refused as non-finite, and counted
    process(live, bad)
    live.close(final_snapshot=False)  # as after a crash: no final snapshot

    recovered = make_session(data_dir)
    for a, b in zip(live.stack.state_arrays().values(), recovered.stack.state_arrays().values(),
                    strict=True):
        assert np.array_equal(a, b)
    assert recovered.status().step == live.status().step
    assert recovered.status().samples_inferred == live.status().samples_inferred
    assert recovered.status().samples_skipped == live.status().samples_skipped == 1
    repeat = process(recovered, samples(2), request_id="r29")
    recovered.close()
    assert repeat.step < live.status().step  # answered from the window, not applied


def test_snapshots_follow_the_schedule_and_recovery_starts_from_the_newest(data_dir):
    session = make_session(data_dir, SnapshotSchedule(every_samples=20, every_seconds=3600))
    for _ in range(10):
        process(session, samples(7))
        session.snapshot_if_due()  # what the model's holder does after each batch
    session.close()  # graceful: a final snapshot
    store = data_dir.store("m")
    kept = store.list_snapshots()
    assert len(kept) == data_dir.durability.keep_snapshots
    assert kept[-1].step == 70

    recovered = make_session(data_dir)
    assert recovered.status().step == 70
    assert recovered.status().last_snapshot.snapshot_id == kept[-1].snapshot_id


def test_a_failed_scheduled_snapshot_is_retried_later_not_after_every_batch(
    data_dir, monkeypatch
):
    session = make_session(data_dir, SnapshotSchedule(every_samples=1, every_seconds=0.0))
    attempts = []

    def full_disk(*args, **kwargs):
        attempts.append(time.monotonic())
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session.store, "write_snapshot", full_disk)
    for _ in range(5):  # every batch makes a snapshot due
        process(session, samples(2))
        session.snapshot_if_due()
    assert len(attempts) == 1
    assert 9 < session.seconds_to_snapshot() <= 10  # the retry is due later, not now
    monkeypatch.undo()
    session.close(final_snapshot=False)
    assert session.status().step == 10


def test_an_idle_model_takes_its_time_based_snapshot(data_dir):
    session = make_session(data_dir, SnapshotSchedule(every_samples=10**9, every_seconds=0.2))
    model = LiveModel(session, metrics=ServerMetrics().model("m"), max_batch=64,
                      max_queued_samples=1000)
    timer = SnapshotTimer(lambda: [model])
    timer.start()
    model.process(samples(3), True)
    deadline = time.monotonic() + 30
    while model.status().last_snapshot is None and time.monotonic() < deadline:
        time.sleep(0.05)
    timer.stop()
    assert model.status().last_snapshot.step == 3
    model.stop(final_snapshot=False)


def test_restore_goes_back_to_a_snapshot_and_survives_recovery(data_dir):
    session = make_session(data_dir)
    process(session, samples(5))
    info, arrays = session.snapshot()
    process(session, samples(6))
    status = session.restore(info.snapshot_id)
    with pytest.raises(NotFoundError, match="has no snapshot"):
        session.restore("0000000000000999")
    session.close(final_snapshot=False)
    assert status.step == 5
    assert np.array_equal(session.stack.state_arrays()["layer0.kernel"], arrays["layer0.kernel"])

    recovered = make_session(data_dir)
    assert recovered.status().step == 5
    assert np.array_equal(recovered.stack.state_arrays()["layer0.kernel"],
                          arrays["layer0.kernel"])


def test_a_learning_rate_too_large_for_the_data_is_reported_once_with_the_numbers(
    data_dir, caplog
):
    session = make_session(data_dir)  # sanger, learning_rate 0.01
    with caplog.at_level("WARNING", logger="service.server.core.session"):
        process(session, samples(3) * 20)  # ||x||^2 ~ 2400: 0.01 * 2400 >> 1
        process(session, samples(3) * 20)
    warnings = [r.getMessage() for r in caplog.records if "learning_rate" in r.getMessage()]
    assert len(warnings) == 1
    assert "model 'm': learning_rate=0.01 is too large for this input" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="service.server.core.session"):
        session.reset(seed=1)
        process(session, samples(3) * 0.1)  # small again after a reset: nothing to say
    assert not [r for r in caplog.records if "learning_rate" in r.getMessage()]
    session.close(final_snapshot=False)
