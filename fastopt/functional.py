"""One update on caller-owned buffers: the kernels behind the optimizer classes.

For power users who manage their own state arrays (say, in a memory-mapped file): each
function validates its arguments, computes the step-dependent scalars on the host and runs
the same fused kernel as the classes, in place. ``step`` is the number of the update being
applied (1 for the first). All arrays must be C-contiguous, of the same dtype (float32 or
float64) and the same shape; state arrays must be writeable and must not overlap ``param``.

On the GPU: when ``param`` is a device array (numba.cuda, CuPy, a detached torch CUDA
tensor), every array must be one, and the same CUDA kernel as the optimizer classes runs.
"""
import math

import numpy as np

from . import _config, _device
from ._config import REDUCTION_BLOCK
from ._validation import (check_betas, check_buffer, check_device_buffer, check_device_like,
                          check_flag, check_like, check_lr, check_nonnegative, check_number,
                          check_state_buffer)
from .kernels import cpu
from .optim import adagrad, adam, rmsprop, sgd


def _prepare(param, grad, *, unused=(), **state):
    """Validate and return flat views; a state named in ``unused`` (off for these options)
    becomes an empty array, every other state must be given."""
    if _device.is_device_array(param):
        return _prepare_device(param, grad, unused, state)
    check_buffer("param", param)
    check_like("grad", grad, param, "param")
    flat = [param.reshape(-1), grad.reshape(-1)]
    given = {"grad": grad}
    for name, array in state.items():
        if name in unused:
            flat.append(np.empty(0, param.dtype))
            continue
        if array is None:
            raise ValueError(f"{name} is required (got None)")
        check_state_buffer(name, array, param)
        for other, value in given.items():
            if np.may_share_memory(array, value):
                raise ValueError(f"{name} must not share memory with {other}")
        given[name] = array
        flat.append(array.reshape(-1))
    return flat


def _prepare_device(param, grad, unused, state):
    backend = _device.cuda_backend()
    layout = backend.device_layout(param)
    check_device_buffer("param", layout)
    shape, dtype = layout[0], layout[1]
    size = math.prod(shape)
    given, flat = {}, []
    for name, array in {"param": param, "grad": grad, **state}.items():
        if name in unused:
            flat.append(backend.empty(0, dtype))
            continue
        if array is None:
            raise ValueError(f"{name} is required (got None)")
        if not _device.is_device_array(array):
            raise TypeError(f"{name} must be a device array like param, but got "
                            f"{type(array).__name__}")
        if name != "param":
            array_layout = backend.device_layout(array)
            check_device_like(name, array_layout, shape, dtype, "param")
            if name != "grad" and not array_layout[3]:
                raise ValueError(f"{name} must be writeable, but the device array is read-only")
        start = backend.array_key(array)[1]
        span = (start, start + size * dtype.itemsize)
        for other, (lo, hi) in given.items():
            if name not in ("param", "grad") and span[0] < hi and lo < span[1]:
                raise ValueError(f"{name} must not share memory with {other}")
        given[name] = span
        flat.append(backend.as_device_array(array).reshape(size))
    return flat


def _check_step(step):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"Invalid step: {step!r} (expected an integer >= 1, the number of "
                         "this update)")
    return int(step)


def _run(name, arrays, scalars):
    """Run algorithm ``name``'s kernel: the CUDA one for device arrays (without clipping),
    else the serial or threaded CPU one by size."""
    if not isinstance(arrays[0], np.ndarray):
        backend = _device.cuda_backend()
        no_clip = (backend.empty(0, np.float64), 1.0, 0.0)
        backend.launcher(getattr(backend, name), arrays[0].size)(*arrays, *no_clip, *scalars)
        return
    threaded = arrays[0].size >= _config.PARALLEL_MIN_SIZE
    getattr(cpu, f"{name}_{'parallel' if threaded else 'serial'}")(*arrays, *scalars)


def _lr(lr):
    lr = check_lr(lr)
    if callable(lr):
        raise TypeError("the functional layer takes the learning rate as a number; evaluate "
                        "the schedule first")
    return lr


