"""Fused in-place CUDA kernels over flat device buffers; the only module that imports numba.cuda.

It is imported the first time something asks for ``device="cuda"`` (or hands fastopt a
device array), never by ``import fastopt``. Each algorithm has one grid-stride kernel with
the CPU kernel's arguments plus three for global-norm clipping, and calls the same
per-element function from :mod:`fastopt.kernels._math`, compiled as an inlined device
function. Host scalars (learning rate, bias corrections) are plain kernel arguments, cast to
the buffer dtype in the kernel prologue as on the CPU: a step copies nothing between host
and device and does not synchronise. Clipping stays on the device too: a deterministic
two-pass block reduction writes the squared norm into a one-element device array that the
update kernel reads (``norm_sumsq``; an empty array means no clipping).

Numerics: division and square root are IEEE-rounded (``div.rn``, ``sqrt.rn``; no
fast-math), but NVVM contracts ``a * b + c`` into fused multiply-adds, as nvcc does for
torch's CUDA kernels, and numba-cuda offers no switch for that outside fast-math. So GPU
results agree with the CPU kernels to a few ulp, not bit for bit; under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) they are bit for bit.
"""
import math
import warnings

import numpy as np
from numba import config as numba_config
from numba import float64, int64

from .._device import MISSING_EXTRA
from .._jit import CUDA_JIT_OPTIONS
from . import _math

try:
    import numba_cuda  # noqa: F401  (the package; numba's built-in numba.cuda is deprecated)
except ImportError:
    raise ImportError(MISSING_EXTRA) from None

from numba import cuda  # noqa: E402  (after the check, so the error names the extra)

THREADS_PER_BLOCK = 256
"""Threads per block of every launch (a power of two, at most ``MAX_THREADS_PER_BLOCK``)."""
BLOCKS_PER_SM = 8
MAX_BLOCKS = None
"""Grid size cap; None means ``BLOCKS_PER_SM`` x the device's multiprocessor count. Larger
buffers are covered by the grid-stride loops."""
MAX_THREADS_PER_BLOCK = 1024


def require_gpu():
    """Raise RuntimeError, saying what is missing, unless a CUDA GPU can be used."""
    if cuda.is_available():
        return
    try:
        cuda.current_context()
    except Exception as error:  # the driver's own message says what it could not find
        reason = " ".join(str(error).replace("Error at driver init:", "").split()).rstrip(":")
    else:  # pragma: no cover - is_available() and current_context() disagree
        reason = "numba.cuda reports no usable device"
    raise RuntimeError(f"device='cuda' needs a usable NVIDIA GPU, but none was found: {reason}")


