"""Model-quality measures computed cheaply from the live state of a `HebbianStack`.

For every layer, with W = kernel^T (one row per unit, as in the literature):

- ``kernel_norm``, ``lateral_norm``: Frobenius norms of the feed-forward and lateral weights.
- ``orthonormality_error``: max |W W^T - I|; 0 for an orthonormal basis, the fixed point
  of ``oja_subspace`` and ``sanger`` (plain ``oja`` drives every unit to the same first
  component, so its value approaches 1 there by design).
- ``weight_drift_per_second``: ||W_now - W_then|| / ||W_now|| / (t_now - t_then), the
  relative change of the kernel per second (base units) over about the last minute.
  Kernel copies are kept in a small ring, at most one per ``snapshot_interval`` seconds;
  the reference is the newest copy at least ``window`` seconds old, else the oldest copy.
  The history starts at the first micro-batch the tracker observes after it was created
  or reset, never from the weights before it: a restarted server's recovery (snapshot
  load, log replay) or a Reset/Restore is not mistaken for learning. So the drift is 0
  while nothing was learned live, NaN while the oldest copy is younger than
  ``min_drift_age`` seconds.
- ``reconstruction_error``: sum ||x - W^T W x||^2 / sum ||x||^2 over recent samples,
  a ratio of exponential moving averages (each with a memory of about ``ema_samples``
  observed samples), i.e. the running mean of the per-sample ratio weighted by the
  sample's energy. For an orthonormal principal basis it is exactly the share of the
  (uncentred) input variance that the layer's subspace does not explain. Each layer's
  input is the previous layer's output. NaN until a sample was observed.
- ``explained_variance``: 1 - ``reconstruction_error``.

`observe` runs on the model's holder thread after each micro-batch: it is rate-limited and
subsampled, and all locks here are held only for O(1) bookkeeping, never during maths.
`layer_stats` may be called from any thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.model.native_engine import NativeEngine
from service.model.stack import HebbianStack

NAN = float("nan")


@dataclass(frozen=True)
class LayerStatsValues:
    """Weight statistics and quality measures of one layer; NaN where not known yet."""

    kernel_norm: float
    lateral_norm: float
    orthonormality_error: float
    weight_drift_per_second: float
    reconstruction_error: float
    explained_variance: float


def orthonormality_error(kernel: np.ndarray) -> float:
    """max |W W^T - I| for W = kernel^T, kernel of shape (input_dim, units)."""
    kernel = np.asarray(kernel, np.float64)
    gram = kernel.T @ kernel
    return float(np.max(np.abs(gram - np.eye(gram.shape[0]))))


def reconstruction_residuals(kernel: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample ||x - W^T W x||^2 and ||x||^2 for rows x of (n, input_dim), W = kernel^T."""
    kernel = np.asarray(kernel, np.float64)
    x = np.asarray(x, np.float64)
    residual = x - (x @ kernel) @ kernel.T
    return np.sum(residual * residual, axis=1), np.sum(x * x, axis=1)


def relative_change(now: np.ndarray, then: np.ndarray) -> float:
    """||now - then|| / ||now|| (Frobenius); 0 when both are zero, NaN when only `now` is."""
    diff = float(np.linalg.norm(np.asarray(now, np.float64) - then))
    norm = float(np.linalg.norm(np.asarray(now, np.float64)))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else NAN
    return diff / norm


