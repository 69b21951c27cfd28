"""The Keras layer: every defect of the original question, Keras conventions, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from service.model import Hebbian
from tests.unit.reference import numpy_online

RNG = np.random.default_rng(0)
X64 = RNG.normal(size=(300, 64)).astype(np.float32)


def built(layer: Hebbian, input_dim: int) -> Hebbian:
    keras.Sequential([keras.Input((input_dim,)), layer])
    return layer


def test_the_questions_case_input_width_differs_from_output_width():
    model = keras.Sequential([Hebbian(input_shape=(256,), output_dim=24)])
    out = model(np.ones((5, 256), np.float32))
    assert out.shape == (5, 24)
    layer = model.layers[0]
    assert layer.kernel.shape == (256, 24)
    assert layer.lateral.shape == (24, 24)


def test_units_and_output_dim_must_agree():
    with pytest.raises(ValueError, match="units=4, output_dim=5"):
        Hebbian(4, output_dim=5)


@pytest.mark.parametrize("lateral", ["inhibition", "anti_hebbian"])
def test_lateral_diagonal_is_exactly_zero_after_every_update(lateral):
    layer = built(Hebbian(8, lateral=lateral, lateral_learning_rate=0.05, seed=1), 64)
    assert np.all(np.diag(layer.lateral.numpy()) == 0.0)
    for i in range(20):
        layer(X64[i * 10 : (i + 1) * 10])
        L = layer.lateral.numpy()
        assert np.all(np.diag(L) == 0.0)
    off_diagonal = L[~np.eye(8, dtype=bool)]
    if lateral == "inhibition":
        assert np.all(off_diagonal == np.float32(-0.1))  # fixed: never learned
    else:
        assert np.all(off_diagonal != 0.0)  # learned


def test_the_lateral_pass_is_y_plus_y_times_lateral():
    layer = built(Hebbian(4, lateral="inhibition", lateral_strength=0.2, seed=2), 64)
    h = X64[:3] @ layer.kernel.numpy()
    expected = h + h @ (-0.2 * (1 - np.eye(4)))
    np.testing.assert_allclose(layer(X64[:3], learning=False), expected, rtol=1e-5, atol=1e-5)


def test_random_connectivity_keeps_fraction_p_per_connection():
    for p in (0.25, 0.5, 0.9):
        layer = built(Hebbian(64, connectivity="random", connectivity_prob=p, seed=3), 256)
        mask = layer.mask.numpy()
        assert mask.shape == (256, 64)  # per connection, not per neuron
        assert abs(mask.mean() - p) < 0.02


@pytest.mark.parametrize("rule", ["hebb", "oja", "oja_subspace", "sanger", "bcm"])
def test_masked_weights_stay_exactly_zero_through_every_update(rule):
    layer = built(Hebbian(8, rule=rule, connectivity="random", connectivity_prob=0.3,
                          learning_rate=0.01, seed=4), 64)
    masked = layer.mask.numpy() == 0
    assert masked.any()
    for i in range(10):
        layer(X64[i * 30 : (i + 1) * 30])
        assert np.all(layer.kernel.numpy()[masked] == 0.0)


def test_zero_connectivity_has_no_feed_forward_connections():
    layer = built(Hebbian(8, connectivity="zero", seed=5), 64)
    layer(X64)
    assert np.all(layer.kernel.numpy() == 0.0)
    assert np.all(layer(X64[:4], learning=False).numpy() == 0.0)


def test_the_mask_and_initial_weights_depend_on_the_seed_only():
    a = built(Hebbian(8, connectivity="random", connectivity_prob=0.5, seed=7), 64)
    b = built(Hebbian(8, connectivity="random", connectivity_prob=0.5, seed=7), 64)
    c = built(Hebbian(8, connectivity="random", connectivity_prob=0.5, seed=8), 64)
    assert np.array_equal(a.mask.numpy(), b.mask.numpy())
    assert np.array_equal(a.kernel.numpy(), b.kernel.numpy())
    assert not np.array_equal(a.mask.numpy(), c.mask.numpy())


def test_model_call_and_predict_learn_and_the_learning_switch_turns_it_off():
    layer = Hebbian(4, seed=9)
    model = keras.Sequential([keras.Input((64,)), layer])
    k0 = layer.kernel.numpy()
    model(X64[:10])
    k1 = layer.kernel.numpy()
    assert int(layer.step.numpy()) == 10 and not np.array_equal(k0, k1)
    model.predict(X64[:20], batch_size=10, verbose=0)
    assert int(layer.step.numpy()) == 30 and not np.array_equal(k1, layer.kernel.numpy())
    k2 = layer.kernel.numpy()
    layer(X64[:10], learning=False)
    layer.learning = False  # also reaches model.predict's already-traced function
    model(X64[:10])
    model.predict(X64[:10], verbose=0)
    assert int(layer.step.numpy()) == 30 and np.array_equal(k2, layer.kernel.numpy())


def test_three_calls_inside_one_tf_function_give_three_distinct_states():
    layer = built(Hebbian(4, learning_rate=0.05, seed=10), 64)

    @tf.function
    def three_calls(x):
        kernels = []
        for _ in range(3):
            layer(x)
            kernels.append(tf.identity(layer.kernel))
        return kernels

    kernels = [k.numpy() for k in three_calls(tf.constant(X64[:5]))]
    assert int(layer.step.numpy()) == 15
    assert not np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[1], kernels[2])
    assert np.array_equal(kernels[2], layer.kernel.numpy())


@pytest.mark.parametrize("rule", ["hebb", "oja", "oja_subspace", "sanger", "bcm"])
def test_per_sample_learning_matches_an_independent_numpy_loop(rule):
    layer = built(Hebbian(6, rule=rule, learning_rate=0.005, decay_steps=100,
                          lateral="anti_hebbian", lateral_learning_rate=0.002, seed=11), 64)
    k0 = layer.kernel.numpy()
    y = layer(X64[:200]).numpy()
    W, L, theta, ys = numpy_online(k0, X64[:200], rule, eta0=0.005, tau=100, alpha0=0.002)
    np.testing.assert_allclose(y, ys, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(layer.kernel.numpy(), W.T, atol=1e-5)
    np.testing.assert_allclose(layer.lateral.numpy(), L, atol=1e-5)
    np.testing.assert_allclose(layer.theta.numpy(), theta, atol=1e-5)


def test_a_stack_of_hebbian_layers_learns_each_layer_from_its_own_input():
    first, second = Hebbian(16, rule="sanger", seed=12), Hebbian(4, rule="oja", seed=13)
    model = keras.Sequential([keras.Input((64,)), first, second])
    k1, k2 = first.kernel.numpy(), second.kernel.numpy()
    out = model.predict(X64, verbose=0)
    assert out.shape == (300, 4)
    W1, _, _, ys1 = numpy_online(k1, X64, "sanger")
    W2, _, _, ys2 = numpy_online(k2, ys1, "oja")
    np.testing.assert_allclose(first.kernel.numpy(), W1.T, atol=1e-5)
    np.testing.assert_allclose(second.kernel.numpy(), W2.T, atol=1e-5)
    np.testing.assert_allclose(out, ys2, atol=1e-4)


def test_get_config_round_trips():
    layer = Hebbian(5, rule="bcm", lateral="inhibition", connectivity="random",
                    connectivity_prob=0.4, seed=14, decay_steps=50.0)
    clone = Hebbian.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert layer.get_config()["seed"] == 14
    assert Hebbian(3).get_config()["seed"] is not None  # a drawn seed is recorded


def test_a_saved_keras_model_loads_with_full_state_and_keeps_learning_identically(tmp_path):
    def make():
        return keras.Sequential([
            keras.Input((64,)),
            Hebbian(8, rule="bcm", connectivity="random", connectivity_prob=0.5,
                    lateral="anti_hebbian", decay_steps=100, seed=15),
            Hebbian(3, rule="sanger", seed=16),
        ])

    model = make()
    model.predict(X64[:100], verbose=0)
    path = tmp_path / "hebbian.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        for name in ("kernel", "lateral", "mask", "theta", "step"):
            assert np.array_equal(getattr(a, name).numpy(), getattr(b, name).numpy()), name
    assert int(loaded.layers[0].step.numpy()) == 100
    model.predict(X64[100:], verbose=0)
    loaded.predict(X64[100:], verbose=0)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert np.array_equal(a.kernel.numpy(), b.kernel.numpy())
        assert np.array_equal(a.theta.numpy(), b.theta.numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": 4, "rule": "hopfield"}, "rule must be one of .*got 'hopfield'"),
        ({"units": 0}, "units must be an integer >= 1; got 0"),
        ({"units": 4, "lateral": "both"}, "lateral must be one of .*got 'both'"),
        ({"units": 4, "connectivity_prob": 1.5}, r"connectivity_prob must be in \[0, 1\]; got 1.5"),
        ({"units": 4, "learning_rate": -1}, "learning_rate must be a finite number >= 0; got -1"),
    ],
)
def test_bad_arguments_raise_value_error_naming_expected_and_given(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Hebbian(**kwargs)


def test_wrong_input_width_raises_value_error_naming_both_widths():
    model = keras.Sequential([keras.Input((64,)), Hebbian(4, seed=17)])
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 64"):
        model(np.ones((2, 32), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_raises_value_error_and_changes_nothing(bad):
    layer = built(Hebbian(4, seed=18), 64)
    before = layer.kernel.numpy()
    x = X64[:5].copy()
    x[3, 7] = bad
    with pytest.raises(ValueError, match="expects finite input values; got NaN or Inf in sample 3"):
        layer(x)
    assert np.array_equal(before, layer.kernel.numpy())
    assert int(layer.step.numpy()) == 0
