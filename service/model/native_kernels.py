"""The native engine's compiled kernels: a whole stack's online maths in numba.

Every model of every size goes through the same two functions, compiled once for one
signature (and cached on disk): a stack is described by flat buffers and a small table of
per-layer offsets and codes, not by Python objects. The GIL is released while they run.

Layout (built by `service.model.native_engine`): ``weights`` holds two copies (rows 0 and
1) of every layer's kernel, lateral weights and BCM threshold, at the offsets of the
``layout`` table; ``counters`` holds the live row, then each layer's step, then whether
its kernel has an update waiting (below); ``bounds``
bounds on each layer's largest weights. Updates are made in place in the live row, except
a segment's first (below), which writes the other row (`run_per_sample`): no allocation
per sample. Fields a layer never updates (lateral weights without
``anti_hebbian``, the threshold without ``bcm``) hold the same values in both rows. The
``scratch`` buffer holds the current sample and every layer's output (``X_OFF``/``Y_OFF``),
then work space.

The non-finite guard, exactly: a sample whose update would make any weight of the stack
non-finite is applied to no layer. Checking every new weight costs more than half the
update, so the check is left to the next forward pass, which reads every kernel and
lateral weight: with finite inputs, a non-finite weight makes the products that read it
non-finite (x * Inf and 0 * Inf are not finite). When a forward pass sees a non-finite
product, or the call ends, the weights written last are checked in full, and a refused
update is undone by going back to the row the call (or the last refusal) started from and
replaying the updates since (the threshold, which no product reads, is checked as it is
written). So the call's first update writes the other row, and the row the call started
from stays intact, unless it is proven finite beforehand: the call's first and last updates
are offered to `_certify`, which bounds every value an update computes from the largest
|x| and |y| of the sample and a bound on the layer's |weights| kept in ``bounds`` (carried
from update to update, measured when unknown or too loose). A proven update is made in
place and needs no check, so a one-sample call reads the weights twice and writes them
once. The results are those of checking every update, bit for bit.

Waiting updates: the kernel update of every rule but normalised ``hebb``, with full
connectivity, per sample (``DEFERRABLE``), goes row by row and reads each weight once and
writes it once (the subspace rule reads the row for its dot product with y first), and
the next forward pass reads each weight once, in the same order. An update made in place
may therefore wait: `_defer_kernel` keeps the sample's x, y, per-unit factors and rate in
``scratch`` (at ``P_OFF``), sets the layer's waiting flag in ``counters``, and the next
forward pass computes each new weight and multiplies it in the same loop
(`_settle_multiply`; Sanger's units-major rows are updated and then multiplied one by
one while in cache, `_settle_units_dot`): the kernel crosses memory once per sample
instead of twice. The new weights are bit for bit those of the update made at once
(the same scalar formulas, in the same order). A call's last update waits only when proven
finite (no check follows it in this call); one refused with its segment is dropped with
the row it was made on (`_refuse`), and loading a state drops it. `settled_weights` shows
a row with the waiting updates made, without writing anything.

Kernels are (input_dim, units), row-major: inner loops run over units, contiguous, so they
vectorise without reassociating a sum (fastmath is FMA contraction only, no
reassociation); the reductions along a row (``oja_subspace``'s dot products, and the
forward pass of a units-major kernel) are `_row_dot`, the one function allowed to
reassociate, compiled once and not inlined, so that one loop sums every row in one fixed
order. Sanger's kernels are stored units-major, (units, input_dim) (``UNITS_MAJOR``; the
engine transposes them on the way in and out): its running sums run over units, and with
one row per unit every input's sum advances in one contiguous, vectorised pass per unit
(in the other layout they were chains of dependent scalar additions). An update in place
passes one array as both source and destination: two arrays that might overlap would make
LLVM check at run time, and they do overlap, so the loops would run unvectorised. Results
do not depend on how samples are grouped into calls. Indices are unsigned, so that no
index needs a negative-index check. Each rule is the formula of `service.model.rules`
for one sample (W = kernel^T, one row per unit); ``batch_mean`` takes the mean of the
per-sample updates at the call's starting state.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

# Columns of the per-layer table `layout` (int64) ...
# (UNITS_MAJOR: the kernel and its mask are stored (units, input_dim), one row per unit)
# (DEFERRABLE: the kernel's update may wait for the next forward pass, see `run_per_sample`;
# P_OFF: where in `scratch` a waiting update keeps that sample's x, y, factors and rate)
(IN, UNITS, K_OFF, L_OFF, T_OFF, X_OFF, Y_OFF, RULE, LATERAL, ACTIVATION, STABILIZER,
 MASKED, UNITS_MAJOR, DEFERRABLE, P_OFF) = range(15)
LAYOUT_COLUMNS = 15
# ... and of the hyper-parameter table `rates` (float32).
RATE, DECAY_STEPS, LATERAL_RATE, NORM_TARGET, WEIGHT_BOUND, THRESHOLD_RATE = range(6)
RATE_COLUMNS = 6
WORK_VECTORS = 4  # work space after the activations, in vectors of the widest dimension
# counters[LIVE] is the live row of `weights`; counters[1 + layer] the layer's step, and
# counters[1 + layers + layer] 1 while the layer's kernel has an update waiting
LIVE = 0

# Columns of `bounds` (float64, one row per layer): upper bounds of the live row's |kernel|
# and |lateral| weights (Inf: unknown), 1.0 where they were measured since the last update
# (so that a bound too loose to prove anything is measured once, not per sample), then the
# bounds after the update being certified.
KERNEL_BOUND, LATERAL_BOUND, MEASURED, NEXT_KERNEL_BOUND, NEXT_LATERAL_BOUND = range(5)
BOUND_COLUMNS = 5

# Codes of the table's categorical columns, in `service.model.params` order.
HEBB, OJA, OJA_SUBSPACE, SANGER, BCM = range(5)
LATERAL_NONE, LATERAL_INHIBITION, LATERAL_ANTI_HEBBIAN = range(3)
LINEAR, RELU, TANH, SIGMOID = range(4)
NORMALIZE, CLIP = range(2)

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
# An update is certified finite when every value it computes is below 2^100 in magnitude
# (float32 overflows at 2^128; the margin covers float32 rounding many times over).
_SAFE = 2.0 ** 100
# A bound after an update allows this much of the magnitudes it adds up for float32's
# rounding (a few operations per weight, each off by at most 2^-24), with room to spare.
_ROUNDING = 2.0 ** -16
# Plain Hebb's normalising stabiliser divides by a column's norm, which is 0 or at least
# sqrt(2^-149) > 2^-75 (the smallest float32 square): its target must stay below this.
_SAFE_NORM_TARGET = 2.0 ** 25


def _array(dtype, ndim: int, readonly: bool = False) -> types.Array:
    return types.Array(dtype, ndim, "C", readonly=readonly)


# samples and learn flags are read-only, so that buffers decoded from the wire need no copy
_SIGNATURE = types.void(
    _array(types.float32, 2, readonly=True),  # samples
    _array(types.boolean, 1, readonly=True),  # learn
    _array(types.int64, 2),  # layout
    _array(types.float32, 2),  # rates
    _array(types.float32, 2),  # weights
    _array(types.float32, 1),  # masks
    _array(types.int64, 1),  # counters
    _array(types.float64, 2),  # bounds
    _array(types.float32, 2),  # outputs
    _array(types.boolean, 1),  # skipped
    _array(types.float32, 1),  # scratch
)
# FMA contraction only (a * b + c in one rounding): no reassociation, so every sum keeps its
# order and the code, hence the results, are the same whatever the grouping of samples.
_OPTIONS = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False,
            "fastmath": {"contract"}}


@njit(inline="always")
def _at(layout, layer, column):
    """A layout entry as an unsigned index."""
    return np.uint64(layout[layer, column])


@njit(inline="always")
def _not_finite(value):
    """1 for Inf or NaN, else 0 (an integer, so that OR-ing it over a loop vectorises)."""
    return value - value != _ZERO


@njit(inline="always")
def _rates(rates, counters, layer):
    """Feed-forward and lateral rates at the layer's step: rate0 / (1 + step / decay_steps)."""
    decay = _ONE
    if rates[layer, DECAY_STEPS] > _ZERO:
        decay = _ONE + np.float32(counters[1 + layer]) / rates[layer, DECAY_STEPS]
    return rates[layer, RATE] / decay, rates[layer, LATERAL_RATE] / decay


