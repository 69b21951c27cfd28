"""The native engine's compiled kernels: a whole stack's online maths in numba.

Every model of every size goes through the same two functions, compiled once for one
signature (and cached on disk): a stack is described by flat buffers and a small table of
per-layer offsets and codes, not by Python objects. The GIL is released while they run.

Layout (built by `service.model.native_engine`): ``weights`` holds two copies (rows 0 and
1) of every layer's kernel, lateral weights and BCM threshold, at the offsets of the
``layout`` table; ``counters`` holds the live row, then each layer's step. The first
learning sample of a call reads the live row and writes the other, which becomes live; the
call's later samples update that row in place (`run_per_sample`): no copy and no
allocation per sample. Fields a layer never updates (lateral weights without
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
written). The results are those of checking every update, bit for bit.

Kernels are (input_dim, units), row-major: inner loops run over units, contiguous, so they
vectorise without reassociating a sum (fastmath is FMA contraction only, no
reassociation); the one reduction over units (``oja_subspace``) uses a fixed split into
eight partial sums, four rows per pass over y, and Sanger's running sums (a chain of
additions per row) run eight rows at once, parked in the work space. An update in place
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
(IN, UNITS, K_OFF, L_OFF, T_OFF, X_OFF, Y_OFF, RULE, LATERAL, ACTIVATION, STABILIZER,
 MASKED) = range(12)
LAYOUT_COLUMNS = 12
# ... and of the hyper-parameter table `rates` (float32).
RATE, DECAY_STEPS, LATERAL_RATE, NORM_TARGET, WEIGHT_BOUND, THRESHOLD_RATE = range(6)
RATE_COLUMNS = 6
WORK_VECTORS = 11  # work space after the activations, in vectors of the widest layer
LIVE = 0  # counters[LIVE] is the live row of `weights`; counters[1 + layer] its step

# Codes of the table's categorical columns, in `service.model.params` order.
HEBB, OJA, OJA_SUBSPACE, SANGER, BCM = range(5)
LATERAL_NONE, LATERAL_INHIBITION, LATERAL_ANTI_HEBBIAN = range(3)
LINEAR, RELU, TANH, SIGMOID = range(4)
NORMALIZE, CLIP = range(2)

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


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
def _forward(layout, layer, w, acts, h):
    """The layer's output y + y L, y = f(x K), from its input in `acts` into `acts`, with
    one row `w` of the weights; nonzero if a product it computed is not finite."""
    d, u = _at(layout, layer, IN), _at(layout, layer, UNITS)
    k0, xo, yo = _at(layout, layer, K_OFF), _at(layout, layer, X_OFF), _at(layout, layer, Y_OFF)
    for j in range(u):
        h[j] = _ZERO
    _multiply(w, k0, d, u, acts, xo, h)
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
def _forward_stack(layout, sample, w, acts, h):
    """Every layer's output for one sample into `acts`; nonzero if a product is not finite."""
    for i in range(sample.shape[0]):
        acts[i] = sample[i]
    bad = 0
    for layer in range(layout.shape[0]):
        bad |= _forward(layout, layer, w, acts, h)
    return bad


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
            value = dst[p]
            if value == value:  # NaN stays NaN (refused); Inf is clipped like any value
                dst[p] = min(max(value, -bound), bound)
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


