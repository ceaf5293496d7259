"""Adam, AdamW and AMSGrad: per-element math, host scalars and the update loop
(torch.optim.Adam's numerics).

Kernel arguments: ``(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale,
*AdamScalars)``; ``max_exp_avg_sq`` is an empty array without amsgrad.
"""

import math
from typing import NamedTuple

from ._algorithm import Algorithm, new_scalars
from ._names import element, indices, load, load_scale, store  # noqa: F401  (bound)

NAME = "adam"
STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


class AdamScalars(NamedTuple):
    """The Adam kernel's scalar arguments after ``grad_scale``, in kernel order."""

    weight_decay: float
    decay_factor: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    step_size: float
    bias_correction2_sqrt: float
    eps: float
    amsgrad: bool


def host_scalars(
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    step: int,
) -> AdamScalars:
    """The scalars of update number ``step`` (1 for the first): the bias corrections
    ``1 - beta1**step`` and ``1 - beta2**step`` folded into ``step_size`` and
    ``bias_correction2_sqrt`` as torch does, and AdamW's decay as ``1 - lr * weight_decay``.
    """
    beta1, beta2 = betas
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    if decoupled_weight_decay:
        decay_factor, weight_decay = 1 - lr * weight_decay, 0.0
    else:
        decay_factor = 1.0
    return new_scalars(
        AdamScalars,
        (
            weight_decay,
            decay_factor,
            1 - beta1,
            beta2,
            1 - beta2,
            lr / bias_correction1,
            bias_correction2**0.5,
            eps,
            amsgrad,
        ),
    )


def adam_element(
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq,
    grad_scale,
    weight_decay,
    decay_factor,
    one_minus_beta1,
    one_minus_beta1_complement,
    beta2,
    one_minus_beta2,
    step_size,
    bias_correction2_sqrt,
    eps,
    amsgrad,
):
    g = grad * grad_scale
    p = param * decay_factor
    if weight_decay != 0:
        g = g + weight_decay * p
    if one_minus_beta1 < 0.5:  # torch.lerp(exp_avg, g, 1 - beta1)
        m = exp_avg + one_minus_beta1 * (g - exp_avg)
    else:
        m = g - (g - exp_avg) * one_minus_beta1_complement
    v = exp_avg_sq * beta2 + one_minus_beta2 * g * g
    vmax = max_exp_avg_sq
    if amsgrad:
        if v > max_exp_avg_sq or v != v:  # torch.maximum: NaN wins
            vmax = v
        denom = math.sqrt(vmax) / bias_correction2_sqrt + eps
    else:
        denom = math.sqrt(v) / bias_correction2_sqrt + eps
    return p - step_size * (m / denom), m, v, vmax


def loop(
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq,
    grad_scale,
    weight_decay,
    decay_factor,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    step_size,
    bias_correction2_sqrt,
    eps,
    amsgrad,
):
    f = param.dtype.type
    grad_scale = f(load_scale(grad_scale))
    weight_decay, decay_factor = f(weight_decay), f(decay_factor)
    one_minus_beta1, beta2, one_minus_beta2 = f(one_minus_beta1), f(beta2), f(one_minus_beta2)
    step_size, bias_correction2_sqrt, eps = f(step_size), f(bias_correction2_sqrt), f(eps)
    one_minus_beta1_complement = f(1.0) - one_minus_beta1
    if amsgrad:
        for i in indices(param.size):
            p, m, v, vmax = element(
                param[i],
                grad[i],
                load(exp_avg[i], f),
                load(exp_avg_sq[i], f),
                load(max_exp_avg_sq[i], f),
                grad_scale,
                weight_decay,
                decay_factor,
                one_minus_beta1,
                one_minus_beta1_complement,
                beta2,
                one_minus_beta2,
                step_size,
                bias_correction2_sqrt,
                eps,
                True,
            )
            param[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = (
                p,
                store(m),
                store(v),
                store(vmax),
            )
    else:
        for i in indices(param.size):
            p, m, v, _ = element(
                param[i],
                grad[i],
                load(exp_avg[i], f),
                load(exp_avg_sq[i], f),
                grad[i],
                grad_scale,
                weight_decay,
                decay_factor,
                one_minus_beta1,
                one_minus_beta1_complement,
                beta2,
                one_minus_beta2,
                step_size,
                bias_correction2_sqrt,
                eps,
                False,
            )
            param[i], exp_avg[i], exp_avg_sq[i] = p, store(m), store(v)


ALGORITHM = Algorithm(NAME, STATE, AdamScalars, host_scalars, adam_element, loop)
