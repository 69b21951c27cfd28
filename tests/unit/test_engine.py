"""Both serving engines: exact online maths, determinism, learn flags, the non-finite guard.

Every test runs on the native engine (numba, the default) and on the XLA engine, built
the way the server builds them: a `HebbianStack` from a `StackConfig`.
"""

import keras
import numpy as np
import pytest

from service.model import Hebbian, HebbianStack, StackConfig
from tests.unit.reference import numpy_online

RNG = np.random.default_rng(1)
X = RNG.normal(size=(3000, 32)).astype(np.float32)
ENGINES = ["native", "xla"]


def make_stack(engine: str, buckets=(1, 8, 64, 256, 1024), **kwargs) -> HebbianStack:
    settings = {"units": 6, "rule": "sanger", "learning_rate": 0.003, "seed": 21} | kwargs
    return HebbianStack(StackConfig(32, (settings,), engine), buckets)


def kernel(stack: HebbianStack, layer: int = 0) -> np.ndarray:
    return stack.layer_states()[layer].kernel


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rule", ["hebb", "oja", "oja_subspace", "sanger", "bcm"])
def test_engine_matches_an_independent_per_sample_numpy_loop(engine, rule):
    stack = make_stack(engine, rule=rule, lateral="anti_hebbian", lateral_learning_rate=0.001,
                       decay_steps=500)
    k0 = kernel(stack)
    result = stack.engine.process(X[:700])
    W, L, theta, ys = numpy_online(k0, X[:700], rule, eta0=0.003, tau=500, alpha0=0.001)
    state = stack.layer_states()[0]
    np.testing.assert_allclose(result.activations, ys, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(state.kernel, W.T, atol=1e-5)
    np.testing.assert_allclose(state.lateral, L, atol=1e-5)
    np.testing.assert_allclose(state.theta, theta, atol=1e-5)
    assert result.step == 700 and not result.skipped.any()


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_and_keras_layer_compute_the_same_online_result(engine):
    stack = make_stack(engine)
    twin = Hebbian(6, rule="sanger", learning_rate=0.003, seed=21)
    keras.Sequential([keras.Input((32,)), twin])
    engine_y = stack.engine.process(X[:300]).activations
    layer_y = twin(X[:300]).numpy()
    np.testing.assert_allclose(engine_y, layer_y, atol=1e-6)
    np.testing.assert_allclose(kernel(stack), twin.kernel.numpy(), atol=1e-6)


GROUPINGS = [
    ((1, 8, 64, 256, 1024), [3000]),
    ((1, 8, 64, 256, 1024), [1, 7, 64, 500, 3, 1024, 1401]),
    ((16, 2048), [5, 900, 17, 2078]),
    ((1,), [40] * 75),
]


@pytest.mark.parametrize(("engine", "rule", "units", "stabilizer"), [
    *(("native", rule, units, "normalize")
      for rule in ["hebb", "oja", "oja_subspace", "sanger", "bcm"]
      for units in (6, 64)),  # 64: whole vectors of units (and the vectorised dot products)
    *(("native", "hebb", units, "clip") for units in (6, 64)),
    ("xla", "sanger", 6, "normalize"),  # every bucket size compiles: one rule on XLA
])
def test_final_weights_are_bit_identical_whatever_the_grouping(engine, rule, units,
                                                               stabilizer):
    # Natively, an update in place waits for the next forward pass (or call) where it can:
    # made then, in one pass with that forward pass, it must round as one made at once.
    groupings = GROUPINGS if engine == "xla" else [
        (None, sizes) for sizes in ([3000], [1, 7, 64, 500, 3, 1024, 1401], [1] * 3000)
    ]
    settings = {"rule": rule, "lateral": "anti_hebbian", "decay_steps": 300, "units": units,
                "stabilizer": stabilizer, "weight_bound": 0.3}
    reference = make_stack(engine, **settings)
    reference.engine.process(X)
    expected = reference.state_arrays()
    for buckets, sizes in groupings:
        stack = make_stack(engine, buckets or (1,), **settings)
        start = 0
        for size in sizes:
            stack.engine.process(X[start : start + size])
            start += size
        assert start == len(X)
        arrays = stack.state_arrays()
        for key, value in expected.items():
            assert np.array_equal(arrays[key], value), (buckets, sizes, key)
        assert stack.engine.step == len(X)


def test_xla_activations_do_not_depend_on_padding():
    a, b = make_stack("xla", buckets=(1024,)), make_stack("xla", buckets=(5,))
    ya = a.engine.process(X[:5]).activations
    yb = b.engine.process(X[:5]).activations
    assert np.array_equal(ya, yb)


@pytest.mark.parametrize("engine", ENGINES)
def test_per_sample_learn_flags_skip_updates_but_still_answer(engine):
    mixed, learn_only = make_stack(engine), make_stack(engine)
    flags = RNG.random(500) < 0.5
    result = mixed.engine.process(X[:500], learn=flags)
    assert result.step == int(flags.sum())
    learn_only.engine.process(X[:500][flags])
    assert np.array_equal(kernel(mixed), kernel(learn_only))
    # Each inference-only sample was answered by the weights current at its position.
    probe = make_stack(engine)
    expected = np.concatenate([probe.engine.process(x[None], learn=f).activations
                               for x, f in zip(X[:50], flags[:50], strict=True)])
    np.testing.assert_allclose(result.activations[:50], expected, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_inference_only_changes_nothing(engine):
    stack = make_stack(engine)
    before = stack.state_arrays()
    stack.engine.process(X[:100], learn=False)
    after = stack.state_arrays()
    assert all(np.array_equal(before[key], after[key]) for key in before)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bad_at", [0, 2, 4])
def test_an_update_that_would_make_weights_non_finite_is_not_applied_and_reported(engine,
                                                                                  bad_at):
    stack = make_stack(engine, rule="oja")
    stack.engine.process(X[:10])
    before = kernel(stack)
    samples = X[10:15].copy()
    samples[bad_at] = 1e30  # y^2 overflows float32: the update would be Inf/NaN
    result = stack.engine.process(samples)
    assert result.skipped.tolist() == [i == bad_at for i in range(5)]
    assert result.step == 14
    assert np.all(np.isfinite(kernel(stack)))
    # Identical to never having seen the bad sample.
    clean = make_stack(engine, rule="oja")
    clean.engine.process(np.concatenate([X[:10 + bad_at], X[11 + bad_at:15]]))
    assert np.array_equal(kernel(stack), kernel(clean))
    assert not np.array_equal(before, kernel(stack))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_non_finite_update_of_one_layer_is_applied_to_no_layer(engine):
    config = StackConfig(32, ({"units": 8, "rule": "oja", "seed": 1},
                              {"units": 3, "rule": "bcm", "seed": 2}), engine)
    stack, clean = HebbianStack(config), HebbianStack(config)
    samples = X[:6].copy()
    samples[3] *= 1e17  # finite in layer 0's update, overflowing in layer 1's BCM term
    result = stack.engine.process(samples)
    assert result.skipped.tolist() == [False, False, False, True, False, False]
    clean.engine.process(np.concatenate([samples[:3], samples[4:]]))
    for key, value in clean.state_arrays().items():
        assert np.array_equal(stack.state_arrays()[key], value), key


@pytest.mark.parametrize("first_refused", [True, False])
@pytest.mark.parametrize("stabilizer", ["normalize", "clip"])
@pytest.mark.parametrize("rule", ["hebb", "oja", "oja_subspace", "sanger", "bcm"])
def test_refusals_anywhere_in_a_call_give_the_weights_of_one_call_per_sample(rule, stabilizer,
                                                                              first_refused):
    # The native engine updates in place after a call's first update (that one too when
    # it is proven finite) and undoes a refused one by replaying the call from its first
    # row: refusals first (or right after a first update made in place), last, in a row,
    # in a learning sample after an inference-only one, and in a second layer's threshold.
    config = StackConfig(32, (
        {"units": 8, "rule": rule, "lateral": "anti_hebbian", "stabilizer": stabilizer,
         "learning_rate": 0.003, "decay_steps": 50, "seed": 5},
        {"units": 3, "rule": "bcm", "seed": 6},
    ), "native")
    samples = X[:60].copy()
    planted = [0, 5, 6, 7, 31, 59] if first_refused else [1, 5, 6, 7, 31, 59]
    samples[planted] = 1e30  # an update that overflows in layer 0
    samples[[12, 40]] *= 1e17  # finite in layer 0, overflowing in layer 1's BCM term
    learn = np.ones(60, bool)
    learn[[4, 30, 41, 58]] = False
    one_call, per_sample = HebbianStack(config), HebbianStack(config)
    per_sample.engine.process(X[100:110])
    one_call.engine.process(X[100:110])
    result = one_call.engine.process(samples, learn=learn)
    answers = [per_sample.engine.process(samples[n:n + 1], learn=bool(learn[n]))
               for n in range(len(samples))]
    assert result.skipped.tolist() == [bool(a.skipped[0]) for a in answers]
    # the guard refused exactly the planted samples that learn, in both layers
    assert np.flatnonzero(result.skipped).tolist() == sorted([*planted, 12, 40])
    assert np.array_equal(result.activations, np.concatenate([a.activations for a in answers]))
    assert result.step == answers[-1].step
    expected = per_sample.state_arrays()
    for key, value in one_call.state_arrays().items():
        assert np.array_equal(value, expected[key]), key
    assert all(np.isfinite(value).all() for value in expected.values())


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stack_is_served_with_each_layer_learning_from_its_own_input(engine):
    config = StackConfig(32, ({"units": 8, "rule": "sanger", "seed": 30},
                              {"units": 3, "rule": "oja", "seed": 31}), engine)
    stack = HebbianStack(config)
    k1, k2 = kernel(stack, 0), kernel(stack, 1)
    result = stack.engine.process(X[:400])
    W1, _, _, ys1 = numpy_online(k1, X[:400], "sanger")
    W2, _, _, ys2 = numpy_online(k2, ys1, "oja")
    np.testing.assert_allclose(result.activations, ys2, atol=1e-5)
    np.testing.assert_allclose(kernel(stack, 0), W1.T, atol=1e-5)
    np.testing.assert_allclose(kernel(stack, 1), W2.T, atol=1e-5)
    assert [int(s.step) for s in stack.layer_states()] == [400, 400]


@pytest.mark.parametrize("engine", ENGINES)
def test_batch_mean_engine_takes_one_mean_update_per_call(engine):
    stack = make_stack(engine, rule="oja", granularity="batch_mean")
    k0 = kernel(stack).astype(np.float64)
    stack.engine.process(X[:64])
    W = k0.T
    Y = X[:64] @ W.T
    expected = W + 0.003 * (Y.T @ X[:64] - (Y**2).sum(0)[:, None] * W) / 64
    np.testing.assert_allclose(kernel(stack), expected.T, atol=1e-6)
    assert stack.engine.step == 64


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_sample_shape_is_a_value_error(engine):
    with pytest.raises(ValueError, match=r"samples must have shape \(n, 32\); got \(4, 31\)"):
        make_stack(engine).engine.process(np.zeros((4, 31), np.float32))


def test_a_model_on_the_native_engine_exports_to_keras_and_keeps_learning_there():
    stack = make_stack("native", lateral="anti_hebbian")
    stack.engine.process(X[:200])
    model = stack.keras_model()
    (layer,) = model.layers
    assert np.array_equal(layer.kernel.numpy(), kernel(stack))
    assert int(layer.step.numpy()) == 200
    served = stack.engine.process(X[200:300]).activations
    in_keras = model(X[200:300]).numpy()
    np.testing.assert_allclose(in_keras, served, atol=1e-5)
    np.testing.assert_allclose(layer.kernel.numpy(), kernel(stack), atol=1e-5)
    assert int(layer.step.numpy()) == stack.engine.step == 300
