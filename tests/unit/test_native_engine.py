"""The native engine agrees with independent references for every combination of options.

rule x lateral x connectivity x activation x granularity, 2,000 samples each, against a
plain float64 numpy loop written from the formulas (`tests.unit.reference`); a sample of
the combinations against the Keras layer too. Then what only the native engine promises:
one compilation for every shape, the GIL released while it runs.
"""

import itertools
import threading
import time

import keras
import numpy as np
import pytest

from service.model import Hebbian, HebbianStack, StackConfig
from service.model.params import ACTIVATIONS, CONNECTIVITY, GRANULARITIES, LATERAL_MODES, RULES
from tests.unit.reference import numpy_layer_online, numpy_online

RNG = np.random.default_rng(5)
X = (RNG.normal(size=(2000, 12)) * 0.5).astype(np.float32)
CALL = 50  # samples per engine call (the batch_mean unit)


def settings(rule, lateral, connectivity, activation, granularity) -> dict:
    return {
        "units": 5, "rule": rule, "learning_rate": 0.004, "decay_steps": 800.0,
        "lateral": lateral, "lateral_learning_rate": 0.002, "lateral_strength": 0.05,
        "connectivity": connectivity, "connectivity_prob": 0.6, "activation": activation,
        "granularity": granularity, "stabilizer": "clip" if activation == "tanh" else "normalize",
        "weight_bound": 0.4, "norm_target": 1.5, "bcm_threshold_rate": 0.05, "seed": 17,
    }


COMBINATIONS = list(itertools.product(RULES, LATERAL_MODES, CONNECTIVITY, ACTIVATIONS,
                                      GRANULARITIES))


@pytest.mark.parametrize(("rule", "lateral", "connectivity", "activation", "granularity"),
                         COMBINATIONS)
def test_native_engine_matches_the_numpy_reference(rule, lateral, connectivity, activation,
                                                   granularity):
    s = settings(rule, lateral, connectivity, activation, granularity)
    stack = HebbianStack(StackConfig(12, (s,)))
    start = stack.layer_states()[0]
    ys = np.concatenate([stack.engine.process(X[i:i + CALL]).activations
                         for i in range(0, len(X), CALL)])
    W, L, theta, expected = numpy_layer_online(
        start.kernel, X, rule, eta0=s["learning_rate"], tau=s["decay_steps"],
        lateral=start.lateral, alpha0=s["lateral_learning_rate"] * (lateral == "anti_hebbian"),
        theta_rate=s["bcm_threshold_rate"], norm_target=s["norm_target"],
        stabilizer=s["stabilizer"], weight_bound=s["weight_bound"], activation=activation,
        mask=start.mask, granularity=granularity, call_size=CALL)
    state = stack.layer_states()[0]
    assert np.max(np.abs(state.kernel - W.T)) <= 1e-5
    assert np.max(np.abs(state.lateral - L)) <= 1e-5
    assert np.max(np.abs(state.theta - theta)) <= 1e-5
    assert np.max(np.abs(ys - expected)) <= 1e-4
    assert np.all(state.kernel[state.mask == 0] == 0.0)
    assert np.all(np.diag(state.lateral) == 0.0)
    assert int(state.step) == len(X)


KERAS_SAMPLE = [c for i, c in enumerate(COMBINATIONS) if i % 9 == 0]


@pytest.mark.parametrize(("rule", "lateral", "connectivity", "activation", "granularity"),
                         KERAS_SAMPLE)
def test_native_engine_matches_the_keras_layer(rule, lateral, connectivity, activation,
                                               granularity):
    s = settings(rule, lateral, connectivity, activation, granularity)
    stack = HebbianStack(StackConfig(12, (s,)))
    layer = Hebbian(**s)
    keras.Sequential([keras.Input((12,)), layer])
    for i in range(0, 400, CALL):
        served = stack.engine.process(X[i:i + CALL]).activations
        np.testing.assert_allclose(layer(X[i:i + CALL]).numpy(), served, atol=1e-5)
    state = stack.layer_states()[0]
    for field in ("kernel", "lateral", "mask", "theta"):
        np.testing.assert_allclose(getattr(layer, field).numpy(), getattr(state, field),
                                   atol=1e-5, err_msg=field)
    assert int(layer.step.numpy()) == int(state.step)


def test_one_compilation_serves_every_shape():
    from service.model import native_kernels

    before = {kernel: len(kernel.signatures)
              for kernel in (native_kernels.run_per_sample, native_kernels.run_batch_mean)}
    for width, units in [(3, 1), (64, 16), (256, 64), (7, 13)]:
        stack = HebbianStack(StackConfig(width, ({"units": units}, {"units": 2})))
        stack.engine.process(np.ones((3, width), np.float32))
    after = {kernel: len(kernel.signatures) for kernel in before}
    assert after == before == {kernel: 1 for kernel in before}


