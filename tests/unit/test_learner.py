"""The per-model learner: micro-batches of whole requests, log first, exactly-once,
snapshots, and recovery through the same code that applied the batches live."""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest

from service.model import HebbianStack, StackConfig
from service.server.errors import ServiceError
from service.server.learner import Learner, SnapshotSchedule
from service.server.metrics import ServerMetrics
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


def make_learner(data_dir, schedule=None, probe=False, **kwargs) -> Learner:
    stack = HebbianStack(CONFIG)
    store = data_dir.store("m")
    if probe:
        store = ProbedStore(store, stack)
    learner = Learner("m", stack, store=store, metrics=ServerMetrics().model("m"),
                      max_batch=64, max_queued_samples=1000, warm_up=False,
                      schedule=schedule, **kwargs)
    learner.recover()
    return learner


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
    learner = make_learner(data_dir, probe=True)
    parts = [samples(n) for n in (3, 2, 4)]
    learn = [True, False, True]
    ids = ["a", "", "c"]
    # queued before the thread starts, so the learner finds all three waiting
    futures = [
        learner.submit(x, f, request_id=i) for x, f, i in zip(parts, learn, ids, strict=True)
    ]
    learner.start()
    outcomes = [f.result(timeout=60) for f in futures]
    learner.stop(final_snapshot=False)

    (record,) = logged(data_dir)
    np.testing.assert_array_equal(record.samples, np.concatenate(parts))
    assert record.learn.tolist() == [True] * 3 + [False] * 2 + [True] * 4
    spans = (RequestSpan("a", 0, 3), RequestSpan("", 3, 2), RequestSpan("c", 5, 4))
    assert record.requests == spans
    assert learner.store.steps_at_log == [0]  # logged before it was applied
    assert [o.step for o in outcomes] == [3, 3, 7]
    twin = HebbianStack(CONFIG)
    expected = twin.engine.process(np.concatenate(parts), record.learn).activations
    np.testing.assert_array_equal(np.concatenate([o.activations for o in outcomes]), expected)
    status = learner.status()
    assert (status.step, status.samples_inferred, status.samples_skipped) == (7, 2, 0)


@pytest.mark.parametrize("linger", [1.0, 0.0])
def test_a_busy_learner_lingers_into_fewer_larger_batches_with_the_same_answers(
    data_dir, linger
):
    """Adaptive micro-batching: requests trickling in while the learner is behind are
    gathered (up to `batch_linger`) into few logged batches; answers are unchanged."""
    learner = make_learner(data_dir, batch_linger=linger, linger_slice=0.2)
    learner.stack.engine.warm_up()  # every bucket compiled: batches are fast
    parts = [samples(1) for _ in range(20)]
    # waiting before the thread starts: its first take finds it behind
    futures = [learner.submit(x, True) for x in parts[:2]]
    learner.start()
    for x in parts[2:]:  # then one request per 20 ms, each well inside a linger slice
        time.sleep(0.02)
        futures.append(learner.submit(x, True))
    outcomes = [f.result(timeout=60) for f in futures]
    learner.stop(final_snapshot=False)

    records = logged(data_dir)
    batches = [len(r.samples) for r in records]
    if linger:  # one batch (every request came within a slice of the last); a stall of
        assert len(batches) <= 3  # the machine longer than a slice may split it
    else:  # the control: without lingering, about one batch per request after the first
        assert len(batches) >= 10
    assert sum(len(r.samples) for r in records) == len(parts)
    twin = HebbianStack(CONFIG)
    expected = twin.engine.process(np.concatenate(parts)).activations
    np.testing.assert_allclose(
        np.concatenate([o.activations for o in outcomes]), expected, rtol=1e-5, atol=1e-6
    )
    assert [o.step for o in outcomes] == list(range(1, len(parts) + 1))


