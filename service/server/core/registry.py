"""The named models of a server: recover, create, look up, list and delete them.

Each model is a `LiveModel` (a session behind its combiner). The registry validates names,
refuses duplicates, builds the layer stack, gives each model its durable store in the
data directory (none when the server keeps models in memory only) and keeps the
metrics in step. The default model answers requests with an empty name and cannot be
deleted. A `SnapshotTimer` thread takes the time-based snapshots of idle models.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from service.errors import (
    FailedPreconditionError,
    InvalidInputError,
    LimitExceededError,
    ModelExistsError,
    ModelMovingError,
    ModelNotFoundError,
    UnavailableError,
)
from service.model import HebbianParams, HebbianStack, HebbianState, StackConfig
from service.server.core import bounds
from service.server.core.live_model import LiveModel
from service.server.core.names import DEFAULT_MODEL, name_problem
from service.server.core.session import ModelSession, SnapshotSchedule
from service.server.core.snapshot_timer import SnapshotTimer
from service.state.store import DataDir

log = logging.getLogger(__name__)

# What `create` calls with the built layers' params to get a model's initial state.
InitialState = Callable[[Sequence[HebbianParams]], Sequence[HebbianState]]


class ModelRegistry:
    """Thread-safe map of model names to their live models.

    Args:
      data_dir: where models persist (an opened `DataDir`), or None for memory only.
      metrics: the server's metrics; each model gets its `ModelMetrics` (`metrics.model`).
      max_batch: micro-batch limit, in samples.
      max_queued_samples: per-model queue limit, in samples.
      max_queued_bytes: per-model queue limit, in sample bytes (4 per input value).
      max_model_weights: largest model accepted by `create`, in weights (kernels + laterals).
      max_layers: most layers of a model `create` accepts.
      max_model_cost: most multiply-adds per sample of a model `create` accepts
        (`bounds.stack_size`).
      default_model: the name an empty model name stands for.
      schedule: when models take snapshots on their own.
      max_models: most models `create` lets exist (None: no limit); recovered models
        always load.
    """

    def __init__(
        self,
        *,
        data_dir: DataDir | None,
        metrics,
        max_batch: int,
        max_queued_samples: int,
        max_model_weights: int,
        default_model: str = DEFAULT_MODEL,
        schedule: SnapshotSchedule | None = None,
        max_models: int | None = None,
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
        self._max_queued_samples = max_queued_samples
        self._max_queued_bytes = max_queued_bytes
        self._max_model_weights = max_model_weights
        self._max_layers = max_layers
        self._max_model_cost = max_model_cost
        self._lock = threading.Lock()
        self._models: dict[str, LiveModel] = {}
        self._reserved: set[str] = set()
        self._arrivals: dict[str, str] = {}  # imported models not owned yet (`import_model`)
        self._timer = SnapshotTimer(self.list)

    def open(self, configured: Mapping[str, Mapping]) -> list[LiveModel]:
        """Recover every stored model, then create the configured ones not stored yet.

        A stored model keeps its stored config (its state was learned with it); a
        configured model that differs is reported in the log. Returns the models,
        warming up. Raises what recovery raises for damaged data (nothing is served then).
        """
        models = []
        stored = self._data_dir.model_names() if self._data_dir else []
        for name in stored:
            store = self._data_dir.store(name)
            document = store.read_config()
            create_time = document.pop("create_time", None)
            config = StackConfig.from_dict(document)
            if name in configured and _differs(configured[name], config):
                log.warning("model %r: keeping its stored config, not the configured one", name)
            model = self._model(name, HebbianStack(config), store)
            if create_time is not None:
                model.session.create_time = create_time
            report = model.session.recover()
            log.info(
                "model %r recovered at step %d: snapshot %s + %d log record(s) in %.2fs%s",
                name, model.status().step,
                report.snapshot.snapshot_id if report.snapshot else "none",
                report.replayed_records, report.seconds,
                f"; dropped a torn log tail at {report.torn_tail.path.name}:"
                f"{report.torn_tail.offset}" if report.torn_tail else "",
            )
            models.append(self._register(model))
        for name, spec in configured.items():
            if name not in stored:
                models.append(self.create(name, spec))
        return models

    def create(self, name: str, config: StackConfig | Mapping, warm_up: bool = True,
               initial_state: InitialState | None = None,
               initial_snapshot: tuple[dict, dict[str, np.ndarray]] | None = None) -> LiveModel:
        """Build, persist and start a new model; returns it.

        `initial_state`, given the built layers' params, returns the state the model starts
        from (validated; it raises `InvalidInputError` to refuse it); with a data directory it
        is the model's first snapshot, written before the model appears (`create_model`).
        `initial_snapshot` (header, arrays) is a whole snapshot's state instead: weights,
        counters, request window, seeds, hyper-parameters (`import_model`).

        Raises:
          InvalidInputError: a bad name or config. ModelExistsError: also while a model of that
            name is being deleted. LimitExceededError: a model over the size limits or beyond
            `max_models` models. UnavailableError: its directory cannot be written.
        """
        problem = name_problem(name)
        if problem:
            raise InvalidInputError(problem, "bad_name")
        with self._lock:
            if name in self._models or name in self._reserved:
                raise ModelExistsError(f"model {name!r} already exists")
            held = len(self._models) + len(self._reserved)
            if self._max_models is not None and held >= self._max_models:
                raise LimitExceededError(
                    f"this server holds at most {self._max_models} models; delete one first",
                )
            self._reserved.add(name)
        try:
            stack = _build(name, config, self._max_layers, self._max_model_weights,
                           self._max_model_cost)
            if initial_state is not None:
                return self._create_from_state(name, stack, initial_state, warm_up)
            if initial_snapshot is not None:
                return self._create_from_snapshot(name, stack, *initial_snapshot, warm_up)
            store = None
            if self._data_dir is not None:
                document = {**stack.config.to_dict(), "create_time": time.time()}
                try:
                    store = self._data_dir.create_model(name, document)
                except OSError as err:
                    raise UnavailableError(f"cannot store model {name!r}: {err}") from err
            model = self._model(name, stack, store)
            model.session.recover()  # opens the new model's empty log
            return self._register(model, warm_up)
        finally:
            with self._lock:
                self._reserved.discard(name)

    def _create_from_state(self, name: str, stack: HebbianStack, initial_state: InitialState,
                           warm_up: bool) -> LiveModel:
        """`create` of a model that starts from a given state (its name is reserved)."""
        stack.engine.load_layer_states(initial_state(stack.params))
        return self._register_started(self._model(name, stack, None), warm_up)

    def _create_from_snapshot(self, name: str, stack: HebbianStack, header: dict,
                              arrays: dict[str, np.ndarray], warm_up: bool) -> LiveModel:
        """`create` of a model that starts from a whole snapshot (its name is reserved)."""
        model = self._model(name, stack, None)
        session = model.session
        try:
            session.load_snapshot(header, arrays)
        except (KeyError, ValueError, TypeError) as err:
            self._metrics.remove_model(name)
            raise InvalidInputError(f"the snapshot of model {name!r} does not fit its config: "
                                    f"{err}", "bad_snapshot") from None
        session.create_time = float(header.get("model_create_time", session.create_time))
        return self._register_started(model, warm_up)

    def _register_started(self, model: LiveModel, warm_up: bool) -> LiveModel:
        """Persist and serve a new model that starts from its session's state now: with a
        data directory, that state is its first snapshot, written before it appears."""
        session = model.session
        if self._data_dir is not None:
            document = {**session.stack.config.to_dict(), "create_time": session.create_time}
            try:
                session.store = self._data_dir.create_model(
                    model.name, document, initial=session.snapshot_contents())
            except OSError as err:
                self._metrics.remove_model(model.name)
                raise UnavailableError(f"cannot store model {model.name!r}: {err}") from err
        session.recover()  # loads the first snapshot back, opens the new model's empty log
        return self._register(model, warm_up)

    def _model(self, name: str, stack: HebbianStack, store) -> LiveModel:
        metrics = self._metrics.model(name)
        session = ModelSession(name, stack, store=store, observer=metrics,
                               is_default=name == self.default_model, schedule=self._schedule)
        return LiveModel(session, metrics=metrics, max_batch=self._max_batch,
                         max_queued_samples=self._queue_samples(stack))

    def _queue_samples(self, stack: HebbianStack) -> int:
        """A model's queue capacity in samples: both bounds, in samples and in bytes."""
        if self._max_queued_bytes is None:
            return self._max_queued_samples
        per_sample = 4 * int(stack.config.input_dim)
        return max(1, min(self._max_queued_samples, self._max_queued_bytes // per_sample))

    def _register(self, model: LiveModel, warm_up: bool = True) -> LiveModel:
        """Serve `model`; it warms up on a thread of its own (see `LiveModel.ready`)."""
        with self._lock:
            self._models[model.name] = model
        if warm_up:
            threading.Thread(target=_warm_up, args=(model,), name=f"warm-up-{model.name}",
                             daemon=True).start()
        else:
            model.ready.set()
        self._timer.start()
        return model

    def get(self, name: str) -> LiveModel:
        """Model `name` (empty: the default model).

        Raises:
          InvalidInputError: an invalid name. ModelNotFoundError: no such model.
        """
        name = name or self.default_model
        model = self._models.get(name)
        if model is None:
            problem = name_problem(name)
            if problem:
                raise InvalidInputError(problem, "bad_name")
            raise ModelNotFoundError(_not_found(name, self.names()))
        return model

    def names(self) -> list[str]:
        """Model names, sorted."""
        with self._lock:
            return sorted(self._models)

    def list(self) -> list[LiveModel]:
        """Every model, sorted by name."""
        with self._lock:
            return [self._models[name] for name in sorted(self._models)]

    def delete(self, name: str) -> None:
        """Stop accepting work for model `name`, finish its queue and drop it.

        Raises:
          InvalidInputError: an empty or invalid name. FailedPreconditionError: the default model.
          ModelNotFoundError: an unknown one. ModelMovingError: one being moved.
        """
        if not name:
            raise InvalidInputError("DeleteModel needs a model name")
        problem = name_problem(name)
        if problem:
            raise InvalidInputError(problem, "bad_name")
        if name == self.default_model:
            raise FailedPreconditionError(
                f"model {name!r} is the server's default model and cannot be deleted",
            )
        current = self._models.get(name)
        if current is not None and current.moving is not None:
            raise ModelMovingError(current.moving)
        self._drop(name)

    def _drop(self, name: str) -> None:
        """Stop model `name`, finish its queue, remove it and its stored state."""
        with self._lock:
            model = self._models.pop(name, None)
            if model is not None:
                self._reserved.add(name)  # no new model of this name until it is gone
            self._arrivals.pop(name, None)
        if model is None:
            raise ModelNotFoundError(_not_found(name, self.names()))
        try:
            model.stop(final_snapshot=False)
            self._metrics.remove_model(name)
            if self._data_dir is not None:
                self._data_dir.delete_model(name)
        finally:
            with self._lock:
                self._reserved.discard(name)

    # -- slot moves (service/sharding/moves.py) -------------------------------------------

    def import_model(self, name: str, config: StackConfig | Mapping, header: dict,
                     arrays: dict[str, np.ndarray], arrival: str) -> LiveModel:
        """Create model `name` from a snapshot exported by another shard (`LiveModel.freeze`),
        durable (its first snapshot) before this returns. A copy of that name held here is
        replaced: the caller (the ownership check) makes sure this shard does not own the
        model's slot yet, so no copy here took writes. `arrival` says why the model is
        unavailable here until the slot table gives its slot to this shard (`transit`).

        Raises what `create` raises; InvalidInputError: the snapshot does not fit `config`.
        """
        if name in self._models:
            log.warning("model %r: replacing the copy held here (not owned) by an import", name)
            self._drop(name)
        model = self.create(name, config, initial_snapshot=(header, arrays))
        with self._lock:
            self._arrivals[name] = arrival
        return model

    def freeze(self, name: str, reason: str) -> tuple[LiveModel, tuple[int, dict, dict]]:
        """Freeze model `name` to move it away (`LiveModel.freeze`); the model and its
        snapshot contents. An arrival mark it carried from an earlier move is dropped."""
        model = self.get(name)
        contents = model.freeze(reason)
        with self._lock:
            self._arrivals.pop(model.name, None)
        return model, contents

    def transit(self, name: str) -> str | None:
        """Why model `name` is in transit on this server (frozen to move away, or imported
        before its slot is owned), or None: a request this shard does not own for a model
        in transit is UNAVAILABLE (retry), not refused."""
        model = self._models.get(name or self.default_model)
        if model is None:
            return None
        return model.moving or self._arrivals.get(model.name)

    def release(self, name: str) -> None:
        """Remove model `name` after a move (also the default model): the frozen copy a move
        left on its source, or an imported copy of a move given up.

        Raises:
          ModelNotFoundError: no such model. FailedPreconditionError: it is not in transit.
        """
        model = self.get(name)
        if self.transit(model.name) is None:
            raise FailedPreconditionError(
                f"model {model.name!r} is not being moved; ReleaseModel removes only a model "
                "frozen by ExportModel or imported by ImportModel")
        self._drop(model.name)

    def close(self) -> None:
        """Stop every model after its queued work (server shutdown)."""
        self._timer.stop()
        with self._lock:
            models = list(self._models.values())
        for model in models:
            model.stop()


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
        raise InvalidInputError(f"invalid config for model {name!r}: {err}", "bad_config") from None


def _warm_up(model: LiveModel) -> None:
    try:
        model.warm_up()
    except Exception:  # the engine then compiles on first use
        log.exception("model %r: warm-up failed", model.name)


def _not_found(name: str, names: list[str]) -> str:
    return f"model {name!r} not found; models: {', '.join(names) or 'none'}"
