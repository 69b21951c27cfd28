"""Hebbian models: the Keras layer, the learning rules and the compiled online engine.

No gRPC and no I/O here.
"""

from service.model.engine import DEFAULT_BUCKETS, Engine, EngineResult
from service.model.layer import Hebbian, initial_state
from service.model.params import HebbianParams
from service.model.rules import HebbianState
from service.model.stack import HebbianStack, StackConfig

__all__ = [
    "DEFAULT_BUCKETS",
    "Engine",
    "EngineResult",
    "Hebbian",
    "HebbianParams",
    "HebbianStack",
    "HebbianState",
    "StackConfig",
    "initial_state",
]
