"""The `Hebbian` Keras 3 layer: feed-forward Hebbian learning with lateral connections."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from service.model import dynamics
from service.model.layer_state import HebbianState, initial_state
from service.model.params import check_seed, layer_from_config

_STATE_FIELDS = HebbianState._fields


@keras.saving.register_keras_serializable(package="hebbian")
class Hebbian(keras.layers.Layer):
    """Densely connected layer that learns online with a local Hebbian rule.

    Computes ``y = activation(x @ kernel)`` and, with lateral connections,
    ``y + y @ lateral``. When ``learning`` is on, every call (``model(x)``,
    ``model.predict``, calls inside a ``tf.function``) also updates the layer's state
    with ``variable.assign``, like the moving statistics of ``BatchNormalization``:
    each sample's activation is computed first, then its update is applied. The
    state is never trained by gradients (``trainable`` is unrelated to ``learning``).

    Args:
      units: output width; independent of the input width (``output_dim`` is
        accepted as an alias, as in the layer this one replaces).
      rule: "hebb" (needs a stabiliser), "oja" (each unit -> first principal
        component), "oja_subspace" (top-``units`` principal subspace), "sanger"
        (GHA: unit i -> i-th principal component) or "bcm" (sliding threshold).
      learning_rate: initial rate eta0; the rate at step t is eta0 / (1 + t / decay_steps).
      decay_steps: schedule time constant; 0 keeps the rate constant.
      lateral: "none", "inhibition" (fixed weights -lateral_strength between every
        pair of units) or "anti_hebbian" (Foldiak: learned, dL = -alpha y y^T).
        The lateral matrix is (units, units) and its diagonal is always exactly 0.
      lateral_strength: inhibition weight for ``lateral="inhibition"``.
      lateral_learning_rate: alpha0 for ``lateral="anti_hebbian"``.
      connectivity: "all", "random" (each connection kept with probability
        ``connectivity_prob``) or "zero" (no feed-forward connections). The mask is
        drawn once from ``seed``, saved with the state, and masked weights stay 0.
      connectivity_prob: kept fraction for ``connectivity="random"``.
      activation: "linear", "relu", "tanh" or "sigmoid", applied before the lateral pass.
      stabilizer: for ``rule="hebb"``: "normalize" (each unit's weights rescaled to
        ``norm_target`` after every update) or "clip" (weights within +-``weight_bound``).
      norm_target, weight_bound: see ``stabilizer``.
      bcm_threshold_rate: rate of the BCM threshold's running mean of y^2.
      granularity: "per_sample" (exact online learning, default) or "batch_mean"
        (one update per call, the mean of the per-sample updates).
      learning: default of the ``learning`` switch of ``call``.
      seed: seed of the initial weights and the mask; drawn at random when None and
        then stored in the config, so a model is always reproducible.

    Input shape:
      ``(batch, ..., input_dim)``; leading axes are flattened into samples, in order.

    Output shape:
      ``(batch, ..., units)``.
    """

    def __init__(
        self,
        units: int | None = None,
        rule: str = "oja",
        learning_rate: float = 1e-3,
        lateral: str | None = None,
        connectivity: str = "all",
        connectivity_prob: float = 1.0,
        seed: int | None = None,
        *,
        decay_steps: float = 0.0,
        lateral_strength: float = 0.1,
        lateral_learning_rate: float = 1e-3,
        activation: str = "linear",
        stabilizer: str = "normalize",
        norm_target: float = 1.0,
        weight_bound: float = 1.0,
        bcm_threshold_rate: float = 1e-2,
        granularity: str = "per_sample",
        learning: bool = True,
        output_dim: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.params, _ = layer_from_config({
            "units": units, "output_dim": output_dim, "rule": rule,
            "learning_rate": learning_rate, "decay_steps": decay_steps, "lateral": lateral,
            "lateral_strength": lateral_strength,
            "lateral_learning_rate": lateral_learning_rate, "connectivity": connectivity,
            "connectivity_prob": connectivity_prob, "activation": activation,
            "stabilizer": stabilizer, "norm_target": norm_target,
            "weight_bound": weight_bound, "bcm_threshold_rate": bcm_threshold_rate,
            "granularity": granularity,
        })
        units = self.params.units
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        self.seed = check_seed(seed)
        # A variable, not a Python bool, so that flipping the switch also reaches
        # functions Keras already traced (model.predict's cached predict_function).
        self._learning = tf.Variable(bool(learning), trainable=False, name="learning")
        self.units = units
        self._learn_fn = tf.function(self._learn_batch, reduce_retracing=True, autograph=False)

    # -- Keras structure ---------------------------------------------------------------

    def build(self, input_shape) -> None:
        """Create kernel, lateral, mask, BCM threshold and step counter."""
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"Hebbian needs a known input width; got input shape {input_shape}")
        self.params = self.params.with_input_dim(int(input_dim))
        initial = initial_state(self.params, self.seed)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: int(input_dim)})

        def add(name, value, dtype="float32"):
            return self.add_weight(
                name=name,
                shape=value.shape,
                dtype=dtype,
                initializer=lambda shape, dtype=None, v=value: v,
                trainable=False,
            )

        self.kernel = add("kernel", initial.kernel)
        self.lateral = add("lateral", initial.lateral)
        self.mask = add("mask", initial.mask)
        self.theta = add("theta", initial.theta)
        self.step = add("step", initial.step, dtype="int64")

    def call(self, inputs, learning: bool | None = None):
        """Activations of `inputs`; while learning, each sample then updates the state.

        `learning` overrides the layer's switch for this call (direct layer calls only:
        Keras models do not forward extra call arguments; set `layer.learning` instead).
        """
        x = tf.convert_to_tensor(inputs, tf.float32)
        lead_shape = tf.shape(x)[:-1]
        x = tf.reshape(x, (-1, self.params.input_dim))
        self._check_finite(x)
        if learning is None and not tf.executing_eagerly():
            y = tf.cond(self._learning, lambda: self._learn(x), lambda: self._infer(x))
        elif self.learning if learning is None else bool(learning):
            y = self._learn(x)
        else:
            y = self._infer(x)
        return tf.reshape(y, tf.concat([lead_shape, [self.units]], axis=0))

    @property
    def learning(self) -> bool:
        """Whether calls update the state (the switch read by `call`)."""
        return bool(self._learning.numpy())

    @learning.setter
    def learning(self, enabled: bool) -> None:
        self._learning.assign(bool(enabled))

    def compute_output_shape(self, input_shape):
        """Same leading axes as the input, last axis `units`."""
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self) -> dict:
        """Constructor arguments, including the actual seed, so the layer rebuilds exactly."""
        config = super().get_config()
        config.update(self.params.to_dict())
        config.update(seed=self.seed, learning=self.learning)
        return config

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> HebbianState:
        """The current full learning state as tensors."""
        return HebbianState(*(tf.convert_to_tensor(getattr(self, f)) for f in _STATE_FIELDS))

    @property
    def state_variables(self) -> HebbianState:
        """The variables that hold the state, in `HebbianState` order."""
        return HebbianState(*(getattr(self, f) for f in _STATE_FIELDS))

    def reset_state(self, seed: int | None = None) -> None:
        """Re-initialise the full state from `seed` (default: the layer's own seed)."""
        if seed is not None:
            self.seed = int(seed)
        for variable, value in zip(
            self.state_variables, initial_state(self.params, self.seed), strict=True
        ):
            variable.assign(value)

    def _learn(self, x):
        new_state, y = self._learn_fn(x, self.state)
        for name, value in zip(_STATE_FIELDS, new_state, strict=True):
            getattr(self, name).assign(value)
        return y

    def _infer(self, x):
        return dynamics.forward(self.params, self.state, x)

    def _learn_batch(self, x, state):
        n = tf.shape(x)[0]
        (new_state,), y, _ = dynamics.run(
            (self.params,), (HebbianState(*state),), x, tf.ones([n], tf.bool), n
        )
        return new_state, y

    def _check_finite(self, x) -> None:
        if tf.executing_eagerly():
            bad = ~np.isfinite(x.numpy())
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise ValueError(
                    f"layer {self.name!r} expects finite input values; got NaN or Inf "
                    f"in sample {row}"
                )
        else:
            tf.debugging.assert_all_finite(
                x, f"layer {self.name!r} expects finite input values; got NaN or Inf"
            )
