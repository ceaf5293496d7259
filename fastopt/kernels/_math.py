"""Per-element update math, written once, in torch.optim's order of operations.

Each function takes one parameter, its gradient and its state values (scalars) plus the
host-computed scalars, and returns the new parameter and state values. The loops in
:mod:`fastopt.kernels.cpu` apply them over flat buffers. All scalars arrive already cast to
the buffer dtype, so float32 buffers are updated in float32 arithmetic.

The functions are compiled with the package jit policy; LLVM inlines them into the loops.

``grad_scale`` folds ``maximize`` (a factor -1) and global-norm clipping (a factor <= 1)
into one multiplication; it is exactly 1 when neither is used, so it never changes a
result.
"""
import math

from .._jit import element


@element
def lerp(start, end, weight, weight_complement):
    """torch.lerp for a scalar weight: two formulas, switched at weight 0.5."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * weight_complement


@element
def nan_maximum(a, b):
    """torch.maximum: the larger value, NaN if either is NaN."""
    if b > a or b != b:
        return b
    return a


@element
def sgd(param, grad, momentum_buffer, lr, weight_decay, momentum, one_minus_dampening,
        grad_scale, nesterov, first_step):
    g = grad * grad_scale
    if weight_decay != 0:
        g = g + weight_decay * param
    buf = momentum_buffer
    if momentum != 0:
        if first_step:
            buf = g
        else:
            buf = momentum_buffer * momentum + one_minus_dampening * g
        if nesterov:
            g = g + momentum * buf
        else:
            g = buf
    return param - lr * g, buf


@element
def adagrad(param, grad, state_sum, clr, weight_decay, eps, grad_scale):
    g = grad * grad_scale
    if weight_decay != 0:
        g = g + weight_decay * param
    s = state_sum + g * g
    return param - clr * (g / (math.sqrt(s) + eps)), s


@element
def rmsprop(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, one_minus_alpha,
            one_minus_alpha_complement, eps, weight_decay, momentum, grad_scale, centered):
    g = grad * grad_scale
    if weight_decay != 0:
        g = g + weight_decay * param
    v = square_avg * alpha + one_minus_alpha * g * g
    ga = grad_avg
    if centered:
        ga = lerp(grad_avg, g, one_minus_alpha, one_minus_alpha_complement)
        avg = math.sqrt(v - ga * ga) + eps
    else:
        avg = math.sqrt(v) + eps
    buf = momentum_buffer
    if momentum > 0:
        buf = momentum_buffer * momentum + g / avg
        p = param - lr * buf
    else:
        p = param - lr * (g / avg)
    return p, v, ga, buf


@element
def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, weight_decay,
         decay_factor, one_minus_beta1, one_minus_beta1_complement, beta2, one_minus_beta2,
         step_size, bias_correction2_sqrt, eps, amsgrad):
    g = grad * grad_scale
    p = param * decay_factor
    if weight_decay != 0:
        g = g + weight_decay * p
    m = lerp(exp_avg, g, one_minus_beta1, one_minus_beta1_complement)
    v = exp_avg_sq * beta2 + one_minus_beta2 * g * g
    vmax = max_exp_avg_sq
    if amsgrad:
        vmax = nan_maximum(max_exp_avg_sq, v)
        denom = math.sqrt(vmax) / bias_correction2_sqrt + eps
    else:
        denom = math.sqrt(v) / bias_correction2_sqrt + eps
    return p - step_size * (m / denom), m, v, vmax
