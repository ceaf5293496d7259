"""Adagrad: per-element math, host scalars and the update loop (torch.optim.Adagrad's
numerics).

Kernel arguments: ``(param, grad, state_sum, grad_scale, *AdagradScalars)``.
"""

import math
from typing import NamedTuple

from ._algorithm import Algorithm, new_scalars
from ._names import element, indices, load, load_scale, store  # noqa: F401  (bound)

NAME = "adagrad"
STATE = ("sum",)


class AdagradScalars(NamedTuple):
    """The Adagrad kernel's scalar arguments after ``grad_scale``, in kernel order."""

    clr: float
    weight_decay: float
    eps: float


def host_scalars(
    *, lr: float, lr_decay: float, weight_decay: float, eps: float, step: int
) -> AdagradScalars:
    """The scalars of update number ``step`` (1 for the first):
    ``clr = lr / (1 + (step - 1) * lr_decay)``.
    """
    return new_scalars(AdagradScalars, (lr / (1 + (step - 1) * lr_decay), weight_decay, eps))


def adagrad_element(param, grad, state_sum, grad_scale, clr, weight_decay, eps):
    g = grad * grad_scale
    if weight_decay != 0:
        g = g + weight_decay * param
    s = state_sum + g * g
    return param - clr * (g / (math.sqrt(s) + eps)), s


def loop(param, grad, state_sum, grad_scale, clr, weight_decay, eps):
    f = param.dtype.type
    grad_scale = f(load_scale(grad_scale))
    clr, weight_decay, eps = f(clr), f(weight_decay), f(eps)
    for i in indices(param.size):
        p, s = element(param[i], grad[i], load(state_sum[i], f), grad_scale, clr, weight_decay, eps)
        param[i], state_sum[i] = p, store(s)


ALGORITHM = Algorithm(NAME, STATE, AdagradScalars, host_scalars, adagrad_element, loop)
