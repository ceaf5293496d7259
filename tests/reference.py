"""Plain-NumPy transcriptions of the update rules in the optimizer docstrings.

Whole-array NumPy operations in torch.optim's order of operations, with every scalar cast
to the buffer dtype first (as the kernels do), so float32 buffers are updated in float32
arithmetic. Each function applies update number ``state["step"] + 1`` in place.

bfloat16 state (``state_precision="bfloat16"``, on every function and on
:func:`new_state`): the state dict holds ``uint16`` words, each the upper 16 bits of a
float32. A function decodes each word exactly (the float32 with these bits, cast to the
parameter dtype), computes exactly as in full precision (same operations, same dtype) and
updates the parameters with the *unrounded* new state values; only what is stored for the
next update is rounded, each new state value on its own. A float64 value is first rounded
to float32 (round to nearest even), then the float32 to bfloat16 by round to nearest, ties
to even, on the bit pattern; a NaN stays a NaN with the quiet bit set (``high | 0x40``,
sign and upper payload kept), an infinity stays infinite, and a finite value that rounds
above the largest bfloat16 (``0x7F7F``) becomes infinite. The encoder here works on the
float32 bits as integers in uint64 arithmetic with explicit comparisons (round up when the
low half is above ``0x8000``, or equal to it with an odd high half), independently of
fastopt's own (``bits + 0x7FFF + lsb``) encoder. An update that leaves a slot unused (SGD
without momentum, RMSprop's ``grad_avg`` when not centered) neither reads nor writes it.

8-bit state (``state_precision="8bit"``): each state buffer ``name`` is held as ``uint8``
codes (one per element) and ``name + "_absmax"``, one scale per block of :data:`BLOCK`
elements in the parameter dtype; blocks start at the buffer's first element (a function
here updates one parameter group: :func:`step_groups` gives each group its slice of a
whole-buffer state made by :func:`new_state` with ``bounds``). A function decodes each
block (``value = code_value * (absmax / TOP)``: the scale first, in the parameter dtype),
computes exactly as in full precision and updates the parameters with the unrounded new
state; then each block is encoded on its own: ``absmax`` is the largest ``|float32(x)|``
of the block (NaN, and every code 0, when one of them is NaN or infinite; 0 when it is
below the smallest normal float32, 2**-126), ``y =
float32(|x| * (TOP / absmax))`` (0 when ``absmax`` is 0) and the code is the one whose value
is nearest to ``y``, a tie going to the larger value, except that ``y`` below ``17/16 *
2**-bias`` gets code 0 (zero); a signed state sets the sign bit (0x80) for ``x < 0``. The
256 code values are built here from the format definitions (:func:`code_values`) and the
code is found by counting the thresholds (that lowest one, then the midpoints between
neighbouring values, all exact) at or below ``y``, independently of fastopt's
bit-operation encoder.
"""

import functools
import sys

import numpy as np

PRECISIONS = ("full", "bfloat16", "8bit")
BLOCK = 256
TOP = 1.875
ABSMAX = "_absmax"
UNSIGNED = frozenset({"sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq"})
"""States that are never negative: 8-bit unsigned codes (bias 31); every other state is a
sign bit and 7 bits (bias 15)."""


def _to_bfloat16(values):
    """bfloat16 words (uint16) of float values: float64 -> float32 (RNE), then RNE on the
    float32 bits in uint64 integer arithmetic; NaN -> quiet NaN, overflow -> inf.
    """
    with np.errstate(over="ignore"):
        single = np.asarray(values).astype(np.float32)
    bits = single.view(np.uint32).astype(np.uint64)
    high = bits >> np.uint64(16)
    low = bits & np.uint64(0xFFFF)
    odd = (high & np.uint64(1)) == np.uint64(1)
    up = (low > np.uint64(0x8000)) | ((low == np.uint64(0x8000)) & odd)
    words = high + up.astype(np.uint64)
    exponent_all_ones = (bits & np.uint64(0x7F800000)) == np.uint64(0x7F800000)
    nan = exponent_all_ones & ((bits & np.uint64(0x007FFFFF)) != np.uint64(0))
    words = np.where(nan, high | np.uint64(0x0040), words)
    assert int(words.max(initial=0)) <= 0xFFFF
    return words.astype(np.uint16)


