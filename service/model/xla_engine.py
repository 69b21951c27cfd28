"""The XLA engine: a live stack of Hebbian layers served through TensorFlow/XLA.

For accelerators and very wide models (``engine = "xla"`` in a model's config); CPUs
serve with `service.model.native_engine` by default.

One XLA-compiled function per bucket size applies a micro-batch of samples to the
stack sequentially (`dynamics.run`), reading and assigning the layers' variables.
Inputs are padded to the smallest bucket that holds them, with the valid length
passed alongside, so XLA sees a handful of static shapes. Results are exactly the
per-sample online results, and the final weights do not depend on how samples are
grouped into micro-batches or on the bucket size (recovery by replay relies on it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from service.model import dynamics
from service.model.engine import EngineResult, check_samples
from service.model.layer import Hebbian
from service.model.layer_state import HebbianState, checked_states

DEFAULT_BUCKETS = (1, 8, 64, 256, 1024)


class XlaEngine:
    """Applies micro-batches of samples to a built stack of `Hebbian` layers.

    Not thread-safe by design: one writer at a time (the model's holder) drives an engine.

    Args:
      layers: the built layers of the stack, input to output.
      buckets: padded batch sizes to compile, ascending; larger batches are split
        into chunks of the largest bucket.
    """

    def __init__(self, layers: Sequence[Hebbian], buckets: Sequence[int] = DEFAULT_BUCKETS):
        if not layers:
            raise ValueError("an engine needs at least one layer; got none")
        for layer in layers:
            if not layer.built:
                raise ValueError(f"layer {layer.name!r} must be built before it is served")
        buckets = tuple(sorted({int(b) for b in buckets}))
        if not buckets or buckets[0] < 1:
            raise ValueError(f"buckets must be positive sizes; got {buckets}")
        self.layers = tuple(layers)
        self.model = None  # the Keras model of `layers`, where the owner made one
        self.buckets = buckets
        self.params = tuple(layer.params for layer in self.layers)
        self.input_dim = self.params[0].input_dim
        self.output_dim = self.params[-1].units
        self._variables = tuple(layer.state_variables for layer in self.layers)
        self._apply = tf.function(self._apply_padded, jit_compile=True, autograph=False)
        self._compiled: dict[int, _BucketCall] = {}

    @property
    def step(self) -> int:
        """Samples learned by the model so far."""
        return int(self._variables[0].step.numpy())

    def warm_up(self) -> None:
        """Compile every bucket now (a call with no valid sample changes nothing)."""
        for size in self.buckets:
            self._run_bucket(
                np.zeros((size, self.input_dim), np.float32), np.zeros(size, bool), 0, size
            )

    def process(self, samples: np.ndarray, learn: bool | np.ndarray = True) -> EngineResult:
        """Apply `samples` (n, input_dim) in order; `learn` is one flag or one per sample."""
        samples = check_samples(samples, self.input_dim)
        n = samples.shape[0]
        flags = np.broadcast_to(np.asarray(learn, bool), (n,))
        largest = self.buckets[-1]
        if 0 < n <= largest:  # one bucket: its outputs are the result, no copies
            size = next(b for b in self.buckets if b >= n)
            ys, sk, step = self._run_bucket(samples, flags, n, size)
            return EngineResult(ys, sk, step)
        activations = np.empty((n, self.output_dim), np.float32)
        skipped = np.zeros(n, bool)
        step = None
        for start in range(0, n, largest):
            stop = min(start + largest, n)
            size = next(b for b in self.buckets if b >= stop - start)
            ys, sk, step = self._run_bucket(
                samples[start:stop], flags[start:stop], stop - start, size
            )
            activations[start:stop] = ys
            skipped[start:stop] = sk
        return EngineResult(activations, skipped, self.step if step is None else step)

    def layer_states(self) -> tuple[HebbianState, ...]:
        """A copy of every layer's state as numpy arrays, input to output."""
        return tuple(
            HebbianState(*(np.array(v.numpy()) for v in variables)) for variables in self._variables
        )

    def load_layer_states(self, states: Sequence[HebbianState]) -> None:
        """Replace every layer's state (checked in full before anything changes)."""
        checked = checked_states(self.params, states)
        updates = [
            (variable, value)
            for variables, state in zip(self._variables, checked, strict=True)
            for variable, value in zip(variables, state, strict=True)
        ]
        for variable, value in updates:
            variable.assign(value)

    def _run_bucket(self, samples, flags, count, size):
        call = self._compiled.get(size)
        if call is None:
            call = self._compiled[size] = _BucketCall(
                self._apply.get_concrete_function(
                    tf.TensorSpec((size, self.input_dim), tf.float32),
                    tf.TensorSpec((size,), tf.bool),
                    tf.TensorSpec((), tf.int32),
                )
            )
        if count == size:  # a whole bucket (contiguous already): no padding, no copy
            padded_x, padded_flags = samples, np.ascontiguousarray(flags)
        else:
            padded_x = np.empty((size, self.input_dim), np.float32)
            padded_x[:count] = samples[:count]
            padded_x[count:] = 0.0
            padded_flags = np.zeros(size, bool)
            padded_flags[:count] = flags[:count]
        ys, skipped, step = call(padded_x, padded_flags, count)
        return ys[:count], skipped[:count], step

    def _apply_padded(self, xs, learn_flags, n_valid):
        states = tuple(
            HebbianState(*(tf.convert_to_tensor(v) for v in variables))
            for variables in self._variables
        )
        new_states, ys, skipped = dynamics.run(self.params, states, xs, learn_flags, n_valid)
        for variables, new in zip(self._variables, new_states, strict=True):
            for variable, value in zip(variables, new, strict=True):
                variable.assign(value)
        return ys, skipped, new_states[0].step


class _BucketCall:
    """Calls one bucket's compiled function with the least Python in between.

    A `ConcreteFunction` call binds its structured signature, converts and casts every
    argument and walks several layers of wrappers: about 200 us per call, most of a
    batch-1 engine call. The function is run instead as the eager op it is (its name,
    the inputs followed by its captured variable handles, the context's call options),
    with inputs wrapped as eager tensors directly. That is what the wrapper ends up
    doing when no gradient tape records. If this TensorFlow's internals differ, the
    public call is used.
    """

    def __init__(self, function: tf.types.experimental.ConcreteFunction):
        self._function = function
        self._fast = None
        try:
            from tensorflow.python import pywrap_tfe
            from tensorflow.python.eager import context
            from tensorflow.python.framework import ops

            ctx = context.context()
            inference = function._inference_function
            attrs = tuple(itertools.chain(*ctx.function_call_options.as_attrs().items()))
            captured = list(function.captured_inputs)
            name = inference.name.decode()
            outputs = len(inference.function_type.flat_outputs)
            eager, device = ops.EagerTensor, ctx.device_name
            float32, boolean = tf.float32.as_datatype_enum, tf.bool.as_datatype_enum
            counts: dict[int, tf.Tensor] = {}

            def fast(xs: np.ndarray, flags: np.ndarray, count: int):
                n = counts.get(count)
                if n is None:
                    n = counts[count] = tf.constant(count, tf.int32)
                inputs = [eager(xs, device, float32), eager(flags, device, boolean), n, *captured]
                return pywrap_tfe.TFE_Py_Execute(ctx._handle, None, name, inputs, attrs, outputs)

            if outputs == 3:
                self._fast = fast
        except (AttributeError, ImportError, TypeError):
            self._fast = None

    def __call__(self, xs: np.ndarray, flags: np.ndarray, count: int):
        """(activations, skipped, step) of one padded bucket, as numpy arrays and an int."""
        if self._fast is not None and not _recording():
            ys, skipped, step = self._fast(xs, flags, count)
        else:
            ys, skipped, step = self._function(
                tf.constant(xs), tf.constant(flags), tf.constant(count, tf.int32)
            )
        return ys.numpy(), skipped.numpy(), int(step)


def _recording() -> bool:
    """Whether a gradient tape or a graph being built could watch this call."""
    return tf.inside_function() or _could_record()


try:  # one cheap check that no tape is active, as ConcreteFunction makes it
    from tensorflow.python.eager import record as _record

    _could_record = _record.could_possibly_record
except (ImportError, AttributeError):  # pragma: no cover - other TensorFlow versions

    def _could_record() -> bool:
        return True
