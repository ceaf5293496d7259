"""The CUDA backend: device buffers and numba.cuda kernels; the only module that imports
numba.cuda.

It is imported the first time something asks for ``device="cuda"`` (or hands fastopt a
device array), never by ``import fastopt``. Each algorithm's loop (the same source as on
the host) is compiled into one grid-stride kernel, with its per-element function compiled
as an inlined device function. Host scalars (learning rate, bias corrections) are plain
kernel arguments, cast to the buffer dtype in the kernel prologue as on the CPU. The
gradient scale is a one-element float64 device array: for clipping, a deterministic
two-pass block reduction computes the squared norm and, in its second pass, the clipped
scale, which the update kernels read. A step copies nothing between host and device and
does not synchronise.

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
from numba import float32, float64, int64, uint32

from .._jit import CUDA_JIT_OPTIONS, bind, jit
from .._validation import check_device_buffer, check_device_like
from . import ALGORITHMS, blockwise, int32
from .backend import MISSING_EXTRA, checked_then_update, is_device_array
from .blockwise import BLOCK, TOP
from .clipping import clipped_scale
from .host import raise_hazard
from .precision import LOAD_STORE, numpy_bits_float, numpy_float_bits

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
        raise ValueError(
            f"Invalid THREADS_PER_BLOCK: {threads} (expected a power of two "
            f"<= {MAX_THREADS_PER_BLOCK})"
        )
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
        warnings.filterwarnings(
            "ignore",
            message=r"Grid size \d+ will likely result in GPU "
            "under-utilization",
        )
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
    made by :func:`unowned_view` still describes the same memory.
    """
    if getattr(obj, "__cuda_ndarray__", False) and simulated():
        desc = obj.__array_interface__  # the simulator's arrays are NumPy arrays
    else:
        desc = obj.__cuda_array_interface__
    return id(obj), desc["data"][0], tuple(desc["shape"]), desc["typestr"]


def unowned_view(obj):
    """A numba view of a device array that does not keep its memory alive (so a cached
    view of last step's gradient does not hold that gradient's memory).
    """
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


def _require_device_array(name, obj, reference_name):
    if not is_device_array(obj):
        raise TypeError(
            f"{name} must be a device array like {reference_name}, but got "
            f"{type(obj).__name__}: fastopt copies nothing per step, so move it "
            "yourself (numba.cuda.to_device) or compute it on the GPU"
        )


# -- kernels ---------------------------------------------------------------------------------
def _kernel(function):
    return jit(cuda.jit, function, **CUDA_JIT_OPTIONS)


def _device(function):
    return cuda.jit(device=True, inline="always")(function)


@_device
def grid_indices(n):
    """The indices of this thread in a grid-stride loop over ``n`` elements."""
    return range(cuda.grid(1), n, cuda.gridsize(1))


@_device
def first_element(scale):
    return scale[0]


def _bit_casts():
    """``float_bits`` and ``bits_float`` (see :mod:`fastopt.kernels.precision`): libdevice
    on the GPU; NumPy scalar views under the simulator, which runs device code as Python
    and has no libdevice.
    """
    if simulated():
        return {"float_bits": numpy_float_bits, "bits_float": numpy_bits_float}
    from numba.cuda import libdevice

    return {
        "float_bits": _device(lambda value: np.uint32(libdevice.float_as_int(value))),
        "bits_float": _device(lambda bits: libdevice.int_as_float(np.int32(bits))),
    }


def _compile(algorithm, precision):
    casts = _bit_casts()
    load, store = LOAD_STORE[precision]
    suffix = "" if precision == "full" else f"_{precision}"
    return _kernel(
        bind(
            algorithm.loop,
            f"{algorithm.name}{suffix}_cuda",
            element=_device(algorithm.element),
            indices=grid_indices,
            load_scale=first_element,
            load=_device(bind(load, f"{precision}_load_cuda", **casts)),
            store=_device(bind(store, f"{precision}_store_cuda", **casts)),
        )
    )


