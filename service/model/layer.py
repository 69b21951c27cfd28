"""The `Hebbian` Keras 3 layer: feed-forward Hebbian learning with lateral connections."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from service.model import dynamics
from service.model.layer_state import HebbianState, initial_state
from service.model.params import check_seed, layer_from_config
from service.model.stability import rate_warning

_STATE_FIELDS = HebbianState._fields
LEARN_MODES = ("never", "training", "always")  # index = the value of the `_learn_mode` variable
# Registered as "service.model>Hebbian": a `.keras` file names what to import to load it.
PACKAGE = "service.model"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Hebbian(keras.layers.Layer):
    """Densely connected layer that learns online with a local Hebbian rule.

    Computes ``y = activation(x @ kernel)`` and, with lateral connections,
    ``y + y @ lateral``. A call that learns also updates the layer's state with
    ``variable.assign``, like the moving statistics of ``BatchNormalization``: each
    sample's activation is computed first, then its update is applied. The state is
    never trained by gradients (``trainable`` is unrelated to learning).

    When a call learns is one switch, ``learn``:

    - ``"always"`` (default, online learning): every call learns: ``model(x)``,
      ``model.predict``, ``model.evaluate``, ``model.fit``, calls in a ``tf.function``.
    - ``"training"``: only calls with ``training=True`` learn (``model.fit``, or
      ``model(x, training=True)``); ``predict``, ``evaluate`` and ``model(x)`` do not,
      exactly like ``BatchNormalization``'s moving statistics.
    - ``"never"``: inference only; the state is untouched.

    ``learning`` is the boolean shorthand: ``learning=False`` is ``learn="never"``,
    ``learning=True`` is ``learn="always"``; reading it says whether any call can learn.
    ``service.model.frozen(model)`` sets every layer to ``"never"`` for a block.

    A sample whose update would make a weight non-finite is not applied; the layer
    counts it in ``refused`` (a non-trainable variable saved with the state) and warns
    the first time, in eager calls and in ``HebbianSequential``'s ``fit``/``evaluate``/
    ``predict`` (graphs only count). Those also warn once when the learning rate is too
    large for the input's scale (see ``service.model.stability``). A stack of layers is
    guarded as one only in a ``HebbianSequential``; a plain ``Sequential`` guards each
    layer alone.

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
      learn: "always", "training" or "never": when calls learn (see above).
      learning: the older boolean form of ``learn`` (False = "never", True = "always");
        when both are given they must agree.
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
        learn: str | None = None,
        learning: bool | None = None,
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
        # A variable, not a Python value, so that flipping the switch also reaches
        # functions Keras already traced (model.predict's cached predict_function).
        self._learn_mode = tf.Variable(
            LEARN_MODES.index(_learn_mode(learn, learning)), trainable=False,
            dtype=tf.int32, name="learn_mode",
        )
        self.units = units
        self._learn_fn = tf.function(self._learn_batch, reduce_retracing=True, autograph=False)
        self._warned: set[str] = set()

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
        # Not part of `HebbianState` (the engine counts skipped samples itself); saved in
        # `.keras` files after the state (see `load_own_variables` for older files).
        self.refused = add("refused", np.array(0, np.int64), dtype="int64")

    def call(self, inputs, training: bool | None = None, learning: bool | None = None):
        """Activations of `inputs`; when this call learns, each sample then updates the state.

        `training` is Keras' flag (True under `fit`); with `learn="training"` only
        `training=True` learns. `learning` overrides the switch for this call (direct layer
        calls only: Keras models do not forward extra call arguments).
        """
        x = tf.convert_to_tensor(inputs, tf.float32)
        lead_shape = tf.shape(x)[:-1]
        x = tf.reshape(x, (-1, self.params.input_dim))
        self._check_finite(x)
        if learning is not None:
            y = self._learn(x) if learning else self._infer(x)
        elif tf.executing_eagerly():
            y = self._learn(x) if self.learns(training) else self._infer(x)
        else:
            y = tf.cond(self.learns_tensor(training), lambda: self._learn(x),
                        lambda: self._infer(x))
        return tf.reshape(y, tf.concat([lead_shape, [self.units]], axis=0))

    @property
    def learn(self) -> str:
        """When calls learn: "always", "training" or "never"."""
        return LEARN_MODES[int(self._learn_mode.numpy())]

    @learn.setter
    def learn(self, mode: str) -> None:
        self._learn_mode.assign(LEARN_MODES.index(_learn_mode(mode, None)))

    @property
    def learning(self) -> bool:
        """Shorthand of `learn`: False means "never"; setting True means "always"."""
        return self.learn != "never"

    @learning.setter
    def learning(self, enabled: bool) -> None:
        self.learn = "always" if enabled else "never"

    def learns(self, training: bool | None = None) -> bool:
        """Whether a call with Keras' `training` flag learns, under the current switch."""
        return bool(self.learns_tensor(training).numpy())

    def learns_tensor(self, training: bool | None = None) -> tf.Tensor:
        """`learns` as a boolean tensor that reads the switch when it runs (for graphs)."""
        lowest = LEARN_MODES.index("training" if training else "always")
        return self._learn_mode >= lowest

    def load_own_variables(self, store) -> None:
        """Load the saved variables; files from before `refused` existed have 5, not 6."""
        if len(store.keys()) == len(_STATE_FIELDS):
            for variable, key in zip(self.state_variables, sorted(store.keys(), key=int),
                                     strict=True):
                variable.assign(store[key])
            return
        super().load_own_variables(store)

    def compute_output_shape(self, input_shape):
        """Same leading axes as the input, last axis `units`."""
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self) -> dict:
        """Constructor arguments, including the actual seed, so the layer rebuilds exactly."""
        config = super().get_config()
        config.update(self.params.to_dict())
        config.update(seed=self.seed, learn=self.learn)
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
        new_states, y, skipped = self._learn_fn(x, (self.state,))
        assign_learned((self,), x, new_states, skipped)
        return y

    def _infer(self, x):
        return dynamics.forward(self.params, self.state, x)

    def _learn_batch(self, x, states):
        return learn_stack((self.params,), states, x)

    def warn_once(self, kind: str, message: str) -> None:
        """Warn with `message` the first time this layer meets `kind` of trouble."""
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"Hebbian layer {self.name!r}: {message}", RuntimeWarning,
                          stacklevel=3)

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


