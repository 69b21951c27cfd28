"""What every serving engine is: the one interface the model core drives.

An engine holds the live state of a stack of Hebbian layers and applies micro-batches of
samples to it, exactly per-sample online (each sample answered with the weights as they
were when it arrived, then its update applied), with per-sample learn flags and the
stack-wide non-finite guard. The same samples grouped into calls in any way give
bit-identical weights (recovery by replay relies on it).

Two implementations: `NativeEngine` (numba, CPUs, the default; no TensorFlow) and
`XlaEngine` (`tf.function(jit_compile=True)`, per model with ``engine = "xla"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

from service.model.layer_state import HebbianState
from service.model.params import HebbianParams

ENGINES = ("native", "xla")
DEFAULT_ENGINE = "native"


class EngineResult(NamedTuple):
    """What one engine call did: activations, which samples were refused, the new step."""

    activations: np.ndarray  # (n, units_out) float32
    skipped: np.ndarray  # (n,) bool: learning samples refused because of a non-finite update
    step: int  # samples learned by the model after this call


class Engine(Protocol):
    """A stack's live state and the online maths that advances it.

    Not thread-safe by design: one writer at a time (the model's holder).
    """

    params: tuple[HebbianParams, ...]

    @property
    def step(self) -> int:
        """Samples learned by the model so far."""

    def process(self, samples: np.ndarray, learn: bool | np.ndarray = True) -> EngineResult:
        """Apply `samples` (n, input_dim) in order; `learn` is one flag or one per sample."""

    def warm_up(self) -> None:
        """Compile (or load the compiled code of) everything `process` will run."""

    def layer_states(self) -> tuple[HebbianState, ...]:
        """A copy of every layer's state as numpy arrays, input to output."""

    def load_layer_states(self, states: Sequence[HebbianState]) -> None:
        """Replace every layer's state (arrays of the shapes `layer_states` returns)."""


def check_samples(samples: np.ndarray, input_dim: int) -> np.ndarray:
    """`samples` as a C-contiguous float32 (n, input_dim) array; ValueError otherwise."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.ndim != 2 or samples.shape[1] != input_dim:
        raise ValueError(f"samples must have shape (n, {input_dim}); got {samples.shape}")
    return samples


def check_engine(name: str) -> str:
    """`name` if it is a known engine; ValueError naming the choices otherwise."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {name!r}")
    return name
