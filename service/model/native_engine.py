"""The native engine: a stack's online maths compiled once with numba, for every model.

The state of every layer lives in a few flat numpy buffers (two rows of kernels, laterals
and thresholds, one of masks and steps; see `service.model.native_kernels`), described by
a per-layer table of offsets, codes and rates. The compiled kernels take only those
arrays, so one compilation, cached on disk, serves every model of every size, and the
GIL is released while they run: two models learn on two cores at once. No TensorFlow.

The compiled code is cached in ``NUMBA_CACHE_DIR``; `configure_cache` sets it, and must
run before the first engine is built (the kernels module is imported then).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.model.engine import EngineResult, check_samples
from service.model.layer_state import HebbianState, checked_states
from service.model.params import (
    ACTIVATIONS,
    LATERAL_MODES,
    RULES,
    STABILIZERS,
    HebbianParams,
)

CACHE_ENV = "NUMBA_CACHE_DIR"
# batch_mean takes one update per chunk of this many samples, as the XLA engine's largest
# bucket does, so that both engines group a long call the same way.
BATCH_MEAN_CHUNK = 1024
# Read-only flags for calls with one learn flag for every sample (no copy per call), and
# for short calls a view of n flags made once (no new view per call either).
_ALL_LEARN = np.ones(4096, np.bool_)
_NONE_LEARN = np.zeros(4096, np.bool_)
_ALL_LEARN.flags.writeable = _NONE_LEARN.flags.writeable = False
_SHORT_CALL = 64
_ALL_LEARN_VIEWS = tuple(_ALL_LEARN[:n] for n in range(_SHORT_CALL + 1))
_NONE_LEARN_VIEWS = tuple(_NONE_LEARN[:n] for n in range(_SHORT_CALL + 1))
_FLOAT32, _BOOL = np.dtype(np.float32), np.dtype(np.bool_)
_new_tuple = tuple.__new__  # EngineResult without its __new__: 0.1 us less per call


def configure_cache(directory: str | os.PathLike, prebuilt: str | os.PathLike | None = None
                    ) -> Path:
    """Keep the compiled kernels in `directory` (created if needed); returns it.

    When `directory` is empty and `prebuilt` names a directory of compiled kernels (a
    container image's, built read-only with the image), they are copied in first, so that
    the first engine loads them instead of compiling. Takes effect for kernels not
    imported yet: call it before the first engine is built.

    Raises:
      OSError: `directory` cannot be created or written (numba would silently cache
        nowhere and compile in every process).
    """
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=path).close()
    if prebuilt is not None and Path(prebuilt).is_dir() and not any(path.iterdir()):
        shutil.copytree(prebuilt, path, dirs_exist_ok=True)
    os.environ[CACHE_ENV] = str(path)
    return path


def warm_cache() -> None:
    """Compile (or load) the kernels now, into the configured cache (image builds use it)."""
    _kernels()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hebbian/numba`` (``~/.cache/hebbian/numba`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hebbian" / "numba"


def _kernels():
    """The compiled kernels module, imported on first use (that reads the cache dir)."""
    os.environ.setdefault(CACHE_ENV, str(default_cache_dir()))
    from service.model import native_kernels

    return native_kernels


class NativeEngine:
    """Applies micro-batches of samples to a stack of Hebbian layers, natively.

    Not thread-safe by design: one writer at a time. Reading the state (`layer_states`)
    from another thread while it writes may see a sample half applied.

    Args:
      params: one built `HebbianParams` per layer (input_dim set), input to output, each
        layer's input_dim the previous layer's units, all with one granularity.
      states: initial state of every layer (e.g. `initial_state`), numpy arrays.
    """

    def __init__(self, params: Sequence[HebbianParams], states: Sequence[HebbianState]):
        self.params = tuple(params)
        if not self.params:
            raise ValueError("an engine needs at least one layer; got none")
        for before, after in zip(self.params, self.params[1:], strict=False):
            if after.input_dim != before.units:
                raise ValueError(
                    f"layer input_dim {after.input_dim} does not match the previous "
                    f"layer's units {before.units}"
                )
        granularities = {p.granularity for p in self.params}
        if len(granularities) != 1:
            raise ValueError(
                f"all layers of a stack need one granularity; got {sorted(granularities)}"
            )
        kernels = _kernels()
        self._run = _entry_point(kernels.run_batch_mean if granularities == {"batch_mean"}
                                 else kernels.run_per_sample)
        self._chunk = BATCH_MEAN_CHUNK if granularities == {"batch_mean"} else None
        self.input_dim = self.params[0].input_dim
        self.output_dim = self.params[-1].units
        self._settled = _entry_point(kernels.settled_weights)
        self._layout, self._rates, size, scratch = _tables(kernels, self.params)
        self._weights = np.zeros((2, size), np.float32)
        self._masks = np.zeros(size, np.float32)
        # the live row, each layer's step, then whether its kernel has an update waiting
        self._counters = np.zeros(1 + 2 * len(self.params), np.int64)
        self._bounds = np.full((len(self.params), kernels.BOUND_COLUMNS), np.inf)
        # the kernels' arguments that stay the same from call to call, in their order
        self._state = (self._layout, self._rates, self._weights, self._masks, self._counters,
                       self._bounds)
        self._scratch = np.zeros(scratch, np.float32)
        self._slices = [_layer_slices(kernels, row) for row in self._layout]
        self._units_major = [bool(row[kernels.UNITS_MAJOR]) for row in self._layout]
        self.load_layer_states(states)

    @property
    def step(self) -> int:
        """Samples learned by the model so far."""
        return int(self._counters[1])

    def process(self, samples: np.ndarray, learn: bool | np.ndarray = True) -> EngineResult:
        """Apply `samples` (n, input_dim) in order; `learn` is one flag or one per sample."""
        # The compiled entry point checks dtypes but not dimensions or layout: every array
        # it gets is checked here (cheaply for the usual case: a float32 C array). A
        # batch-1 call is mostly this method's own Python, hence prebuilt views and tuples.
        if not (samples.__class__ is np.ndarray and samples.dtype is _FLOAT32
                and samples.ndim == 2 and samples.shape[1] == self.input_dim
                and samples.flags.c_contiguous):
            samples = check_samples(samples, self.input_dim)
        n = samples.shape[0]
        if learn.__class__ is bool and n <= _SHORT_CALL:
            flags = _ALL_LEARN_VIEWS[n] if learn else _NONE_LEARN_VIEWS[n]
        elif learn.__class__ is bool and n <= _ALL_LEARN.shape[0]:
            flags = _ALL_LEARN[:n] if learn else _NONE_LEARN[:n]
        elif (learn.__class__ is np.ndarray and learn.dtype is _BOOL and learn.ndim == 1
              and learn.shape[0] == n and learn.flags.c_contiguous):
            flags = learn  # read only by the kernels
        else:
            flags = np.empty(n, np.bool_)
            flags[:] = learn  # one flag, or one per sample (ValueError if it does not fit)
        outputs = np.empty((n, self.output_dim), _FLOAT32)
        skipped = np.zeros(n, _BOOL)
        if self._chunk is None:
            self._run(samples, flags, *self._state, outputs, skipped, self._scratch)
        else:
            for start in range(0, n, self._chunk):
                stop = min(start + self._chunk, n)
                self._run(samples[start:stop], flags[start:stop], *self._state,
                          outputs[start:stop], skipped[start:stop], self._scratch)
        return _new_tuple(EngineResult, (outputs, skipped, self._counters.item(1)))

    def warm_up(self) -> None:
        """Nothing to do: the kernels were compiled or loaded when the first engine was built."""

    def layer_states(self) -> tuple[HebbianState, ...]:
        """A copy of every layer's state as numpy arrays, input to output, with the kernel
        updates still waiting for the next forward pass made (nothing of the engine is
        written). Read while `process` runs in another thread, it may mix two steps."""
        live = np.empty(self._weights.shape[1], np.float32)  # with the waiting updates made
        self._settled(self._layout, self._rates, self._weights, self._counters, self._scratch,
                      live)
        states = []
        for index, (p, (k, lat, t), major) in enumerate(
                zip(self.params, self._slices, self._units_major, strict=True)):
            d, u = p.input_dim, p.units
            states.append(HebbianState(
                _kernel_matrix(live[k], d, u, major),
                live[lat].reshape(u, u).copy(),
                _kernel_matrix(self._masks[k], d, u, major),
                live[t].copy(),
                np.array(self._counters[1 + index], np.int64),
            ))
        return tuple(states)

    def load_layer_states(self, states: Sequence[HebbianState]) -> None:
        """Replace every layer's state (checked in full before anything changes)."""
        checked = checked_states(self.params, states)
        for index, ((k, lat, t), major, fields) in enumerate(
                zip(self._slices, self._units_major, checked, strict=True)):
            kernel, lateral, mask, theta, step = fields
            self._weights[:, k] = (kernel.T if major else kernel).reshape(-1)
            self._weights[:, lat] = lateral.reshape(-1)
            self._weights[:, t] = theta
            self._masks[k] = (mask.T if major else mask).reshape(-1)
            self._counters[1 + index] = int(step)
        self._counters[0] = 0
        self._counters[1 + len(self.params):] = 0  # no update waiting
        self._bounds[:] = np.inf  # unknown: measured when the next update needs them


def _entry_point(kernel):
    """The compiled code of a kernel, callable without the dispatcher's type resolution
    (about 1 us of a batch-1 call); the dispatcher itself if numba keeps it elsewhere."""
    try:
        return kernel.overloads[kernel.signatures[0]].entry_point
    except (AttributeError, IndexError, KeyError):
        return kernel


def _tables(kernels, params: Sequence[HebbianParams]
            ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The per-layer layout (offsets, codes) and rate tables the compiled kernels read, the
    size of one row of weights and the size of the scratch buffer."""
    layout = np.zeros((len(params), kernels.LAYOUT_COLUMNS), np.int64)
    rates = np.zeros((len(params), kernels.RATE_COLUMNS), np.float32)
    offset, x_offset, y_offset = 0, 0, params[0].input_dim
    # scratch: the activations, the work vectors, then each layer's waiting update
    widest = max([p.units for p in params] + [p.input_dim for p in params])
    p_offset = params[0].input_dim + sum(p.units for p in params)
    p_offset += kernels.WORK_VECTORS * widest
    for index, p in enumerate(params):
        d, u = p.input_dim, p.units
        row = layout[index]
        row[kernels.IN], row[kernels.UNITS] = d, u
        row[kernels.K_OFF] = offset
        row[kernels.L_OFF] = offset + d * u
        row[kernels.T_OFF] = offset + d * u + u * u
        row[kernels.X_OFF], row[kernels.Y_OFF] = x_offset, y_offset
        row[kernels.RULE] = RULES.index(p.rule)
        row[kernels.LATERAL] = LATERAL_MODES.index(p.lateral)
        row[kernels.ACTIVATION] = ACTIVATIONS.index(p.activation)
        row[kernels.STABILIZER] = STABILIZERS.index(p.stabilizer)
        row[kernels.MASKED] = p.connectivity != "all"
        # Sanger's running sums run along each unit's weights: one contiguous row per unit
        row[kernels.UNITS_MAJOR] = p.rule == "sanger"
        # an unmasked update made row by row from x, y and per-unit factors (and the sums
        # over each row of the subspace rule and Sanger's) can wait for the next forward
        # pass (see `native_kernels._settle_multiply`); normalised Hebb needs every row
        # before any row's final value
        row[kernels.DEFERRABLE] = (
            p.granularity == "per_sample" and p.connectivity == "all"
            and (p.rule in ("oja", "bcm", "oja_subspace", "sanger")
                 or (p.rule == "hebb" and p.stabilizer == "clip")))
        row[kernels.P_OFF] = p_offset
        p_offset += d + 2 * u + 1  # x, y, factors, rate
        r = rates[index]
        r[kernels.RATE], r[kernels.DECAY_STEPS] = p.learning_rate, p.decay_steps
        r[kernels.LATERAL_RATE] = p.lateral_learning_rate
        r[kernels.NORM_TARGET], r[kernels.WEIGHT_BOUND] = p.norm_target, p.weight_bound
        r[kernels.THRESHOLD_RATE] = p.bcm_threshold_rate
        offset += d * u + u * u + u
        x_offset, y_offset = y_offset, y_offset + u
    return layout, rates, offset, p_offset


def _kernel_matrix(flat: np.ndarray, d: int, u: int, units_major: bool) -> np.ndarray:
    """A copy of a layer's kernel (or mask) as stored, as a (input_dim, units) matrix."""
    return flat.reshape(u, d).T.copy() if units_major else flat.reshape(d, u).copy()


def _layer_slices(kernels, row: np.ndarray) -> tuple[slice, slice, slice]:
    """Where one layer's kernel, lateral weights and threshold sit in a row of weights."""
    d, u = int(row[kernels.IN]), int(row[kernels.UNITS])
    k, lat, t = int(row[kernels.K_OFF]), int(row[kernels.L_OFF]), int(row[kernels.T_OFF])
    return slice(k, k + d * u), slice(lat, lat + u * u), slice(t, t + u)