@njit(inline="always")
def _add8(s, src, p, acts, q):
    """The eight partial sums `s` plus src[p + m] * acts[q + m], m = 0..7."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    five, six, seven = np.uint64(5), np.uint64(6), np.uint64(7)
    return (s[0] + src[p] * acts[q], s[1] + src[p + one] * acts[q + one],
            s[2] + src[p + two] * acts[q + two], s[3] + src[p + three] * acts[q + three],
            s[4] + src[p + four] * acts[q + four], s[5] + src[p + five] * acts[q + five],
            s[6] + src[p + six] * acts[q + six], s[7] + src[p + seven] * acts[q + seven])


@njit(inline="always")
def _total8(s):
    """Eight partial sums combined, always in this order."""
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


@njit(inline="always")
def _row_dot(src, row, acts, yo, u):
    """sum_j src[row + j] * y[j] as eight fixed partial sums (vectorises; deterministic)."""
    s = (_ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO)
    eight = np.uint64(8)
    blocks = u // eight * eight
    for j in range(np.uint64(0), blocks, eight):
        s = _add8(s, src, row + j, acts, yo + j)
    total = _total8(s)
    for j in range(blocks, u):
        total += src[row + j] * acts[yo + j]
    return total


@njit(inline="always")
def _row_dots4(src, row, acts, yo, u):
    """`_row_dot` of four consecutive rows, each summed exactly as there, with one load
    of y per four rows."""
    s0 = s1 = s2 = s3 = (_ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO)
    eight = np.uint64(8)
    r1, r2, r3 = row + u, row + np.uint64(2) * u, row + np.uint64(3) * u
    blocks = u // eight * eight
    for j in range(np.uint64(0), blocks, eight):
        q = yo + j
        s0 = _add8(s0, src, row + j, acts, q)
        s1 = _add8(s1, src, r1 + j, acts, q)
        s2 = _add8(s2, src, r2 + j, acts, q)
        s3 = _add8(s3, src, r3 + j, acts, q)
    t0, t1, t2, t3 = _total8(s0), _total8(s1), _total8(s2), _total8(s3)
    for j in range(blocks, u):
        y = acts[yo + j]
        t0 += src[row + j] * y
        t1 += src[r1 + j] * y
        t2 += src[r2 + j] * y
        t3 += src[r3 + j] * y
    return t0, t1, t2, t3


@njit(inline="always")
def _oja_subspace_rows(src, dst, acts, xo, yo, k0, d, u, eta):
    """The subspace rule's update of every kernel row, dw_ij = eta y_j (x_i - w_i . y),
    four rows per pass over y."""
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    i = np.uint64(0)
    while i + four <= d:
        r0 = k0 + i * u
        r1, r2, r3 = r0 + u, r0 + two * u, r0 + three * u
        s0, s1, s2, s3 = _row_dots4(src, r0, acts, yo, u)
        x0, x1, x2, x3 = acts[xo + i], acts[xo + i + one], acts[xo + i + two], acts[xo + i + three]
        for j in range(u):
            y = acts[yo + j]
            dst[r0 + j] = src[r0 + j] + eta * (x0 * y - s0 * y)
            dst[r1 + j] = src[r1 + j] + eta * (x1 * y - s1 * y)
            dst[r2 + j] = src[r2 + j] + eta * (x2 * y - s2 * y)
            dst[r3 + j] = src[r3 + j] + eta * (x3 * y - s3 * y)
        i += four
    while i < d:
        row, xi = k0 + i * u, acts[xo + i]
        s = _row_dot(src, row, acts, yo, u)
        for j in range(u):
            y = acts[yo + j]
            dst[row + j] = src[row + j] + eta * (xi * y - s * y)
        i += one


@njit(inline="always")
def _sanger_rows(src, dst, park, acts, xo, yo, k0, d, u, eta):
    """Sanger's update of every kernel row, dw_ij = eta y_j (x_i - sum_{k<=j} w_ik y_k).

    Each row's running sum over units is a chain of dependent additions: a first pass
    runs eight rows' chains at once and parks the sums c_j in `park` (eight rows of u),
    then a second pass per row, which vectorises, turns them into the new weights (the
    sums are the same, in the same order, as one row at a time). `dst` may be `src`.
    """
    one, eight = np.uint64(1), np.uint64(8)
    p1, p2, p3, p4 = u, np.uint64(2) * u, np.uint64(3) * u, np.uint64(4) * u
    p5, p6, p7 = np.uint64(5) * u, np.uint64(6) * u, np.uint64(7) * u
    i = np.uint64(0)
    while i + eight <= d:
        r0 = k0 + i * u
        r1, r2, r3, r4 = r0 + p1, r0 + p2, r0 + p3, r0 + p4
        r5, r6, r7 = r0 + p5, r0 + p6, r0 + p7
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = _ZERO
        for j in range(u):
            y = acts[yo + j]
            c0 += src[r0 + j] * y
            park[j] = c0
            c1 += src[r1 + j] * y
            park[p1 + j] = c1
            c2 += src[r2 + j] * y
            park[p2 + j] = c2
            c3 += src[r3 + j] * y
            park[p3 + j] = c3
            c4 += src[r4 + j] * y
            park[p4 + j] = c4
            c5 += src[r5 + j] * y
            park[p5 + j] = c5
            c6 += src[r6 + j] * y
            park[p6 + j] = c6
            c7 += src[r7 + j] * y
            park[p7 + j] = c7
        for r in range(eight):
            row, xi, sums = r0 + r * u, acts[xo + i + r], r * u
            for j in range(u):
                y = acts[yo + j]
                dst[row + j] = src[row + j] + eta * (xi * y - y * park[sums + j])
        i += eight
    while i < d:
        row, xi, c = k0 + i * u, acts[xo + i], _ZERO
        for j in range(u):
            k, y = src[row + j], acts[yo + j]
            c += k * y
            dst[row + j] = k + eta * (xi * y - y * c)
        i += one


@njit(inline="always")
def _learn_sample(layout, rates, layer, src, dst, masks, counters, acts, factor, norms, park):
    """Write one layer's state after one sample into row `dst` (which may be `src`: every
    new value is written after the old values it is computed from are read); nonzero if
    the new BCM threshold is not finite (the weights are checked by the next forward
    pass)."""
    d, u = _at(layout, layer, IN), _at(layout, layer, UNITS)
    k0, xo, yo = _at(layout, layer, K_OFF), _at(layout, layer, X_OFF), _at(layout, layer, Y_OFF)
    t0 = _at(layout, layer, T_OFF)
    rule = layout[layer, RULE]
    eta, alpha = _rates(rates, counters, layer)
    for j in range(u):
        y = acts[yo + j]
        factor[j] = y * (y - src[t0 + j]) if rule == BCM else y * y
    if rule == OJA_SUBSPACE:
        _oja_subspace_rows(src, dst, acts, xo, yo, k0, d, u, eta)
    elif rule == SANGER:
        _sanger_rows(src, dst, park, acts, xo, yo, k0, d, u, eta)
    else:
        for i in range(d):
            xi = acts[xo + i]
            row = k0 + i * u
            if rule == OJA:
                for j in range(u):
                    k = src[row + j]
                    dst[row + j] = k + eta * (xi * acts[yo + j] - k * factor[j])
            elif rule == BCM:
                for j in range(u):
                    dst[row + j] = src[row + j] + eta * (xi * factor[j])
            else:  # HEBB
                for j in range(u):
                    dst[row + j] = src[row + j] + eta * (xi * acts[yo + j])
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
def _step_all(counters, layers, delta):
    for layer in range(layers):
        counters[1 + layer] += delta


@njit(inline="always")
def _work(layout, scratch):
    """The views of `scratch`: activations, three work vectors of the widest layer, then
    Sanger's eight rows of parked sums (`WORK_VECTORS` vectors in all)."""
    last = layout.shape[0] - 1
    end = layout[last, Y_OFF] + layout[last, UNITS]
    widest = 0
    for layer in range(layout.shape[0]):
        widest = max(widest, layout[layer, UNITS])
    acts = scratch[:end]
    h = scratch[end:end + widest]
    factor = scratch[end + widest:end + 2 * widest]
    norms = scratch[end + 2 * widest:end + 3 * widest]
    park = scratch[end + 3 * widest:end + WORK_VECTORS * widest]
    return acts, h, factor, norms, park, layout[last, Y_OFF], end