@njit(inline="always")
def _activate(code, h):
    if code == RELU:
        return h if h > _ZERO else _ZERO
    if code == TANH:
        return np.tanh(h)
    if code == SIGMOID:
        return _ONE / (_ONE + np.exp(-h))
    return h


@njit(inline="always")
def _multiply(w, k0, d, u, acts, xo, h):
    """h += x K, four kernel rows per pass over h: the sums are the plain ones, row by row
    in order, with one load and store of h per four rows instead of per row."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    i = np.uint64(0)
    while i + four <= d:
        r0 = k0 + i * u
        r1, r2, r3 = r0 + u, r0 + two * u, r0 + three * u
        x0, x1, x2, x3 = acts[xo + i], acts[xo + i + one], acts[xo + i + two], acts[xo + i + three]
        for j in range(u):
            h[j] = (((h[j] + x0 * w[r0 + j]) + x1 * w[r1 + j]) + x2 * w[r2 + j]) + x3 * w[r3 + j]
        i += four
    while i < d:
        xi, row = acts[xo + i], k0 + i * u
        for j in range(u):
            h[j] += xi * w[row + j]
        i += one


@njit(inline="always")
def _waiting(layout, counters, layer):
    """Whether the layer's kernel has an update waiting for the next forward pass."""
    return counters[1 + layout.shape[0] + layer] != 0


@njit(inline="always")
def _forward(layout, rates, layer, w, counters, scratch, acts, h, sums):
    """The layer's output y + y L, y = f(x K), from its input in `acts` into `acts`, with
    one row `w` of the weights; nonzero if a product it computed is not finite. A waiting
    update of the kernel is made on the way (`_settle_multiply`, or `_settle_units_dot`
    for a units-major kernel, with `sums` as its work space)."""
    d, u = _at(layout, layer, IN), _at(layout, layer, UNITS)
    k0, xo, yo = _at(layout, layer, K_OFF), _at(layout, layer, X_OFF), _at(layout, layer, Y_OFF)
    waiting = _waiting(layout, counters, layer)
    if layout[layer, UNITS_MAJOR] != 0 and waiting:
        _settle_units_dot(layout, layer, w, scratch, sums, acts, h)
    elif layout[layer, UNITS_MAJOR] != 0:
        for j in range(u):
            h[j] = _row_dot(w, k0 + j * d, acts, xo, d)
    else:
        for j in range(u):
            h[j] = _ZERO
        if waiting:
            _settle_multiply(layout, rates, layer, w, scratch, acts, h)
        else:
            _multiply(w, k0, d, u, acts, xo, h)
    if waiting:
        counters[1 + layout.shape[0] + layer] = 0
    bad = 0
    for j in range(u):
        bad |= _not_finite(h[j])
    code = layout[layer, ACTIVATION]
    if code != LINEAR:
        for j in range(u):
            h[j] = _activate(code, h[j])
    if layout[layer, LATERAL] == LATERAL_NONE:
        for j in range(u):
            acts[yo + j] = h[j]
        return bad
    l0 = _at(layout, layer, L_OFF)
    for j in range(u):
        acts[yo + j] = _ZERO
    for k in range(u):
        yk = h[k]
        row = l0 + k * u
        for j in range(u):
            acts[yo + j] += yk * w[row + j]
    for j in range(u):
        value = h[j] + acts[yo + j]
        acts[yo + j] = value
        bad |= _not_finite(value)
    return bad


