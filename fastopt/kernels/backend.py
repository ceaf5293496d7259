"""Where buffers live: the backend interface, the device names and placement.

A backend allocates and copies flat buffers, checks the arrays callers hand in, and runs an
algorithm's update loop and the gradient-norm reduction over them. Two implement it:
:data:`fastopt.kernels.host.HOST` (NumPy buffers, njit loops, threaded above a size) and
:data:`fastopt.kernels.cuda.CUDA` (numba.cuda device arrays and kernels). The optimizers,
:class:`fastopt.FlatParams`, :mod:`fastopt.functional` and the learning-rate tools hold a
backend and call it; none of them asks which one it is.

``import fastopt`` never imports numba.cuda: :func:`cuda_backend` imports
:mod:`fastopt.kernels.cuda` the first time something asks for the GPU, and says what is
missing (the ``cuda`` extra, a driver, a GPU) if it cannot be used.
"""

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ._algorithm import Algorithm

DEVICES = ("cpu", "cuda", "auto")
MISSING_EXTRA = (
    "device='cuda' needs numba-cuda, which is not installed: "
    "pip install 'fastopt[cuda]' (numba-cuda with the CUDA 13 toolkit wheels)"
)


class GradNorm(Protocol):
    """A backend's workspace for the squared L2 norm of one flat gradient size."""

    def compute(
        self, grad: Any, grad_scale: float, norm_factor: float, max_norm: float | None
    ) -> Any:
        """Reduce ``grad``; return the kernels' ``grad_scale`` argument: ``grad_scale``
        clipped for a norm of ``sqrt(sumsq) * norm_factor`` to ``max_norm``
        (:func:`fastopt.kernels.clipping.clipped_scale`), or unclipped for None.
        """

    def sumsq(self) -> float:
        """The last computed sum of squares, on the host (a GPU synchronises here)."""

    def nonfinite(self, grad: Any) -> bool:
        """Whether the last reduced gradient holds a NaN or an infinity."""


class GradientViews(Protocol):
    """Checks a caller's gradient against the parameters and returns flat views of it."""

    def views(self, grad: Any) -> tuple[Any, list]:
        """``(flat gradient, one view per segment)``, after the checks: shape and dtype,
        no memory shared with a written buffer, parameters not moved since built.
        """

    def prepare(self) -> None:
        """Compile what :meth:`views` runs."""

    def updater(self, segment: Any) -> Callable[[Any, float, tuple], None]:
        """``update(grad, scale, scalars)`` for an optimizer with one segment (a
        :class:`fastopt.optim.step.Segment`): the checks of :meth:`views`, then the
        segment's kernel on the caller's gradient, with ``scale`` (a host float) as its
        gradient scale. ``update.prepare(scalars)`` compiles it.
        """


def checked_then_update(
    views: GradientViews, segment: Any, grad_scale: Callable[[float], Any]
) -> Callable[[Any, float, tuple], None]:
    """:meth:`GradientViews.updater` as :meth:`GradientViews.views`, then the kernel
    (``grad_scale``: the backend's :meth:`Backend.grad_scale`).
    """
    kernel, param, _, state = segment

    def update(grad, scale, scalars):
        flat, _ = views.views(grad)
        kernel(param, flat, *state, grad_scale(scale), *scalars)

    update.prepare = lambda scalars: None  # views.prepare() and the kernel's own
    return update


