"""Quality measures of a live model, checked against independent numpy computations."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from service.model import HebbianStack, StackConfig
from service.model.layer_state import state_key
from service.model.quality import LayerStatsValues, QualityTracker, orthonormality_error


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_stack(input_dim: int, *layers: dict) -> HebbianStack:
    return HebbianStack(StackConfig(input_dim, tuple(layers)))


def set_state(stack: HebbianStack, index: int, **fields) -> None:
    arrays = stack.state_arrays()
    for field, value in fields.items():
        key = state_key(index, field)
        arrays[key] = np.asarray(value, arrays[key].dtype)
    stack.load_state_arrays(arrays)


def set_kernel(stack: HebbianStack, index: int, kernel: np.ndarray) -> None:
    set_state(stack, index, kernel=kernel)


def pca_data(rng: np.random.Generator, variances: np.ndarray, n: int):
    """Zero-mean samples with the given principal variances along a random rotation."""
    dim = len(variances)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    samples = rng.normal(size=(n, dim)) * np.sqrt(variances) @ rotation.T
    return samples.astype(np.float32), rotation


def test_orthonormality_error_is_max_abs_deviation_of_gram_from_identity():
    kernel = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])  # (input 3, units 2)
    w = kernel.T  # rows = units
    expected = np.max(np.abs(w @ w.T - np.eye(2)))  # [[0, 1], [1, 1]] -> 1
    assert expected == 1.0
    assert orthonormality_error(kernel) == pytest.approx(expected)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 4)))
    assert orthonormality_error(q) < 1e-12
    assert orthonormality_error(2 * q) == pytest.approx(3.0)  # 4 I - I


def test_layer_stats_report_norms_and_orthonormality_of_the_live_kernel():
    stack = make_stack(3, dict(units=2, rule="sanger", lateral="inhibition", lateral_strength=0.5))
    kernel = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    set_kernel(stack, 0, kernel)
    (stats,) = QualityTracker(stack).layer_stats()
    assert stats.kernel_norm == pytest.approx(np.sqrt(3.0))
    assert stats.lateral_norm == pytest.approx(np.sqrt(2 * 0.5**2))
    assert stats.orthonormality_error == pytest.approx(1.0)
    # nothing observed yet: no error estimate, and nothing learned so no drift
    assert math.isnan(stats.reconstruction_error)
    assert math.isnan(stats.explained_variance)
    assert stats.weight_drift_per_second == 0.0


def test_first_observation_gives_the_energy_weighted_reconstruction_error():
    rng = np.random.default_rng(2)
    stack = make_stack(6, dict(units=3, rule="oja_subspace"))
    kernel = rng.normal(size=(6, 3))  # deliberately not orthonormal
    set_kernel(stack, 0, kernel)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    tracker = QualityTracker(stack)
    tracker.observe(x)
    (stats,) = tracker.layer_stats()
    k = kernel.astype(np.float32).astype(np.float64)
    xd = x.astype(np.float64)
    residual = xd - xd @ k @ k.T  # x - W^T W x per row, W = k^T
    expected = np.sum(residual**2) / np.sum(xd**2)
    assert stats.reconstruction_error == pytest.approx(expected, rel=1e-9)
    assert stats.explained_variance == pytest.approx(1.0 - expected, rel=1e-9)


def test_reconstruction_error_of_exact_pca_basis_is_the_unexplained_variance_share():
    rng = np.random.default_rng(3)
    variances = np.array([8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.125])
    samples, rotation = pca_data(rng, variances, 20_000)
    stack = make_stack(8, dict(units=3, rule="sanger"))
    set_kernel(stack, 0, rotation[:, :3])  # the top three principal directions
    clock = FakeClock()
    tracker = QualityTracker(stack, clock)
    for batch in np.split(samples, 625):  # 32 samples each
        clock.now += 1.0
        tracker.observe(batch)
    (stats,) = tracker.layer_stats()
    unexplained = variances[3:].sum() / variances.sum()  # 2/16 = 0.125
    assert stats.orthonormality_error < 1e-6
    assert stats.reconstruction_error == pytest.approx(unexplained, rel=0.1)
    assert stats.explained_variance == pytest.approx(1.0 - unexplained, rel=0.02)


def test_each_layer_is_measured_on_the_previous_layers_output():
    rng = np.random.default_rng(4)
    stack = make_stack(
        8, dict(units=5, rule="sanger", activation="tanh"), dict(units=2, rule="oja_subspace")
    )
    k0, k1 = rng.normal(size=(8, 5)) * 0.5, rng.normal(size=(5, 2))
    set_kernel(stack, 0, k0)
    set_kernel(stack, 1, k1)
    x = rng.normal(size=(10, 8)).astype(np.float32)
    tracker = QualityTracker(stack)
    tracker.observe(x)
    stats = tracker.layer_stats()
    h = np.tanh(x.astype(np.float64) @ k0.astype(np.float32))  # layer 0 output = layer 1 input
    k1 = k1.astype(np.float32).astype(np.float64)
    expected = np.sum((h - h @ k1 @ k1.T) ** 2) / np.sum(h**2)
    assert stats[1].reconstruction_error == pytest.approx(expected, rel=1e-5)


def test_observe_is_rate_limited():
    rng = np.random.default_rng(5)
    stack = make_stack(4, dict(units=2, rule="sanger"))
    clock = FakeClock()
    tracker = QualityTracker(stack, clock, min_interval=1.0)
    tracker.observe(rng.normal(size=(8, 4)).astype(np.float32))
    before = tracker.layer_stats()[0].reconstruction_error
    clock.now += 0.5
    tracker.observe(100 * rng.normal(size=(8, 4)).astype(np.float32))  # too soon: ignored
    assert tracker.layer_stats()[0].reconstruction_error == before
    clock.now += 0.6
    tracker.observe(rng.normal(size=(8, 4)).astype(np.float32))
    assert tracker.layer_stats()[0].reconstruction_error != before


def test_drift_is_the_relative_change_per_second_against_the_kernel_of_one_minute_ago():
    rng = np.random.default_rng(6)
    stack = make_stack(5, dict(units=3, rule="sanger"))
    k0 = stack.layer_states()[0].kernel.astype(np.float64)
    k1 = rng.normal(size=(5, 3)).astype(np.float32).astype(np.float64)
    change = np.linalg.norm(k1 - k0) / np.linalg.norm(k1)
    clock = FakeClock()
    tracker = QualityTracker(stack, clock)

    def drift_at(t: float) -> float:
        clock.now = 1000.0 + t
        return tracker.layer_stats()[0].weight_drift_per_second

    assert drift_at(0.0) == 0.0  # nothing observed: nothing learned
    tracker.observe(rng.normal(size=(4, 5)).astype(np.float32))  # first copy, at t = 0
    assert math.isnan(drift_at(0.5))  # no copy old enough to compare with
    for t in range(5, 30, 5):  # a kernel copy every 5 s
        assert drift_at(float(t)) == 0.0
    set_kernel(stack, 0, k1)
    # before a minute of history: the change since the oldest copy, per second
    assert drift_at(30.0) == pytest.approx(change / 30)
    for t in range(35, 85, 5):
        drift_at(float(t))
    assert drift_at(85.0) == pytest.approx(change / 60)  # vs the copy of t = 25, still k0
    assert drift_at(90.0) == pytest.approx(0.0)  # vs the copy of t = 30, already k1
    assert len(tracker._ring) <= 60 / 5 + 2  # memory stays bounded


def test_weights_replaced_before_the_first_observed_batch_are_not_drift():
    # A restarted server builds the tracker, then recovers (snapshot load, log replay):
    # the recovered kernel differs from the freshly initialised one, but nothing was learned.
    rng = np.random.default_rng(9)
    stack = make_stack(5, dict(units=3, rule="sanger"))
    clock = FakeClock()
    tracker = QualityTracker(stack, clock)
    set_kernel(stack, 0, rng.normal(size=(5, 3)))  # "recovery"
    for t in (1.0, 5.0, 30.0, 61.0, 120.0):
        clock.now = 1000.0 + t
        assert tracker.layer_stats()[0].weight_drift_per_second == 0.0
    tracker.observe(rng.normal(size=(4, 5)).astype(np.float32))  # live learning starts
    clock.now += 10.0
    assert tracker.layer_stats()[0].weight_drift_per_second == 0.0  # the kernel is unchanged


def test_history_is_forgotten_when_the_step_goes_back():
    rng = np.random.default_rng(7)
    stack = make_stack(4, dict(units=2, rule="sanger"))
    clock = FakeClock()
    tracker = QualityTracker(stack, clock)
    set_state(stack, 0, step=500)
    tracker.observe(rng.normal(size=(8, 4)).astype(np.float32))
    stack.reset(seed=11)  # step back to 0, new kernel
    clock.now += 10.0
    x = rng.normal(size=(8, 4)).astype(np.float32)
    tracker.observe(x)
    (stats,) = tracker.layer_stats()
    fresh = QualityTracker(stack, clock)
    fresh.observe(x)
    assert stats.reconstruction_error == pytest.approx(fresh.layer_stats()[0].reconstruction_error)
    assert math.isnan(stats.weight_drift_per_second)  # drift history restarted at the 2nd


def test_layer_stats_can_be_read_while_the_learner_observes():
    rng = np.random.default_rng(8)
    stack = make_stack(16, dict(units=4, rule="sanger"))
    tracker = QualityTracker(stack, min_interval=0.0, snapshot_interval=0.001)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                stats = tracker.layer_stats()
                assert len(stats) == 1 and isinstance(stats[0], LayerStatsValues)
        except BaseException as error:  # reported below
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(200):
            tracker.observe(rng.normal(size=(64, 16)).astype(np.float32))
    finally:
        stop.set()
        reader.join()
    assert not errors
    assert math.isfinite(tracker.layer_stats()[0].reconstruction_error)
