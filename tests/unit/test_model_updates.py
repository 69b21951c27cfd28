"""Hyper-parameter updates (logged, replayed at their position, carried by snapshots), the
portable weights file, and the refused-updates tracker."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInputError
from service.model import HebbianStack, StackConfig
from service.model.updates import UpdateError, check_changes
from service.model.weights_file import FORMAT, WeightsFileError, load_weights, save_weights
from service.server.core.live_model import LiveModel
from service.server.core.refusals import RefusalTracker
from service.server.core.session import ModelSession
from service.server.observability.metrics import ServerMetrics
from service.state import records
from service.state.records import BatchRecord, ResetRecord, UpdateRecord
from service.state.store import DataDir
from service.state.wal import WriteAheadLog

CONFIG = StackConfig(6, ({"units": 3, "rule": "sanger", "learning_rate": 0.01, "seed": 5},))
RNG = np.random.default_rng(4)
FAST = ({"learning_rate": 0.05, "decay_steps": 100.0},)


@pytest.fixture
def data_dir(tmp_path):
    data = DataDir(tmp_path)
    data.open()
    data.create_model("m", CONFIG.to_dict())
    yield data
    data.close()


def make_model(data_dir) -> LiveModel:
    metrics = ServerMetrics().model("m")
    session = ModelSession("m", HebbianStack(CONFIG), store=data_dir.store("m"),
                           observer=metrics)
    session.recover()
    return LiveModel(session, metrics=metrics, max_batch=64, max_queued_samples=1000)


def samples(n: int) -> np.ndarray:
    return RNG.normal(size=(n, 6)).astype(np.float32)


def offline(batches_before, batches_after) -> HebbianStack:
    """What the model is after the batches, the update applied between them."""
    stack = HebbianStack(CONFIG)
    for x in batches_before:
        stack.engine.process(x)
    stack.update(FAST)
    for x in batches_after:
        stack.engine.process(x)
    return stack


def assert_same_state(a: HebbianStack, b: HebbianStack) -> None:
    for (key, ours), theirs in zip(a.state_arrays().items(), b.state_arrays().values(),
                                   strict=True):
        assert np.array_equal(ours, theirs), key


def test_an_update_record_round_trips_and_older_kinds_are_unchanged():
    update = UpdateRecord(7, ({"learning_rate": 0.5}, {}))
    assert records.decode_body(records.encode(update)[records.FRAME.size:]) == update
    reset = records.encode(ResetRecord(3, None))
    assert records.decode_body(reset[records.FRAME.size:]) == ResetRecord(3, None)


def test_an_update_keeps_the_state_and_the_new_rate_drives_later_learning():
    before, after = [samples(10)], [samples(10)]
    stack = HebbianStack(CONFIG)
    stack.engine.process(before[0])
    kernel = stack.layer_states()[0].kernel.copy()

    stack.update(FAST)

    assert np.array_equal(stack.layer_states()[0].kernel, kernel)
    assert stack.engine.step == 10 and stack.params[0].learning_rate == 0.05
    assert stack.resolved_config().layers[0]["decay_steps"] == 100.0
    stack.engine.process(after[0])
    slow = HebbianStack(CONFIG)
    for x in before + after:
        slow.engine.process(x)
    assert not np.array_equal(stack.layer_states()[0].kernel, slow.layer_states()[0].kernel)


@pytest.mark.parametrize(("changes", "words"), [
    (({"units": 4},), "'units' cannot be updated"),
    (({"rule": "oja"},), "'rule' cannot be updated"),
    (({}, {}), "one entry per layer"),
])
def test_only_rate_and_schedule_settings_can_change(changes, words):
    with pytest.raises(UpdateError, match=words):
        check_changes(1, changes)


def test_a_bad_value_is_refused_before_anything_is_logged(data_dir):
    model = make_model(data_dir)
    with pytest.raises(InvalidInputError, match="learning_rate"):
        model.update(({"learning_rate": float("nan")},))
    model.stop(final_snapshot=False)
    wal = WriteAheadLog(data_dir.store("m").directory / "wal")
    assert list(wal.recover()) == []
    wal.close()


def test_replay_applies_a_logged_update_at_its_position(data_dir):
    before, after = [samples(5), samples(7)], [samples(6)]
    live = make_model(data_dir)
    for x in before:
        live.process(x, True)
    live.update(FAST)
    for x in after:
        live.process(x, True)
    live.stop(final_snapshot=False)  # as after a crash: the update is in the log only
    wal = WriteAheadLog(data_dir.store("m").directory / "wal")
    kinds = [type(record) for record in wal.recover()]
    wal.close()
    assert kinds == [BatchRecord, BatchRecord, UpdateRecord, BatchRecord]

    recovered = make_model(data_dir)

    assert_same_state(recovered.stack, offline(before, after))
    assert recovered.resolved_config() == live.resolved_config()
    assert recovered.resolved_config().layers[0]["learning_rate"] == 0.05


def test_a_snapshot_after_an_update_carries_the_updated_config(data_dir):
    before, after = [samples(5)], [samples(4)]
    live = make_model(data_dir)
    live.process(before[0], True)
    live.update(FAST)
    info, _ = live.snapshot()
    live.process(after[0], True)
    live.stop(final_snapshot=False)

    recovered = make_model(data_dir)  # the snapshot, then one batch from the log

    assert recovered.status().last_snapshot.snapshot_id == info.snapshot_id
    assert recovered.resolved_config().layers[0]["learning_rate"] == 0.05
    assert_same_state(recovered.stack, offline(before, after))


def test_restoring_a_snapshot_from_before_an_update_brings_its_rates_back(data_dir):
    live = make_model(data_dir)
    live.process(samples(5), True)
    info, _ = live.snapshot()
    live.update(FAST)

    status = live.restore(info.snapshot_id)

    assert status.config.layers[0]["learning_rate"] == 0.01
    live.stop()


def test_the_weights_file_round_trips_without_pickle(tmp_path):
    stack = HebbianStack(CONFIG)
    stack.engine.process(samples(8))
    path = tmp_path / "m.npz"

    save_weights(path, stack.resolved_config().to_dict(), stack.state_arrays())

    with np.load(path, allow_pickle=False) as npz:
        assert str(npz["format"]) == FORMAT
        assert sorted(npz.files) == sorted(["format", "config", *stack.state_arrays()])
    config, arrays = load_weights(path)
    assert StackConfig.from_dict(config) == stack.resolved_config()
    for key, value in stack.state_arrays().items():
        assert np.array_equal(arrays[key], value) and arrays[key].dtype == value.dtype


def test_a_file_of_another_format_is_refused_with_the_reason(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, kernel=np.zeros((2, 2)))
    with pytest.raises(WeightsFileError, match="format"):
        load_weights(other)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(WeightsFileError, match=r"not a \.npz"):
        load_weights(tmp_path / "text.npz")
    objects = tmp_path / "objects.npz"
    np.savez(objects, format=np.array(FORMAT), config=np.array([{"a": 1}], dtype=object))
    with pytest.raises(WeightsFileError):
        load_weights(objects)


def test_the_tracker_says_once_when_most_recent_updates_are_refused():
    tracker = RefusalTracker(window=100, threshold=0.5, min_samples=20)
    assert not tracker.observe(10, 10).refusing  # too few samples to tell
    start = tracker.observe(10, 10)
    assert start.refusing and start.changed
    again = tracker.observe(50, 50)
    assert again.refusing and not again.changed
    for _ in range(5):
        change = tracker.observe(20, 0)
    assert not change.refusing and tracker.fraction == 0.0  # the refusals left the window
    tracker.observe(0, 0)  # a batch of inference only changes nothing
    assert tracker.fraction == 0.0
