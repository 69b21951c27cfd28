"""The one place where a change to a model is committed before it is acknowledged.

Each model's learner calls `Journal.commit` with a micro-batch before applying it to
the model and answering its requests; the model registry calls the `record_*` hooks
for lifecycle changes. A write-ahead log implements this protocol (it returns once the
record is as durable as its fsync policy promises); `NullJournal` keeps nothing, for a
server without a data directory.

A journal is called from several threads (one learner thread per model, the registry
from request threads) and must be thread-safe. An exception from any hook means "not
committed": the caller does not apply the change and fails the requests concerned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from service.state.records import RequestSpan


@runtime_checkable
class Journal(Protocol):
    """Commit hook for model changes, called before a change is applied and acknowledged."""

    def commit(
        self,
        model_name: str,
        samples: np.ndarray,
        learn_flags: np.ndarray,
        requests: tuple[RequestSpan, ...] = (),
    ) -> None:
        """Commit one micro-batch: samples (n, input_dim) float32, learn_flags (n,) bool,
        and where each request with a `request_id` sits in it (for exactly-once replies)."""

    def record_create(self, model_name: str, config: Mapping) -> None:
        """Commit the creation of a model from its config (`StackConfig.to_dict()`, seeded)."""

    def record_delete(self, model_name: str) -> None:
        """Commit the deletion of a model."""

    def record_reset(self, model_name: str, seed: int | None) -> None:
        """Commit a reset of a model's weights (`seed` None keeps the layers' own seeds)."""

    def close(self) -> None:
        """Flush and release everything; called once, after the last learner stopped."""


class NullJournal:
    """A journal that keeps nothing: every change is acknowledged once it is applied."""

    def commit(
        self,
        model_name: str,
        samples: np.ndarray,
        learn_flags: np.ndarray,
        requests: tuple[RequestSpan, ...] = (),
    ) -> None:
        """Nothing to write."""

    def record_create(self, model_name: str, config: Mapping) -> None:
        """Nothing to write."""

    def record_delete(self, model_name: str) -> None:
        """Nothing to write."""

    def record_reset(self, model_name: str, seed: int | None) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Nothing to release."""
