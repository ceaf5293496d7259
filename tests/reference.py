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
"""

import sys

import numpy as np

PRECISIONS = ("full", "bfloat16")


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


def _check(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"reference: unknown state_precision {precision!r}")
    return precision


def _load(state, key, dtype, precision):
    """State ``key`` as values of ``dtype`` (the stored array itself in full precision)."""
    if precision == "bfloat16":
        return _from_bfloat16(state[key], dtype)
    return state[key]


def _store(state, key, value, precision):
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


def new_state(algorithm, size, dtype, state_precision="full", **options):
    _check(state_precision)
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
    return state


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