@njit(inline="always")
def _forward_stack(layout, rates, sample, w, counters, scratch, acts, h, sums):
    """Every layer's output for one sample into `acts` (making the updates waiting on the
    way); nonzero if a product is not finite."""
    for i in range(sample.shape[0]):
        acts[i] = sample[i]
    bad = 0
    for layer in range(layout.shape[0]):
        bad |= _forward(layout, rates, layer, w, counters, scratch, acts, h, sums)
    return bad


# One kernel weight after one sample, for the rules updated element by element: the
# formulas of an update made at once and of one made later (`_settle_multiply`), so that
# both compile to the same arithmetic and round alike.
@njit(inline="always")
def _oja_weight(k, x, y, yy, eta):
    return k + eta * (x * y - k * yy)


@njit(inline="always")
def _bcm_weight(k, x, factor, eta):
    return k + eta * (x * factor)


@njit(inline="always")
def _hebb_weight(k, x, y, eta):
    return k + eta * (x * y)


@njit(inline="always")
def _subspace_weight(k, x, y, dot, eta):
    return k + eta * (x * y - dot * y)


@njit(inline="always")
def _clipped(value, bound):
    """Plain Hebb's clipping: NaN stays NaN (refused); Inf is clipped like any value."""
    return min(max(value, -bound), bound) if value == value else value


@njit(inline="always")
def _update_rows(rule, src, dst, k0, start, stop, u, x, xo, y, yo, f, fo, eta):
    """Rows start..stop of an elementwise rule's new kernel (`oja`, `bcm`, `hebb`), from the
    sample's x, y and per-unit factors f (y^2, or y (y - theta) for BCM)."""
    for i in range(start, stop):
        xi, row = x[xo + i], k0 + i * u
        if rule == OJA:
            for j in range(u):
                dst[row + j] = _oja_weight(src[row + j], xi, y[yo + j], f[fo + j], eta)
        elif rule == BCM:
            for j in range(u):
                dst[row + j] = _bcm_weight(src[row + j], xi, f[fo + j], eta)
        else:  # HEBB
            for j in range(u):
                dst[row + j] = _hebb_weight(src[row + j], xi, y[yo + j], eta)