def test_two_models_learn_at_the_same_time_on_two_threads():
    """The kernels release the GIL: while one thread is inside the engine, another runs."""
    stack = HebbianStack(StackConfig(256, ({"units": 64, "rule": "sanger"},)))
    samples = np.random.default_rng(0).normal(size=(20_000, 256)).astype(np.float32) * 0.05
    stack.engine.process(samples[:10])
    ticks, running = [], threading.Event()

    def count_ticks():
        running.wait()
        while running.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)

    ticker = threading.Thread(target=count_ticks)
    ticker.start()
    running.set()
    started = time.perf_counter()
    stack.engine.process(samples)  # one long call: ~0.1-1 s
    finished = time.perf_counter()
    running.clear()
    ticker.join()
    inside = [t for t in ticks if started < t < finished]
    # With the GIL held for the whole call the other thread could not run at all.
    assert len(inside) > 10, (len(inside), finished - started)


def test_process_checks_what_the_compiled_entry_point_does_not():
    """The entry point checks dtypes only: other dimensions, layouts and flag lengths are
    converted or refused by `process` before it runs (never read out of bounds)."""
    config = StackConfig(12, ({"units": 5, "rule": "oja", "seed": 3},))
    reference, stack = HebbianStack(config), HebbianStack(config)
    samples = X[:40]
    expected = reference.engine.process(samples).activations
    got = np.concatenate([
        stack.engine.process(np.asfortranarray(samples[:10])).activations,  # not C-contiguous
        stack.engine.process(samples[10:20].astype(np.float64)).activations,  # float64
        stack.engine.process(samples[20:30].tolist()).activations,  # a list
        stack.engine.process(samples[30:40], np.ones(10, np.int8)).activations,  # int flags
    ])
    assert np.array_equal(got, expected)
    for bad in (samples[0], samples[:, :11], samples[None]):
        with pytest.raises(ValueError):
            stack.engine.process(bad)
    with pytest.raises(ValueError):
        stack.engine.process(samples[:3], np.ones(4, np.bool_))
    assert stack.engine.step == 40


# Proven-finite updates (the kernels' `bounds`): a call's first and last updates are made in
# place when a bound on every value they compute proves them finite.

def _bound_settings(rule, stabilizer):
    return {"units": 6, "rule": rule, "lateral": "anti_hebbian", "stabilizer": stabilizer,
            "learning_rate": 0.005 if rule == "bcm" else 0.05, "lateral_learning_rate": 0.02,
            "weight_bound": 0.7, "norm_target": 1.3, "bcm_threshold_rate": 0.2, "seed": 3}


@pytest.mark.parametrize("stabilizer", ["normalize", "clip"])
@pytest.mark.parametrize("rule", RULES)
def test_the_bounds_on_the_weights_hold_after_every_call(rule, stabilizer):
    config = StackConfig(12, (_bound_settings(rule, stabilizer),
                              {"units": 3, "rule": "oja", "learning_rate": 0.005, "seed": 4}))
    engine = HebbianStack(config).engine
    rng = np.random.default_rng(9)
    samples = rng.normal(size=(700, 12)).astype(np.float32)
    samples[[40, 41, 300]] = 1e30  # refused updates (a step back) among them
    sizes, start, proven = [1, 1, 3, 1, 17, 1, 2, 64, 1, 1], 0, 0
    while start < len(samples):
        size = sizes[start % len(sizes)]
        learn = rng.random(size) > 0.2
        engine.process(samples[start:start + size], learn=learn)
        start += size
        for layer, state in enumerate(engine.layer_states()):
            kernel_bound, lateral_bound = engine._bounds[layer, :2]
            if np.isfinite(kernel_bound):
                proven += layer == 0
                assert np.abs(state.kernel).max() <= kernel_bound, (start, layer)
                assert np.abs(state.lateral).max() <= lateral_bound, (start, layer)
    assert proven > 100  # most calls ended with an update proven finite
    assert np.all([np.isfinite(s.kernel).all() for s in engine.layer_states()])


def test_a_one_sample_call_updates_the_live_weights_in_place():
    engine = HebbianStack(StackConfig(12, (_bound_settings("oja", "normalize"),))).engine
    engine.process(X[:5])
    live = int(engine._counters[0])
    other = engine._weights[1 - live].copy()
    for n in range(5, 105):
        engine.process(X[n:n + 1])
    assert int(engine._counters[0]) == live and engine.step == 105
    assert np.array_equal(engine._weights[1 - live], other)  # never written


def test_weights_too_large_to_prove_finite_still_learn_as_the_reference():
    # |kernel| ~ 1e31 > 2^100: no bound proves the updates finite, so each goes to the
    # other row and is checked, and the result is still the plain per-sample maths.
    stack = HebbianStack(StackConfig(12, ({"units": 4, "rule": "oja", "learning_rate": 0.01,
                                           "seed": 2},)))
    state = stack.layer_states()[0]
    stack.engine.load_layer_states([state._replace(kernel=state.kernel * np.float32(1e31))])
    samples = X[:40] * np.float32(1e-31)  # y ~ 1: every update is finite
    rows = set()
    for n in range(len(samples)):
        result = stack.engine.process(samples[n:n + 1])
        rows.add(int(stack.engine._counters[0]))
        assert not result.skipped.any()
    assert rows == {0, 1}  # the other row was written
    W, _, _, _ = numpy_online(state.kernel * 1e31, samples, "oja", eta0=0.01)
    np.testing.assert_allclose(stack.layer_states()[0].kernel, W.T, rtol=1e-4)


