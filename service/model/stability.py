"""When a learning rate is too large for the data: each rule's stability limit, checked.

No TensorFlow here: a pure function of a layer's params and a batch of inputs, used by
the Keras layer before it learns from data it has not seen the scale of.

The limits (eta: ``learning_rate``, alpha: ``lateral_learning_rate``, x: one sample):

- ``oja``, ``oja_subspace``, ``sanger``: one update moves a unit's weight norm by a
  factor of about (1 - eta ||x||^2) along x; it diverges once eta ||x||^2 exceeds 2 and
  is noisy well before. Keep eta ||x||^2 well below 1 for the largest samples.
- anti-Hebbian lateral weights: dL = -alpha y y^T; the feedback y + y L grows without
  bound once alpha E||y||^2 approaches 1 (y = x K before the lateral pass). Measured on
  standard-normal 64-wide input with 8 ``oja`` units (E||y||^2 ~ 8): alpha = 0.05 keeps
  |L| at 0.33 over 2000 samples, alpha = 0.1 reaches |L| ~ 6e13 and refuses the rest.
  Keep alpha E||y||^2 below 0.5.
- ``hebb``: bounded by its stabiliser (``normalize`` or ``clip``), never non-finite.
- ``bcm``: the update grows with y^3, so there is no rate-only limit; a rate that is too
  large shows as refused samples.
"""

from __future__ import annotations

import numpy as np

from service.model.params import HebbianParams

OJA_FAMILY = ("oja", "oja_subspace", "sanger")
# Warn at half of each divergence threshold: "well below" is what converges smoothly.
OJA_LIMIT = 1.0  # eta * max ||x||^2 (diverges near 2)
LATERAL_LIMIT = 0.5  # alpha * mean ||y||^2 (diverges near 1)


def rate_warning(params: HebbianParams, x: np.ndarray, kernel: np.ndarray | None = None
                 ) -> str | None:
    """A message naming the rate and the numbers when `x` is too large for it, else None.

    Args:
      params: the layer's hyper-parameters.
      x: (n, input_dim) samples the layer is about to learn from.
      kernel: the layer's kernel, for the lateral check's y = x K (without it ||x|| bounds
        ||y||, as for orthonormal weights).
    """
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    if x.size == 0:
        return None
    if params.rule in OJA_FAMILY:
        norms = np.einsum("ij,ij->i", x, x)
        worst = int(np.argmax(norms))
        largest = float(norms[worst])
        eta = params.learning_rate
        if eta * largest >= OJA_LIMIT:
            return (
                f"learning_rate={eta:g} is too large for this input: with rule="
                f"{params.rule!r} the update is stable only while learning_rate * ||x||^2 "
                f"stays well below 2, and sample {worst} has ||x||^2 = {largest:.4g} "
                f"(learning_rate * ||x||^2 = {eta * largest:.3g}). Use learning_rate < "
                f"{OJA_LIMIT / largest:.2g} or scale the inputs (e.g. standardise)."
            )
    if params.lateral == "anti_hebbian":
        y = x if kernel is None else x @ np.asarray(kernel, np.float64)
        mean = float(np.mean(np.einsum("ij,ij->i", y, y)))
        alpha = params.lateral_learning_rate
        if alpha * mean >= LATERAL_LIMIT:
            return (
                f"lateral_learning_rate={alpha:g} is too large for this input: the "
                f"anti-Hebbian lateral weights grow without bound once lateral_learning_rate "
                f"* E||y||^2 approaches 1, and here E||y||^2 = {mean:.4g} "
                f"(lateral_learning_rate * E||y||^2 = {alpha * mean:.3g}). Use "
                f"lateral_learning_rate < {LATERAL_LIMIT / mean:.2g} or scale the inputs."
            )
    return None
