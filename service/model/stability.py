"""When a learning rate is too large for the data: each rule's stability limit, checked.

No TensorFlow here: a pure function of a layer's params and a batch of inputs, used by
the Keras layer before it learns from data it has not seen the scale of.

The limits (eta: ``learning_rate``, alpha: ``lateral_learning_rate``, x: one sample):

- ``oja``, ``oja_subspace``, ``sanger``: one update moves a unit's weight norm by a
  factor of about (1 - eta ||x||^2) along x; it diverges once eta ||x||^2 exceeds 2 and
  is noisy well before. Keep eta ||x||^2 well below 1 for the largest samples.
- anti-Hebbian lateral weights: dL = -alpha y y^T with y of the order of x; the feedback
  y + y L grows without bound once alpha ||y||^2 approaches 1 (on standardised 64-wide
  data alpha = 0.1 reaches |L| ~ 1e22 within ~200 samples). Keep alpha ||x||^2 below 1.
- ``hebb``: bounded by its stabiliser (``normalize`` or ``clip``), never non-finite.
- ``bcm``: the update grows with y^3, so there is no rate-only limit; a rate that is too
  large shows as refused samples.
"""

from __future__ import annotations

import numpy as np

from service.model.params import HebbianParams

OJA_FAMILY = ("oja", "oja_subspace", "sanger")
# Warn at half of the divergence threshold 2: "well below" is what converges smoothly.
LIMIT = 1.0


def rate_warning(params: HebbianParams, x: np.ndarray) -> str | None:
    """A message naming the rate and the numbers when `x` is too large for it, else None.

    Args:
      params: the layer's hyper-parameters.
      x: (n, input_dim) samples the layer is about to learn from.
    """
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    if x.size == 0:
        return None
    norms = np.einsum("ij,ij->i", x, x)
    worst = int(np.argmax(norms))
    largest = float(norms[worst])
    checks = []
    if params.rule in OJA_FAMILY:
        checks.append(("learning_rate", params.learning_rate, f"rule={params.rule!r}", 2.0))
    if params.lateral == "anti_hebbian":
        checks.append(("lateral_learning_rate", params.lateral_learning_rate,
                       "lateral='anti_hebbian'", 1.0))
    for name, rate, what, diverges in checks:
        product = rate * largest
        if product >= LIMIT:
            return (
                f"{name}={rate:g} is too large for this input: with {what} the update is "
                f"stable only while {name} * ||x||^2 stays well below {diverges:g}, and sample "
                f"{worst} has ||x||^2 = {largest:.4g} ({name} * ||x||^2 = {product:.3g}). "
                f"Use {name} < {LIMIT / largest:.2g} or scale the inputs (e.g. standardise)."
            )
    return None