def sgd_(param, grad, momentum_buffer=None, *, lr=1e-3, momentum=0, dampening=0,
         weight_decay=0, nesterov=False, maximize=False, first_step=False):
    """One SGD update in place (see :class:`fastopt.SGD`); ``first_step`` copies the
    gradient into ``momentum_buffer`` as torch does on the first update."""
    lr = _lr(lr)
    momentum = check_nonnegative("momentum value", momentum)
    dampening = check_number("dampening value", dampening, "a finite number",
                             lambda v: math.isfinite(v))
    weight_decay = check_nonnegative("weight_decay value", weight_decay)
    nesterov = check_flag("nesterov", nesterov)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    arrays = _prepare(param, grad, momentum_buffer=momentum_buffer,
                      unused=() if momentum != 0 else ("momentum_buffer",))
    scalars = sgd.host_scalars(lr, weight_decay, momentum, dampening, nesterov,
                               check_flag("first_step", first_step),
                               -1.0 if check_flag("maximize", maximize) else 1.0)
    _run("sgd", arrays, scalars)


def adagrad_(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0, weight_decay=0, eps=1e-10,
             maximize=False):
    """One Adagrad update in place (see :class:`fastopt.Adagrad`)."""
    step = _check_step(step)
    lr = _lr(lr)
    lr_decay = check_nonnegative("lr_decay value", lr_decay)
    weight_decay = check_nonnegative("weight_decay value", weight_decay)
    eps = check_nonnegative("epsilon value", eps)
    arrays = _prepare(param, grad, state_sum=state_sum)
    scalars = adagrad.host_scalars(lr, lr_decay, weight_decay, eps, step,
                                   -1.0 if check_flag("maximize", maximize) else 1.0)
    _run("adagrad", arrays, scalars)


def rmsprop_(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr=1e-2,
             alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
             maximize=False):
    """One RMSprop update in place (see :class:`fastopt.RMSprop`)."""
    lr = _lr(lr)
    alpha = check_number("alpha value", alpha, "0 <= alpha <= 1", lambda v: 0 <= v <= 1)
    eps = check_nonnegative("epsilon value", eps)
    weight_decay = check_nonnegative("weight_decay value", weight_decay)
    momentum = check_nonnegative("momentum value", momentum)
    centered = check_flag("centered", centered)
    unused = (() if centered else ("grad_avg",)) + (() if momentum > 0 else ("momentum_buffer",))
    arrays = _prepare(param, grad, square_avg=square_avg, grad_avg=grad_avg,
                      momentum_buffer=momentum_buffer, unused=unused)
    scalars = rmsprop.host_scalars(lr, alpha, eps, weight_decay, momentum, centered,
                                   -1.0 if check_flag("maximize", maximize) else 1.0)
    _run("rmsprop", arrays, scalars)


def adam_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr=1e-3,
          betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
          decoupled_weight_decay=False):
    """One Adam/AdamW update in place (see :class:`fastopt.Adam`)."""
    step = _check_step(step)
    lr = _lr(lr)
    betas = check_betas(betas)
    eps = check_nonnegative("epsilon value", eps)
    weight_decay = check_nonnegative("weight_decay value", weight_decay)
    amsgrad = check_flag("amsgrad", amsgrad)
    decoupled = check_flag("decoupled_weight_decay", decoupled_weight_decay)
    arrays = _prepare(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                      max_exp_avg_sq=max_exp_avg_sq, unused=() if amsgrad else ("max_exp_avg_sq",))
    scalars = adam.host_scalars(lr, betas, eps, weight_decay, decoupled, amsgrad, step,
                                -1.0 if check_flag("maximize", maximize) else 1.0)
    _run("adam", arrays, scalars)


def grad_norm(grad):
    """Global L2 norm of a gradient buffer, accumulated in float64 over fixed blocks (the
    same value for any thread count); on the GPU, by the optimizers' device reduction."""
    if _device.is_device_array(grad):
        backend = _device.cuda_backend()
        layout = backend.device_layout(grad)
        check_device_buffer("grad", layout[:3] + (True,))
        flat = backend.as_device_array(grad).reshape(math.prod(layout[0]))
        norm = backend.GradNorm(flat.size)
        norm.compute(flat)
        return math.sqrt(norm.read())
    check_buffer("grad", grad, writeable=False)
    flat = grad.reshape(-1)
    partials = np.empty(-(-flat.size // REDUCTION_BLOCK), np.float64)
    parallel = flat.size >= _config.PARALLEL_MIN_SIZE
    reduce = cpu.grad_sumsq_parallel if parallel else cpu.grad_sumsq_serial
    return math.sqrt(reduce(flat, partials))