class Backend(Protocol):
    """The operations every backend offers, on its own kind of 1-D buffer."""

    name: str
    """The device name: "cpu" or "cuda"."""
    pickles_buffers: bool
    """Whether its buffers can be pickled (host memory)."""

    def empty(self, size: int, dtype: np.dtype) -> Any: ...
    def full(self, size: int, value: float, dtype: np.dtype) -> Any: ...
    def fill(self, array: Any, value: float) -> None: ...
    def to_host(self, array: Any) -> np.ndarray:
        """A host copy of a buffer."""

    def from_host(self, values: np.ndarray) -> Any:
        """A new buffer holding a copy of host values."""

    def copy_from_host(self, array: Any, values: np.ndarray) -> None:
        """Copy host values into a buffer (converting to its dtype)."""

    def copy(self, dst: Any, src: Any) -> None:
        """Copy one of this backend's buffers into another of the same size."""

    def copy_of(self, array: Any) -> Any: ...

    def owns(self, obj: Any) -> bool:
        """Whether ``obj`` is an array in this backend's memory."""

    def layout(self, obj: Any) -> tuple[tuple[int, ...], np.dtype, bool, bool]:
        """``(shape, dtype, c_contiguous, writeable)`` of one of its arrays."""

    def check_buffer(self, name: str, obj: Any, *, writeable: bool = True) -> Any:
        """A flat view of a caller's float32/float64 C-contiguous array, checked."""

    def check_like(
        self,
        name: str,
        obj: Any,
        shape: tuple[int, ...],
        dtype: np.dtype,
        reference_name: str = "params",
    ) -> Any:
        """A flat view of an array that must have exactly this shape and dtype."""

    def overlaps(self, a: Any, b: Any) -> bool:
        """Whether two of its arrays may share memory."""

    def gradient_views(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype,
        segments: list[slice],
        owner: Any,
        written: list[Any],
    ) -> GradientViews:
        """The gradient checks of one optimizer: ``owner`` is the parameter array as given,
        ``written`` the buffers a step writes (a gradient may overlap none of them).
        """

    def update_kernel(
        self, algorithm: Algorithm, size: int, precision: str = "full"
    ) -> Callable[..., None]:
        """The compiled update of ``algorithm`` for a segment of ``size`` elements with
        state stored in ``precision`` (:mod:`fastopt.kernels.precision`), called as
        ``kernel(param, grad, *state, grad_scale, *scalars)``.
        """

    def follow_fork(self, owner: Any) -> None:
        """Have ``owner._build()`` called in a forked child whose kernels must change."""

    def grad_scale(self, value: float) -> Any:
        """The kernels' ``grad_scale`` argument for a scale known on the host."""

    def grad_norm(self, size: int) -> GradNorm: ...

    def block_workspace(self, states: int, dtype: np.dtype) -> Any:
        """The workspace argument of the 8-bit kernels (:mod:`fastopt.kernels.blockwise`)."""


def check_device(device):
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"Invalid device: {device!r} (expected 'cpu', 'cuda' or 'auto')")
    return device


def host_backend():
    from .host import HOST

    return HOST


def cuda_backend():
    """The CUDA backend, once numba-cuda and a usable GPU are known to be there."""
    try:
        import numba_cuda  # noqa: F401  (numba's own numba.cuda is deprecated; use the package)
    except ImportError:
        raise ImportError(MISSING_EXTRA) from None
    from .cuda import CUDA, require_gpu

    require_gpu()
    return CUDA


def get(device):
    """The backend of a device name ("cpu" or "cuda")."""
    return cuda_backend() if device == "cuda" else host_backend()


def is_device_array(obj):
    """A numba.cuda device array or any object exposing ``__cuda_array_interface__``
    (CuPy arrays, torch CUDA tensors), recognised without importing numba.cuda.
    """
    if getattr(obj, "__cuda_ndarray__", False):
        return True
    try:
        return hasattr(obj, "__cuda_array_interface__")
    except RuntimeError as error:  # torch: a CUDA tensor that requires grad
        raise TypeError(
            f"{error} -- fastopt updates parameters in place: pass "
            "tensor.detach(), which shares the tensor's memory"
        ) from None


def of(obj):
    """The backend whose memory holds the array ``obj``, or None for anything else."""
    if isinstance(obj, np.ndarray):
        return host_backend()
    if is_device_array(obj):
        return cuda_backend()
    return None


def located(obj):
    """The device name of an array: "cuda" for a device array, else "cpu" (without
    loading the CUDA backend).
    """
    return "cuda" if is_device_array(obj) else "cpu"


def resolve(device, where, what="params"):
    """The backend for buffers found at ``where`` ('cpu' or 'cuda'), as asked by ``device``.

    'auto' follows the buffers. Whenever the answer would be 'cuda', the GPU is checked
    first, so a missing extra or driver is reported before a placement mismatch.
    """
    check_device(device)
    if device == "cuda" or (device == "auto" and where == "cuda"):
        cuda_backend()
    if device in ("auto", where):
        return get(where)
    if device == "cuda":
        raise ValueError(
            f"device='cuda', but {what} are in host memory (numpy): pack them "
            "with fastopt.FlatParams(..., device='cuda') or pass a device array "
            "(numba.cuda, CuPy, a torch CUDA tensor); nothing is copied per step"
        )
    raise ValueError(
        f"device='cpu', but {what} are in GPU memory: pass device='cuda' (or "
        "'auto'), or copy them to the host first"
    )