class QualityTracker:
    """Running quality measures of one live model (see the module docstring).

    Args:
      stack: the served model; its layers' variables are read, never written.
      clock: monotonic seconds; injectable for tests.
      max_samples: at most this many samples of a batch are used per `observe`,
        evenly spaced through the batch.
      min_interval: `observe` does nothing if the previous one that counted was less
        than this many seconds ago.
      ema_samples: memory of the reconstruction-error averages, in observed samples.
      window: drift reference age in seconds (one minute); the drift is still per second.
      snapshot_interval: minimum seconds between two kernel copies in the drift ring.
      min_drift_age: youngest reference copy a drift is computed from, in seconds.
    """

    def __init__(
        self,
        stack: HebbianStack,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_samples: int = 32,
        min_interval: float = 0.05,
        ema_samples: int = 256,
        window: float = 60.0,
        snapshot_interval: float = 5.0,
        min_drift_age: float = 1.0,
    ):
        if max_samples < 1 or ema_samples < 1:
            raise ValueError(
                f"max_samples and ema_samples must be >= 1; got {max_samples}, {ema_samples}"
            )
        if window <= 0 or snapshot_interval <= 0 or min_drift_age <= 0 or min_interval < 0:
            raise ValueError("window, snapshot_interval and min_drift_age must be > 0")
        self._stack = stack
        self._params = stack.params
        self._clock = clock
        self._max_samples = int(max_samples)
        self._min_interval = float(min_interval)
        self._ema_rate = 1.0 / float(ema_samples)
        self._window = float(window)
        self._snapshot_interval = float(snapshot_interval)
        self._min_drift_age = float(min_drift_age)
        self._lock = threading.Lock()
        self._last_observe = -math.inf
        self._last_step = -1
        self.reset()

    # -- writers -----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all history; call after the model's weights were replaced (Reset, Restore)."""
        with self._lock:
            self._residual_ema = [NAN] * len(self._params)
            self._energy_ema = [NAN] * len(self._params)
            # empty until the next observed micro-batch: the drift baseline is a live kernel
            self._ring: list[tuple[float, list[np.ndarray]]] = []

    def observe(self, samples: np.ndarray) -> None:
        """Fold a subsample of a micro-batch (n, input_dim) into the running measures.

        Called by the model's holder after the batch was applied. Rate-limited to one
        call per ``min_interval`` and at most ``max_samples`` samples, so its cost is
        bounded whatever the traffic. Non-finite rows are ignored.
        """
        now = self._clock()
        if now - self._last_observe < self._min_interval:
            return
        x = np.asarray(samples, np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            return
        self._last_observe = now
        if x.shape[0] > self._max_samples:
            x = x[np.linspace(0, x.shape[0] - 1, self._max_samples).astype(np.int64)]
        x = x[np.isfinite(x).all(axis=1)]
        count = len(x)
        states = self._stack.layer_states()
        step = int(states[0].step)
        if step < self._last_step:  # the weights were reset or restored behind our back
            self.reset()
        self._last_step = step
        kernels, residuals, energies = [], [], []
        for index, (params, state) in enumerate(zip(self._params, states, strict=True)):
            kernels.append(state.kernel)
            residual, energy = reconstruction_residuals(state.kernel, x)
            residuals.append(float(np.mean(residual)) if count else NAN)
            energies.append(float(np.mean(energy)) if count else NAN)
            if index < len(states) - 1 and count:
                x = NativeEngine([params], [state]).process(x, learn=False).activations
        weight = 1.0 - (1.0 - self._ema_rate) ** count if count else 0.0
        with self._lock:
            if weight:
                self._residual_ema = _ema(self._residual_ema, residuals, weight)
                self._energy_ema = _ema(self._energy_ema, energies, weight)
            self._maybe_snapshot(now, kernels, start=True)

    # -- readers -----------------------------------------------------------------------

    def layer_stats(self) -> list[LayerStatsValues]:
        """The current measures of every layer, input to output; safe from any thread."""
        states = self._stack.layer_states()
        kernels = [state.kernel for state in states]
        laterals = [np.asarray(state.lateral, np.float64) for state in states]
        now = self._clock()
        with self._lock:
            residual_ema, energy_ema = list(self._residual_ema), list(self._energy_ema)
            ring = list(self._ring)
            self._maybe_snapshot(now, kernels)
        reference = self._drift_reference(now, ring)
        stats = []
        for index, (kernel, lateral) in enumerate(zip(kernels, laterals, strict=True)):
            if not ring:
                drift = 0.0  # nothing learned live since the tracker was created or reset
            elif reference is None:
                drift = NAN
            else:
                age, then = reference
                drift = relative_change(kernel, then[index]) / age
            energy = energy_ema[index]
            error = residual_ema[index] / energy if energy > 0 else NAN
            stats.append(
                LayerStatsValues(
                    kernel_norm=float(np.linalg.norm(kernel)),
                    lateral_norm=float(np.linalg.norm(lateral)),
                    orthonormality_error=orthonormality_error(kernel),
                    weight_drift_per_second=drift,
                    reconstruction_error=error,
                    explained_variance=1.0 - error,
                )
            )
        return stats

    # -- internals ---------------------------------------------------------------------

    def _maybe_snapshot(self, now: float, kernels: list[np.ndarray], start: bool = False) -> None:
        """Append a kernel copy if due and drop copies older than the drift reference.

        An empty ring is started only when `start` (by `observe`, with live kernels).
        Caller holds the lock.
        """
        if not self._ring:
            if start:
                self._ring.append((now, kernels))
            return
        if now - self._ring[-1][0] >= self._snapshot_interval:
            self._ring.append((now, kernels))
        # keep the newest copy that is at least `window` old and everything after it
        while len(self._ring) > 1 and now - self._ring[1][0] >= self._window:
            self._ring.pop(0)

    def _drift_reference(
        self, now: float, ring: Sequence[tuple[float, list[np.ndarray]]]
    ) -> tuple[float, list[np.ndarray]] | None:
        """(age, kernels) of the copy to compare with, or None when none is old enough."""
        if not ring:
            return None
        old_enough = [entry for entry in ring if now - entry[0] >= self._window]
        when, kernels = old_enough[-1] if old_enough else ring[0]
        age = now - when
        if age < self._min_drift_age:
            return None
        return age, kernels


def _ema(current: list[float], values: list[float], weight: float) -> list[float]:
    """One exponential-moving-average step per entry; a NaN entry takes the new value."""
    return [
        value if math.isnan(old) else old + weight * (value - old)
        for old, value in zip(current, values, strict=True)
    ]
