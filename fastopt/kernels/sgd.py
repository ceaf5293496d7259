"""SGD: per-element math, host scalars and the update loop (torch.optim.SGD's numerics).

Kernel arguments: ``(param, grad, momentum_buffer, grad_scale, *SGDScalars)``.
"""

from typing import NamedTuple

from ._algorithm import Algorithm, new_scalars
from ._names import element, indices, load, load_scale, store  # noqa: F401  (bound)

NAME = "sgd"
STATE = ("momentum_buffer",)


class SGDScalars(NamedTuple):
    """The SGD kernel's scalar arguments after ``grad_scale``, in kernel order."""

    lr: float
    weight_decay: float
    momentum: float
    one_minus_dampening: float
    nesterov: bool
    first_step: bool


def host_scalars(
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    first_step: bool,
) -> SGDScalars:
    """The scalars of one update (``first_step``: the first update, which copies the
    gradient into the momentum buffer without dampening, as torch does).
    """
    return new_scalars(
        SGDScalars, (lr, weight_decay, momentum, 1 - dampening, nesterov, first_step)
    )


def sgd_element(
    param,
    grad,
    momentum_buffer,
    grad_scale,
    lr,
    weight_decay,
    momentum,
    one_minus_dampening,
    nesterov,
    first_step,
    use_momentum,
):
    g = grad * grad_scale
    if weight_decay != 0:
        g = g + weight_decay * param
    buf = momentum_buffer
    if use_momentum:
        if first_step:
            buf = g
        else:
            buf = momentum_buffer * momentum + one_minus_dampening * g
        if nesterov:
            g = g + momentum * buf
        else:
            g = buf
    return param - lr * g, buf


def loop(
    param,
    grad,
    momentum_buffer,
    grad_scale,
    lr,
    weight_decay,
    momentum,
    one_minus_dampening,
    nesterov,
    first_step,
):
    f = param.dtype.type
    # torch decides on momentum != 0 in double precision, before any cast: a momentum
    # that rounds to 0 in float32 still takes the momentum path (with dampening)
    use_momentum = momentum != 0
    grad_scale = f(load_scale(grad_scale))
    lr, weight_decay, momentum = f(lr), f(weight_decay), f(momentum)
    one_minus_dampening = f(one_minus_dampening)
    if use_momentum:
        for i in indices(param.size):
            p, buf = element(
                param[i],
                grad[i],
                load(momentum_buffer[i], f),
                grad_scale,
                lr,
                weight_decay,
                momentum,
                one_minus_dampening,
                nesterov,
                first_step,
                True,
            )
            param[i], momentum_buffer[i] = p, store(buf)
    else:
        for i in indices(param.size):
            param[i], _ = element(
                param[i],
                grad[i],
                grad[i],
                grad_scale,
                lr,
                weight_decay,
                momentum,
                one_minus_dampening,
                nesterov,
                first_step,
                False,
            )


ALGORITHM = Algorithm(NAME, STATE, SGDScalars, host_scalars, sgd_element, loop)