@njit(inline="always")
def _refuse(counters, layers, skipped, refused, applied, begin, first):
    """Refuse sample `refused`'s update: take back the segment's `applied` steps and go
    back to its first row, to replay its updates before that sample. Returns the new
    (live row, updates applied, end of the replay, next sample)."""
    skipped[refused] = True
    _step_all(counters, layers, -applied)
    return begin, 0, refused, first


# `_nrt=False`: no reference counting. numba counts references to every array view passed
# into an inlined helper with atomic increments and decrements, and cannot prune them
# across this kernel's loops (82 and 132 sites); perf put ~63% of a 16 -> 4 sample's time
# in them. This kernel allocates nothing and keeps no array past the call, so it needs no
# runtime: without it a 16 -> 4 sample took 71 ns instead of 360. An allocation added
# here fails to compile ("NRT required but not enabled").
@njit(_SIGNATURE, **_OPTIONS, _nrt=False)
def run_per_sample(samples, learn, layout, rates, weights, masks, counters, outputs, skipped,
                   scratch):
    """Apply `samples` to a stack in order: each is answered with the weights as they were
    when it arrived, then (if its flag is set) its update goes to every layer or, if that
    would make any weight non-finite, to none (`skipped`).

    The samples since the call began, or since the last refused update, form a segment.
    Its first update writes the other row, so the row the segment started from stays
    intact; its later updates are made in place (less memory traffic than writing the
    other row each time: no second copy to read and write back). A refused update is
    undone by going back to the segment's first row and replaying, through the same code,
    the updates before it: the weights are bit for bit those of applying every sample on
    its own, and each sample is replayed at most once per call.
    """
    layers = layout.shape[0]
    n_samples = samples.shape[0]
    acts, h, factor, norms, park, out0, out1 = _work(layout, scratch)
    rows = (weights[0], weights[1])
    live = counters[LIVE]
    begin, first, applied = live, 0, 0  # the segment: its first row, first sample, updates
    unchecked = -1  # the learning sample whose update is live but not yet proven finite
    replay_to = -1  # samples before this one are being replayed (they are answered)
    n = 0
    while True:
        replaying = n < replay_to
        if n == replay_to:  # the refused sample: a new segment starts after it
            begin, first, applied, replay_to = live, n + 1, 0, -1
            n += 1
            continue
        if n == n_samples:
            if unchecked >= 0 and not _weights_finite(layout, rows[live]):
                live, applied, replay_to, n = _refuse(counters, layers, skipped, unchecked,
                                                      applied, begin, first)
                unchecked = -1
                continue
            break
        if replaying:
            if not learn[n] or skipped[n]:
                n += 1
                continue
            _forward_stack(layout, samples[n], rows[live], acts, h)
        else:
            bad = _forward_stack(layout, samples[n], rows[live], acts, h)
            if unchecked >= 0 and bad and not _weights_finite(layout, rows[live]):
                # replay up to the refused sample, then come back to this one
                live, applied, replay_to, n = _refuse(counters, layers, skipped, unchecked,
                                                      applied, begin, first)
                unchecked = -1
                continue
            unchecked = -1
            for j in range(out1 - out0):
                outputs[n, j] = acts[out0 + j]
            if not learn[n]:
                n += 1
                continue
        # The layers' loop is written out at both sites: an inlined function holding it
        # made small models' samples ~20% slower (measured with reference counting on).
        threshold_bad = 0
        copied = applied == 0
        if copied:
            src, dst = rows[live], rows[1 - live]
            for layer in range(layers):
                threshold_bad |= _learn_sample(layout, rates, layer, src, dst, masks, counters,
                                               acts, factor, norms, park)
            if not threshold_bad:
                live = 1 - live
        else:
            w = rows[live]  # one array as source and destination (see the module's notes)
            for layer in range(layers):
                threshold_bad |= _learn_sample(layout, rates, layer, w, w, masks, counters,
                                               acts, factor, norms, park)
        if threshold_bad:  # never while replaying: the same update passed before
            if copied:
                skipped[n] = True  # it went to the other row, which is not live
                n += 1
            else:
                live, applied, replay_to, n = _refuse(counters, layers, skipped, n, applied,
                                                      begin, first)
            continue
        applied += 1
        _step_all(counters, layers, 1)
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
    for i in range(d):
        base = k0 + i * u
        for j in range(u):
            k = src[base + j]
            decay = _ZERO
            if rule == OJA:
                decay = k * yy[j, j]
            elif rule in (OJA_SUBSPACE, SANGER):
                top = u if rule == OJA_SUBSPACE else j + np.uint64(1)
                for m in range(top):
                    decay += src[base + m] * yy[m, j]
            dst[base + j] = k + eta * (corr[i, j] - decay)
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
def run_batch_mean(samples, learn, layout, rates, weights, masks, counters, outputs, skipped,
                   scratch):
    """One update per layer for the whole call: the mean of the per-sample updates of the
    learning samples at the call's starting state (every sample answered with that state);
    applied to no layer if any new weight would not be finite."""
    layers = layout.shape[0]
    _, h, factor, norms, _, out0, out1 = _work(layout, scratch)
    n_samples = samples.shape[0]
    live = counters[LIVE]
    src, dst = weights[live], weights[1 - live]
    acts = np.zeros((n_samples, out1), np.float32)
    count = 0
    for n in range(n_samples):
        _forward_stack(layout, samples[n], src, acts[n], h)
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
    else:
        for n in range(n_samples):
            skipped[n] = learn[n]