@njit(inline="always")
def _settle_multiply(layout, rates, layer, w, scratch, acts, h):
    """h += x K with the kernel's waiting update made on the way, in place: each weight is
    read once, updated, written and multiplied (one pass over the kernel instead of two).
    The sums are `_multiply`'s, the new weights `_update_rows`' and `_clipped`'s."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    d, u, k0 = _at(layout, layer, IN), _at(layout, layer, UNITS), _at(layout, layer, K_OFF)
    xo, po = _at(layout, layer, X_OFF), _at(layout, layer, P_OFF)
    yo, fo = po + d, po + d + u
    rule, eta, bound = layout[layer, RULE], scratch[po + d + u + u], rates[layer, WEIGHT_BOUND]
    i = np.uint64(0)
    while i + four <= d:
        r0 = k0 + i * u
        r1, r2, r3 = r0 + u, r0 + two * u, r0 + three * u
        x0, x1, x2, x3 = acts[xo + i], acts[xo + i + one], acts[xo + i + two], acts[xo + i + three]
        q0, q1, q2, q3 = (scratch[po + i], scratch[po + i + one], scratch[po + i + two],
                          scratch[po + i + three])
        if rule == OJA_SUBSPACE:  # the rows' dot products with y first, as made at once
            s0, s1 = _row_dot(w, r0, scratch, yo, u), _row_dot(w, r1, scratch, yo, u)
            s2, s3 = _row_dot(w, r2, scratch, yo, u), _row_dot(w, r3, scratch, yo, u)
            for j in range(u):
                y = scratch[yo + j]
                v0 = _subspace_weight(w[r0 + j], q0, y, s0, eta)
                v1 = _subspace_weight(w[r1 + j], q1, y, s1, eta)
                v2 = _subspace_weight(w[r2 + j], q2, y, s2, eta)
                v3 = _subspace_weight(w[r3 + j], q3, y, s3, eta)
                w[r0 + j], w[r1 + j], w[r2 + j], w[r3 + j] = v0, v1, v2, v3
                h[j] = (((h[j] + x0 * v0) + x1 * v1) + x2 * v2) + x3 * v3
        elif rule == OJA:
            for j in range(u):
                y, f = scratch[yo + j], scratch[fo + j]
                v0 = _oja_weight(w[r0 + j], q0, y, f, eta)
                v1 = _oja_weight(w[r1 + j], q1, y, f, eta)
                v2 = _oja_weight(w[r2 + j], q2, y, f, eta)
                v3 = _oja_weight(w[r3 + j], q3, y, f, eta)
                w[r0 + j], w[r1 + j], w[r2 + j], w[r3 + j] = v0, v1, v2, v3
                h[j] = (((h[j] + x0 * v0) + x1 * v1) + x2 * v2) + x3 * v3
        elif rule == BCM:
            for j in range(u):
                f = scratch[fo + j]
                v0 = _bcm_weight(w[r0 + j], q0, f, eta)
                v1 = _bcm_weight(w[r1 + j], q1, f, eta)
                v2 = _bcm_weight(w[r2 + j], q2, f, eta)
                v3 = _bcm_weight(w[r3 + j], q3, f, eta)
                w[r0 + j], w[r1 + j], w[r2 + j], w[r3 + j] = v0, v1, v2, v3
                h[j] = (((h[j] + x0 * v0) + x1 * v1) + x2 * v2) + x3 * v3
        else:  # HEBB, clipped
            for j in range(u):
                y = scratch[yo + j]
                v0 = _clipped(_hebb_weight(w[r0 + j], q0, y, eta), bound)
                v1 = _clipped(_hebb_weight(w[r1 + j], q1, y, eta), bound)
                v2 = _clipped(_hebb_weight(w[r2 + j], q2, y, eta), bound)
                v3 = _clipped(_hebb_weight(w[r3 + j], q3, y, eta), bound)
                w[r0 + j], w[r1 + j], w[r2 + j], w[r3 + j] = v0, v1, v2, v3
                h[j] = (((h[j] + x0 * v0) + x1 * v1) + x2 * v2) + x3 * v3
        i += four
    while i < d:
        xi, q, row = acts[xo + i], scratch[po + i], k0 + i * u
        if rule == OJA_SUBSPACE:
            dot = _row_dot(w, row, scratch, yo, u)
            for j in range(u):
                value = _subspace_weight(w[row + j], q, scratch[yo + j], dot, eta)
                w[row + j] = value
                h[j] += xi * value
        elif rule == OJA:
            for j in range(u):
                y, f = scratch[yo + j], scratch[fo + j]
                value = _oja_weight(w[row + j], q, y, f, eta)
                w[row + j] = value
                h[j] += xi * value
        elif rule == BCM:
            for j in range(u):
                f = scratch[fo + j]
                value = _bcm_weight(w[row + j], q, f, eta)
                w[row + j] = value
                h[j] += xi * value
        else:
            for j in range(u):
                y = scratch[yo + j]
                value = _clipped(_hebb_weight(w[row + j], q, y, eta), bound)
                w[row + j] = value
                h[j] += xi * value
        i += one


@njit(inline="always")
def _settle_kernel(layout, rates, layer, src, dst, scratch, sums):
    """The layer's waiting kernel update (kept in `scratch`) from row `src` of the weights
    into `dst`, with the formulas of the update made at once (`sums`: Sanger's work space).
    A waiting update is never masked; plain Hebb's is clipped."""
    d, u, k0 = _at(layout, layer, IN), _at(layout, layer, UNITS), _at(layout, layer, K_OFF)
    po = _at(layout, layer, P_OFF)
    yo, fo = po + d, po + d + u
    rule, eta = layout[layer, RULE], scratch[po + d + u + u]
    if rule == SANGER:
        _sanger_units(src, dst, sums, scratch, po, yo, k0, d, u, eta)
    elif rule == OJA_SUBSPACE:
        for i in range(d):
            row, q = k0 + i * u, scratch[po + i]
            dot = _row_dot(src, row, scratch, yo, u)
            for j in range(u):
                dst[row + j] = _subspace_weight(src[row + j], q, scratch[yo + j], dot, eta)
    else:
        _update_rows(rule, src, dst, k0, np.uint64(0), d, u, scratch, po, scratch, yo, scratch,
                     fo, eta)
        if rule == HEBB:
            bound = rates[layer, WEIGHT_BOUND]
            for p in range(k0, k0 + d * u):
                dst[p] = _clipped(dst[p], bound)


@njit(inline="always")
def _defer_kernel(layout, layer, counters, scratch, acts, factor, eta):
    """Keep what the layer's kernel update needs (x, y, factors, rate) in `scratch` and
    mark it waiting: the next forward pass makes it (`_forward`)."""
    d, u = _at(layout, layer, IN), _at(layout, layer, UNITS)
    xo, yo, po = _at(layout, layer, X_OFF), _at(layout, layer, Y_OFF), _at(layout, layer, P_OFF)
    for i in range(d):
        scratch[po + i] = acts[xo + i]
    for j in range(u):
        scratch[po + d + j] = acts[yo + j]
        scratch[po + d + u + j] = factor[j]
    scratch[po + d + u + u] = eta
    counters[1 + layout.shape[0] + layer] = 1


@njit(inline="always")
def _finish_kernel(layout, rates, layer, dst, masks, norms):
    """Masked weights of a new kernel back to exactly zero, then plain Hebb's stabiliser."""
    d, u, k0 = _at(layout, layer, IN), _at(layout, layer, UNITS), _at(layout, layer, K_OFF)
    end = k0 + d * u
    if layout[layer, MASKED] != 0:
        for p in range(k0, end):
            dst[p] *= masks[p]
    if layout[layer, RULE] != HEBB:
        return
    if layout[layer, STABILIZER] == CLIP:
        bound = rates[layer, WEIGHT_BOUND]
        for p in range(k0, end):
            dst[p] = _clipped(dst[p], bound)
        return
    for j in range(u):
        norms[j] = _ZERO
    for i in range(d):
        row = k0 + i * u
        for j in range(u):
            norms[j] += dst[row + j] * dst[row + j]
    target = rates[layer, NORM_TARGET]
    for j in range(u):
        norm = np.sqrt(norms[j])
        norms[j] = target / norm if norm != _ZERO else _ZERO
    for i in range(d):
        row = k0 + i * u
        for j in range(u):
            dst[row + j] *= norms[j]


@njit(inline="always")
def _update_threshold(layout, rates, layer, src, dst, mean_yy):
    """BCM threshold -> running mean of y^2; nonzero if a new value is not finite."""
    t0, u = _at(layout, layer, T_OFF), _at(layout, layer, UNITS)
    rate, bad = rates[layer, THRESHOLD_RATE], 0
    for j in range(u):
        theta = src[t0 + j] + rate * (mean_yy[j] - src[t0 + j])
        dst[t0 + j] = theta
        bad |= _not_finite(theta)
    return bad


# The one function compiled with reassociation: a dot product over a row's contiguous
# units is a reduction, which LLVM vectorises only when it may regroup the sum (into
# partial sums, one per vector lane, combined in a fixed tree). Not inlined, so that every
# caller runs this one compiled loop and the grouping stays the same for every sample
# (2.4x faster than eight fixed partial sums, which LLVM left scalar).
@njit(fastmath={"contract", "reassoc"}, boundscheck=False, error_model="numpy")
def _row_dot(src, row, acts, yo, u):
    """sum_j src[row + j] * y[j], summed in one fixed vectorised order."""
    total = _ZERO
    for j in range(u):
        total += src[row + j] * acts[yo + j]
    return total


@njit(inline="always")
def _oja_subspace_rows(src, dst, acts, xo, yo, k0, d, u, eta):
    """The subspace rule's update of every kernel row, dw_ij = eta y_j (x_i - w_i . y),
    four rows per pass over y (their dot products first)."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    i = np.uint64(0)
    while i + four <= d:
        r0 = k0 + i * u
        r1, r2, r3 = r0 + u, r0 + two * u, r0 + three * u
        s0, s1 = _row_dot(src, r0, acts, yo, u), _row_dot(src, r1, acts, yo, u)
        s2, s3 = _row_dot(src, r2, acts, yo, u), _row_dot(src, r3, acts, yo, u)
        x0, x1, x2, x3 = acts[xo + i], acts[xo + i + one], acts[xo + i + two], acts[xo + i + three]
        for j in range(u):
            y = acts[yo + j]
            dst[r0 + j] = _subspace_weight(src[r0 + j], x0, y, s0, eta)
            dst[r1 + j] = _subspace_weight(src[r1 + j], x1, y, s1, eta)
            dst[r2 + j] = _subspace_weight(src[r2 + j], x2, y, s2, eta)
            dst[r3 + j] = _subspace_weight(src[r3 + j], x3, y, s3, eta)
        i += four
    while i < d:
        row, xi = k0 + i * u, acts[xo + i]
        s = _row_dot(src, row, acts, yo, u)
        for j in range(u):
            dst[row + j] = _subspace_weight(src[row + j], xi, acts[yo + j], s, eta)
        i += one


@njit(inline="always")
def _sanger_row(src, dst, sums, x, xo, y, row, d, eta):
    """One unit's row of Sanger's update (its terms added to the running sums first)."""
    for i in range(d):
        k = src[row + i]
        c = sums[i] + k * y
        sums[i] = c
        dst[row + i] = k + eta * (x[xo + i] * y - y * c)


@njit(inline="always")
def _sanger_units(src, dst, sums, acts, xo, yo, k0, d, u, eta):
    """Sanger's update of a kernel stored one row per unit, dw_ji = eta y_j (x_i - c_ji)
    with c_ji = sum_{k<=j} w_ki y_k: unit by unit in order, each row adding its terms to
    the running sums of every input in `sums` (one contiguous pass per row, which
    vectorises: each sum still adds its terms in unit order). `dst` may be `src`."""
    for i in range(d):
        sums[i] = _ZERO
    for j in range(u):
        _sanger_row(src, dst, sums, acts, xo, acts[yo + j], k0 + j * d, d, eta)


@njit(inline="always")
def _settle_units_dot(layout, layer, w, scratch, sums, acts, h):
    """A units-major (Sanger's) forward pass h_j = w_j . x with the kernel's waiting update
    made on the way, row by row in place: each row is updated, then multiplied while it
    is in cache. The rows are `_sanger_units`', the dot products the forward pass's."""
    d, u, k0 = _at(layout, layer, IN), _at(layout, layer, UNITS), _at(layout, layer, K_OFF)
    xo, po = _at(layout, layer, X_OFF), _at(layout, layer, P_OFF)
    eta = scratch[po + d + u + u]
    for i in range(d):
        sums[i] = _ZERO
    for j in range(u):
        row = k0 + j * d
        _sanger_row(w, w, sums, scratch, po, scratch[po + d + j], row, d, eta)
        h[j] = _row_dot(w, row, acts, xo, d)


@njit(inline="always")
def _learn_sample(layout, rates, layer, src, dst, masks, counters, scratch, acts, factor,
                  norms, sums, defer):
    """Write one layer's state after one sample into row `dst` (which may be `src`: every
    new value is written after the old values it is computed from are read); nonzero if
    the new BCM threshold is not finite (the weights are checked by the next forward
    pass). With `defer` (only in place), a `DEFERRABLE` kernel's update is left waiting
    for the next forward pass; the lateral weights and the threshold are updated now."""
    d, u = _at(layout, layer, IN), _at(layout, layer, UNITS)
    k0, xo, yo = _at(layout, layer, K_OFF), _at(layout, layer, X_OFF), _at(layout, layer, Y_OFF)
    t0 = _at(layout, layer, T_OFF)
    rule = layout[layer, RULE]
    eta, alpha = _rates(rates, counters, layer)
    for j in range(u):
        y = acts[yo + j]
        factor[j] = y * (y - src[t0 + j]) if rule == BCM else y * y
    waits = defer and layout[layer, DEFERRABLE] != 0
    if waits:
        _defer_kernel(layout, layer, counters, scratch, acts, factor, eta)
    elif rule == OJA_SUBSPACE:
        _oja_subspace_rows(src, dst, acts, xo, yo, k0, d, u, eta)
    elif rule == SANGER:
        _sanger_units(src, dst, sums, acts, xo, yo, k0, d, u, eta)
    else:
        _update_rows(rule, src, dst, k0, np.uint64(0), d, u, acts, xo, acts, yo, factor,
                     np.uint64(0), eta)
    if not waits:
        _finish_kernel(layout, rates, layer, dst, masks, norms)
    bad = 0
    if rule == BCM:
        for j in range(u):
            factor[j] = acts[yo + j] * acts[yo + j]
        bad |= _update_threshold(layout, rates, layer, src, dst, factor)
    if layout[layer, LATERAL] == LATERAL_ANTI_HEBBIAN:
        l0 = _at(layout, layer, L_OFF)
        for k in range(u):
            yk = alpha * acts[yo + k]
            row = l0 + k * u
            for j in range(u):
                dst[row + j] = src[row + j] - yk * acts[yo + j]
            dst[row + k] = _ZERO
    return bad


@njit
def _weights_finite(layout, w):
    """Whether every kernel and lateral weight of one row is finite (full check)."""
    bad = 0
    for layer in range(layout.shape[0]):
        d, u, k0 = _at(layout, layer, IN), _at(layout, layer, UNITS), _at(layout, layer, K_OFF)
        end = k0 + d * u
        if layout[layer, LATERAL] == LATERAL_ANTI_HEBBIAN:
            end += u * u  # the lateral weights follow the kernel
        for p in range(k0, end):
            bad |= _not_finite(w[p])
    return bad == 0


@njit(inline="always")
def _largest_abs(a, start, stop):
    """max |a[p]| for start <= p < stop, as eight partial maxima (so that the comparisons
    do not wait for each other)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = _ZERO
    one, eight = np.uint64(1), np.uint64(8)
    p = start
    while p + eight <= stop:
        m0, m1 = max(m0, abs(a[p])), max(m1, abs(a[p + one]))
        m2, m3 = max(m2, abs(a[p + np.uint64(2)])), max(m3, abs(a[p + np.uint64(3)]))
        m4, m5 = max(m4, abs(a[p + np.uint64(4)])), max(m5, abs(a[p + np.uint64(5)]))
        m6, m7 = max(m6, abs(a[p + np.uint64(6)])), max(m7, abs(a[p + np.uint64(7)]))
        p += eight
    while p < stop:
        m0 = max(m0, abs(a[p]))
        p += one
    return np.float64(max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7))))