KERNELS = {
    (name, precision): _compile(algorithm, precision)
    for name, algorithm in ALGORITHMS.items()
    for precision in LOAD_STORE
}
"""(algorithm name, state precision) -> its grid-stride update kernel."""

_clipped_scale = _device(clipped_scale)


# -- 8-bit state: one CUDA block of BLOCK threads per block of state ----------------------
@_device
def _one_element(n):
    return range(n)


def _bits32(value):
    return np.int32(float_bits(value))  # noqa: F821


def _float_of_bits(bits):
    return bits_float(np.uint32(bits))  # noqa: F821


def _cast_load(word, f):
    return f(word)


def _block_max(value, shared):
    """The largest ``value`` (uint32) of this CUDA block (every thread gets it)."""
    tid = cuda.threadIdx.x
    shared[tid] = value
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if tid < width:
            shared[tid] = max(shared[tid], shared[tid + width])
        cuda.syncthreads()
        width //= 2
    result = shared[0]
    cuda.syncthreads()
    return result


def _store_block(value, active, codes, absmax, b, i, signed, shared):
    """Encode this thread's element of block ``b`` (as the host's quantize_block)."""
    f = absmax.dtype.type
    magnitude = uint32(0)
    if active:
        magnitude = uint32(float_bits(float32(abs(value)))) & uint32(0x7FFFFFFF)  # noqa: F821
    high = block_max(magnitude, shared)  # noqa: F821
    if high >= uint32(0x7F800000):
        if cuda.threadIdx.x == 0:
            absmax[b] = f(math.nan)
        if active:
            codes[i] = 0
        return
    if high < uint32(0x00800000):
        high = uint32(0)  # below float32's normal range: stored as zero
    amax = f(bits_float(high))  # noqa: F821
    if cuda.threadIdx.x == 0:
        absmax[b] = amax
    if active:
        inverse = f(TOP) / amax if amax > 0 else f(0.0)
        y = float32(abs(value) * inverse)
        codes[i] = encode_signed(y, value < 0) if signed else encode_unsigned(y)  # noqa: F821


def _decode(codes, absmax, b, i, signed):
    f = absmax.dtype.type
    code = decode_signed(codes[i]) if signed else decode_unsigned(codes[i])  # noqa: F821
    return f(code) * (absmax[b] / f(TOP))


