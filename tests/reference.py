"""Plain-NumPy transcriptions of the update rules in the optimizer docstrings.

Whole-array NumPy operations in torch.optim's order of operations, with every scalar cast
to the buffer dtype first (as the kernels do), so float32 buffers are updated in float32
arithmetic. Each function applies update number ``state["step"] + 1`` in place.
"""

import numpy as np


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


def new_state(algorithm, size, dtype, **options):
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
):
    f = p.dtype.type
    g = _grad(p, g, f, -grad_scale if maximize else grad_scale, weight_decay)
    if momentum != 0:
        if state["step"] == 0:
            buf = g.copy()
        else:
            buf = state["momentum_buffer"] * f(momentum) + f(1 - dampening) * g
        state["momentum_buffer"][:] = buf
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
):
    f = p.dtype.type
    step = state["step"] + 1
    g = _grad(p, g, f, -grad_scale if maximize else grad_scale, weight_decay)
    clr = lr / (1 + (step - 1) * lr_decay)
    s = state["sum"] + g * g
    state["sum"][:] = s
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
):
    f = p.dtype.type
    g = _grad(p, g, f, -grad_scale if maximize else grad_scale, weight_decay)
    v = state["square_avg"] * f(alpha) + f(1 - alpha) * g * g
    state["square_avg"][:] = v
    if centered:
        ga = _lerp(state["grad_avg"], g, f(1 - alpha))
        state["grad_avg"][:] = ga
        with np.errstate(invalid="ignore"):  # rounding can make v - ga^2 < 0: NaN, as in torch
            avg = np.sqrt(v - ga * ga) + f(eps)
    else:
        avg = np.sqrt(v) + f(eps)
    if momentum > 0:
        buf = state["momentum_buffer"] * f(momentum) + g / avg
        state["momentum_buffer"][:] = buf
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
):
    f = p.dtype.type
    step = state["step"] + 1
    beta1, beta2 = betas
    g = g * f(-grad_scale if maximize else grad_scale)
    if decoupled_weight_decay:
        p[:] = p * f(1 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + f(weight_decay) * p
    m = _lerp(state["exp_avg"], g, f(1 - beta1))
    v = state["exp_avg_sq"] * f(beta2) + f(1 - beta2) * g * g
    state["exp_avg"][:], state["exp_avg_sq"][:] = m, v
    if amsgrad:
        np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        v = state["max_exp_avg_sq"]
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
