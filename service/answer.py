"""`Answer`: what one request of samples got back, the one type for it everywhere.

The model core returns it for each request it applies, the exactly-once window keeps it
for each acknowledged request id (and snapshots it), and the servicer encodes it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Answer(NamedTuple):
    """The activations of a request's samples, the learning samples refused, the step.

    `activations` is (n, output_dim) float32, row i computed with the weights as they were
    before sample i's update; `skipped` holds the int32 indices (within the request) of the
    learning samples whose update would have made a weight non-finite and was not applied;
    `step` is the model's step right after the request's samples.
    """

    activations: np.ndarray
    skipped: np.ndarray
    step: int