def _from_bfloat16(words, dtype=np.float32):
    """The exact values of bfloat16 words: each word becomes the upper half of a float32
    whose lower half is zero (built by interleaving 16-bit halves, not by shifting).
    """
    words = np.asarray(words, np.uint16).reshape(-1)
    halves = np.zeros((words.size, 2), np.uint16)
    halves[:, 1 if sys.byteorder == "little" else 0] = words
    return halves.view(np.float32).reshape(-1).astype(dtype)


@functools.cache
def _code_values(signed):
    """The float64 value (all exact in float32) of each of the 256 codes, from the format
    definitions: the magnitude code ``c`` (the code, or its low 7 bits when signed, ``0x80``
    the sign) is 0 for zero, else ``c = e << 3 | m`` stands for ``(1 + m / 8) * 2**(e -
    bias)``, with bias 31 unsigned and 15 signed. Both signed zeros are +0.
    """
    values = np.empty(256)
    bias = 15 if signed else 31
    for code in range(256):
        c = code & 0x7F if signed else code
        value = 0.0 if c == 0 else (1 + (c & 7) / 8) * 2.0 ** ((c >> 3) - bias)
        values[code] = -value if signed and code & 0x80 and c else value
    values.flags.writeable = False
    return values


def code_values(signed):
    return _code_values(signed).copy()


def zero_threshold(signed):
    """The smallest ``y`` given a nonzero code: ``17/16 * 2**-bias``."""
    return 17 / 16 * 2.0 ** -(15 if signed else 31)


def _magnitudes(signed):
    """The increasing code values of the magnitude codes (128 signed, 256 unsigned)."""
    table = _code_values(signed)[: 128 if signed else 256]
    assert np.all(np.diff(table) > 0) and table[-1] == TOP
    return table


def nearest_code(y, signed):
    """The magnitude code of each float32 ``y >= 0``: the number of thresholds at or below
    ``y`` (the zero threshold, then the midpoints between neighbouring nonzero code values,
    all exact in float64), so ties go to the larger value; above the top value, the top
    code.
    """
    table = _magnitudes(signed)
    thresholds = np.concatenate([[zero_threshold(signed)], (table[1:-1] + table[2:]) / 2])
    y = np.asarray(y, np.float64)
    return np.searchsorted(thresholds, y, side="right").astype(np.uint8)


