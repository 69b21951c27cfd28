"""Forward pass and online learning step of a stack of Hebbian layers.

`run` applies a (possibly padded) batch of samples to a stack: with ``per_sample``
granularity it is a ``tf.while_loop`` over the samples that carries the weights, so
the result is exactly the per-sample online result; with ``batch_mean`` every layer
takes one update, the mean of its per-sample updates at the batch's starting state.
The Keras layer and the compiled engine both call it: one implementation.

Each sample's response is computed with the weights as they were when it arrived
(predict, then learn). A sample whose update would make any weight of the stack
non-finite is not applied to any layer and is reported as skipped.

Checking every weight after every sample costs more than the update itself, so
``per_sample`` runs optimistically first: a loop without the guard that only records
whether every matmul product it computed was finite. A non-finite weight makes the
next product that reads it non-finite (x * inf and 0 * inf are not finite), and the
final state is checked in full, so a clean optimistic pass took exactly the updates
the guarded loop would take. Otherwise the batch is redone from its starting state
by the guarded loop. Both loops share one step function, so they agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from service.model.params import HebbianParams
from service.model.rules import FEEDFORWARD_RULES, HebbianState, anti_hebbian_lateral

_ACTIVATIONS = {"linear": tf.identity, "relu": tf.nn.relu, "tanh": tf.tanh, "sigmoid": tf.sigmoid}


def forward(p: HebbianParams, state: HebbianState, x: tf.Tensor) -> tf.Tensor:
    """Activations y = f(x K), then one pass through the lateral weights: y + y L."""
    return _forward_probed(p, state, x)[0]


def _forward_probed(p: HebbianParams, state: HebbianState, x: tf.Tensor):
    """`forward`, plus probes: tensors that are non-finite if a weight they read is.

    The lateral probe is the sum y + y L, not the product y L: a second use of that
    product would stop XLA from fusing the add into the matmul, and change the
    rounding of y between the optimistic and the guarded loop.
    """
    product = tf.matmul(x, state.kernel)
    y = _ACTIVATIONS[p.activation](product)
    probes = [product]
    if p.lateral != "none":
        y = y + tf.matmul(y, state.lateral)
        probes.append(y)
    return y, probes


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
    checks = [
        tf.reduce_all(tf.math.is_finite(t)) for s in states for t in (s.kernel, s.lateral, s.theta)
    ]
    return tf.reduce_all(tf.stack(checks))


def _select(cond: tf.Tensor, new: Sequence[HebbianState], old: Sequence[HebbianState]) -> tuple:
    return tuple(
        HebbianState(*(a if a is b else tf.where(cond, a, b) for a, b in zip(n_, o_, strict=True)))
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
    new_states, ys, clean = _optimistic_loop(params, states, xs, learn_flags, n_valid)
    clean = tf.logical_and(clean, _all_finite(new_states))

    def accept():
        return new_states, ys, tf.zeros_like(learn_flags)

    def redo():
        return _guarded_loop(params, states, xs, learn_flags, n_valid)

    states, ys, skipped = tf.cond(clean, accept, redo)
    valid = tf.range(tf.shape(xs)[0]) < n_valid
    ys = tf.where(valid[:, None], ys, 0.0)
    skipped = tf.logical_and(valid, skipped)
    return states, ys, skipped


def _row(xs, i):
    """Row `i` of `xs` as a (1, width) slice (static width when known: no padding in XLA)."""
    return tf.slice(xs, [i, 0], [1, xs.shape[1] or -1])


def _sample_step(params, states, x):
    """One sample (1, input_dim) through the stack: output row, candidate states, products."""
    inputs, outputs, probes = [], [], []
    for p, s in zip(params, states, strict=True):
        inputs.append(x)
        x, layer_probes = _forward_probed(p, s, x)
        outputs.append(x)
        probes += layer_probes
    one = tf.constant(1.0, tf.float32)
    new = tuple(
        learn(p, s, a, b, one) for p, s, a, b in zip(params, states, inputs, outputs, strict=True)
    )
    return outputs[-1][0], new, probes


def _unread_updates(params, states, new) -> list:
    """Fields the step updates that no forward matmul reads (e.g. the BCM threshold)."""
    unread = []
    for p, s, n in zip(params, states, new, strict=True):
        read = {"kernel"} | ({"lateral"} if p.lateral != "none" else set())
        unread += [
            getattr(s, f)
            for f in ("lateral", "theta")
            if f not in read and getattr(n, f) is not getattr(s, f)
        ]
    return unread


def _optimistic_loop(params, states, xs, learn_flags, n_valid):
    """Every learning sample updates, unguarded; also whether all weights stayed finite.

    A weight that turned non-finite at one step shows up in the products of the
    next (or, for weights no product reads, is checked directly); the caller checks
    the final state.
    """

    def step(states, x):
        y, new, probes = _sample_step(params, states, x)
        return y, new, probes + _unread_updates(params, states, new)

    def body(i, states, ys, finite):
        y, new, probes = step(states, _row(xs, i))
        finite = [
            tf.logical_and(f, tf.math.is_finite(t)) for f, t in zip(finite, probes, strict=True)
        ]
        return i + 1, _select(learn_flags[i], new, states), ys.write(i, y), finite

    # Elementwise "all finite so far" per probe: cheaper than reducing every step.
    # (This step on a zero row only gives their shapes; its ops are unused and pruned.)
    finite = [
        tf.ones(t.shape, tf.bool) for t in step(states, tf.zeros([1, params[0].input_dim]))[2]
    ]
    ys = tf.TensorArray(tf.float32, size=tf.shape(xs)[0], element_shape=(params[-1].units,))
    _, states, ys, finite = tf.while_loop(
        lambda i, *_: i < n_valid, body, (tf.constant(0), states, ys, finite)
    )
    clean = tf.reduce_all(tf.stack([tf.reduce_all(f) for f in finite]))
    return states, ys.stack(), clean


def _guarded_loop(params, states, xs, learn_flags, n_valid):
    """Every learning sample updates unless that makes a weight non-finite (then skipped)."""

    def body(i, states, ys, skipped):
        y, new, _ = _sample_step(params, states, _row(xs, i))
        finite = _all_finite(new)
        apply = tf.logical_and(learn_flags[i], finite)
        refused = tf.logical_and(learn_flags[i], tf.logical_not(finite))
        return i + 1, _select(apply, new, states), ys.write(i, y), skipped.write(i, refused)

    size = tf.shape(xs)[0]
    ys = tf.TensorArray(tf.float32, size=size, element_shape=(params[-1].units,))
    skipped = tf.TensorArray(tf.bool, size=size, element_shape=())
    _, states, ys, skipped = tf.while_loop(
        lambda i, *_: i < n_valid, body, (tf.constant(0), states, ys, skipped)
    )
    return states, ys.stack(), skipped.stack()


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