# Files saved before the package was "service.model" recorded "hebbian>Hebbian".
keras.saving.get_custom_objects()["hebbian>Hebbian"] = Hebbian


def _learn_mode(learn: str | None, learning: bool | None) -> str:
    """The `learn` mode from the constructor's `learn` and its boolean shorthand `learning`."""
    if learn is None:
        return "never" if learning is False else "always"
    if learn not in LEARN_MODES:
        raise ValueError(f"learn must be one of {', '.join(LEARN_MODES)}; got {learn!r}")
    if learning is not None and bool(learning) != (learn != "never"):
        raise ValueError(f"learn={learn!r} and learning={learning!r} disagree; give only learn")
    return learn


def learn_stack(params, states, x):
    """Every row of `x` through a stack of layers, learning; the stack guarded as one.

    Returns (new states, activations, skipped per sample): a sample whose update would make
    a weight of any layer non-finite is applied to no layer (`dynamics.run`, which the
    engines share).
    """
    n = tf.shape(x)[0]
    states = tuple(HebbianState(*s) for s in states)
    return dynamics.run(tuple(params), states, x, tf.ones([n], tf.bool), n)


def assign_learned(layers: Sequence[Hebbian], x, new_states, skipped) -> None:
    """Assign a learned stack state to its layers; count (and warn of) refused samples.

    In eager calls also warns once when the first layer's learning rate is too large for
    the scale of `x` (`stability.rate_warning`).
    """
    refused = tf.reduce_sum(tf.cast(skipped, tf.int64))
    for layer, state in zip(layers, new_states, strict=True):
        for name, value in zip(_STATE_FIELDS, state, strict=True):
            getattr(layer, name).assign(value)
        layer.refused.assign_add(refused)
    if tf.executing_eagerly():
        warn_about(layers, x)


def warn_about(layers: Sequence[Hebbian], x=None) -> None:
    """Warn once per layer about refused samples, and about `x` too large for the rates."""
    if x is not None:
        message = rate_warning(layers[0].params, np.asarray(x), layers[0].kernel.numpy())
        if message:
            layers[0].warn_once("rate", message)
    for layer in layers:
        count = int(layer.refused.numpy())
        if count:
            layer.warn_once(
                "refused",
                f"{count} sample(s) refused so far: their update would have made a weight "
                f"non-finite, so they were applied to no layer (step {int(layer.step.numpy())}"
                "). The learning rate is probably too large for the data; see `refused`.",
            )


# Whoever uses the layer can load saved stacks too: register HebbianSequential as well
# (at the end, where every name above exists for keras_model's import of them).
import service.model.keras_model  # noqa: E402, F401
