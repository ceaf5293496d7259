"""RMSprop: per-element math, host scalars and the update loop (torch.optim.RMSprop's
numerics, centered and momentum variants).

Kernel arguments: ``(param, grad, square_avg, grad_avg, momentum_buffer, grad_scale,
*RMSpropScalars)``; ``grad_avg`` and ``momentum_buffer`` are empty arrays when centered
or momentum is off.
"""

import math
from typing import NamedTuple

from ._algorithm import Algorithm, new_scalars
from ._names import element, indices, load, load_scale, store  # noqa: F401  (bound)

NAME = "rmsprop"
STATE = ("square_avg", "grad_avg", "momentum_buffer")


class RMSpropScalars(NamedTuple):
    """The RMSprop kernel's scalar arguments after ``grad_scale``, in kernel order."""

    lr: float
    alpha: float
    one_minus_alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool


def host_scalars(
    *, lr: float, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool
) -> RMSpropScalars:
    """The scalars of one update (they do not depend on the step number)."""
    return new_scalars(
        RMSpropScalars, (lr, alpha, 1 - alpha, eps, weight_decay, momentum, centered)
    )


def rmsprop_element(
    param,
    grad,
    square_avg,
    grad_avg,
    momentum_buffer,
    grad_scale,
    lr,
    alpha,
    one_minus_alpha,
    one_minus_alpha_complement,
    eps,
    weight_decay,
    momentum,
    centered,
    use_momentum,
):
    g = grad * grad_scale
    if weight_decay != 0:
        g = g + weight_decay * param
    v = square_avg * alpha + one_minus_alpha * g * g
    ga = grad_avg
    if centered:
        if one_minus_alpha < 0.5:  # torch.lerp(grad_avg, g, 1 - alpha)
            ga = grad_avg + one_minus_alpha * (g - grad_avg)
        else:
            ga = g - (g - grad_avg) * one_minus_alpha_complement
        avg = math.sqrt(v - ga * ga) + eps
    else:
        avg = math.sqrt(v) + eps
    buf = momentum_buffer
    if use_momentum:
        buf = momentum_buffer * momentum + g / avg
        p = param - lr * buf
    else:
        p = param - lr * (g / avg)
    return p, v, ga, buf


def loop(
    param,
    grad,
    square_avg,
    grad_avg,
    momentum_buffer,
    grad_scale,
    lr,
    alpha,
    one_minus_alpha,
    eps,
    weight_decay,
    momentum,
    centered,
):
    f = param.dtype.type
    use_momentum = momentum > 0  # decided in double precision, as torch does
    grad_scale = f(load_scale(grad_scale))
    lr, alpha, one_minus_alpha, eps = f(lr), f(alpha), f(one_minus_alpha), f(eps)
    weight_decay, momentum = f(weight_decay), f(momentum)
    one_minus_alpha_complement = f(1.0) - one_minus_alpha
    # one loop per option set, so each loop body has no unused loads or stores
    if centered and use_momentum:
        for i in indices(param.size):
            p, v, ga, buf = element(
                param[i],
                grad[i],
                load(square_avg[i], f),
                load(grad_avg[i], f),
                load(momentum_buffer[i], f),
                grad_scale,
                lr,
                alpha,
                one_minus_alpha,
                one_minus_alpha_complement,
                eps,
                weight_decay,
                momentum,
                True,
                True,
            )
            param[i], square_avg[i], grad_avg[i] = p, store(v), store(ga)
            momentum_buffer[i] = store(buf)
    elif centered:
        for i in indices(param.size):
            p, v, ga, _ = element(
                param[i],
                grad[i],
                load(square_avg[i], f),
                load(grad_avg[i], f),
                grad[i],
                grad_scale,
                lr,
                alpha,
                one_minus_alpha,
                one_minus_alpha_complement,
                eps,
                weight_decay,
                momentum,
                True,
                False,
            )
            param[i], square_avg[i], grad_avg[i] = p, store(v), store(ga)
    elif use_momentum:
        for i in indices(param.size):
            p, v, _, buf = element(
                param[i],
                grad[i],
                load(square_avg[i], f),
                grad[i],
                load(momentum_buffer[i], f),
                grad_scale,
                lr,
                alpha,
                one_minus_alpha,
                one_minus_alpha_complement,
                eps,
                weight_decay,
                momentum,
                False,
                True,
            )
            param[i], square_avg[i], momentum_buffer[i] = p, store(v), store(buf)
    else:
        for i in indices(param.size):
            p, v, _, _ = element(
                param[i],
                grad[i],
                load(square_avg[i], f),
                grad[i],
                grad[i],
                grad_scale,
                lr,
                alpha,
                one_minus_alpha,
                one_minus_alpha_complement,
                eps,
                weight_decay,
                momentum,
                False,
                False,
            )
            param[i], square_avg[i] = p, store(v)


ALGORITHM = Algorithm(NAME, STATE, RMSpropScalars, host_scalars, rmsprop_element, loop)