@njit
def _measure(layout, layer, w, bounds):
    """The exact largest |weight| of one layer's kernel and lateral weights in row `w`,
    into `bounds`."""
    d, u = _at(layout, layer, IN), _at(layout, layer, UNITS)
    k0, l0 = _at(layout, layer, K_OFF), _at(layout, layer, L_OFF)
    bounds[layer, KERNEL_BOUND] = _largest_abs(w, k0, k0 + d * u)
    bounds[layer, LATERAL_BOUND] = 0.0
    if layout[layer, LATERAL] == LATERAL_ANTI_HEBBIAN:
        bounds[layer, LATERAL_BOUND] = _largest_abs(w, l0, l0 + u * u)
    bounds[layer, MEASURED] = 1.0


@njit(inline="always")
def _layer_limits(layout, rates, counters, w, acts, bounds, layer):
    """For one layer's coming update: (a bound of every value it computes, of |kernel|
    after it, of |lateral| after it), from its bounds and the largest |x| and |y| in
    `acts` (all finite: the forward pass saw no non-finite product); for BCM, of the new
    threshold too."""
    d, u = _at(layout, layer, IN), _at(layout, layer, UNITS)
    xo, yo, t0 = _at(layout, layer, X_OFF), _at(layout, layer, Y_OFF), _at(layout, layer, T_OFF)
    x_max, y_max = _largest_abs(acts, xo, xo + d), _largest_abs(acts, yo, yo + u)
    kernel, lateral = bounds[layer, KERNEL_BOUND], bounds[layer, LATERAL_BOUND]
    rule = layout[layer, RULE]
    eta, alpha = _rates(rates, counters, layer)
    rate = abs(np.float64(eta))
    if rule == OJA:  # k + eta (x y - k y^2)
        factor = y_max * y_max
        change = x_max * y_max + kernel * factor
        largest = max(factor, kernel + max(1.0, rate) * change)
    elif rule == BCM:  # k + eta x y (y - theta)
        theta_max = _largest_abs(w, t0, t0 + u)
        factor = y_max * (y_max + theta_max)
        change = x_max * factor
        largest = max(factor, kernel + max(1.0, rate) * change)
        theta_rate = max(1.0, abs(np.float64(rates[layer, THRESHOLD_RATE])))
        largest = max(largest, theta_max + theta_rate * (y_max * y_max + theta_max))
    elif rule in (OJA_SUBSPACE, SANGER):  # k + eta (x y - y sum_k w_k y_k)
        sums = kernel * y_max * np.float64(u)
        change = x_max * y_max + sums * y_max
        largest = max(sums, kernel + max(1.0, rate) * change)
    else:  # HEBB: k + eta x y
        change = x_max * y_max
        largest = kernel + max(1.0, rate) * change
    kernel_after = kernel + rate * change
    if rule == OJA:  # k (1 - eta y_j^2) + eta x y_j: the decay keeps it from growing
        kernel_after = (kernel * max(1.0, abs(1.0 - np.float64(eta) * factor))
                        + rate * x_max * y_max)
    kernel_after += _ROUNDING * (kernel + rate * change)
    if rule == HEBB and layout[layer, STABILIZER] == CLIP:
        kernel_after = min(kernel_after, abs(np.float64(rates[layer, WEIGHT_BOUND])))
    elif rule == HEBB:  # normalised: squares summed over d, then target / norm per column
        target = abs(np.float64(rates[layer, NORM_TARGET]))
        largest = max(largest, largest * largest * np.float64(d))
        if not target < _SAFE_NORM_TARGET:
            largest = np.inf
        kernel_after = 2.0 * target
    lateral_after = lateral
    if layout[layer, LATERAL] == LATERAL_ANTI_HEBBIAN:  # l - alpha y_k y_j
        ay = abs(np.float64(alpha)) * y_max
        largest = max(largest, lateral + ay + ay * y_max)
        lateral_after = (lateral + ay * y_max) * (1.0 + _ROUNDING)
    return largest, kernel_after, lateral_after


