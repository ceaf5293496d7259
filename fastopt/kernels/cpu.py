"""Fused in-place CPU kernels over flat 1-D buffers.

Each algorithm's loop is written once with ``prange`` and compiled twice (see
:func:`fastopt._jit.serial_and_parallel`): a serial kernel for small buffers, where waking
threads costs more than the update, and a threaded one. Both have the same signature:
``(param, grad, *state, *host_scalars, *flags) -> None``. Host scalars arrive as Python
floats (cheap to pass) and are cast to the buffer dtype once, before the loop, so float32
buffers are updated in float32 arithmetic. A state buffer an option does not use (no
momentum, no amsgrad, not centered) is passed as an empty array of the buffer dtype.
Callers validate everything first: these functions trust shapes, dtypes and contiguity.

Loops run from 0 to ``size`` over whole (already sliced) buffers: a loop over
``range(lo, hi)`` does not vectorise, because the index could be negative and numba adds a
wraparound. A plain ``prange`` loop measured 5-8% faster than a ``prange`` over chunks that
each run the serial loop.
"""
import numpy as np
from numba import prange

from .._config import REDUCTION_BLOCK
from .._jit import element, kernel, reduction, serial_and_parallel
from . import _math

sgd_element = element(_math.sgd)
adagrad_element = element(_math.adagrad)
rmsprop_element = element(_math.rmsprop)
adam_element = element(_math.adam)


def _sgd(param, grad, momentum_buffer, lr, weight_decay, momentum, one_minus_dampening,
         grad_scale, nesterov, first_step):
    f = param.dtype.type
    lr, weight_decay, momentum = f(lr), f(weight_decay), f(momentum)
    one_minus_dampening, grad_scale = f(one_minus_dampening), f(grad_scale)
    if momentum != 0:
        for i in prange(param.size):
            param[i], momentum_buffer[i] = sgd_element(
                param[i], grad[i], momentum_buffer[i], lr, weight_decay, momentum,
                one_minus_dampening, grad_scale, nesterov, first_step)
    else:
        for i in prange(param.size):
            param[i], _ = sgd_element(param[i], grad[i], grad[i], lr, weight_decay, momentum,
                                      one_minus_dampening, grad_scale, nesterov, first_step)


sgd_serial, sgd_parallel = serial_and_parallel(_sgd)


def _adagrad(param, grad, state_sum, clr, weight_decay, eps, grad_scale):
    f = param.dtype.type
    clr, weight_decay, eps, grad_scale = f(clr), f(weight_decay), f(eps), f(grad_scale)
    for i in prange(param.size):
        param[i], state_sum[i] = adagrad_element(param[i], grad[i], state_sum[i], clr,
                                                 weight_decay, eps, grad_scale)


adagrad_serial, adagrad_parallel = serial_and_parallel(_adagrad)


def _rmsprop(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, one_minus_alpha,
             eps, weight_decay, momentum, grad_scale, centered):
    f = param.dtype.type
    lr, alpha, one_minus_alpha, eps = f(lr), f(alpha), f(one_minus_alpha), f(eps)
    weight_decay, momentum, grad_scale = f(weight_decay), f(momentum), f(grad_scale)
    one_minus_alpha_complement = f(1.0) - one_minus_alpha
    if centered and momentum > 0:
        for i in prange(param.size):
            param[i], square_avg[i], grad_avg[i], momentum_buffer[i] = rmsprop_element(
                param[i], grad[i], square_avg[i], grad_avg[i], momentum_buffer[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, True)
    elif centered:
        for i in prange(param.size):
            param[i], square_avg[i], grad_avg[i], _ = rmsprop_element(
                param[i], grad[i], square_avg[i], grad_avg[i], grad[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, True)
    elif momentum > 0:
        for i in prange(param.size):
            param[i], square_avg[i], _, momentum_buffer[i] = rmsprop_element(
                param[i], grad[i], square_avg[i], grad[i], momentum_buffer[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, False)
    else:
        for i in prange(param.size):
            param[i], square_avg[i], _, _ = rmsprop_element(
                param[i], grad[i], square_avg[i], grad[i], grad[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, False)


rmsprop_serial, rmsprop_parallel = serial_and_parallel(_rmsprop)


def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, weight_decay,
          decay_factor, one_minus_beta1, beta2, one_minus_beta2, step_size,
          bias_correction2_sqrt, eps, amsgrad):
    f = param.dtype.type
    grad_scale, weight_decay, decay_factor = f(grad_scale), f(weight_decay), f(decay_factor)
    one_minus_beta1, beta2, one_minus_beta2 = f(one_minus_beta1), f(beta2), f(one_minus_beta2)
    step_size, bias_correction2_sqrt, eps = f(step_size), f(bias_correction2_sqrt), f(eps)
    one_minus_beta1_complement = f(1.0) - one_minus_beta1
    if amsgrad:
        for i in prange(param.size):
            param[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = adam_element(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], grad_scale,
                weight_decay, decay_factor, one_minus_beta1, one_minus_beta1_complement,
                beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, True)
    else:
        for i in prange(param.size):
            param[i], exp_avg[i], exp_avg_sq[i], _ = adam_element(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], grad[i], grad_scale,
                weight_decay, decay_factor, one_minus_beta1, one_minus_beta1_complement,
                beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, False)


adam_serial, adam_parallel = serial_and_parallel(_adam)


@reduction
def _block_sumsq(block):
    """Sum of squares of one block, accumulated in float64 (vectorised: see _jit.reduction)."""
    total = 0.0
    for i in range(block.size):
        x = np.float64(block[i])
        total += x * x
    return total


def _grad_sumsq(grad, partials):
    """Sum of squares of ``grad`` over fixed blocks; ``partials`` holds one float64 per block."""
    for b in prange(partials.size):
        partials[b] = _block_sumsq(grad[b * REDUCTION_BLOCK:(b + 1) * REDUCTION_BLOCK])
    total = 0.0
    for b in range(partials.size):
        total += partials[b]
    return total


grad_sumsq_serial, grad_sumsq_parallel = serial_and_parallel(_grad_sumsq)


@kernel
def count_nonfinite(values):
    """Number of NaN or infinite elements."""
    count = 0
    for i in range(values.size):
        if not np.isfinite(values[i]):
            count += 1
    return count