def blockwise_cuda_1(param, grad, codes0, absmax0, work, grad_scale, *scalars):
    n = param.size
    shared = cuda.shared.array(BLOCK, uint32)
    s0 = cuda.local.array(1, float64)
    for b in range(cuda.blockIdx.x, (n + BLOCK - 1) // BLOCK, cuda.gridDim.x):
        i = b * BLOCK + cuda.threadIdx.x
        active = i < n
        if active:
            if codes0.size:
                s0[0] = decode(codes0, absmax0, b, i, SIGNED0)  # noqa: F821
            update(param[i : i + 1], grad[i : i + 1], s0, grad_scale, scalars)  # noqa: F821
        if codes0.size:
            store(s0[0], active, codes0, absmax0, b, i, SIGNED0, shared)  # noqa: F821


def blockwise_cuda_3(param, grad, codes0, codes1, codes2, absmax0, absmax1, absmax2, work,
                     grad_scale, *scalars):  # fmt: skip
    n = param.size
    shared = cuda.shared.array(BLOCK, uint32)
    s0 = cuda.local.array(1, float64)
    s1 = cuda.local.array(1, float64)
    s2 = cuda.local.array(1, float64)
    for b in range(cuda.blockIdx.x, (n + BLOCK - 1) // BLOCK, cuda.gridDim.x):
        i = b * BLOCK + cuda.threadIdx.x
        active = i < n
        if active:
            if codes0.size:
                s0[0] = decode(codes0, absmax0, b, i, SIGNED0)  # noqa: F821
            if codes1.size:
                s1[0] = decode(codes1, absmax1, b, i, SIGNED1)  # noqa: F821
            if codes2.size:
                s2[0] = decode(codes2, absmax2, b, i, SIGNED2)  # noqa: F821
            update(param[i : i + 1], grad[i : i + 1], s0, s1, s2, grad_scale, scalars)  # noqa: F821
        if codes0.size:
            store(s0[0], active, codes0, absmax0, b, i, SIGNED0, shared)  # noqa: F821
        if codes1.size:
            store(s1[0], active, codes1, absmax1, b, i, SIGNED1, shared)  # noqa: F821
        if codes2.size:
            store(s2[0], active, codes2, absmax2, b, i, SIGNED2, shared)  # noqa: F821


# The element loop called with the scalars as one tuple: an inlined device function cannot
# be called with *args, so each algorithm's scalar count is spelled out once.
def _sgd_update(param, grad, s0, grad_scale, x):
    loop(param, grad, s0, grad_scale, x[0], x[1], x[2], x[3], x[4], x[5])  # noqa: F821


def _adagrad_update(param, grad, s0, grad_scale, x):
    loop(param, grad, s0, grad_scale, x[0], x[1], x[2])  # noqa: F821


def _rmsprop_update(param, grad, s0, s1, s2, grad_scale, x):
    loop(param, grad, s0, s1, s2, grad_scale, x[0], x[1], x[2], x[3], x[4], x[5], x[6])  # noqa: F821


def _adam_update(param, grad, s0, s1, s2, grad_scale, x):
    loop(param, grad, s0, s1, s2, grad_scale, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8])  # noqa: F821, E501


_UPDATES = {"sgd": _sgd_update, "adagrad": _adagrad_update, "rmsprop": _rmsprop_update,
            "adam": _adam_update}  # fmt: skip


def _compile_blockwise(algorithm):
    """The 8-bit kernel of ``algorithm``: the host's full-precision loop, compiled as a
    device function over this thread's one element (state in float64 registers, loaded
    back in the parameter dtype), inside a block-per-block driver (launch with ``BLOCK``
    threads per CUDA block).
    """
    casts = _bit_casts()
    ops = dict(
        {name: _device(fn) for name, fn in int32.PORTABLE.items()},
        bits32=_device(bind(_bits32, "bits32_cuda", **casts)),
        float_of_bits=_device(bind(_float_of_bits, "float_of_bits_cuda", **casts)),
    )
    encode = _device(bind(blockwise._encode, "encode_code_cuda", **ops))
    codes = {
        fn.__name__: _device(bind(fn, f"{fn.__name__}_cuda", encode_code=encode, **ops))
        for fn in (blockwise.decode_signed, blockwise.decode_unsigned,
                   blockwise.encode_signed, blockwise.encode_unsigned)
    }  # fmt: skip
    loop = _device(
        bind(
            algorithm.loop,
            f"{algorithm.name}_element_cuda",
            element=_device(algorithm.element),
            indices=_one_element,
            load_scale=first_element,
            load=_device(_cast_load),
            store=_device(LOAD_STORE["full"][1]),
        )
    )
    name = algorithm.name
    update = _device(bind(_UPDATES[name], f"{name}_update_cuda", loop=loop))
    names = dict(
        codes,
        **casts,
        update=update,
        decode=_device(bind(_decode, f"{algorithm.name}_decode_cuda", **codes)),
        store=_device(
            bind(
                _store_block,
                f"{algorithm.name}_store_cuda",
                block_max=_device(_block_max),
                **codes,
                **casts,
            )
        ),  # fmt: skip
        **{
            f"SIGNED{k}": name not in blockwise.UNSIGNED_STATE
            for k, name in enumerate(algorithm.state)
        },
    )
    driver = blockwise_cuda_1 if len(algorithm.state) == 1 else blockwise_cuda_3
    return _kernel(bind(driver, f"{algorithm.name}_8bit_cuda", **names))


BLOCKWISE = {name: _compile_blockwise(algorithm) for name, algorithm in ALGORITHMS.items()}
"""Algorithm name -> its 8-bit kernel (``BLOCK`` threads per CUDA block)."""


@_device
def _block_total(value):
    """The sum of ``value`` over the threads of this block, in a fixed tree (the same on
    every run for a given launch shape).
    """
    shared = cuda.shared.array(MAX_THREADS_PER_BLOCK, float64)
    tid = cuda.threadIdx.x
    shared[tid] = value
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if tid < width:
            shared[tid] += shared[tid + width]
        cuda.syncthreads()
        width //= 2
    return shared[0]


@_kernel
def block_sumsq(values, partials):
    """``partials[b]`` = this block's share of sum(values**2), in float64; each thread
    accumulates its grid-stride elements in order.
    """
    total = 0.0
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        x = float64(values[i])
        total += x * x
    total = _block_total(total)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = total


@_kernel
def finish_sumsq(partials, sumsq, scale, grad_scale, norm_factor, max_norm, clip):
    """One block: ``sumsq[0]`` = the sum of ``partials``, and ``scale[0]`` = the kernels'
    gradient scale, clipped for that norm when ``clip``.
    """
    total = 0.0
    for i in range(cuda.threadIdx.x, partials.size, cuda.blockDim.x):
        total += partials[i]
    total = _block_total(total)
    if cuda.threadIdx.x == 0:
        sumsq[0] = total
        scale[0] = _clipped_scale(grad_scale, total, norm_factor, max_norm) if clip else grad_scale


@_kernel
def flag_nonfinite(values, flag):
    """Set ``flag[0] = 1`` if any element is NaN or infinite (a plain store: every writer
    writes the same value, so no atomics are needed).
    """
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        if math.isnan(values[i]) or math.isinf(values[i]):
            flag[0] = int64(1)


@_kernel
def fill_kernel(values, value):
    f = values.dtype.type
    value = f(value)
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        values[i] = value


class CudaGradNorm:
    """Device-side squared norm of a flat gradient: two launches, no synchronisation.

    :meth:`compute` returns a one-element device array holding the kernels' gradient
    scale; :meth:`sumsq` and :meth:`nonfinite` read results back (synchronising copies).
    """

    def __init__(self, size):
        self.size = size
        blocks, threads = launch_shape(size)
        self.partials = cuda.device_array(blocks, np.float64)
        self.total = cuda.device_array(1, np.float64)
        self.scale = cuda.device_array(1, np.float64)
        self.flag = cuda.device_array(1, np.int64)
        self.host_total = np.zeros(1, np.float64)
        self.host_flag = np.zeros(1, np.int64)
        self._first = configure(block_sumsq, (blocks, threads))
        self._second = configure(finish_sumsq, (1, threads))
        self._flag = configure(flag_nonfinite, (blocks, threads))

    def compute(self, grad, grad_scale, norm_factor, max_norm):
        self._first(grad, self.partials)
        clip = max_norm is not None
        self._second(
            self.partials,
            self.total,
            self.scale,
            float(grad_scale),
            float(norm_factor),
            float(max_norm) if clip else math.inf,
            clip,
        )
        return self.scale

    def sumsq(self):
        self.total.copy_to_host(self.host_total)
        return float(self.host_total[0])

    def nonfinite(self, grad):
        sumsq = self.sumsq()
        if math.isfinite(sumsq) or math.isnan(sumsq):
            return not math.isfinite(sumsq)
        self.host_flag[0] = 0
        self.flag.copy_to_device(self.host_flag)
        self._flag(grad, self.flag)
        self.flag.copy_to_host(self.host_flag)
        return bool(self.host_flag[0])


class CudaGradientViews:
    """Wrapping a device array costs more than a small update on a GPU, so the views of the
    last gradient are kept (without keeping its memory alive) and reused while the same
    object has the same address, shape and dtype.
    """

    def __init__(self, shape, dtype, segments, owner, written):
        self.shape, self.dtype, self.segments = tuple(shape), np.dtype(dtype), segments
        self.size = math.prod(self.shape)
        self.written = [_span(a) for a in written]
        self.cached = None

    def prepare(self):
        pass

    def views(self, grad):
        cached = self.cached
        if cached is not None and is_device_array(grad) and cached[0] == array_key(grad):
            return cached[1], cached[2]
        if not is_device_array(grad):
            raise TypeError(
                "grad must be a device array (the parameters are on the GPU), but "
                f"got {type(grad).__name__}: fastopt copies nothing per step, so "
                "move it yourself (numba.cuda.to_device) or compute it on the GPU"
            )
        check_device_like("grad", device_layout(grad), self.shape, self.dtype)
        lo, hi = _span(grad)
        if any(lo < stop and start < hi for start, stop in self.written):
            raise_hazard(2)
        flat = unowned_view(grad).reshape(self.size)
        self.cached = (array_key(grad), flat, [flat[s] for s in self.segments])
        return flat, self.cached[2]

    def updater(self, segment):
        return checked_then_update(self, segment, CUDA.grad_scale)


class CudaBackend:
    """numba.cuda device arrays; see the module docstring."""

    name = "cuda"
    pickles_buffers = False

    def __init__(self):
        self._fillers = {}
        self._scales = {}

    def empty(self, size, dtype):
        return cuda.device_array(size, dtype)

    def full(self, size, value, dtype):
        """A new device array filled on the device (no host copy of the buffer)."""
        array = cuda.device_array(size, dtype)
        self.fill(array, value)
        return array

    def fill(self, array, value):
        if array.size:
            key = (array.size, THREADS_PER_BLOCK, MAX_BLOCKS)
            if key not in self._fillers:
                self._fillers.clear()
                self._fillers[key] = launcher(fill_kernel, array.size)
            self._fillers[key](array, value)

    def to_host(self, array):
        return array.copy_to_host()

    def from_host(self, values):
        return cuda.to_device(np.ascontiguousarray(values))

    def copy_from_host(self, array, values):
        array.copy_to_device(np.ascontiguousarray(values, dtype=array.dtype))

    def copy(self, dst, src):
        dst.copy_to_device(src)

    def copy_of(self, array):
        copy = cuda.device_array(array.size, array.dtype)
        copy.copy_to_device(array)
        return copy

    def owns(self, obj):
        return is_device_array(obj)

    def layout(self, obj):
        return device_layout(obj)

    def check_buffer(self, name, obj, *, writeable=True, reference_name="param"):
        _require_device_array(name, obj, reference_name)
        layout = device_layout(obj)
        check_device_buffer(name, layout if writeable else layout[:3] + (True,))
        return as_device_array(obj).reshape(math.prod(layout[0]))

    def check_like(self, name, obj, shape, dtype, reference_name="params"):
        _require_device_array(name, obj, reference_name)
        check_device_like(name, device_layout(obj), shape, dtype, reference_name)
        return as_device_array(obj).reshape(math.prod(shape))

    def overlaps(self, a, b):
        (lo_a, hi_a), (lo_b, hi_b) = _span(a), _span(b)
        return lo_a < hi_b and lo_b < hi_a

    def gradient_views(self, shape, dtype, segments, owner, written):
        return CudaGradientViews(shape, dtype, segments, owner, written)

    def update_kernel(self, algorithm, size, precision="full"):
        if precision == "8bit":
            blocks = max(1, min(blockwise.blocks_of(size), _max_blocks()))
            return configure(BLOCKWISE[algorithm.name], (blocks, blockwise.BLOCK))
        return launcher(KERNELS[algorithm.name, precision], size)

    def block_workspace(self, states, dtype):
        return cuda.device_array((0, states, blockwise.BLOCK), dtype)  # 8-bit: registers

    def follow_fork(self, owner):
        pass  # a CUDA context does not survive fork(): nothing to rebuild

    def grad_scale(self, value):
        """A cached one-element device array holding ``value`` (copied once per value)."""
        value = float(value)
        scale = self._scales.get(value)
        if scale is None:
            if len(self._scales) > 16:
                self._scales.clear()
            scale = self._scales[value] = cuda.to_device(np.array([value]))
        return scale

    def grad_norm(self, size):
        return CudaGradNorm(size)


def _span(obj):
    _, address, shape, typestr = array_key(obj)
    return address, address + math.prod(shape) * np.dtype(typestr).itemsize


CUDA = CudaBackend()
