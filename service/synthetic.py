"""A synthetic multi-channel sensor whose principal components are known exactly.

Latent sources with decreasing variances are mixed into the channels by a fixed
random orthonormal matrix, plus a little isotropic noise:

    x = Q (sqrt(variances) * z) + noise * e,    z, e ~ N(0, I)

so the covariance is Q diag(variances) Q^T + noise^2 I: its eigenvectors are the
columns of Q (in order) and its eigenvalues `variances + noise^2`. A PCA-type
Hebbian model (oja, oja_subspace, sanger) fed with this stream should turn its weight
rows towards those columns; `alignment` measures how far it got.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SyntheticSensor:
    """Seeded generator of `channels`-wide samples with known principal components.

    Args:
      channels: width of each sample (the model's input width).
      seed: seed of the mixing matrix and of the samples.
      top_variance: variance of the strongest source.
      decay: ratio between consecutive source variances (0 < decay < 1), so
        variances = top_variance * decay ** arange(channels).
      noise: standard deviation of the isotropic channel noise.
    """

    channels: int
    seed: int = 0
    top_variance: float = 4.0
    decay: float = 0.5
    noise: float = 0.05
    components: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1; got {self.channels}")
        if not 0 < self.decay < 1:
            raise ValueError(f"decay must be in (0, 1); got {self.decay}")
        rng = np.random.default_rng([self.seed, 0])
        q, r = np.linalg.qr(rng.normal(size=(self.channels, self.channels)))
        object.__setattr__(self, "components", q * np.sign(np.diag(r)))

    @property
    def variances(self) -> np.ndarray:
        """Variance of each latent source, descending."""
        return self.top_variance * self.decay ** np.arange(self.channels)

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of the channel covariance, descending."""
        return self.variances + self.noise**2

    def covariance(self) -> np.ndarray:
        """The exact channel covariance (channels, channels)."""
        q = self.components
        return (q * self.eigenvalues) @ q.T

    def batches(self, batch: int, count: int | None = None) -> Iterator[np.ndarray]:
        """Float32 batches of `batch` samples, `count` samples in all (None: endless)."""
        rng = np.random.default_rng([self.seed, 1])
        scale = np.sqrt(self.variances)
        sent = 0
        while count is None or sent < count:
            n = batch if count is None else min(batch, count - sent)
            latent = rng.normal(size=(n, self.channels)) * scale
            noise = rng.normal(size=(n, self.channels)) * self.noise
            yield (latent @ self.components.T + noise).astype(np.float32)
            sent += n


@dataclass(frozen=True)
class Alignment:
    """How a weight matrix W (units, channels) matches the known components.

    `cosines[i]` is |cos| between row i and component i (what sanger learns, in
    order); `subspace` is the share of the top-`units` principal subspace that the
    rows span (1 = the same subspace, what oja_subspace learns); `norms` are the
    rows' lengths (1 at convergence for the PCA rules).
    """

    cosines: np.ndarray
    subspace: float
    norms: np.ndarray


def alignment(weights: np.ndarray, components: np.ndarray) -> Alignment:
    """Compares weight rows (units, channels) with component columns (channels, >= units)."""
    weights = np.asarray(weights, np.float64)
    units = weights.shape[0]
    top = components[:, :units]
    norms = np.linalg.norm(weights, axis=1)
    cosines = np.abs(np.sum(weights * top.T, axis=1)) / np.maximum(norms, 1e-30)
    basis, _ = np.linalg.qr(weights.T)  # orthonormal basis of the rows' span
    subspace = float(np.sum((top.T @ basis) ** 2) / units)
    return Alignment(cosines=cosines, subspace=subspace, norms=norms)