def _waiting_updates(engine) -> list[bool]:
    layers = len(engine.params)
    return [bool(flag) for flag in engine._counters[1 + layers:]]


@pytest.mark.parametrize(("rule", "stabilizer", "lateral"), [
    ("oja", "normalize", "none"), ("bcm", "normalize", "none"), ("hebb", "clip", "none"),
    ("oja_subspace", "normalize", "none"), ("oja_subspace", "normalize", "anti_hebbian"),
    ("sanger", "normalize", "none"), ("sanger", "normalize", "anti_hebbian")])
def test_reading_the_state_while_an_update_waits_changes_nothing(rule, stabilizer, lateral):
    # A call's last update, proven finite, waits to be made with the next forward pass;
    # `layer_states` (also read by the metrics thread) shows it made, and writes nothing.
    settings = _bound_settings(rule, stabilizer) | {"lateral": lateral}
    config = StackConfig(12, (settings, {"units": 3, "rule": "oja", "seed": 4}))
    read, unread = HebbianStack(config).engine, HebbianStack(config).engine
    answers, waited = [], 0
    for start, size in zip(range(0, 400, 8), [1, 1, 3, 8, 1, 5, 1, 2] * 7, strict=False):
        batch = X[start:start + size]
        answers.append((read.process(batch).activations, unread.process(batch).activations))
        waiting = _waiting_updates(read)
        before = (read._weights.copy(), read._counters.copy(), read._scratch.copy())
        states = read.layer_states()
        assert np.array_equal(before[0], read._weights)
        assert np.array_equal(before[1], read._counters)
        assert np.array_equal(before[2], read._scratch)
        if waiting == [True, True]:
            waited += 1
            raw = read._weights[int(read._counters[0])][read._slices[0][0]]
            shown = states[0].kernel.T if read._units_major[0] else states[0].kernel
            assert not np.array_equal(shown.reshape(-1), raw)  # the waiting update is in it
    # The first update of an engine's first call, not yet proven finite, goes to the other
    # row; after that, every call leaves its last update waiting.
    assert waited >= len(answers) - 1
    for ours, theirs in answers:
        assert np.array_equal(ours, theirs)
    # what was read is what the next forward pass made of it, bit for bit
    shown = read.layer_states()
    read.process(X[500:501], learn=False)
    assert _waiting_updates(read) == [False, False]
    for a, b, c in zip(shown, read.layer_states(), unread.layer_states(), strict=True):
        for field in ("kernel", "lateral", "theta"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
            assert np.array_equal(getattr(b, field), getattr(c, field))


def test_loading_a_state_drops_the_update_waiting():
    config = StackConfig(12, (_bound_settings("oja", "normalize"),))
    engine, fresh = HebbianStack(config).engine, HebbianStack(config).engine
    state = fresh.layer_states()
    engine.process(X[:7])
    assert _waiting_updates(engine) == [True]
    engine.load_layer_states(state)
    assert _waiting_updates(engine) == [False]
    for stack_engine in (engine, fresh):
        stack_engine.process(X[7:40])
    assert np.array_equal(engine.layer_states()[0].kernel, fresh.layer_states()[0].kernel)


@pytest.mark.parametrize(("rule", "stabilizer", "lateral"), [
    ("oja", "normalize", "none"), ("bcm", "normalize", "anti_hebbian"),
    ("hebb", "clip", "none"), ("oja_subspace", "normalize", "anti_hebbian"),
    ("sanger", "normalize", "anti_hebbian")])
@pytest.mark.parametrize("units", [6, 64])
def test_a_waiting_update_rounds_as_one_made_at_once(rule, stabilizer, lateral, units):
    # The same calls on two engines, one never leaving an update waiting: bit for bit.
    from service.model import native_kernels

    settings = {"units": units, "rule": rule, "lateral": lateral, "stabilizer": stabilizer,
                "weight_bound": 0.3, "decay_steps": 200, "seed": 7}
    config = StackConfig(12, (settings, {"units": 3, "rule": "bcm", "seed": 8}))
    waiting, eager = HebbianStack(config).engine, HebbianStack(config).engine
    assert waiting._layout[0, native_kernels.DEFERRABLE] == 1
    eager._layout[:, native_kernels.DEFERRABLE] = 0
    start, waited = 0, 0
    for size in [1, 1, 2, 9, 1, 64, 3, 1, 1, 300, 1] * 3:
        ours = waiting.process(X[start:start + size])
        theirs = eager.process(X[start:start + size])
        waited += _waiting_updates(waiting)[0]
        assert np.array_equal(ours.activations, theirs.activations)
        start += size
    assert waited > 20 and not any(_waiting_updates(eager))
    for a, b in zip(waiting.layer_states(), eager.layer_states(), strict=True):
        for field in ("kernel", "lateral", "theta"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