@njit
def _certify(layout, rates, counters, w, acts, bounds):
    """Whether the coming update of every layer (activations in `acts`, weights in row
    `w`) is proven finite by the bounds: if so, `bounds` become those after it. A bound
    too large to prove it is measured once and tried again; False when that fails too
    (the update is then made as any other: on the other row if it is its segment's
    first, and checked)."""
    for layer in range(layout.shape[0]):
        largest, kernel, lateral = _layer_limits(layout, rates, counters, w, acts, bounds,
                                                 layer)
        if not largest < _SAFE and bounds[layer, MEASURED] == 0.0:
            _measure(layout, layer, w, bounds)
            largest, kernel, lateral = _layer_limits(layout, rates, counters, w, acts, bounds,
                                                     layer)
        if not largest < _SAFE:
            return False
        bounds[layer, NEXT_KERNEL_BOUND] = kernel
        bounds[layer, NEXT_LATERAL_BOUND] = lateral
    for layer in range(layout.shape[0]):
        bounds[layer, KERNEL_BOUND] = bounds[layer, NEXT_KERNEL_BOUND]
        bounds[layer, LATERAL_BOUND] = bounds[layer, NEXT_LATERAL_BOUND]
        bounds[layer, MEASURED] = 0.0
    return True


@njit
def _forget_bounds(bounds):
    """The bounds no longer hold (an update they did not certify, or a step back)."""
    for layer in range(bounds.shape[0]):
        bounds[layer, KERNEL_BOUND] = np.inf
        bounds[layer, LATERAL_BOUND] = np.inf
        bounds[layer, MEASURED] = 0.0


