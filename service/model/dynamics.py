"""Forward pass and online learning step of a stack of Hebbian layers.

`run` applies a (possibly padded) batch of samples to a stack: with ``per_sample``
granularity it is a ``tf.while_loop`` over the samples that carries the weights, so
the result is exactly the per-sample online result; with ``batch_mean`` every layer
takes one update, the mean of its per-sample updates at the batch's starting state.
The Keras layer and the compiled engine both call it: one implementation.

Each sample's response is computed with the weights as they were when it arrived
(predict, then learn). A sample whose update would make any weight of the stack
non-finite is not applied to any layer and is reported as skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from service.model.params import HebbianParams
from service.model.rules import FEEDFORWARD_RULES, HebbianState, anti_hebbian_lateral

_ACTIVATIONS = {"linear": tf.identity, "relu": tf.nn.relu, "tanh": tf.tanh, "sigmoid": tf.sigmoid}


def forward(p: HebbianParams, state: HebbianState, x: tf.Tensor) -> tf.Tensor:
    """Activations y = f(x K), then one pass through the lateral weights: y + y L."""
    y = _ACTIVATIONS[p.activation](tf.matmul(x, state.kernel))
    if p.lateral != "none":
        y = y + tf.matmul(y, state.lateral)
    return y


def learning_rates(p: HebbianParams, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Feed-forward and lateral rates at `step`: rate0 / (1 + step / decay_steps)."""
    if p.decay_steps > 0:
        decay = 1.0 + tf.cast(step, tf.float32) / p.decay_steps
    else:
        decay = tf.constant(1.0, tf.float32)
    return p.learning_rate / decay, p.lateral_learning_rate / decay


def learn(p: HebbianParams, state: HebbianState, x, y, n) -> HebbianState:
    """One update of a layer from `n` contributing samples (rows of x, y; others zero)."""
    eta, alpha = learning_rates(p, state.step)
    new = FEEDFORWARD_RULES[p.rule](state, x, y, p, eta, n)
    new = new._replace(kernel=new.kernel * state.mask)  # masked weights stay exactly zero
    if p.lateral == "anti_hebbian":
        new = anti_hebbian_lateral(new, y, alpha, n)
    return new._replace(step=state.step + tf.cast(n, tf.int64))


def _all_finite(states: Sequence[HebbianState]) -> tf.Tensor:
    checks = [tf.reduce_all(tf.math.is_finite(t)) for s in states for t in (s.kernel, s.lateral, s.theta)]
    return tf.reduce_all(tf.stack(checks))


def _select(cond: tf.Tensor, new: Sequence[HebbianState], old: Sequence[HebbianState]) -> tuple:
    return tuple(
        HebbianState(*(tf.where(cond, a, b) for a, b in zip(n_, o_, strict=True)))
        for n_, o_ in zip(new, old, strict=True)
    )


def _stack_forward(params, states, x):
    inputs, outputs = [], []
    for p, s in zip(params, states, strict=True):
        inputs.append(x)
        x = forward(p, s, x)
        outputs.append(x)
    return inputs, outputs


def run(
    params: Sequence[HebbianParams],
    states: Sequence[HebbianState],
    xs: tf.Tensor,
    learn_flags: tf.Tensor,
    n_valid: tf.Tensor,
) -> tuple[tuple[HebbianState, ...], tf.Tensor, tf.Tensor]:
    """Apply the first `n_valid` rows of `xs` to a stack of layers.

    Args:
      params: one `HebbianParams` per layer (all with the same granularity).
      states: the layers' states before the batch.
      xs: (N, input_dim) float32, rows past `n_valid` are padding and ignored.
      learn_flags: (N,) bool, whether each sample updates the weights.
      n_valid: int32 scalar, number of real samples.

    Returns:
      (new states, activations (N, units_out) with zero padding rows,
       skipped (N,) bool: learning samples whose update was refused as non-finite).
    """
    params, states = tuple(params), tuple(states)
    granularities = {p.granularity for p in params}
    if len(granularities) != 1:
        raise ValueError(f"all layers of a stack need one granularity; got {sorted(granularities)}")
    if granularities == {"batch_mean"}:
        return _run_batch_mean(params, states, xs, learn_flags, n_valid)
    return _run_per_sample(params, states, xs, learn_flags, n_valid)


def _run_per_sample(params, states, xs, learn_flags, n_valid):
    size = tf.shape(xs)[0]
    units_out = params[-1].units
    one = tf.constant(1.0, tf.float32)

    def body(i, states, ys, skipped):
        x = tf.slice(xs, [i, 0], [1, -1])
        inputs, outputs = _stack_forward(params, states, x)

        def update():
            new = tuple(
                learn(p, s, a, b, one)
                for p, s, a, b in zip(params, states, inputs, outputs, strict=True)
            )
            ok = _all_finite(new)
            return _select(ok, new, states), tf.logical_not(ok)

        def keep():
            return states, tf.constant(False)

        states, refused = tf.cond(learn_flags[i], update, keep)
        return i + 1, states, ys.write(i, outputs[-1][0]), skipped.write(i, refused)

    ys = tf.TensorArray(tf.float32, size=size, element_shape=(units_out,))
    skipped = tf.TensorArray(tf.bool, size=size, element_shape=())
    _, states, ys, skipped = tf.while_loop(
        lambda i, *_: i < n_valid, body, (tf.constant(0), states, ys, skipped)
    )
    valid = tf.range(size) < n_valid
    ys = tf.where(valid[:, None], ys.stack(), 0.0)
    skipped = tf.logical_and(valid, skipped.stack())
    return states, ys, skipped


def _run_batch_mean(params, states, xs, learn_flags, n_valid):
    valid = tf.range(tf.shape(xs)[0]) < n_valid
    contributes = tf.logical_and(valid, learn_flags)
    weight = tf.cast(contributes, tf.float32)[:, None]
    n = tf.reduce_sum(weight)
    inputs, outputs = _stack_forward(params, states, xs)
    new = tuple(
        learn(p, s, a * weight, b * weight, tf.maximum(n, 1.0))
        for p, s, a, b in zip(params, states, inputs, outputs, strict=True)
    )
    ok = _all_finite(new)
    states = _select(tf.logical_and(ok, n > 0), new, states)
    skipped = tf.logical_and(contributes, tf.logical_not(ok))
    ys = tf.where(valid[:, None], outputs[-1], 0.0)
    return states, ys, skipped
