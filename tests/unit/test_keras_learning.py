"""When Hebbian layers learn in Keras (learn switch, fit, evaluate, frozen), and divergence."""

import warnings

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from service.model import Hebbian, HebbianSequential, HebbianStack, StackConfig, frozen
from service.model.stability import rate_warning

X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
DIGITS = load_digits().data.astype(np.float32)[:300]  # raw 0..16 pixels, ||x||^2 ~ 3000


def steps(model) -> list[int]:
    return [int(layer.step.numpy()) for layer in model.layers]


def stack(learn: str, cls=HebbianSequential):
    return cls([keras.Input((8,)), Hebbian(4, seed=0, learn=learn),
                Hebbian(2, seed=1, learn=learn)])


def test_learn_training_learns_only_in_fit_and_with_training_true():
    model = stack("training")
    model.predict(X, verbose=0)
    model.evaluate(X, verbose=0)
    model(X)
    model(X, training=False)
    assert steps(model) == [0, 0]
    model(X, training=True)
    assert steps(model) == [64, 64]
    history = model.fit(X, epochs=2, batch_size=16, verbose=0)
    assert steps(model) == [192, 192]
    assert history.history["step"] == [128.0, 192.0]


def test_learn_training_in_a_plain_sequential_also_skips_predict():
    model = stack("training", keras.Sequential)
    model.predict(X, verbose=0)
    model(X)
    assert steps(model) == [0, 0]
    model(X, training=True)
    assert steps(model) == [64, 64]


def test_learn_always_learns_in_every_call_and_never_in_none():
    always, never = stack("always"), stack("never")
    for model in (always, never):
        model.predict(X, verbose=0)
        model.evaluate(X, verbose=0)
        model(X, training=False)
    assert steps(always) == [192, 192]
    assert steps(never) == [0, 0]


def test_fit_without_targets_learns_and_does_not_warn_about_trainable_weights():
    model = stack("training")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, batch_size=32, verbose=0)
    assert steps(model) == [64, 64]
    assert not [w for w in caught if "trainable weights" in str(w.message)]


def test_fit_with_a_dense_head_and_a_loss_trains_the_head_and_the_hebbian_layer():
    model = HebbianSequential([keras.Input((8,)), Hebbian(4, seed=0, learn="training"),
                               keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    head = model.layers[1].kernel.numpy().copy()
    model.fit(X, X[:, :1], batch_size=32, verbose=0)
    assert int(model.layers[0].step.numpy()) == 64
    assert not np.array_equal(model.layers[1].kernel.numpy(), head)


def test_learning_is_the_boolean_shorthand_of_learn():
    assert Hebbian(2, learning=False).learn == "never"
    assert Hebbian(2).learn == "always"
    layer = Hebbian(2, learn="training")
    assert layer.learning is True
    layer.learning = False
    assert layer.learn == "never"
    layer.learning = True
    assert layer.learn == "always"
    with pytest.raises(ValueError, match="learn='never' and learning=True disagree"):
        Hebbian(2, learn="never", learning=True)
    with pytest.raises(ValueError, match="learn must be one of never, training, always"):
        Hebbian(2, learn="sometimes")


def test_learn_round_trips_through_get_config_and_older_configs_still_load():
    layer = Hebbian(3, learn="training", seed=4)
    assert Hebbian.from_config(layer.get_config()).learn == "training"
    older = {**layer.get_config(), "learning": False}
    del older["learn"]
    assert Hebbian.from_config(older).learn == "never"


def test_frozen_stops_learning_and_restores_every_switch_even_after_an_error():
    model = HebbianSequential([keras.Input((8,)), Hebbian(4, seed=0, learn="always"),
                               Hebbian(2, seed=1, learn="training")])
    with pytest.raises(RuntimeError), frozen(model):
        model.predict(X, verbose=0)
        model(X, training=True)
        assert steps(model) == [0, 0]
        raise RuntimeError("inside the block")
    assert [layer.learn for layer in model.layers] == ["always", "training"]
    model(X)
    assert steps(model) == [64, 0]


DIVERGING = (dict(units=8, rule="sanger", learning_rate=0.5, seed=0),
             dict(units=4, rule="oja_subspace", learning_rate=0.5, seed=1))


def test_a_hebbian_stack_refuses_diverging_samples_as_a_whole_like_the_engine():
    engine = HebbianStack(StackConfig(64, DIVERGING)).engine
    served = engine.process(DIGITS)
    model = HebbianSequential([keras.Input((64,)), *(Hebbian(**spec) for spec in DIVERGING)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = model.predict(DIGITS, batch_size=32, verbose=0)
    assert int(served.skipped.sum()) == 298  # only 2 samples learned, then |K| ~ 1e10..1e14
    for layer, state in zip(model.layers, engine.layer_states(), strict=True):
        assert int(layer.refused.numpy()) == 298
        assert int(layer.step.numpy()) == int(state.step) == 2
        kernel = layer.kernel.numpy()
        assert np.abs(kernel - state.kernel).max() <= 1e-5 * np.abs(state.kernel).max()
    np.testing.assert_allclose(outputs, served.activations, rtol=1e-4)
    messages = [str(w.message) for w in caught]
    assert sum("298 sample(s) refused" in m for m in messages) == 2  # once per layer
    assert any("learning_rate=0.5 is too large" in m for m in messages)


def test_refused_counts_are_saved_with_the_state(tmp_path):
    model = HebbianSequential([keras.Input((64,)), *(Hebbian(**spec) for spec in DIVERGING)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.predict(DIGITS[:50], verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [int(layer.refused.numpy()) for layer in loaded.layers] == [48, 48]


def test_rate_warning_names_the_rate_the_sample_and_a_rate_that_would_do():
    params = Hebbian(4, rule="sanger", learning_rate=0.5).params.with_input_dim(64)
    message = rate_warning(params, DIGITS)
    norms = (DIGITS.astype(np.float64) ** 2).sum(axis=1)
    assert f"sample {int(norms.argmax())} has ||x||^2 = {norms.max():.4g}" in message
    assert "learning_rate=0.5 is too large" in message and "below 2" in message
    assert rate_warning(params, DIGITS / 16 / 8) is None
    lateral = Hebbian(8, lateral="anti_hebbian", lateral_learning_rate=0.1,
                      learning_rate=1e-4).params.with_input_dim(64)
    standardised = np.random.default_rng(1).normal(size=(2000, 64))
    unit_columns = np.linalg.qr(np.random.default_rng(2).normal(size=(64, 8)))[0]
    message = rate_warning(lateral, standardised, unit_columns)  # E||y||^2 ~ 8: 0.1 diverges
    assert "lateral_learning_rate=0.1 is too large" in message and "E||y||^2 = 7.991" in message
    stable = Hebbian(8, lateral="anti_hebbian", lateral_learning_rate=0.05,
                     learning_rate=1e-4).params.with_input_dim(64)
    assert rate_warning(stable, standardised, unit_columns) is None  # measured: |L| ~ 0.33
    hebb = Hebbian(4, rule="hebb", learning_rate=5.0).params.with_input_dim(64)
    assert rate_warning(hebb, DIGITS) is None  # bounded by its stabiliser


def test_an_eager_layer_call_warns_once_about_its_learning_rate():
    layer = Hebbian(4, rule="oja", learning_rate=0.5, seed=0)
    keras.Sequential([keras.Input((64,)), layer])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer(DIGITS[:10])
        layer(DIGITS[10:20])
    assert sum("learning_rate=0.5 is too large" in str(w.message) for w in caught) == 1
