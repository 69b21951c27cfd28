"""Hebbian learning rules as pure functions: (state, x, y, params, eta, n) -> new state.

One implementation of the maths, used by the Keras layer and by the compiled engine.

Shapes: ``state.kernel`` is (input_dim, units), ``x`` is (batch, input_dim) and ``y``
is (batch, units). Rows that must not contribute are zero in both ``x`` and ``y``;
``n`` is the number of contributing rows, so a batch of one is exact online
learning and a larger batch is the mean of the per-sample updates taken at the same
state (``batch_mean`` granularity). In the formulas below W = kernel^T, one row per
unit, as in the literature.
"""

from __future__ import annotations

import tensorflow as tf

from service.model.layer_state import HebbianState
from service.model.params import HebbianParams


def _correlation(x: tf.Tensor, y: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """Mean outer product x y^T over the batch, shape (input_dim, units)."""
    return tf.matmul(x, y, transpose_a=True) / n


def hebb(state: HebbianState, x, y, p: HebbianParams, eta, n) -> HebbianState:
    """Plain Hebb, dW = eta y x^T, made stable by normalising or bounding the weights.

    Plain Hebb grows without bound; ``stabilizer="normalize"`` rescales each unit's
    weight vector to ``norm_target`` after every update, ``"clip"`` keeps every
    weight within +-``weight_bound``.
    """
    kernel = (state.kernel + eta * _correlation(x, y, n)) * state.mask
    if p.stabilizer == "normalize":
        kernel = normalize_columns(kernel, p.norm_target)
    else:
        kernel = tf.clip_by_value(kernel, -p.weight_bound, p.weight_bound)
    return state._replace(kernel=kernel)


def oja(state: HebbianState, x, y, p: HebbianParams, eta, n) -> HebbianState:
    """Oja's rule per unit, dw_j = eta y_j (x - y_j w_j): each unit finds the first PC."""
    decay = state.kernel * (tf.reduce_sum(y * y, axis=0) / n)
    return state._replace(kernel=state.kernel + eta * (_correlation(x, y, n) - decay))


def oja_subspace(state: HebbianState, x, y, p: HebbianParams, eta, n) -> HebbianState:
    """Oja's subspace rule, dW = eta (y x^T - y y^T W): spans the top-k principal subspace."""
    yy = tf.matmul(y, y, transpose_a=True) / n
    decay = tf.matmul(state.kernel, yy)
    return state._replace(kernel=state.kernel + eta * (_correlation(x, y, n) - decay))


def sanger(state: HebbianState, x, y, p: HebbianParams, eta, n) -> HebbianState:
    """Sanger's Generalized Hebbian Algorithm, dW = eta (y x^T - LT(y y^T) W).

    Row i converges to the i-th principal component, in order.
    """
    yy = tf.matmul(y, y, transpose_a=True) / n
    decay = tf.matmul(state.kernel, tf.linalg.band_part(yy, 0, -1))  # (LT[yy^T])^T = UT
    return state._replace(kernel=state.kernel + eta * (_correlation(x, y, n) - decay))


def bcm(state: HebbianState, x, y, p: HebbianParams, eta, n) -> HebbianState:
    """BCM with a sliding threshold: dw_j = eta x y_j (y_j - theta_j), theta -> E[y^2].

    The threshold is a running mean of y^2 with rate ``bcm_threshold_rate``; it must
    adapt faster than the weights. A unit selective to one of K equiprobable
    patterns settles at a response of K to it.
    """
    kernel = state.kernel + eta * _correlation(x, y * (y - state.theta), n)
    theta = state.theta + p.bcm_threshold_rate * (tf.reduce_sum(y * y, axis=0) / n - state.theta)
    return state._replace(kernel=kernel, theta=theta)


def anti_hebbian_lateral(state: HebbianState, y, alpha, n) -> HebbianState:
    """Foldiak's anti-Hebbian lateral rule, dL = -alpha y y^T, diagonal held at exactly 0."""
    lateral = state.lateral - alpha * (tf.matmul(y, y, transpose_a=True) / n)
    return state._replace(lateral=hollow(lateral))


def normalize_columns(kernel: tf.Tensor, target: float) -> tf.Tensor:
    """Rescale each unit's weight vector (a kernel column) to norm `target`.

    An all-zero column (a unit with no connections) stays zero.
    """
    norms = tf.norm(kernel, axis=0, keepdims=True)
    return kernel * tf.math.divide_no_nan(tf.cast(target, kernel.dtype), norms)


def hollow(matrix: tf.Tensor) -> tf.Tensor:
    """The matrix with its diagonal set to exactly zero."""
    return tf.linalg.set_diag(matrix, tf.zeros_like(tf.linalg.diag_part(matrix)))


FEEDFORWARD_RULES = {
    "hebb": hebb,
    "oja": oja,
    "oja_subspace": oja_subspace,
    "sanger": sanger,
    "bcm": bcm,
}