def simulated():
    """Whether numba.cuda is the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    return bool(numba_config.ENABLE_CUDASIM)


def launch_shape(size):
    """``(blocks, threads)`` for a grid-stride loop over ``size`` elements."""
    threads = THREADS_PER_BLOCK
    if threads < 1 or threads > MAX_THREADS_PER_BLOCK or threads & (threads - 1):
        raise ValueError(f"Invalid THREADS_PER_BLOCK: {threads} (expected a power of two "
                         f"<= {MAX_THREADS_PER_BLOCK})")
    return max(1, min(-(-size // threads), _max_blocks())), threads


def configure(kernel, shape):
    """``kernel[shape]``, made once and kept.

    Small grids are intended here (small buffers, the reduction's one-block second pass),
    so numba-cuda's low-occupancy warning is silenced while configuring. The simulator's
    ``kernel[shape]`` changes the kernel object itself, so there the shape is applied at
    each call instead.
    """
    if simulated():
        return lambda *args: kernel[shape](*args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU "
                                "under-utilization")
        return kernel[shape]


def launcher(kernel, size):
    """``kernel`` configured for a grid-stride loop over ``size`` elements."""
    return configure(kernel, launch_shape(size))


def _max_blocks():
    if MAX_BLOCKS is not None:
        return MAX_BLOCKS
    count = getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", None)
    return BLOCKS_PER_SM * (count or 8)


# -- arrays --------------------------------------------------------------------------------
def array_key(obj):
    """``(id, address, shape, type)`` of a device array: while these are unchanged, a view
    made by :func:`unowned_view` still describes the same memory."""
    if getattr(obj, "__cuda_ndarray__", False) and simulated():
        desc = obj.__array_interface__  # the simulator's arrays are NumPy arrays
    else:
        desc = obj.__cuda_array_interface__
    return id(obj), desc["data"][0], tuple(desc["shape"]), desc["typestr"]


def unowned_view(obj):
    """A numba view of a device array that does not keep its memory alive (so a cached
    view of last step's gradient does not hold that gradient's memory)."""
    if simulated():
        return obj
    return cuda.from_cuda_array_interface(obj.__cuda_array_interface__, owner=None, sync=False)


def as_device_array(obj):
    """A numba view of a device array (zero-copy; no stream synchronisation)."""
    if getattr(obj, "__cuda_ndarray__", False):
        return obj
    return cuda.from_cuda_array_interface(obj.__cuda_array_interface__, owner=obj, sync=False)


def device_layout(obj):
    """``(shape, dtype, c_contiguous, writeable)`` of a device array, read without wrapping."""
    if getattr(obj, "__cuda_ndarray__", False):
        return tuple(obj.shape), np.dtype(obj.dtype), obj.is_c_contiguous(), True
    desc = obj.__cuda_array_interface__
    shape, dtype = tuple(desc["shape"]), np.dtype(desc["typestr"])
    strides = desc.get("strides")
    contiguous = strides is None or tuple(strides) == _c_strides(shape, dtype.itemsize)
    return shape, dtype, contiguous, not desc["data"][1]


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def empty(size, dtype):
    return cuda.device_array(size, dtype)


def full(size, value, dtype):
    """A new device array filled on the device (no host copy of the buffer)."""
    array = cuda.device_array(size, dtype)
    fill(array, value)
    return array


_fillers = {}


def fill(array, value):
    if array.size:
        key = (array.size, THREADS_PER_BLOCK, MAX_BLOCKS)
        if key not in _fillers:
            _fillers.clear()
            _fillers[key] = launcher(_fill, array.size)
        _fillers[key](array, value)


def to_host(array):
    return array.copy_to_host()


def copy_from_host(array, values):
    array.copy_to_device(np.ascontiguousarray(values, dtype=array.dtype))


def to_device(values):
    return cuda.to_device(np.ascontiguousarray(values))


def copy_device(dst, src):
    dst.copy_to_device(src)


def copy_of(array):
    """A new device array holding a copy of ``array`` (device to device)."""
    copy = cuda.device_array(array.size, array.dtype)
    copy.copy_to_device(array)
    return copy


# -- kernels ---------------------------------------------------------------------------------
def _kernel(function):
    return cuda.jit(**CUDA_JIT_OPTIONS)(function)


def _device(function):
    return cuda.jit(device=True, inline="always")(function)


sgd_element = _device(_math.sgd)
adagrad_element = _device(_math.adagrad)
rmsprop_element = _device(_math.rmsprop)
adam_element = _device(_math.adam)


@_device
def _clipped(grad_scale, norm_sumsq, norm_factor, max_norm):
    """``grad_scale`` times torch's clip_grad_norm_ factor, in float64 (as on the CPU)."""
    if norm_sumsq.size == 0:
        return grad_scale
    norm = math.sqrt(norm_sumsq[0]) * norm_factor
    coefficient = max_norm / (norm + 1e-6)
    if coefficient >= 1.0:
        return grad_scale
    return grad_scale * coefficient


@_kernel
def sgd(param, grad, momentum_buffer, norm_sumsq, norm_factor, max_norm, lr, weight_decay,
        momentum, one_minus_dampening, grad_scale, nesterov, first_step):
    f = param.dtype.type
    grad_scale = f(_clipped(grad_scale, norm_sumsq, norm_factor, max_norm))
    lr, weight_decay, momentum = f(lr), f(weight_decay), f(momentum)
    one_minus_dampening = f(one_minus_dampening)
    start, stride = cuda.grid(1), cuda.gridsize(1)
    if momentum != 0:
        for i in range(start, param.size, stride):
            param[i], momentum_buffer[i] = sgd_element(
                param[i], grad[i], momentum_buffer[i], lr, weight_decay, momentum,
                one_minus_dampening, grad_scale, nesterov, first_step)
    else:
        for i in range(start, param.size, stride):
            param[i], _ = sgd_element(param[i], grad[i], grad[i], lr, weight_decay, momentum,
                                      one_minus_dampening, grad_scale, nesterov, first_step)


@_kernel
def adagrad(param, grad, state_sum, norm_sumsq, norm_factor, max_norm, clr, weight_decay, eps,
            grad_scale):
    f = param.dtype.type
    grad_scale = f(_clipped(grad_scale, norm_sumsq, norm_factor, max_norm))
    clr, weight_decay, eps = f(clr), f(weight_decay), f(eps)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i], state_sum[i] = adagrad_element(param[i], grad[i], state_sum[i], clr,
                                                 weight_decay, eps, grad_scale)


