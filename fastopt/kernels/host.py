"""The host backend: NumPy buffers and the update loops compiled with njit.

Each algorithm's loop is compiled twice (:func:`fastopt._jit.serial_and_parallel`): a
serial kernel for segments below :data:`fastopt._config.PARALLEL_MIN_SIZE`, where waking
threads costs more than the update, and a threaded one (``prange``). Host scalars arrive as
Python floats (cheap to pass) and are cast to the buffer dtype once, before the loop, so
float32 buffers are updated in float32 arithmetic. A state buffer an option does not use
(no momentum, no amsgrad, not centered) is passed as an empty array of the buffer dtype.
Kernels trust shapes, dtypes and contiguity: the checks happen before.

Loops run from 0 to ``size`` over whole (already sliced) buffers: a loop over
``range(lo, hi)`` does not vectorise, because the index could be negative and numba adds a
wraparound. A plain ``prange`` loop measured 5-8% faster than a ``prange`` over chunks that
each run the serial loop.
"""

import math
import os
import threading
import weakref

import numba
import numpy as np
from numba import prange

from .. import _config
from .._config import REDUCTION_BLOCK
from .._jit import bind, element, kernel, reduction, serial_and_parallel
from .._validation import check_buffer, check_like
from . import ALGORITHMS, blockwise, int32
from .backend import checked_then_update
from .clipping import clipped_scale
from .precision import LOAD_STORE, numpy_bits_float, numpy_float_bits


@kernel
def _identity(grad_scale):
    return grad_scale


def _load_store(precision):
    load, store = LOAD_STORE[precision]
    casts = {"float_bits": element(numpy_float_bits), "bits_float": element(numpy_bits_float)}
    return (
        element(bind(load, f"{precision}_load_host", **casts)),
        element(bind(store, f"{precision}_store_host", **casts)),
    )


def _compile(algorithm, precision):
    load, store = _load_store(precision)
    suffix = "" if precision == "full" else f"_{precision}"
    return serial_and_parallel(
        algorithm.loop,
        algorithm.name + suffix,
        element=element(algorithm.element),
        indices=prange,
        load_scale=_identity,
        load=load,
        store=store,
    )


def _block_codes():
    """The 8-bit block functions (dequantize, quantize), with the host's int32 intrinsics."""
    ops = int32.HOST
    encode = element(bind(blockwise._encode, "encode_code_host", **ops))
    codes = {
        fn.__name__: element(bind(fn, f"{fn.__name__}_host", encode_code=encode, **ops))
        for fn in (blockwise.decode_signed, blockwise.decode_unsigned,
                   blockwise.encode_signed, blockwise.encode_unsigned)
    }  # fmt: skip
    return (
        element(bind(blockwise.dequantize_tile, "dequantize_tile_host", **codes)),
        element(bind(blockwise.quantize_tile, "quantize_tile_host", **codes, **ops)),
    )


def _compile_blockwise(algorithm, serial_update, codes):
    """The 8-bit kernels: :mod:`fastopt.kernels.blockwise`'s driver around the algorithm's
    full-precision serial loop.
    """
    dequantize, quantize = codes
    signed = {
        f"SIGNED{k}": name not in blockwise.UNSIGNED_STATE for k, name in enumerate(algorithm.state)
    }
    return serial_and_parallel(
        blockwise.DRIVERS[len(algorithm.state)],
        f"{algorithm.name}_8bit",
        update=serial_update,
        dequantize=dequantize,
        quantize=quantize,
        prange=prange,
        **signed,
    )


def _compile_all():
    kernels = {}
    codes = _block_codes()
    for name, algorithm in ALGORITHMS.items():
        for precision in LOAD_STORE:
            kernels[name, precision] = _compile(algorithm, precision)
        kernels[name, "8bit"] = _compile_blockwise(algorithm, kernels[name, "full"][0], codes)
    return kernels


KERNELS = _compile_all()
"""(algorithm name, state precision) -> (serial, threaded) compiled loop."""


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
        partials[b] = _block_sumsq(grad[b * REDUCTION_BLOCK : (b + 1) * REDUCTION_BLOCK])
    total = 0.0
    for b in range(partials.size):
        total += partials[b]
    return total


grad_sumsq_serial, grad_sumsq_parallel = serial_and_parallel(_grad_sumsq, "grad_sumsq")


@kernel
def count_nonfinite(values):
    """Number of NaN or infinite elements."""
    count = 0
    for i in range(values.size):
        if not np.isfinite(values[i]):
            count += 1
    return count


