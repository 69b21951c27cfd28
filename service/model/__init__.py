"""Hebbian models: the Keras layer, the learning rules and the two serving engines.

No gRPC and no I/O here. Importing this package does not import TensorFlow: the names
that need it (`Hebbian`, `HebbianSequential`, `frozen`, `XlaEngine`, `DEFAULT_BUCKETS`)
load it on first access. The Keras classes are registered as soon as Keras is loaded (at
once if it is, else right after the first `import keras`), so that
`keras.saving.load_model` resolves the names `.keras` files record
("service.model>Hebbian", "service.model>HebbianSequential") in either import order.
"""

import importlib.abc
import importlib.util
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


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """A post-import hook: once the first `import keras` has run, register our classes.

    Importing Keras ourselves would load TensorFlow into every process that imports this
    package (a server must not), so the registration waits for Keras to be imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # the real finders locate keras; we only wrap its loader
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if "service.model.layer" not in sys.modules:  # else it registers them itself
                import_module("service.model.keras_model")

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:  # Keras (and so TensorFlow) is loaded: registering costs nothing
    import_module("service.model.keras_model")
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
