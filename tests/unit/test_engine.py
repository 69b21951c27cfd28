"""The compiled engine: exact online maths, determinism, learn flags, the non-finite guard."""

import keras
import numpy as np
import pytest

from service.model import Engine, Hebbian
from tests.unit.reference import numpy_online

RNG = np.random.default_rng(1)
X = RNG.normal(size=(3000, 32)).astype(np.float32)


def make_engine(buckets=(1, 8, 64, 256, 1024), **kwargs) -> Engine:
    settings = {"units": 6, "rule": "sanger", "learning_rate": 0.003, "seed": 21} | kwargs
    layer = Hebbian(**settings)
    keras.Sequential([keras.Input((32,)), layer])
    return Engine([layer], buckets)


@pytest.mark.parametrize("rule", ["hebb", "oja", "oja_subspace", "sanger", "bcm"])
def test_engine_matches_an_independent_per_sample_numpy_loop(rule):
    engine = make_engine(rule=rule, lateral="anti_hebbian", lateral_learning_rate=0.001,
                         decay_steps=500)
    (layer,) = engine.layers
    k0 = layer.kernel.numpy()
    result = engine.process(X[:700])
    W, L, theta, ys = numpy_online(k0, X[:700], rule, eta0=0.003, tau=500, alpha0=0.001)
    np.testing.assert_allclose(result.activations, ys, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(layer.kernel.numpy(), W.T, atol=1e-5)
    np.testing.assert_allclose(layer.lateral.numpy(), L, atol=1e-5)
    np.testing.assert_allclose(layer.theta.numpy(), theta, atol=1e-5)
    assert result.step == 700 and not result.skipped.any()


def test_engine_and_layer_compute_the_same_online_result():
    engine = make_engine()
    twin = Hebbian(6, rule="sanger", learning_rate=0.003, seed=21)
    keras.Sequential([keras.Input((32,)), twin])
    engine_y = engine.process(X[:300]).activations
    layer_y = twin(X[:300]).numpy()
    np.testing.assert_allclose(engine_y, layer_y, atol=1e-6)
    np.testing.assert_allclose(engine.layers[0].kernel.numpy(), twin.kernel.numpy(), atol=1e-6)


def test_final_weights_are_bit_identical_whatever_the_grouping_and_bucket_sizes():
    reference = make_engine()
    reference.process(X)
    expected = reference.layers[0].kernel.numpy()
    groupings = [
        ((1, 8, 64, 256, 1024), [3000]),
        ((1, 8, 64, 256, 1024), [1, 7, 64, 500, 3, 1024, 1401]),
        ((16, 2048), [5, 900, 17, 2078]),
        ((1,), [40] * 75),
    ]
    for buckets, sizes in groupings:
        engine = make_engine(buckets=buckets)
        start = 0
        for size in sizes:
            engine.process(X[start : start + size])
            start += size
        assert start == len(X)
        assert np.array_equal(engine.layers[0].kernel.numpy(), expected), (buckets, sizes)
        assert engine.step == len(X)


def test_activations_do_not_depend_on_padding():
    a, b = make_engine(buckets=(1024,)), make_engine(buckets=(5,))
    ya = a.process(X[:5]).activations
    yb = b.process(X[:5]).activations
    assert np.array_equal(ya, yb)


def test_per_sample_learn_flags_skip_updates_but_still_answer():
    mixed, learn_only = make_engine(), make_engine()
    flags = RNG.random(500) < 0.5
    result = mixed.process(X[:500], learn=flags)
    assert result.step == int(flags.sum())
    learn_only.process(X[:500][flags])
    assert np.array_equal(mixed.layers[0].kernel.numpy(), learn_only.layers[0].kernel.numpy())
    # Each inference-only sample was answered by the weights current at its position.
    probe = make_engine()
    expected = np.concatenate([probe.process(x[None], learn=f).activations
                               for x, f in zip(X[:50], flags[:50], strict=True)])
    np.testing.assert_allclose(result.activations[:50], expected, atol=1e-6)


def test_inference_only_changes_nothing():
    engine = make_engine()
    before = [v.numpy().copy() for v in engine.layers[0].state_variables]
    engine.process(X[:100], learn=False)
    after = [v.numpy() for v in engine.layers[0].state_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_an_update_that_would_make_weights_non_finite_is_not_applied_and_reported():
    engine = make_engine(rule="oja")
    engine.process(X[:10])
    before = engine.layers[0].kernel.numpy().copy()
    samples = X[10:15].copy()
    samples[2] = 1e30  # y^2 overflows float32: the update would be Inf/NaN
    result = engine.process(samples)
    assert result.skipped.tolist() == [False, False, True, False, False]
    assert result.step == 14
    kernel = engine.layers[0].kernel.numpy()
    assert np.all(np.isfinite(kernel))
    # Identical to never having seen the bad sample.
    clean = make_engine(rule="oja")
    clean.process(np.concatenate([X[:12], X[13:15]]))
    assert np.array_equal(kernel, clean.layers[0].kernel.numpy())
    assert not np.array_equal(before, kernel)


def test_a_stack_is_served_with_each_layer_learning_from_its_own_input():
    first, second = Hebbian(8, rule="sanger", seed=30), Hebbian(3, rule="oja", seed=31)
    keras.Sequential([keras.Input((32,)), first, second])
    k1, k2 = first.kernel.numpy(), second.kernel.numpy()
    result = Engine([first, second]).process(X[:400])
    W1, _, _, ys1 = numpy_online(k1, X[:400], "sanger")
    W2, _, _, ys2 = numpy_online(k2, ys1, "oja")
    np.testing.assert_allclose(result.activations, ys2, atol=1e-5)
    np.testing.assert_allclose(first.kernel.numpy(), W1.T, atol=1e-5)
    np.testing.assert_allclose(second.kernel.numpy(), W2.T, atol=1e-5)
    assert int(first.step.numpy()) == int(second.step.numpy()) == 400


def test_batch_mean_engine_takes_one_mean_update_per_call():
    engine = make_engine(rule="oja", granularity="batch_mean")
    (layer,) = engine.layers
    k0 = layer.kernel.numpy().astype(np.float64)
    engine.process(X[:64])
    W = k0.T
    Y = X[:64] @ W.T
    expected = W + 0.003 * (Y.T @ X[:64] - (Y**2).sum(0)[:, None] * W) / 64
    np.testing.assert_allclose(layer.kernel.numpy(), expected.T, atol=1e-6)
    assert engine.step == 64


def test_wrong_sample_shape_is_a_value_error():
    with pytest.raises(ValueError, match=r"samples must have shape \(n, 32\); got \(4, 31\)"):
        make_engine().process(np.zeros((4, 31), np.float32))