def _blocks(array, fill=0):
    rows = np.full((-(-array.size // BLOCK), BLOCK), fill, array.dtype)
    rows.reshape(-1)[: array.size] = array
    return rows


def to_8bit(values, signed):
    """``(codes, absmax)`` of one group's values (blocks from element 0), as a step encodes."""
    values = np.asarray(values)
    f = values.dtype.type
    rows = _blocks(values)
    with np.errstate(over="ignore", invalid="ignore"):
        magnitude = np.abs(rows.astype(np.float32))
    finite = np.isfinite(magnitude).all(axis=1)
    largest = np.where(np.isfinite(magnitude), magnitude, 0).max(axis=1, initial=0)
    largest = np.where(largest < np.float32(2.0**-126), 0, largest)  # subnormal: a zero block
    absmax = np.where(finite, largest, np.nan).astype(f)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        inverse = np.where(absmax > 0, f(TOP) / absmax, f(0)).astype(f)
        y = (np.abs(rows) * inverse[:, None]).astype(np.float32)
    y[~finite] = 0
    y[np.isnan(y)] = 0  # 0 * inf (a zero in a block with an overflowing inverse)
    codes = nearest_code(y, signed)
    if signed:
        codes |= np.where(rows < 0, 0x80, 0).astype(np.uint8)
    codes[~finite] = 0
    return codes.reshape(-1)[: values.size], absmax


def from_8bit(codes, absmax, signed, dtype):
    """The values (``dtype``) of one group's codes: code value times ``absmax / TOP``."""
    dtype = np.dtype(dtype)
    table = _code_values(signed).astype(np.float32).astype(dtype)
    scale = np.asarray(absmax, dtype) / dtype.type(TOP)
    codes = np.asarray(codes, np.uint8)
    with np.errstate(invalid="ignore"):
        return table[codes] * np.repeat(scale, BLOCK)[: codes.size]


def _check(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"reference: unknown state_precision {precision!r}")
    return precision


def _load(state, key, dtype, precision):
    """State ``key`` as values of ``dtype`` (the stored array itself in full precision)."""
    if precision == "bfloat16":
        return _from_bfloat16(state[key], dtype)
    if precision == "8bit":
        return from_8bit(state[key], state[key + ABSMAX], key not in UNSIGNED, dtype)
    return state[key]


def _store(state, key, value, precision):
    if precision == "8bit":
        state[key][:], state[key + ABSMAX][:] = to_8bit(value, key not in UNSIGNED)
        return
    state[key][:] = _to_bfloat16(value) if precision == "bfloat16" else value


def _lerp(start, end, weight):
    one = weight.dtype.type(1)
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (one - weight)


def _grad(p, g, f, grad_scale, weight_decay):
    g = g * f(grad_scale)
    if weight_decay != 0:
        g = g + f(weight_decay) * p
    return g


def new_state(algorithm, size, dtype, state_precision="full", *, bounds=None, **options):
    """The initial state of an optimizer over ``size`` elements; for "8bit", laid out in
    parameter groups ``bounds`` (``[(start, stop), ...]``, default one group): each
    group's codes and its blocks' scales, the scales of all groups one after the other.
    """
    _check(state_precision)
    bounds = [(0, size)] if bounds is None else [tuple(b) for b in bounds]
    zeros = lambda: np.zeros(size, dtype)  # noqa: E731
    state = {"step": 0}
    if algorithm == "SGD" and options.get("momentum", 0) != 0:
        state["momentum_buffer"] = zeros()
    if algorithm == "Adagrad":
        state["sum"] = np.full(size, options.get("initial_accumulator_value", 0), dtype)
    if algorithm == "RMSprop":
        state["square_avg"] = zeros()
        if options.get("centered", False):
            state["grad_avg"] = zeros()
        if options.get("momentum", 0) > 0:
            state["momentum_buffer"] = zeros()
    if algorithm in ("Adam", "AdamW"):
        state["exp_avg"], state["exp_avg_sq"] = zeros(), zeros()
        if options.get("amsgrad", False):
            state["max_exp_avg_sq"] = zeros()
    if state_precision == "bfloat16":
        for key in state:
            if key != "step":
                state[key] = _to_bfloat16(state[key])
    if state_precision == "8bit":
        for key in [k for k in state if k != "step"]:
            parts = [to_8bit(state[key][a:b], key not in UNSIGNED) for a, b in bounds]
            state[key] = np.concatenate([codes for codes, _ in parts])
            state[key + ABSMAX] = np.concatenate([absmax for _, absmax in parts])
    return state


def group_views(state, bounds):
    """One state dict per group ``[start, stop)`` of ``bounds``: views of the group's
    slice of every buffer (of its blocks' slice of an 8-bit buffer's scales), with the
    whole state's ``step``.
    """
    views, first = [], 0
    for start, stop in bounds:
        blocks = slice(first, first + -(-(stop - start) // BLOCK))
        first = blocks.stop
        view = {"step": state["step"]}
        for key, value in state.items():
            if key != "step":
                view[key] = value[blocks] if key.endswith(ABSMAX) else value[start:stop]
        views.append(view)
    return views


def step_groups(algorithm, p, g, state, bounds, per_group, **options):
    """One update of a buffer split into parameter groups: group ``i`` (``bounds[i]``)
    gets ``options`` updated with ``per_group[i]`` (its lr, weight decay, ...).
    """
    for (start, stop), extra, view in zip(bounds, per_group, group_views(state, bounds)):
        UPDATES[algorithm](p[start:stop], g[start:stop], view, **(options | extra))
    state["step"] += 1


def sgd(
    p,
    g,
    state,
    *,
    lr=1e-3,
    momentum=0,
    dampening=0,
    weight_decay=0,
    nesterov=False,
    maximize=False,
    grad_scale=1.0,
    state_precision="full",
):
    f, sp = p.dtype.type, _check(state_precision)
    g = _grad(p, g, f, -grad_scale if maximize else grad_scale, weight_decay)
    if momentum != 0:
        if state["step"] == 0:
            buf = g.copy()
        else:
            buf = _load(state, "momentum_buffer", p.dtype, sp) * f(momentum) + f(1 - dampening) * g
        _store(state, "momentum_buffer", buf, sp)
        g = g + f(momentum) * buf if nesterov else buf
    p[:] = p - f(lr) * g
    state["step"] += 1


def adagrad(
    p,
    g,
    state,
    *,
    lr=1e-2,
    lr_decay=0,
    weight_decay=0,
    initial_accumulator_value=0,
    eps=1e-10,
    maximize=False,
    grad_scale=1.0,
    state_precision="full",
):
    f, sp = p.dtype.type, _check(state_precision)
    step = state["step"] + 1
    g = _grad(p, g, f, -grad_scale if maximize else grad_scale, weight_decay)
    clr = lr / (1 + (step - 1) * lr_decay)
    s = _load(state, "sum", p.dtype, sp) + g * g
    _store(state, "sum", s, sp)
    p[:] = p - f(clr) * (g / (np.sqrt(s) + f(eps)))
    state["step"] = step


def rmsprop(
    p,
    g,
    state,
    *,
    lr=1e-2,
    alpha=0.99,
    eps=1e-8,
    weight_decay=0,
    momentum=0,
    centered=False,
    maximize=False,
    grad_scale=1.0,
    state_precision="full",
):
    f, sp = p.dtype.type, _check(state_precision)
    g = _grad(p, g, f, -grad_scale if maximize else grad_scale, weight_decay)
    v = _load(state, "square_avg", p.dtype, sp) * f(alpha) + f(1 - alpha) * g * g
    _store(state, "square_avg", v, sp)
    if centered:
        ga = _lerp(_load(state, "grad_avg", p.dtype, sp), g, f(1 - alpha))
        _store(state, "grad_avg", ga, sp)
        with np.errstate(invalid="ignore"):  # rounding can make v - ga^2 < 0: NaN, as in torch
            avg = np.sqrt(v - ga * ga) + f(eps)
    else:
        avg = np.sqrt(v) + f(eps)
    if momentum > 0:
        buf = _load(state, "momentum_buffer", p.dtype, sp) * f(momentum) + g / avg
        _store(state, "momentum_buffer", buf, sp)
        p[:] = p - f(lr) * buf
    else:
        p[:] = p - f(lr) * (g / avg)
    state["step"] += 1


def adam(
    p,
    g,
    state,
    *,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0,
    amsgrad=False,
    maximize=False,
    decoupled_weight_decay=False,
    grad_scale=1.0,
    state_precision="full",
):
    f, sp = p.dtype.type, _check(state_precision)
    step = state["step"] + 1
    beta1, beta2 = betas
    g = g * f(-grad_scale if maximize else grad_scale)
    if decoupled_weight_decay:
        p[:] = p * f(1 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + f(weight_decay) * p
    m = _lerp(_load(state, "exp_avg", p.dtype, sp), g, f(1 - beta1))
    v = _load(state, "exp_avg_sq", p.dtype, sp) * f(beta2) + f(1 - beta2) * g * g
    _store(state, "exp_avg", m, sp)
    _store(state, "exp_avg_sq", v, sp)
    if amsgrad:
        v = np.maximum(_load(state, "max_exp_avg_sq", p.dtype, sp), v)  # NaN wins, as in torch
        _store(state, "max_exp_avg_sq", v, sp)
    step_size = lr / (1 - beta1**step)
    denom = np.sqrt(v) / f((1 - beta2**step) ** 0.5) + f(eps)
    p[:] = p - f(step_size) * (m / denom)
    state["step"] = step


def adamw(p, g, state, *, weight_decay=1e-2, **options):
    adam(p, g, state, weight_decay=weight_decay, decoupled_weight_decay=True, **options)


UPDATES = {"SGD": sgd, "Adagrad": adagrad, "RMSprop": rmsprop, "Adam": adam, "AdamW": adamw}


def clip_scale(g, max_norm):
    """torch.nn.utils.clip_grad_norm_'s factor, with the norm taken in float64."""
    norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    return min(1.0, max_norm / (norm + 1e-6))
