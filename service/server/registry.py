"""The named models of a server: create, look up, list and delete them.

Each model is a `Learner` (its own thread and queue). The registry validates names,
refuses duplicates, builds the layer stack, records lifecycle changes in the journal
and keeps the metrics in step. The default model answers requests with an empty name
and cannot be deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import grpc

from service.model import HebbianStack, StackConfig
from service.server.errors import ServiceError, invalid
from service.server.learner import Learner
from service.server.metrics import ServerMetrics
from service.server.names import DEFAULT_MODEL, name_problem
from service.state import Journal


class ModelRegistry:
    """Thread-safe map of model names to their learners.

    Args:
      journal: receives create/delete records and is handed to every learner.
      metrics: the server's metrics; each model gets its `ModelMetrics`.
      max_batch: learner micro-batch limit, in samples.
      max_queued_samples: per-model queue limit, in samples.
      max_model_weights: largest model accepted by `create`, in weights (kernels + laterals).
      default_model: the name an empty model name stands for.
    """

    def __init__(
        self,
        *,
        journal: Journal,
        metrics: ServerMetrics,
        max_batch: int,
        max_queued_samples: int,
        max_model_weights: int,
        default_model: str = DEFAULT_MODEL,
    ):
        self.default_model = default_model
        self._journal = journal
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_queued_samples = max_queued_samples
        self._max_model_weights = max_model_weights
        self._lock = threading.Lock()
        self._models: dict[str, Learner] = {}
        self._reserved: set[str] = set()

    def create(self, name: str, config: StackConfig | Mapping, warm_up: bool = True) -> Learner:
        """Build, record and start a new model; returns its learner.

        Raises:
          ServiceError: INVALID_ARGUMENT for a bad name or config, ALREADY_EXISTS (also
            while a model of that name is being deleted), RESOURCE_EXHAUSTED for a model
            over the size limit, UNAVAILABLE if the journal refuses the record.
        """
        problem = name_problem(name)
        if problem:
            raise invalid(problem, "bad_name")
        with self._lock:
            if name in self._models or name in self._reserved:
                raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"model {name!r} already exists")
            self._reserved.add(name)
        try:
            stack = _build(name, config, self._max_model_weights)
            _journaled(self._journal.record_create, name, stack.config.to_dict())
            learner = Learner(
                name,
                stack,
                journal=self._journal,
                metrics=self._metrics.model(name),
                max_batch=self._max_batch,
                max_queued_samples=self._max_queued_samples,
                is_default=name == self.default_model,
                warm_up=warm_up,
            )
            learner.start()
            with self._lock:
                self._models[name] = learner
        finally:
            with self._lock:
                self._reserved.discard(name)
        return learner

    def get(self, name: str) -> Learner:
        """The learner of model `name` (empty: the default model); NOT_FOUND otherwise."""
        name = name or self.default_model
        learner = self._models.get(name)
        if learner is None:
            problem = name_problem(name)
            if problem:
                raise invalid(problem, "bad_name")
            raise ServiceError(grpc.StatusCode.NOT_FOUND, _not_found(name, self.names()))
        return learner

    def names(self) -> list[str]:
        """Model names, sorted."""
        with self._lock:
            return sorted(self._models)

    def list(self) -> list[Learner]:
        """Every model's learner, sorted by name."""
        with self._lock:
            return [self._models[name] for name in sorted(self._models)]

    def delete(self, name: str) -> None:
        """Stop accepting work for model `name`, finish its queue and drop it.

        Raises:
          ServiceError: INVALID_ARGUMENT for an empty name, FAILED_PRECONDITION for
            the default model, NOT_FOUND for an unknown one.
        """
        if not name:
            raise invalid("DeleteModel needs a model name")
        if name == self.default_model:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {name!r} is the server's default model and cannot be deleted",
            )
        with self._lock:
            learner = self._models.pop(name, None)
            if learner is not None:
                self._reserved.add(name)  # no new model of this name until it is gone
        if learner is None:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, _not_found(name, self.names()))
        try:
            learner.stop()
            self._metrics.remove_model(name)
            _journaled(self._journal.record_delete, name)
        finally:
            with self._lock:
                self._reserved.discard(name)

    def close(self, timeout: float | None = None) -> None:
        """Stop every learner after its queued work (server shutdown)."""
        with self._lock:
            learners = list(self._models.values())
        for learner in learners:
            learner.stop(timeout)


def _build(name: str, config: StackConfig | Mapping, max_weights: int) -> HebbianStack:
    try:
        if not isinstance(config, StackConfig):
            config = StackConfig.from_dict(config)
        weights = _weight_count(config)
        if weights > max_weights:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"model {name!r} would have {weights} weights; the limit is {max_weights}",
            )
        return HebbianStack(config)
    except (ValueError, TypeError) as err:
        raise invalid(f"invalid config for model {name!r}: {err}", "bad_config") from None


def _weight_count(config: StackConfig) -> int:
    """Kernel and lateral weights of a config (layers with a bad width are left to the
    stack's own validation)."""
    total, width = 0, int(config.input_dim)
    for layer in config.layers:
        units = layer.get("units")
        if isinstance(units, int) and not isinstance(units, bool) and units > 0:
            total += width * units + units * units
            width = units
    return total


def _journaled(hook, *args) -> None:
    """Call a journal hook; its failure means "not committed": UNAVAILABLE."""
    try:
        hook(*args)
    except Exception as err:
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE, f"not committed to the journal: {err}"
        ) from err


def _not_found(name: str, names: list[str]) -> str:
    return f"model {name!r} not found; models: {', '.join(names) or 'none'}"
