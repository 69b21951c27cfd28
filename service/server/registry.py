"""The named models of a server: recover, create, look up, list and delete them.

Each model is a `Learner` (its own thread and queue). The registry validates names,
refuses duplicates, builds the layer stack, gives each model its durable store in the
data directory (none when the server keeps models in memory only) and keeps the
metrics in step. The default model answers requests with an empty name and cannot be
deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import grpc

from service.model import HebbianParams, HebbianStack, HebbianState, StackConfig
from service.server import bounds
from service.server.errors import ServiceError, invalid
from service.server.learner import Learner, SnapshotSchedule
from service.server.metrics import ServerMetrics
from service.server.names import DEFAULT_MODEL, name_problem
from service.state.store import DataDir

log = logging.getLogger(__name__)

# What `create` calls with the built layers' params to get a model's initial state.
InitialState = Callable[[Sequence[HebbianParams]], Sequence[HebbianState]]


class ModelRegistry:
    """Thread-safe map of model names to their learners.

    Args:
      data_dir: where models persist (an opened `DataDir`), or None for memory only.
      metrics: the server's metrics; each model gets its `ModelMetrics`.
      max_batch: learner micro-batch limit, in samples.
      max_queued_samples: per-model queue limit, in samples.
      max_queued_bytes: per-model queue limit, in sample bytes (4 per input value).
      batch_linger: most seconds a busy learner waits for a fuller micro-batch.
      max_model_weights: largest model accepted by `create`, in weights (kernels + laterals).
      max_layers: most layers of a model `create` accepts.
      max_model_cost: most multiply-adds per sample of a model `create` accepts
        (`bounds.stack_size`).
      default_model: the name an empty model name stands for.
      schedule: when learners take snapshots on their own.
      max_models: most models `create` lets exist (None: no limit); recovered models
        always load.
    """

    def __init__(
        self,
        *,
        data_dir: DataDir | None,
        metrics: ServerMetrics,
        max_batch: int,
        max_queued_samples: int,
        max_model_weights: int,
        default_model: str = DEFAULT_MODEL,
        schedule: SnapshotSchedule | None = None,
        max_models: int | None = None,
        batch_linger: float = 0.0,
        max_layers: int = bounds.DEFAULT_MAX_LAYERS,
        max_model_cost: int = bounds.DEFAULT_MAX_MODEL_COST,
        max_queued_bytes: int | None = None,
    ):
        self.default_model = default_model
        self._max_models = max_models
        self._data_dir = data_dir
        self._schedule = schedule
        self._metrics = metrics
        self._max_batch = max_batch
        self._batch_linger = batch_linger
        self._max_queued_samples = max_queued_samples
        self._max_queued_bytes = max_queued_bytes
        self._max_model_weights = max_model_weights
        self._max_layers = max_layers
        self._max_model_cost = max_model_cost
        self._lock = threading.Lock()
        self._models: dict[str, Learner] = {}
        self._reserved: set[str] = set()

    def open(self, configured: Mapping[str, Mapping]) -> list[Learner]:
        """Recover every stored model, then create the configured ones not stored yet.

        A stored model keeps its stored config (its state was learned with it); a
        configured model that differs is reported in the log. Returns the learners,
        started. Raises what recovery raises for damaged data (nothing is served then).
        """
        learners = []
        stored = self._data_dir.model_names() if self._data_dir else []
        for name in stored:
            store = self._data_dir.store(name)
            document = store.read_config()
            create_time = document.pop("create_time", None)
            config = StackConfig.from_dict(document)
            if name in configured and _differs(configured[name], config):
                log.warning("model %r: keeping its stored config, not the configured one", name)
            learner = self._learner(name, HebbianStack(config), store, warm_up=True)
            if create_time is not None:
                learner.create_time = create_time
            report = learner.recover()
            log.info(
                "model %r recovered at step %d: snapshot %s + %d log record(s) in %.2fs%s",
                name, learner.status().step,
                report.snapshot.snapshot_id if report.snapshot else "none",
                report.replayed_records, report.seconds,
                f"; dropped a torn log tail at {report.torn_tail.path.name}:"
                f"{report.torn_tail.offset}" if report.torn_tail else "",
            )
            learners.append(self._register(learner))
        for name, spec in configured.items():
            if name not in stored:
                learners.append(self.create(name, spec))
        return learners

    def create(self, name: str, config: StackConfig | Mapping, warm_up: bool = True,
               initial_state: InitialState | None = None) -> Learner:
        """Build, persist and start a new model; returns its learner.

        `initial_state`, given the built layers' params, returns the state the model starts
        from (validated; it raises `ServiceError` to refuse it); with a data directory it
        is the model's first snapshot, written before the model appears (`create_model`).

        Raises:
          ServiceError: INVALID_ARGUMENT for a bad name or config, ALREADY_EXISTS (also
            while a model of that name is being deleted), RESOURCE_EXHAUSTED for a model
            over the size limit or beyond `max_models` models, UNAVAILABLE if its
            directory cannot be written.
        """
        problem = name_problem(name)
        if problem:
            raise invalid(problem, "bad_name")
        with self._lock:
            if name in self._models or name in self._reserved:
                raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"model {name!r} already exists")
            held = len(self._models) + len(self._reserved)
            if self._max_models is not None and held >= self._max_models:
                raise ServiceError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this server holds at most {self._max_models} models; delete one first",
                )
            self._reserved.add(name)
        try:
            stack = _build(name, config, self._max_layers, self._max_model_weights,
                           self._max_model_cost)
            if initial_state is not None:
                return self._create_from_state(name, stack, initial_state, warm_up)
            store = None
            if self._data_dir is not None:
                document = {**stack.config.to_dict(), "create_time": time.time()}
                try:
                    store = self._data_dir.create_model(name, document)
                except OSError as err:
                    raise ServiceError(
                        grpc.StatusCode.UNAVAILABLE, f"cannot store model {name!r}: {err}"
                    ) from err
            learner = self._learner(name, stack, store, warm_up)
            learner.recover()  # opens the new model's empty log
            return self._register(learner)
        finally:
            with self._lock:
                self._reserved.discard(name)

    def _create_from_state(self, name: str, stack: HebbianStack, initial_state: InitialState,
                           warm_up: bool) -> Learner:
        """`create` of a model that starts from a given state (its name is reserved)."""
        stack.engine.load_layer_states(initial_state(stack.params))
        learner = self._learner(name, stack, None, warm_up)
        if self._data_dir is not None:
            document = {**stack.config.to_dict(), "create_time": learner.create_time}
            try:
                learner.store = self._data_dir.create_model(
                    name, document, initial=learner.snapshot_contents())
            except OSError as err:
                self._metrics.remove_model(name)
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE, f"cannot store model {name!r}: {err}"
                ) from err
        learner.recover()  # loads the first snapshot back, opens the new model's empty log
        return self._register(learner)

    def _learner(self, name: str, stack: HebbianStack, store, warm_up: bool) -> Learner:
        return Learner(
            name,
            stack,
            store=store,
            metrics=self._metrics.model(name),
            max_batch=self._max_batch,
            batch_linger=self._batch_linger,
            max_queued_samples=self._queue_samples(stack),
            is_default=name == self.default_model,
            warm_up=warm_up,
            schedule=self._schedule,
        )

    def _queue_samples(self, stack: HebbianStack) -> int:
        """A model's queue capacity in samples: both bounds, in samples and in bytes."""
        if self._max_queued_bytes is None:
            return self._max_queued_samples
        per_sample = 4 * int(stack.config.input_dim)
        return max(1, min(self._max_queued_samples, self._max_queued_bytes // per_sample))

    def _register(self, learner: Learner) -> Learner:
        learner.start()
        with self._lock:
            self._models[learner.name] = learner
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
          ServiceError: INVALID_ARGUMENT for an empty or invalid name, FAILED_PRECONDITION
            for the default model, NOT_FOUND for an unknown one.
        """
        if not name:
            raise invalid("DeleteModel needs a model name")
        problem = name_problem(name)
        if problem:
            raise invalid(problem, "bad_name")
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
            learner.stop(final_snapshot=False)
            self._metrics.remove_model(name)
            if self._data_dir is not None:
                self._data_dir.delete_model(name)
        finally:
            with self._lock:
                self._reserved.discard(name)

    def close(self, timeout: float | None = None) -> None:
        """Stop every learner after its queued work (server shutdown)."""
        with self._lock:
            learners = list(self._models.values())
        for learner in learners:
            learner.stop(timeout)


def _differs(configured: Mapping, stored: StackConfig) -> bool:
    """Whether a configured model asks for something its stored config does not have."""
    config = StackConfig.from_dict(configured)
    if config.input_dim != stored.input_dim or len(config.layers) != len(stored.layers):
        return True
    return any(
        theirs.get(key) != value
        for ours, theirs in zip(config.layers, stored.layers, strict=True)
        for key, value in ours.items()
        if not (key == "seed" and value is None)
    )


def _build(name: str, config: StackConfig | Mapping, max_layers: int, max_weights: int,
           max_cost: int) -> HebbianStack:
    try:
        if not isinstance(config, StackConfig):
            config = StackConfig.from_dict(config)
        bounds.check_stack(name, config.input_dim, list(config.layers), max_layers=max_layers,
                           max_weights=max_weights, max_cost=max_cost)
        return HebbianStack(config)
    except (ValueError, TypeError) as err:
        raise invalid(f"invalid config for model {name!r}: {err}", "bad_config") from None


def _not_found(name: str, names: list[str]) -> str:
    return f"model {name!r} not found; models: {', '.join(names) or 'none'}"
