"""Per-element update math, written once, in torch.optim's order of operations.

Each function takes one parameter, its gradient and its state values (scalars) plus the
host-computed scalars, and returns the new parameter and state values. The same Python
functions are compiled twice: with ``njit`` for the CPU loops in
:mod:`fastopt.kernels.cpu` and as inlined ``numba.cuda`` device functions for the
grid-stride loops in :mod:`fastopt.kernels.cuda` (see :mod:`fastopt._jit`). All scalars
arrive already cast to the buffer dtype, so float32 buffers are updated in float32
arithmetic.

The functions are leaves: they call nothing but ``math.sqrt``. numba.cuda can only call
another device function from a kernel compiled ahead of time (``compile_ptx``) when it is
inlined, and an ``njit`` function cannot call a plain Python helper, so torch's ``lerp``
(two formulas, switched at weight 0.5) and ``maximum`` (NaN wins) are written out where
they are used.

``grad_scale`` folds ``maximize`` (a factor -1) and global-norm clipping (a factor <= 1)
into one multiplication; it is exactly 1 when neither is used, so it never changes a
result.
"""
import math


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


def adagrad(param, grad, state_sum, clr, weight_decay, eps, grad_scale):
    g = grad * grad_scale
    if weight_decay != 0:
        g = g + weight_decay * param
    s = state_sum + g * g
    return param - clr * (g / (math.sqrt(s) + eps)), s


def rmsprop(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, one_minus_alpha,
            one_minus_alpha_complement, eps, weight_decay, momentum, grad_scale, centered):
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
    if momentum > 0:
        buf = momentum_buffer * momentum + g / avg
        p = param - lr * buf
    else:
        p = param - lr * (g / avg)
    return p, v, ga, buf


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, weight_decay,
         decay_factor, one_minus_beta1, one_minus_beta1_complement, beta2, one_minus_beta2,
         step_size, bias_correction2_sqrt, eps, amsgrad):
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
