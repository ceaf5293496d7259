"""Fused in-place CPU kernels over flat 1-D buffers.

Each algorithm has a serial kernel (one vectorised loop) and a parallel kernel that splits
the buffers into chunks and runs the serial kernel on each chunk in a ``prange``. Both
have the same signature: ``(param, grad, *state, *host_scalars, *flags) -> None``. Host
scalars arrive as Python floats (cheap to pass) and are cast to the buffer dtype once, before
the loop, so float32 buffers are updated in float32 arithmetic. A state
buffer an option does not use (no momentum, no amsgrad, not centered) is passed as an
empty array of the buffer dtype. Callers validate everything first: these functions
trust shapes, dtypes and contiguity.

The loops index slices from 0 to ``size``: a loop over ``range(lo, hi)`` on the full
buffers does not vectorise (the index could be negative, so numba adds a wraparound).
"""
import numpy as np
from numba import prange

from .._config import PARALLEL_CHUNK, REDUCTION_BLOCK
from .._jit import kernel
from . import _math

sgd_element = _math.sgd
adagrad_element = _math.adagrad
rmsprop_element = _math.rmsprop
adam_element = _math.adam


@kernel
def sgd_serial(param, grad, momentum_buffer, lr, weight_decay, momentum, one_minus_dampening,
               grad_scale, nesterov, first_step):
    f = param.dtype.type
    lr, weight_decay, momentum = f(lr), f(weight_decay), f(momentum)
    one_minus_dampening, grad_scale = f(one_minus_dampening), f(grad_scale)
    if momentum != 0:
        for i in range(param.size):
            param[i], momentum_buffer[i] = sgd_element(
                param[i], grad[i], momentum_buffer[i], lr, weight_decay, momentum,
                one_minus_dampening, grad_scale, nesterov, first_step)
    else:
        for i in range(param.size):
            param[i], _ = sgd_element(param[i], grad[i], grad[i], lr, weight_decay, momentum,
                                      one_minus_dampening, grad_scale, nesterov, first_step)


@kernel
def adagrad_serial(param, grad, state_sum, clr, weight_decay, eps, grad_scale):
    f = param.dtype.type
    clr, weight_decay, eps, grad_scale = f(clr), f(weight_decay), f(eps), f(grad_scale)
    for i in range(param.size):
        param[i], state_sum[i] = adagrad_element(param[i], grad[i], state_sum[i], clr,
                                                 weight_decay, eps, grad_scale)