@njit(inline="always")
def _step_all(counters, layers, delta):
    for layer in range(layers):
        counters[1 + layer] += delta


@njit(inline="always")
def _work(layout, scratch):
    """The views of `scratch`: activations, then `WORK_VECTORS` work vectors as long as
    the widest input or layer (three over units, Sanger's running sums over inputs)."""
    last = layout.shape[0] - 1
    end = layout[last, Y_OFF] + layout[last, UNITS]
    widest = 0
    for layer in range(layout.shape[0]):
        widest = max(widest, layout[layer, UNITS], layout[layer, IN])
    acts = scratch[:end]
    h = scratch[end:end + widest]
    factor = scratch[end + widest:end + 2 * widest]
    norms = scratch[end + 2 * widest:end + 3 * widest]
    sums = scratch[end + 3 * widest:end + WORK_VECTORS * widest]
    return acts, h, factor, norms, sums, layout[last, Y_OFF], end


@njit(inline="always")
def _refuse(counters, bounds, layers, skipped, refused, applied, begin, first):
    """Refuse sample `refused`'s update: take back the segment's `applied` steps and go
    back to its first row, to replay its updates before that sample. Returns the new
    (live row, updates applied, end of the replay, next sample)."""
    skipped[refused] = True
    _step_all(counters, layers, -applied)
    for layer in range(layers):  # an update left waiting belongs to the row left behind
        counters[1 + layers + layer] = 0
    _forget_bounds(bounds)
    return begin, 0, refused, first


# `_nrt=False`: no reference counting. numba counts references to every array view passed
# into an inlined helper with atomic increments and decrements, and cannot prune them
# across this kernel's loops (82 and 132 sites); perf put ~63% of a 16 -> 4 sample's time
# in them. This kernel allocates nothing and keeps no array past the call, so it needs no
# runtime: without it a 16 -> 4 sample took 71 ns instead of 360. An allocation added
# here fails to compile ("NRT required but not enabled").
@njit(_SIGNATURE, **_OPTIONS, _nrt=False)
def run_per_sample(samples, learn, layout, rates, weights, masks, counters, bounds, outputs,
                   skipped, scratch):
    """Apply `samples` to a stack in order: each is answered with the weights as they were
    when it arrived, then (if its flag is set) its update goes to every layer or, if that
    would make any weight non-finite, to none (`skipped`).

    The samples since the call began, or since the last refused or proven-finite first
    update, form a segment. Its first update writes the other row, so the row the segment
    started from stays intact; its later updates are made in place (less memory traffic
    than writing the other row each time: no second copy to read and write back). A
    refused update is undone by going back to the segment's first row and replaying,
    through the same code, the updates before it: the weights are bit for bit those of
    applying every sample on its own, and each sample is replayed at most once per call.
    The call's first and last updates, when `_certify` proves them finite, are made in
    place with no check (the first one then ends its segment: it can never be undone).
    A `DEFERRABLE` kernel's update made in place waits for the next forward pass (see the
    module's notes), except while replaying and for a segment's first; the call's last
    waits only when proven finite, and then for the next call.
    """
    layers = layout.shape[0]
    n_samples = samples.shape[0]
    acts, h, factor, norms, sums, out0, out1 = _work(layout, scratch)
    rows = (weights[0], weights[1])
    live = counters[LIVE]
    begin, first, applied = live, 0, 0  # the segment: its first row, first sample, updates
    unchecked = -1  # the learning sample whose update is live but not yet proven finite
    replay_to = -1  # samples before this one are being replayed (they are answered)
    offered, bad = False, 0  # whether an update was offered for certification; forward's
    bounds_held = True  # `bounds` may hold values (else they are all unknown already)
    n = 0
    while True:
        replaying = n < replay_to
        if n == replay_to:  # the refused sample: a new segment starts after it
            begin, first, applied, replay_to = live, n + 1, 0, -1
            n += 1
            continue
        if n == n_samples:
            if unchecked >= 0 and not _weights_finite(layout, rows[live]):
                live, applied, replay_to, n = _refuse(counters, bounds, layers, skipped,
                                                      unchecked, applied, begin, first)
                unchecked = -1
                continue
            break
        if replaying:
            if not learn[n] or skipped[n]:
                n += 1
                continue
            _forward_stack(layout, rates, samples[n], rows[live], counters, scratch, acts, h,
                           sums)
        else:
            bad = _forward_stack(layout, rates, samples[n], rows[live], counters, scratch,
                                 acts, h, sums)
            if unchecked >= 0 and bad and not _weights_finite(layout, rows[live]):
                # replay up to the refused sample, then come back to this one
                live, applied, replay_to, n = _refuse(counters, bounds, layers, skipped,
                                                      unchecked, applied, begin, first)
                unchecked = -1
                continue
            unchecked = -1
            for j in range(out1 - out0):
                outputs[n, j] = acts[out0 + j]
            if not learn[n]:
                n += 1
                continue
        certified = False
        if not replaying and bad == 0 and (not offered or n == n_samples - 1):
            # The call's first and last updates: proven finite, neither needs the other row
            # nor a check (so a one-sample call makes neither).
            offered = bounds_held = True
            certified = _certify(layout, rates, counters, rows[live], acts, bounds)
        # The layers' loop is written out at both sites: an inlined function holding it
        # made small models' samples ~20% slower (measured with reference counting on).
        threshold_bad = 0
        copied = applied == 0 and not certified
        if copied:
            src, dst = rows[live], rows[1 - live]
            for layer in range(layers):
                threshold_bad |= _learn_sample(layout, rates, layer, src, dst, masks, counters,
                                               scratch, acts, factor, norms, sums, False)
            if not threshold_bad:
                live = 1 - live
        else:
            # An update in place waits for the next forward pass, which checks it, or, the
            # call's last, for the next call, when proven finite. Not while replaying, nor
            # one that starts a segment: the row a segment starts from is complete.
            last = n == n_samples - 1
            defer = not replaying and ((certified and last) or not (certified or last))
            w = rows[live]  # one array as source and destination (see the module's notes)
            for layer in range(layers):
                threshold_bad |= _learn_sample(layout, rates, layer, w, w, masks, counters,
                                               scratch, acts, factor, norms, sums, defer)
        if threshold_bad:  # never while replaying or certified
            if copied:
                skipped[n] = True  # it went to the other row, which is not live
                n += 1
            else:
                live, applied, replay_to, n = _refuse(counters, bounds, layers, skipped, n,
                                                      applied, begin, first)
            continue
        _step_all(counters, layers, 1)
        if certified and applied == 0:  # made in place and final: the segment starts after it
            begin, first = live, n + 1
        elif certified:
            applied += 1
        else:
            applied += 1
            if bounds_held:
                _forget_bounds(bounds)
                bounds_held = False
            if not replaying:
                unchecked = n
        n += 1
    counters[LIVE] = live


