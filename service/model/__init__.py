"""Hebbian models: the Keras layer, the learning rules and the two serving engines.

No gRPC and no I/O here. Importing this package does not import TensorFlow: the names
that need it (`Hebbian`, `XlaEngine`, `DEFAULT_BUCKETS`) load it on first access.
"""

from importlib import import_module

from service.model.engine import ENGINES, Engine, EngineResult
from service.model.layer_state import HebbianState, initial_state
from service.model.native_engine import NativeEngine
from service.model.params import HebbianParams
from service.model.stack import HebbianStack, StackConfig

_NEEDS_TENSORFLOW = {
    "Hebbian": "service.model.layer",
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
    "HebbianStack",
    "HebbianState",
    "NativeEngine",
    "StackConfig",
    "XlaEngine",
    "initial_state",
]


def __getattr__(name: str):
    """The TensorFlow-backed names, imported on first use."""
    module = _NEEDS_TENSORFLOW.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