@kernel
def rmsprop_serial(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha,
                   one_minus_alpha, eps, weight_decay, momentum, grad_scale, centered):
    f = param.dtype.type
    lr, alpha, one_minus_alpha, eps = f(lr), f(alpha), f(one_minus_alpha), f(eps)
    weight_decay, momentum, grad_scale = f(weight_decay), f(momentum), f(grad_scale)
    one_minus_alpha_complement = f(1.0) - one_minus_alpha
    if centered and momentum > 0:
        for i in range(param.size):
            param[i], square_avg[i], grad_avg[i], momentum_buffer[i] = rmsprop_element(
                param[i], grad[i], square_avg[i], grad_avg[i], momentum_buffer[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, True)
    elif centered:
        for i in range(param.size):
            param[i], square_avg[i], grad_avg[i], _ = rmsprop_element(
                param[i], grad[i], square_avg[i], grad_avg[i], grad[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, True)
    elif momentum > 0:
        for i in range(param.size):
            param[i], square_avg[i], _, momentum_buffer[i] = rmsprop_element(
                param[i], grad[i], square_avg[i], grad[i], momentum_buffer[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, False)
    else:
        for i in range(param.size):
            param[i], square_avg[i], _, _ = rmsprop_element(
                param[i], grad[i], square_avg[i], grad[i], grad[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, False)


@kernel
def adam_serial(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, weight_decay,
                decay_factor, one_minus_beta1, beta2, one_minus_beta2, step_size,
                bias_correction2_sqrt, eps, amsgrad):
    f = param.dtype.type
    grad_scale, weight_decay, decay_factor = f(grad_scale), f(weight_decay), f(decay_factor)
    one_minus_beta1, beta2, one_minus_beta2 = f(one_minus_beta1), f(beta2), f(one_minus_beta2)
    step_size, bias_correction2_sqrt, eps = f(step_size), f(bias_correction2_sqrt), f(eps)
    one_minus_beta1_complement = f(1.0) - one_minus_beta1
    if amsgrad:
        for i in range(param.size):
            param[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = adam_element(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], grad_scale,
                weight_decay, decay_factor, one_minus_beta1, one_minus_beta1_complement,
                beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, True)
    else:
        for i in range(param.size):
            param[i], exp_avg[i], exp_avg_sq[i], _ = adam_element(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], grad[i], grad_scale,
                weight_decay, decay_factor, one_minus_beta1, one_minus_beta1_complement,
                beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, False)


@kernel(parallel=True)
def sgd_parallel(param, grad, momentum_buffer, *scalars):
    for c in prange((param.size + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK):
        s = slice(c * PARALLEL_CHUNK, (c + 1) * PARALLEL_CHUNK)
        sgd_serial(param[s], grad[s], momentum_buffer[s], *scalars)


@kernel(parallel=True)
def adagrad_parallel(param, grad, state_sum, *scalars):
    for c in prange((param.size + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK):
        s = slice(c * PARALLEL_CHUNK, (c + 1) * PARALLEL_CHUNK)
        adagrad_serial(param[s], grad[s], state_sum[s], *scalars)


@kernel(parallel=True)
def rmsprop_parallel(param, grad, square_avg, grad_avg, momentum_buffer, *scalars):
    for c in prange((param.size + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK):
        s = slice(c * PARALLEL_CHUNK, (c + 1) * PARALLEL_CHUNK)
        rmsprop_serial(param[s], grad[s], square_avg[s], grad_avg[s], momentum_buffer[s],
                       *scalars)


@kernel(parallel=True)
def adam_parallel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *scalars):
    for c in prange((param.size + PARALLEL_CHUNK - 1) // PARALLEL_CHUNK):
        s = slice(c * PARALLEL_CHUNK, (c + 1) * PARALLEL_CHUNK)
        adam_serial(param[s], grad[s], exp_avg[s], exp_avg_sq[s], max_exp_avg_sq[s], *scalars)


@kernel
def _block_sumsq(block):
    """Sum of squares in float64 with eight independent accumulators (a fixed order)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n8 = block.size // 8 * 8
    for i in range(0, n8, 8):
        x0 = np.float64(block[i]); x1 = np.float64(block[i + 1])
        x2 = np.float64(block[i + 2]); x3 = np.float64(block[i + 3])
        x4 = np.float64(block[i + 4]); x5 = np.float64(block[i + 5])
        x6 = np.float64(block[i + 6]); x7 = np.float64(block[i + 7])
        s0 += x0 * x0; s1 += x1 * x1; s2 += x2 * x2; s3 += x3 * x3
        s4 += x4 * x4; s5 += x5 * x5; s6 += x6 * x6; s7 += x7 * x7
    for i in range(n8, block.size):
        x = np.float64(block[i])
        s0 += x * x
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@kernel
def grad_sumsq_serial(grad, partials):
    """Sum of squares of ``grad`` over fixed blocks; ``partials`` holds one float64 per block."""
    for b in range(partials.size):
        partials[b] = _block_sumsq(grad[b * REDUCTION_BLOCK:(b + 1) * REDUCTION_BLOCK])
    total = 0.0
    for b in range(partials.size):
        total += partials[b]
    return total


@kernel(parallel=True)
def grad_sumsq_parallel(grad, partials):
    for b in prange(partials.size):
        partials[b] = _block_sumsq(grad[b * REDUCTION_BLOCK:(b + 1) * REDUCTION_BLOCK])
    total = 0.0
    for b in range(partials.size):
        total += partials[b]
    return total


@kernel
def count_nonfinite(values):
    """Number of NaN or infinite elements."""
    count = 0
    for i in range(values.size):
        if not np.isfinite(values[i]):
            count += 1
    return count