@njit
def _learn_mean(layout, rates, layer, learn, acts, count, src, dst, masks, counters, factor,
                norms):
    """One layer's batch-mean update into row `dst` from every sample's activations
    (`acts`, one row per sample); nonzero if the new BCM threshold is not finite."""
    d, u = _at(layout, layer, IN), _at(layout, layer, UNITS)
    k0, xo, yo = _at(layout, layer, K_OFF), _at(layout, layer, X_OFF), _at(layout, layer, Y_OFF)
    t0 = _at(layout, layer, T_OFF)
    rule = layout[layer, RULE]
    eta, alpha = _rates(rates, counters, layer)
    inv = _ONE / np.float32(count)
    corr = np.zeros((d, u), np.float32)  # mean x f^T with f = y, or y (y - theta) for BCM
    yy = np.zeros((u, u), np.float32)  # mean y y^T
    for n in range(acts.shape[0]):
        if not learn[n]:
            continue
        row = acts[n]
        for j in range(u):
            y = row[yo + j]
            factor[j] = y * (y - src[t0 + j]) if rule == BCM else y
        for i in range(d):
            xi = row[xo + i]
            for j in range(u):
                corr[i, j] += xi * factor[j]
        for k in range(u):
            yk = row[yo + k]
            for j in range(u):
                yy[k, j] += yk * row[yo + j]
    for i in range(d):
        for j in range(u):
            corr[i, j] *= inv
    for k in range(u):
        for j in range(u):
            yy[k, j] *= inv
    # kernel[i, j] sits at k0 + i * across + j * along
    major = layout[layer, UNITS_MAJOR] != 0
    across, along = (np.uint64(1), d) if major else (u, np.uint64(1))
    for i in range(d):
        base = k0 + i * across
        for j in range(u):
            k = src[base + j * along]
            decay = _ZERO
            if rule == OJA:
                decay = k * yy[j, j]
            elif rule in (OJA_SUBSPACE, SANGER):
                top = u if rule == OJA_SUBSPACE else j + np.uint64(1)
                for m in range(top):
                    decay += src[base + m * along] * yy[m, j]
            dst[base + j * along] = k + eta * (corr[i, j] - decay)
    _finish_kernel(layout, rates, layer, dst, masks, norms)
    bad = 0
    if rule == BCM:
        for j in range(u):
            factor[j] = yy[j, j]
        bad |= _update_threshold(layout, rates, layer, src, dst, factor)
    if layout[layer, LATERAL] == LATERAL_ANTI_HEBBIAN:
        l0 = _at(layout, layer, L_OFF)
        for k in range(u):
            row = l0 + k * u
            for j in range(u):
                dst[row + j] = src[row + j] - alpha * yy[k, j]
            dst[row + k] = _ZERO
    return bad


@njit(_SIGNATURE, **_OPTIONS)
def run_batch_mean(samples, learn, layout, rates, weights, masks, counters, bounds, outputs,
                   skipped, scratch):
    """One update per layer for the whole call: the mean of the per-sample updates of the
    learning samples at the call's starting state (every sample answered with that state);
    applied to no layer if any new weight would not be finite."""
    layers = layout.shape[0]
    _, h, factor, norms, sums, out0, out1 = _work(layout, scratch)
    n_samples = samples.shape[0]
    live = counters[LIVE]
    src, dst = weights[live], weights[1 - live]
    acts = np.zeros((n_samples, out1), np.float32)
    count = 0
    for n in range(n_samples):
        _forward_stack(layout, rates, samples[n], src, counters, scratch, acts[n], h, sums)
        outputs[n, :] = acts[n, out0:out1]
        if learn[n]:
            count += 1
    if count == 0:
        return
    bad = 0
    for layer in range(layers):
        bad |= _learn_mean(layout, rates, layer, learn, acts, count, src, dst, masks, counters,
                           factor, norms)
    if bad == 0 and _weights_finite(layout, dst):
        counters[LIVE] = 1 - live
        _step_all(counters, layers, count)
        _forget_bounds(bounds)
    else:
        for n in range(n_samples):
            skipped[n] = learn[n]


_SETTLED_SIGNATURE = types.void(
    _array(types.int64, 2),  # layout
    _array(types.float32, 2),  # rates
    _array(types.float32, 2),  # weights
    _array(types.int64, 1),  # counters
    _array(types.float32, 1),  # scratch
    _array(types.float32, 1),  # out
)


@njit(_SETTLED_SIGNATURE, **_OPTIONS)
def settled_weights(layout, rates, weights, counters, scratch, out):
    """The live row of `weights` with the kernel updates still waiting made, into `out`
    (the engine's state is only read: bit for bit what the next forward pass will write)."""
    live = weights[counters[LIVE]]
    for p in range(live.shape[0]):
        out[p] = live[p]
    for layer in range(layout.shape[0]):
        if _waiting(layout, counters, layer):
            sums = np.empty(_at(layout, layer, IN), np.float32)  # not the engine's work space
            _settle_kernel(layout, rates, layer, live, out, scratch, sums)