def test_reset_runs_after_queued_requests_is_logged_and_zeroes_the_counters(data_dir):
    learner = make_learner(data_dir)
    learner.start()
    learner.submit(np.ones((5, 6), np.float32), True).result(timeout=60)
    status = learner.reset(seed=11).result(timeout=60)
    learner.stop(final_snapshot=False)

    assert isinstance(logged(data_dir)[-1], ResetRecord) and logged(data_dir)[-1].seed == 11
    assert status.step == 0 and status.samples_inferred == 0
    assert status.config.layers[0]["seed"] == 11
    assert learner.stack.engine.step == 0


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_log_write_fails_the_requests_and_leaves_the_model_untouched(
    data_dir, monkeypatch, code
):
    failures = []
    stack = HebbianStack(CONFIG)
    store = ModelStore(data_dir.store("m").directory, data_dir.durability, failures.append)
    learner = Learner("m", stack, store=store, metrics=ServerMetrics().model("m"),
                      max_batch=64, max_queued_samples=1000, warm_up=False)
    learner.recover()
    before = stack.layer_states()[0].kernel

    def failing(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", failing)
    learner.start()
    with pytest.raises(ServiceError, match=os.strerror(code)) as info:
        learner.submit(np.ones((2, 6), np.float32), True).result(timeout=60)
    monkeypatch.undo()
    learner.stop(final_snapshot=False)
    assert info.value.code.name == "UNAVAILABLE"
    assert len(failures) == (code != errno.ENOSPC)  # a full disk is not fatal, EIO is
    assert stack.engine.step == 0
    np.testing.assert_array_equal(stack.layer_states()[0].kernel, before)


def test_on_a_full_disk_learning_and_resets_are_refused_and_inference_is_answered(
    data_dir, monkeypatch
):
    learner = make_learner(data_dir)
    learner.start()
    learner.submit(samples(2), True, request_id="before").result(timeout=60)
    real_write = os.write

    def full_disk(fd, data):
        if len(data) > 8:  # a torn write: part of the record lands, then the disk is full
            real_write(fd, bytes(data[:8]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    x = samples(3)
    learning = learner.submit(x, True)
    with_id = learner.submit(x, False, request_id="needs-a-record")
    reading = learner.submit(x, False)
    with pytest.raises(ServiceError, match="nothing was logged or applied") as info:
        learning.result(timeout=60)
    assert info.value.code.name == "UNAVAILABLE"
    with pytest.raises(ServiceError):
        with_id.result(timeout=60)
    answer = reading.result(timeout=60)  # needs no record: answered from the weights
    assert answer.step == 2 and answer.activations.shape == (3, 3)
    with pytest.raises(ServiceError, match="Reset not logged, nothing changed") as info:
        learner.reset(3).result(timeout=60)
    assert info.value.code.name == "UNAVAILABLE"
    monkeypatch.undo()
    assert learner.submit(x, True, request_id="after").result(timeout=60).step == 5
    learner.stop(final_snapshot=False)
    # the refused write was cut back: the log holds exactly the two acknowledged batches
    assert [r.requests[0].request_id for r in logged(data_dir)] == ["before", "after"]


def test_a_repeated_request_id_gets_the_first_answer_and_is_applied_once(data_dir):
    learner = make_learner(data_dir)
    learner.start()
    x = samples(4)
    first = learner.submit(x, True, request_id="sensor-7:41").result(timeout=60)
    again = learner.submit(samples(4), True, request_id="sensor-7:41").result(timeout=60)
    both = [learner.submit(x, True, request_id="twice") for _ in range(2)]  # same batch
    twice = [f.result(timeout=60) for f in both]
    learner.stop(final_snapshot=False)

    assert again.step == first.step == 4
    np.testing.assert_array_equal(again.activations, first.activations)
    assert twice[0].step == twice[1].step == 8
    assert learner.status().step == 8
    assert sum(len(r.samples) for r in logged(data_dir) if isinstance(r, BatchRecord)) == 8


def test_recovery_replays_the_log_to_bit_identical_weights_counters_and_request_ids(data_dir):
    live = make_learner(data_dir)
    live.start()
    for i in range(30):
        x = samples(int(RNG.integers(1, 9)))
        live.submit(x, bool(i % 4), request_id=f"r{i}" if i % 3 else "").result(timeout=60)
        if i == 12:
            live.reset(seed=3).result(timeout=60)
    bad = samples(3)
    bad[1] = 1e30  # refused as non-finite, and counted
    live.submit(bad, True).result(timeout=60)
    live.stop(final_snapshot=False)  # as after a crash: no final snapshot

    recovered = make_learner(data_dir)
    for a, b in zip(live.stack.state_arrays().values(), recovered.stack.state_arrays().values(),
                    strict=True):
        assert np.array_equal(a, b)
    assert recovered.status().step == live.status().step
    assert recovered.status().samples_inferred == live.status().samples_inferred
    assert recovered.status().samples_skipped == live.status().samples_skipped == 1
    recovered.start()
    repeat = recovered.submit(samples(2), True, request_id="r29").result(timeout=60)
    recovered.stop()
    assert repeat.step < live.status().step  # answered from the window, not applied


def test_snapshots_follow_the_schedule_and_recovery_starts_from_the_newest(data_dir):
    learner = make_learner(data_dir, SnapshotSchedule(every_samples=20, every_seconds=3600))
    learner.start()
    for _ in range(10):
        learner.submit(samples(7), True).result(timeout=60)
    learner.stop()  # graceful: a final snapshot
    store = data_dir.store("m")
    kept = store.list_snapshots()
    assert len(kept) == data_dir.durability.keep_snapshots
    assert kept[-1].step == 70

    recovered = make_learner(data_dir)
    assert recovered.status().step == 70
    assert recovered.status().last_snapshot.snapshot_id == kept[-1].snapshot_id


def test_a_failed_scheduled_snapshot_is_retried_later_not_after_every_batch(
    data_dir, monkeypatch
):
    learner = make_learner(data_dir, SnapshotSchedule(every_samples=1, every_seconds=0.0))
    attempts = []

    def full_disk(*args, **kwargs):
        attempts.append(time.monotonic())
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(learner.store, "write_snapshot", full_disk)
    learner.start()
    for _ in range(5):  # every batch makes a snapshot due
        learner.submit(samples(2), True).result(timeout=60)
    time.sleep(0.5)  # idle with a snapshot due: no busy retries either
    assert len(attempts) == 1
    monkeypatch.undo()
    learner.stop(final_snapshot=False)
    assert learner.status().step == 10


def test_an_idle_model_takes_its_time_based_snapshot(data_dir):
    learner = make_learner(data_dir, SnapshotSchedule(every_samples=10**9, every_seconds=0.2))
    learner.start()
    learner.submit(samples(3), True).result(timeout=60)
    deadline = time.monotonic() + 30
    while learner.status().last_snapshot is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert learner.status().last_snapshot.step == 3
    learner.stop(final_snapshot=False)


def test_restore_goes_back_to_a_snapshot_and_survives_recovery(data_dir):
    learner = make_learner(data_dir)
    learner.start()
    learner.submit(samples(5), True).result(timeout=60)
    info, arrays = learner.snapshot().result(timeout=60)
    learner.submit(samples(6), True).result(timeout=60)
    status = learner.restore(info.snapshot_id).result(timeout=60)
    with pytest.raises(ServiceError, match="has no snapshot"):
        learner.restore("0000000000000999").result(timeout=60)
    learner.stop(final_snapshot=False)
    assert status.step == 5
    assert np.array_equal(learner.stack.state_arrays()["layer0.kernel"], arrays["layer0.kernel"])

    recovered = make_learner(data_dir)
    assert recovered.status().step == 5
    assert np.array_equal(recovered.stack.state_arrays()["layer0.kernel"],
                          arrays["layer0.kernel"])