@_kernel
def rmsprop(param, grad, square_avg, grad_avg, momentum_buffer, norm_sumsq, norm_factor,
            max_norm, lr, alpha, one_minus_alpha, eps, weight_decay, momentum, grad_scale,
            centered):
    f = param.dtype.type
    grad_scale = f(_clipped(grad_scale, norm_sumsq, norm_factor, max_norm))
    lr, alpha, one_minus_alpha, eps = f(lr), f(alpha), f(one_minus_alpha), f(eps)
    weight_decay, momentum = f(weight_decay), f(momentum)
    one_minus_alpha_complement = f(1.0) - one_minus_alpha
    start, stride = cuda.grid(1), cuda.gridsize(1)
    if centered and momentum > 0:
        for i in range(start, param.size, stride):
            param[i], square_avg[i], grad_avg[i], momentum_buffer[i] = rmsprop_element(
                param[i], grad[i], square_avg[i], grad_avg[i], momentum_buffer[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, True)
    elif centered:
        for i in range(start, param.size, stride):
            param[i], square_avg[i], grad_avg[i], _ = rmsprop_element(
                param[i], grad[i], square_avg[i], grad_avg[i], grad[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, True)
    elif momentum > 0:
        for i in range(start, param.size, stride):
            param[i], square_avg[i], _, momentum_buffer[i] = rmsprop_element(
                param[i], grad[i], square_avg[i], grad[i], momentum_buffer[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, False)
    else:
        for i in range(start, param.size, stride):
            param[i], square_avg[i], _, _ = rmsprop_element(
                param[i], grad[i], square_avg[i], grad[i], grad[i], lr, alpha,
                one_minus_alpha, one_minus_alpha_complement, eps, weight_decay, momentum,
                grad_scale, False)


@_kernel
def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, norm_sumsq, norm_factor, max_norm,
         grad_scale, weight_decay, decay_factor, one_minus_beta1, beta2, one_minus_beta2,
         step_size, bias_correction2_sqrt, eps, amsgrad):
    f = param.dtype.type
    grad_scale = f(_clipped(grad_scale, norm_sumsq, norm_factor, max_norm))
    weight_decay, decay_factor = f(weight_decay), f(decay_factor)
    one_minus_beta1, beta2, one_minus_beta2 = f(one_minus_beta1), f(beta2), f(one_minus_beta2)
    step_size, bias_correction2_sqrt, eps = f(step_size), f(bias_correction2_sqrt), f(eps)
    one_minus_beta1_complement = f(1.0) - one_minus_beta1
    start, stride = cuda.grid(1), cuda.gridsize(1)
    if amsgrad:
        for i in range(start, param.size, stride):
            param[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i] = adam_element(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], max_exp_avg_sq[i], grad_scale,
                weight_decay, decay_factor, one_minus_beta1, one_minus_beta1_complement,
                beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, True)
    else:
        for i in range(start, param.size, stride):
            param[i], exp_avg[i], exp_avg_sq[i], _ = adam_element(
                param[i], grad[i], exp_avg[i], exp_avg_sq[i], grad[i], grad_scale,
                weight_decay, decay_factor, one_minus_beta1, one_minus_beta1_complement,
                beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, False)


@_kernel
def block_sums(values, sums, square):
    """``sums[b]`` = this block's share of sum(values**2) (or of sum(values)), in float64.

    Each thread accumulates its grid-stride elements in order, then the block adds the
    threads' totals in a fixed tree: for a given launch shape the result is the same on
    every run.
    """
    shared = cuda.shared.array(MAX_THREADS_PER_BLOCK, float64)
    tid = cuda.threadIdx.x
    total = 0.0
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        x = float64(values[i])
        total += x * x if square else x
    shared[tid] = total
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if tid < width:
            shared[tid] += shared[tid + width]
        cuda.syncthreads()
        width //= 2
    if tid == 0:
        sums[cuda.blockIdx.x] = shared[0]


@_kernel
def flag_nonfinite(values, flag):
    """Set ``flag[0] = 1`` if any element is NaN or infinite (a plain store: every writer
    writes the same value, so no atomics are needed)."""
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        if math.isnan(values[i]) or math.isinf(values[i]):
            flag[0] = int64(1)


@_kernel
def _fill(values, value):
    f = values.dtype.type
    value = f(value)
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        values[i] = value


class GradNorm:
    """Device-side squared norm of a flat gradient: two launches, no synchronisation.

    ``sumsq`` (a one-element float64 device array) holds the result of the last
    :meth:`compute`; :meth:`host_info` reads it back (a synchronising copy).
    """

    def __init__(self, size):
        self.size = size
        blocks, threads = launch_shape(size)
        self.partials = cuda.device_array(blocks, np.float64)
        self.sumsq = cuda.device_array(1, np.float64)
        self.flag = cuda.device_array(1, np.int64)
        self.host_sumsq = np.zeros(1, np.float64)
        self.host_flag = np.zeros(1, np.int64)
        self._first = configure(block_sums, (blocks, threads))
        self._second = configure(block_sums, (1, threads))
        self._flag = configure(flag_nonfinite, (blocks, threads))

    def compute(self, grad):
        self._first(grad, self.partials, True)
        self._second(self.partials, self.sumsq, False)
        return self.sumsq

    def host_info(self, grad):
        """``(sum of squares, any non-finite value)`` of the gradient, read on the host."""
        sumsq = self.read()
        if math.isfinite(sumsq) or math.isnan(sumsq):
            return sumsq, not math.isfinite(sumsq)
        self.host_flag[0] = 0
        self.flag.copy_to_device(self.host_flag)
        self._flag(grad, self.flag)
        self.flag.copy_to_host(self.host_flag)
        return sumsq, bool(self.host_flag[0])

    def read(self):
        """The last computed sum of squares, copied to the host (synchronises)."""
        self.sumsq.copy_to_host(self.host_sumsq)
        return float(self.host_sumsq[0])
