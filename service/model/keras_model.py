"""`HebbianSequential`: a Keras model whose stack of Hebbian layers learns as the engine does.

Three things a plain `keras.Sequential` of `Hebbian` layers does not do:

- ``fit(x)`` without targets runs the forward pass with ``training=True`` (so layers with
  ``learn="training"`` or ``"always"`` learn) and no gradient step, so there is no "no
  trainable weights" warning and no loss to compile; ``evaluate(x)`` runs it with
  ``training=False``. With trainable layers (a `Dense` head) and a loss, both are Keras'
  own steps, the Hebbian layers learning in the forward pass as usual.
- When every layer is a `Hebbian` layer and all of them learn in a call, the stack is
  guarded as one, like the serving engine: a sample whose update would make any weight
  of any layer non-finite is applied to no layer (and counted in every layer's
  ``refused``). A plain `Sequential` guards each layer alone, so it can end half-updated.
- ``fit``, ``evaluate`` and ``predict`` warn once when the first layer's learning rate is
  too large for the data, and when samples were refused.

`frozen(model)` switches every Hebbian layer of any Keras model to ``learn="never"`` for a
block and restores each layer's switch afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from service.model.layer import PACKAGE, Hebbian, assign_learned, learn_stack, warn_about


def hebbian_layers(model: keras.Layer) -> list[Hebbian]:
    """Every `Hebbian` layer of `model` (nested models included), in order."""
    found = []
    for layer in getattr(model, "layers", []):
        found += [layer] if isinstance(layer, Hebbian) else hebbian_layers(layer)
    return found


@contextlib.contextmanager
def frozen(model: keras.Layer) -> Iterator[keras.Layer]:
    """Within the block no Hebbian layer of `model` learns; each switch is restored after.

    Example::

        with frozen(model):
            model.evaluate(x_test)   # the state is untouched
    """
    layers = hebbian_layers(model)
    before = [layer.learn for layer in layers]
    for layer in layers:
        layer.learn = "never"
    try:
        yield model
    finally:
        for layer, mode in zip(layers, before, strict=True):
            layer.learn = mode


@keras.saving.register_keras_serializable(package=PACKAGE)
class HebbianSequential(keras.Sequential):
    """A `keras.Sequential` for Hebbian layers: target-free `fit`, the stack guarded as one.

    Example::

        model = HebbianSequential([keras.Input((64,)), Hebbian(16, rule="sanger",
                                   learn="training"), Hebbian(4)])
        model.fit(x, epochs=2, batch_size=256)   # learns; no compile, no targets
        codes = model.predict(x)                 # does not learn (learn="training")

    Args: those of `keras.Sequential`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._joint_fn = tf.function(learn_stack, reduce_retracing=True, autograph=False)

    def call(self, inputs, training=None, mask=None, **kwargs):
        """The layers in order; an all-Hebbian stack that learns is guarded as one."""
        layers = self.layers
        joint = (
            layers
            and all(isinstance(layer, Hebbian) for layer in layers)
            and len({layer.params.granularity for layer in layers}) == 1
        )
        if not joint:
            return super().call(inputs, training=training, mask=mask, **kwargs)
        x = tf.convert_to_tensor(inputs, tf.float32)
        lead_shape = tf.shape(x)[:-1]
        x = tf.reshape(x, (-1, layers[0].params.input_dim))

        def together():
            layers[0]._check_finite(x)
            states = tuple(layer.state for layer in layers)
            new_states, y, skipped = self._joint_fn(tuple(h.params for h in layers), states, x)
            assign_learned(layers, x, new_states, skipped)
            return y

        def one_by_one():
            y = x
            for layer in layers:
                y = layer(y, training=training)
            return y

        all_learn = tf.reduce_all(tf.stack([layer.learns_tensor(training) for layer in layers]))
        if tf.executing_eagerly():
            y = together() if bool(all_learn) else one_by_one()
        else:
            y = tf.cond(all_learn, together, one_by_one)
        return tf.reshape(y, tf.concat([lead_shape, [layers[-1].units]], axis=0))

    def train_step(self, data):
        """Keras' step with trainable weights; otherwise the forward pass alone, learning."""
        if self.trainable_weights:
            return super().train_step(data)
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self(x, training=True)
        return self._hebbian_logs()

    def test_step(self, data):
        """Keras' step when there is a loss and targets; otherwise the forward pass alone."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is not None and self.loss is not None:
            return super().test_step(data)
        self(x, training=False)
        return self._hebbian_logs()

    def fit(self, x=None, y=None, **kwargs):
        """`keras.Model.fit`; compiles with no loss first when needed, then warns if due."""
        return self._run(super().fit, x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        """`keras.Model.evaluate`; compiles with no loss first when needed."""
        return self._run(super().evaluate, x, y, **kwargs)

    def predict(self, x, **kwargs):
        """`keras.Model.predict`, with the warnings of `fit`."""
        return self._run(super().predict, x, **kwargs)

    def _run(self, method, x, *args, **kwargs):
        if not self.compiled:
            self.compile()
        layers = hebbian_layers(self)
        first_is_hebbian = bool(self.layers) and self.layers[0] is (layers or [None])[0]
        if layers and first_is_hebbian and isinstance(x, np.ndarray) and layers[0].learning:
            warn_about(layers[:1], x)
        result = method(x, *args, **kwargs)
        warn_about(layers)
        return result

    def _hebbian_logs(self) -> dict:
        layers = hebbian_layers(self)
        if not layers:
            return {}
        return {
            "step": tf.cast(layers[-1].step, tf.float32),
            "refused": tf.cast(tf.add_n([tf.convert_to_tensor(h.refused) for h in layers]),
                               tf.float32),
        }
