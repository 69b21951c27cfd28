"""Whether a model refuses most of its updates: the share of recent learning samples refused.

A learning sample whose update would make a weight non-finite is not applied (the engine
guard). One such sample now and then is harmless; a model that refuses most of them has
diverged (usually a learning rate too large for the data) and no longer learns. The
tracker keeps the last `window` learning samples' outcomes, per micro-batch, and says
when the refused share crosses `threshold` (with at least `min_samples` seen), so the
session logs one warning when a model starts refusing, not one per sample.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW = 1000  # recent learning samples the share is taken over
THRESHOLD = 0.5  # refusing: more than this share refused
MIN_SAMPLES = 20  # ... over at least this many learning samples


@dataclass(frozen=True)
class RefusalChange:
    """What one observation changed: whether the model is refusing now, and whether that
    is news (it was not before, or it stopped)."""

    refusing: bool
    changed: bool


_NOTHING_CHANGED = RefusalChange(False, False)


class RefusalTracker:
    """The refused share of the last `window` learning samples. Not thread-safe: the
    model's holder observes; readers take `fraction` and `refusing` (plain attributes)."""

    def __init__(self, window: int = WINDOW, threshold: float = THRESHOLD,
                 min_samples: int = MIN_SAMPLES):
        self._window, self._threshold, self._min = window, threshold, min_samples
        self._batches: deque[tuple[int, int]] = deque()  # (learning samples, refused)
        self._seen = self._refused = 0
        self.fraction = 0.0
        self.refusing = False

    def observe(self, learning: int, refused: int) -> RefusalChange:
        """Count one micro-batch: `learning` samples meant to learn, `refused` of them not
        applied. Returns whether the model refuses most updates now, and if that changed."""
        if learning and not refused and not self._refused:
            # nothing refused in the window: only its size moves (no per-batch entries;
            # one entry stands for this history if a refusal comes later)
            self._seen = min(self._seen + learning, self._window)
            self._batches.clear()
            if self.fraction or self.refusing:
                self.fraction, self.refusing = 0.0, False
                return RefusalChange(False, True)
            return _NOTHING_CHANGED
        if learning:
            if not self._batches and self._seen:
                self._batches.append((self._seen, 0))
            self._batches.append((learning, refused))
            self._seen += learning
            self._refused += refused
            while self._seen > self._window:  # drop the oldest samples beyond the window
                oldest, oldest_refused = self._batches[0]
                excess = min(self._seen - self._window, oldest)
                dropped_refused = round(oldest_refused * excess / oldest)
                self._seen -= excess
                self._refused -= dropped_refused
                if excess == oldest:
                    self._batches.popleft()
                else:
                    self._batches[0] = (oldest - excess, oldest_refused - dropped_refused)
        self.fraction = self._refused / self._seen if self._seen else 0.0
        was = self.refusing
        self.refusing = self._seen >= self._min and self.fraction > self._threshold
        return RefusalChange(self.refusing, self.refusing != was)

    def clear(self) -> None:
        """Forget everything (the weights were replaced: Reset, Restore, recovery)."""
        self._batches.clear()
        self._seen = self._refused = 0
        self.fraction = 0.0
        self.refusing = False