class HostGradNorm:
    """Squared norm of a flat host gradient: float64 partial sums over fixed blocks, the
    same for any thread count.
    """

    def __init__(self, size):
        self.partials = np.empty(-(-size // REDUCTION_BLOCK), np.float64)
        self._reduce = HOST.threaded(grad_sumsq_serial, grad_sumsq_parallel, size)
        self._sumsq = math.nan

    def compute(self, grad, grad_scale, norm_factor, max_norm):
        self._sumsq = self._reduce(grad, self.partials)
        if max_norm is None:
            return grad_scale
        return clipped_scale(grad_scale, self._sumsq, norm_factor, max_norm)

    def sumsq(self):
        return self._sumsq

    def nonfinite(self, grad):
        sumsq = self._sumsq
        return not math.isfinite(sumsq) and (math.isnan(sumsq) or bool(count_nonfinite(grad)))


@kernel
def _gradient_hazard(owner, grad, layout):
    """1 if ``owner`` no longer has the address and size recorded in ``layout[:2]`` (it was
    resized or reallocated since the optimizer was built), 2 if ``grad`` overlaps one of
    the ``[start, stop)`` byte ranges in ``layout[2:]``, else 0.
    """
    if owner.ctypes.data != layout[0] or owner.size != layout[1]:
        return 1
    lo = grad.ctypes.data
    hi = lo + grad.size * grad.itemsize
    for k in range(2, layout.size, 2):
        if lo < layout[k + 1] and layout[k] < hi:
            return 2
    return 0


def _checked_update(owner, layout, param, grad, state, grad_scale, scalars):
    """``update(param, grad, *state, grad_scale, *scalars)`` (a serial loop) unless
    :func:`_gradient_hazard` finds a hazard, in one compiled call; returns the hazard.

    A step on a small buffer is mostly call overhead: checking the gradient's memory in
    the same call saves a second dispatch, and the two tuples pass without unpacking
    (``scalars`` a plain tuple: numba types a NamedTuple argument about 0.7 us slower).
    Only serial loops are wrapped: a serial function that calls a threaded one is not
    safe to load from numba's cache.
    """
    hazard = _gradient_hazard(owner, grad, layout)
    if hazard == 0:
        update(param, grad, *state, grad_scale, *scalars)  # noqa: F821  (bound per algorithm)
    return hazard


CHECKED = {
    serial: kernel(bind(_checked_update, f"{serial.py_func.__name__}_checked", update=serial))
    for (_, precision), (serial, _) in KERNELS.items()
    if precision != "8bit"
}
"""Serial loop -> the same loop behind the gradient checks (see :func:`_checked_update`).

Not the 8-bit kernels: numba passes the arguments of a ``*state``, ``*scalars`` call into
their own ``*scalars`` signature wrongly (measured: other values than a direct call), and
from 4,096 elements a separate check costs little."""


def address(array):
    return array.__array_interface__["data"][0]


class HostGradientViews:
    """Checks a caller's gradient: its shape and dtype, that it shares no memory with the
    buffers a step writes (``written``: the parameters and the state), and that the
    parameter array (``owner``) is still where the optimizer's views point.
    """

    def __init__(self, shape, dtype, segments, owner, written):
        self.shape, self.dtype, self.segments = tuple(shape), np.dtype(dtype), segments
        self.whole = len(segments) == 1  # one group: its view is the flat gradient itself
        spans = [[address(a), address(a) + a.nbytes] for a in written]
        self.owner = owner
        self.layout = np.array([address(owner), owner.size, *np.ravel(spans)], np.int64)

    def prepare(self):
        _gradient_hazard(self.owner, np.empty(0, self.dtype), self.layout)

    def views(self, grad):
        check_like("grad", grad, self.shape, self.dtype)
        if _gradient_hazard(self.owner, grad, self.layout):
            raise_hazard(_gradient_hazard(self.owner, grad, self.layout))
        flat = grad if grad.ndim == 1 else grad.reshape(-1)
        return flat, (flat,) if self.whole else [flat[s] for s in self.segments]

    def updater(self, segment):
        """``update(grad, scale, scalars)``: the checks of :meth:`views`, then the segment's
        kernel; a serial kernel runs with the memory checks in the same call.
        """
        checked = CHECKED.get(segment.kernel)
        if checked is None:
            return checked_then_update(self, segment, HOST.grad_scale)
        owner, layout, shape, dtype = self.owner, self.layout, self.shape, self.dtype
        strides, ndarray = (dtype.itemsize,), np.ndarray
        _, param, _, state = segment

        def update(grad, grad_scale, scalars):
            if type(grad) is not ndarray or grad.strides != strides or grad.shape != shape:
                check_like("grad", grad, shape, dtype)  # raises for what is not a flat copy
                grad = grad.reshape(-1)
            elif grad.dtype is not dtype:
                check_like("grad", grad, shape, dtype)  # raises, unless an equal dtype
            hazard = checked(owner, layout, param, grad, state, grad_scale, scalars)
            if hazard:
                raise_hazard(hazard)

        empty_state = tuple(a[:0] if a.ndim == 1 else a for a in state)
        update.prepare = lambda scalars: checked(
            owner, layout, param[:0], np.empty(0, dtype), empty_state, 0.0, tuple(scalars)
        )
        return update


def raise_hazard(hazard):
    if hazard == 1:
        raise RuntimeError(
            "the parameter array was resized or reallocated after the optimizer was built "
            "(its memory is no longer where the optimizer's views point); build a new "
            "optimizer on the array as it is now"
        )
    raise ValueError(
        "grad must not share memory with the parameters or the optimizer's state: the "
        "update writes them while it reads the gradient (some elements of the gradient and "
        "of a written-to buffer refer to a single memory location); pass a separate array"
    )


@kernel(parallel=True)
def _start_threads(values):
    for i in prange(values.size):
        values[i] = 0.0


class Threads:
    """How this process may run the threaded kernels.

    numba's OpenMP layer (the default where libgomp is found; measured as fast as TBB from
    1e6 elements and 2-3 us faster per launch below) is thread-safe but cannot run a
    parallel region in a child forked after the parent ran one (GNU OpenMP aborts the
    child): there the threaded kernels are replaced by the serial ones. TBB
    (``NUMBA_THREADING_LAYER=tbb`` with the ``tbb`` package) is fork-safe and keeps them.
    numba's fallback layer, workqueue, aborts on concurrent use, so with it the threaded
    kernels run one at a time.
    """

    def __init__(self):
        self.usable = True
        self.layer = None
        self.lock = threading.Lock()
        self.followers = weakref.WeakSet()

    def start(self):
        if self.layer is None:
            _start_threads(np.empty(0))
            self.layer = numba.threading_layer()
        return self.layer

    def after_fork_in_child(self):
        self.lock = threading.Lock()
        if self.layer == "omp" and _gnu_openmp():
            self.usable = False
        for follower in list(self.followers):  # new kernels, and locks no thread holds
            follower._build()


def _gnu_openmp():
    from numba.np.ufunc import omppool

    return getattr(omppool, "openmp_vendor", "GNU") == "GNU"


def _one_at_a_time(threaded, lock):
    def locked(*args):
        with lock:
            return threaded(*args)

    locked.py_func, locked.signatures = threaded.py_func, threaded.signatures
    return locked


class HostBackend:
    """NumPy buffers in host memory; see the module docstring."""

    name = "cpu"
    pickles_buffers = True

    def __reduce__(self):
        return "HOST"  # the module's one instance, also after pickling

    def empty(self, size, dtype):
        return np.empty(size, dtype)

    def full(self, size, value, dtype):
        return np.full(size, value, dtype)

    def fill(self, array, value):
        array.fill(value)

    def to_host(self, array):
        return array.copy()

    def from_host(self, values):
        return np.array(values)

    def copy_from_host(self, array, values):
        np.copyto(array, values, casting="same_kind")

    def copy(self, dst, src):
        np.copyto(dst, src)

    def copy_of(self, array):
        return array.copy()

    def owns(self, obj):
        return isinstance(obj, np.ndarray)

    def layout(self, obj):
        return obj.shape, obj.dtype, obj.flags.c_contiguous, obj.flags.writeable

    def check_buffer(self, name, obj, *, writeable=True):
        check_buffer(name, obj, writeable=writeable)
        return obj.reshape(-1)

    def check_like(self, name, obj, shape, dtype, reference_name="params"):
        check_like(name, obj, shape, dtype, reference_name)
        return obj.reshape(-1)

    def overlaps(self, a, b):
        return bool(np.may_share_memory(a, b))

    def gradient_views(self, shape, dtype, segments, owner, written):
        return HostGradientViews(shape, dtype, segments, owner, written)

    threads = Threads()

    def threaded(self, serial, threaded, size):
        """The kernel to run over ``size`` elements: serial below
        :data:`fastopt._config.PARALLEL_MIN_SIZE` or where threads cannot run here.
        """
        if size < _config.PARALLEL_MIN_SIZE or not self.threads.usable:
            return serial
        if self.threads.start() == "workqueue":
            return _one_at_a_time(threaded, self.threads.lock)
        return threaded

    def update_kernel(self, algorithm, size, precision="full"):
        return self.threaded(*KERNELS[algorithm.name, precision], size)

    def follow_fork(self, owner):
        """Rebuild ``owner`` (call its ``_build()``) in a forked child whose kernels must
        change (see :class:`Threads`).
        """
        self.threads.followers.add(owner)

    def grad_scale(self, value):
        return value

    def grad_norm(self, size):
        return HostGradNorm(size)

    def block_workspace(self, states, dtype):
        """Per-thread rows for the 8-bit kernels' decoded blocks (see
        :mod:`fastopt.kernels.blockwise`): one row per state and thread.
        """
        return np.zeros((numba.config.NUMBA_NUM_THREADS, states, blockwise.TILE), dtype)


HOST = HostBackend()
os.register_at_fork(after_in_child=HOST.threads.after_fork_in_child)
