"""The per-model learner: micro-batches of whole requests, per-request steps, journal first."""

from __future__ import annotations

import numpy as np
import pytest

from service.model import HebbianStack, StackConfig
from service.server.learner import Learner
from service.server.metrics import ServerMetrics
from service.state import NullJournal
from service.state.records import RequestSpan

CONFIG = StackConfig(6, ({"units": 3, "rule": "sanger", "learning_rate": 0.01, "seed": 5},))


class RecordingJournal(NullJournal):
    """Keeps what was committed, and the model step at that moment."""

    def __init__(self, stack: HebbianStack):
        self.stack = stack
        self.batches: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.resets: list[int | None] = []

    def commit(self, model_name, samples, learn_flags, requests=()):
        self.batches.append((samples.copy(), learn_flags.copy(), self.stack.engine.step))
        self.spans = requests

    def record_reset(self, model_name, seed):
        self.resets.append(seed)


@pytest.fixture
def learner_and_journal():
    stack = HebbianStack(CONFIG)
    journal = RecordingJournal(stack)
    learner = Learner(
        "m", stack, journal=journal, metrics=ServerMetrics().model("m"),
        max_batch=64, max_queued_samples=1000, warm_up=False,
    )
    yield learner, journal
    learner.stop()


def test_requests_waiting_together_form_one_micro_batch_with_per_request_answers(
    learner_and_journal,
):
    learner, journal = learner_and_journal
    rng = np.random.default_rng(1)
    parts = [rng.normal(size=(n, 6)).astype(np.float32) for n in (3, 2, 4)]
    learn = [True, False, True]
    # queued before the thread starts, so the learner finds all three waiting
    ids = ["a", "", "c"]
    futures = [
        learner.submit(x, flag, request_id=i) for x, flag, i in zip(parts, learn, ids, strict=True)
    ]
    learner.start()
    outcomes = [f.result(timeout=60) for f in futures]

    assert len(journal.batches) == 1
    samples, flags, step_at_commit = journal.batches[0]
    np.testing.assert_array_equal(samples, np.concatenate(parts))
    assert flags.tolist() == [True] * 3 + [False] * 2 + [True] * 4
    assert step_at_commit == 0  # committed before it was applied
    assert journal.spans == (RequestSpan("a", 0, 3), RequestSpan("c", 5, 4))
    assert [o.step for o in outcomes] == [3, 3, 7]
    twin = HebbianStack(CONFIG)
    expected = twin.engine.process(np.concatenate(parts), flags).activations
    np.testing.assert_array_equal(np.concatenate([o.activations for o in outcomes]), expected)
    status = learner.status()
    assert (status.step, status.samples_inferred, status.samples_skipped) == (7, 2, 0)


def test_reset_runs_after_queued_requests_and_zeroes_the_counters(learner_and_journal):
    learner, journal = learner_and_journal
    learner.start()
    learner.submit(np.ones((5, 6), np.float32), True).result(timeout=60)

    status = learner.reset(seed=11).result(timeout=60)

    assert journal.resets == [11]
    assert status.step == 0 and status.samples_inferred == 0
    assert status.config.layers[0]["seed"] == 11
    assert learner.stack.engine.step == 0


def test_a_failing_journal_fails_the_requests_and_leaves_the_model_untouched():
    class Broken(NullJournal):
        def commit(self, model_name, samples, learn_flags, requests=()):
            raise OSError("disk full")

    stack = HebbianStack(CONFIG)
    before = stack.layers[0].kernel.numpy().copy()
    learner = Learner(
        "m", stack, journal=Broken(), metrics=ServerMetrics().model("m"),
        max_batch=64, max_queued_samples=1000, warm_up=False,
    )
    learner.start()
    try:
        with pytest.raises(Exception, match="disk full"):
            learner.submit(np.ones((2, 6), np.float32), True).result(timeout=60)
    finally:
        learner.stop()
    assert stack.engine.step == 0
    np.testing.assert_array_equal(stack.layers[0].kernel.numpy(), before)
