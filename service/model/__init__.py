"""Hebbian models: the Keras layer, the learning rules and the two serving engines.

No gRPC and no I/O here. Importing this package does not import TensorFlow: the names
that need it (`Hebbian`, `HebbianSequential`, `frozen`, `XlaEngine`, `DEFAULT_BUCKETS`)
load it on first access. When Keras is imported already, the Keras classes are registered
at once, so that `keras.saving.load_model` resolves the names `.keras` files record
("service.model>Hebbian", "service.model>HebbianSequential").
"""

import sys
from importlib import import_module

from service.model.engine import ENGINES, Engine, EngineResult
from service.model.layer_state import HebbianState, initial_state
from service.model.native_engine import NativeEngine
from service.model.params import HebbianParams
from service.model.stack import HebbianStack, StackConfig

_NEEDS_TENSORFLOW = {
    "Hebbian": "service.model.layer",
    "HebbianSequential": "service.model.keras_model",
    "frozen": "service.model.keras_model",
    "XlaEngine": "service.model.xla_engine",
    "DEFAULT_BUCKETS": "service.model.xla_engine",
}

__all__ = [
    "DEFAULT_BUCKETS",
    "ENGINES",
    "Engine",
    "EngineResult",
    "Hebbian",
    "HebbianParams",
    "HebbianSequential",
    "HebbianStack",
    "HebbianState",
    "NativeEngine",
    "StackConfig",
    "XlaEngine",
    "frozen",
    "initial_state",
]


def __getattr__(name: str):
    """The TensorFlow-backed names, imported on first use."""
    module = _NEEDS_TENSORFLOW.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)


if "keras" in sys.modules:  # Keras (and so TensorFlow) is loaded: registering costs nothing
    import_module("service.model.keras_model")
