"""The XLA engine's direct call of its compiled buckets: same results as the public call path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from service.model import Hebbian, XlaEngine

RNG = np.random.default_rng(7)
X = RNG.normal(size=(300, 24)).astype(np.float32)


def make_engine(**kwargs) -> XlaEngine:
    layer = Hebbian(**({"units": 5, "rule": "sanger", "learning_rate": 0.004, "seed": 3} | kwargs))
    keras.Sequential([keras.Input((24,)), layer])
    engine = XlaEngine([layer], buckets=(1, 8, 64))  # few buckets: quick to compile
    engine.warm_up()
    return engine


def public_path_only(engine: XlaEngine) -> XlaEngine:
    for call in engine._compiled.values():
        call._fast = None
    return engine


@pytest.mark.parametrize("rule", ["oja", "bcm"])
def test_direct_and_public_calls_agree_bit_for_bit(rule):
    fast = make_engine(rule=rule, lateral="anti_hebbian", lateral_learning_rate=0.001)
    slow = public_path_only(make_engine(rule=rule, lateral="anti_hebbian",
                                        lateral_learning_rate=0.001))
    assert all(call._fast is not None for call in fast._compiled.values())  # this TF has it
    start = 0
    for size in (1, 1, 7, 8, 64, 3, 150, 30):  # exact buckets, padded ones, several chunks
        xs = X[start : start + size]
        flags = RNG.random(size) < 0.8
        a, b = fast.process(xs, flags), slow.process(xs, flags)
        np.testing.assert_array_equal(a.activations, b.activations)
        np.testing.assert_array_equal(a.skipped, b.skipped)
        assert a.step == b.step
        start += size
    for va, vb in zip(fast.layers[0].state_variables, slow.layers[0].state_variables,
                      strict=True):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


def test_read_only_input_and_a_watching_tape_both_work():
    engine, twin = make_engine(), make_engine()
    samples = np.frombuffer(X[:64].tobytes(), np.float32).reshape(64, 24)  # read-only
    with tf.GradientTape():  # the public call path (what a tape may record)
        taped = engine.process(samples)
    direct = twin.process(samples)
    np.testing.assert_array_equal(taped.activations, direct.activations)
    assert taped.step == direct.step == 64
