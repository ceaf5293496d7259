"""Where buffers live: the device names, placement checks and the lazily loaded CUDA backend.

``import fastopt`` never imports numba.cuda: :func:`cuda_backend` imports
:mod:`fastopt.kernels.cuda` the first time something asks for the GPU, and says what is
missing (the ``cuda`` extra, a driver, a GPU) if it cannot be used.
"""
DEVICES = ("cpu", "cuda", "auto")
MISSING_EXTRA = ("device='cuda' needs numba-cuda, which is not installed: "
                 "pip install 'fastopt[cuda]' (numba-cuda with the CUDA 13 toolkit wheels)")


def check_device(device):
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"Invalid device: {device!r} (expected 'cpu', 'cuda' or 'auto')")
    return device


def cuda_backend():
    """The CUDA kernels module, once numba-cuda and a usable GPU are known to be there."""
    try:
        import numba_cuda  # noqa: F401  (numba's own numba.cuda is deprecated; use the package)
    except ImportError:
        raise ImportError(MISSING_EXTRA) from None
    from .kernels import cuda
    cuda.require_gpu()
    return cuda


def is_device_array(obj):
    """A numba.cuda device array or any object exposing ``__cuda_array_interface__``
    (CuPy arrays, torch CUDA tensors), recognised without importing numba.cuda."""
    if getattr(obj, "__cuda_ndarray__", False):
        return True
    try:
        return hasattr(obj, "__cuda_array_interface__")
    except RuntimeError as error:  # torch: a CUDA tensor that requires grad
        raise TypeError(f"{error} -- fastopt updates parameters in place: pass "
                        "tensor.detach(), which shares the tensor's memory") from None


def resolve(device, located, what="params"):
    """The device for buffers found at ``located`` ('cpu' or 'cuda'), as asked by ``device``.

    'auto' follows the buffers. Whenever the answer would be 'cuda', the GPU is checked
    first, so a missing extra or driver is reported before a placement mismatch.
    """
    check_device(device)
    if device == "cuda" or (device == "auto" and located == "cuda"):
        cuda_backend()
    if device in ("auto", located):
        return located
    if device == "cuda":
        raise ValueError(f"device='cuda', but {what} are in host memory (numpy): pack them "
                         "with fastopt.FlatParams(..., device='cuda') or pass a device array "
                         "(numba.cuda, CuPy, a torch CUDA tensor); nothing is copied per step")
    raise ValueError(f"device='cpu', but {what} are in GPU memory: pass device='cuda' (or "
                     "'auto'), or copy them to the host first")
