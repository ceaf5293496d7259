"""Every argument check and every error message, in one place.

Messages follow torch.optim's wording where torch has one and always name the argument,
the value and the rule. All checks run before any buffer is touched.
"""

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _is_real(value):
    if type(value) is float:  # the usual case, without the ABC check (a step's hot path)
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_number(name, value, rule, ok):
    """Raise ``ValueError(f"Invalid {name}: {value} (expected {rule})")`` unless ``ok(value)``."""
    if not _is_real(value):
        raise TypeError(
            f"Invalid {name}: {value!r} (expected a real number, got {type(value).__name__})"
        )
    if math.isnan(value) or not ok(value):
        raise ValueError(f"Invalid {name}: {value} (expected {rule})")
    return float(value)


def check_lr(value, name="learning rate"):
    """Learning rate: a number >= 0 (inf allowed, as in torch) or a callable schedule."""
    if callable(value):
        return value
    return check_number(name, value, "0 <= lr", lambda v: v >= 0)


def check_nonnegative(name, value):
    return check_number(name, value, f"0 <= {name.split()[0]}", lambda v: v >= 0)


def check_betas(betas):
    try:
        pair = tuple(betas)
    except TypeError:
        raise TypeError(f"Invalid betas: {betas!r} (expected a pair of numbers)") from None
    if len(pair) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (expected a pair of numbers)")
    for index, beta in enumerate(pair):
        check_number(
            f"beta parameter at index {index}", beta, "0 <= beta < 1", lambda v: 0 <= v < 1
        )
    return float(pair[0]), float(pair[1])


def check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid {name}: {value!r} (expected True or False)")
    return bool(value)


def check_float_dtype(name, dtype):
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, but got {dtype}")
    return dtype


def check_buffer(name, array, *, writeable=True):
    """A float32/float64 C-contiguous (and, if asked, writeable) ndarray, not empty."""
    if type(array) is not np.ndarray:
        _not_an_ndarray(name, array)
    check_float_dtype(name, array.dtype)
    if array.size == 0:
        raise ValueError(f"optimizer got an empty parameter list ({name} has size 0)")
    if not array.flags.c_contiguous:
        raise ValueError(
            f"{name} must be C-contiguous (got strides {array.strides} for "
            f"shape {array.shape}); pass np.ascontiguousarray(...) and update "
            "that copy, or pack it with fastopt.FlatParams"
        )
    if writeable and not array.flags.writeable:
        raise ValueError(f"{name} must be writeable, but the array is read-only")
    return array


def check_like(name, array, shape, dtype, reference_name="params"):
    """An ndarray with exactly this shape and dtype (those of ``reference_name``),
    C-contiguous.
    """
    if type(array) is not np.ndarray:
        _not_an_ndarray(name, array)
    if array.shape != tuple(shape):
        raise ValueError(
            f"{name} must have the shape of {reference_name}: expects "
            f"{tuple(shape)} but got {array.shape}"
        )
    if array.dtype != dtype:
        raise TypeError(
            f"{name} must have the dtype of {reference_name}: expects "
            f"{np.dtype(dtype)} but got {array.dtype}"
        )
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got strides {array.strides})")
    return array


def _not_an_ndarray(name, array):
    kind = type(array).__name__
    if isinstance(array, np.ndarray):  # np.matrix, masked arrays, other subclasses
        raise TypeError(
            f"{name} must be a plain numpy.ndarray, but got {kind}, an ndarray subclass "
            f"(whose indexing and arithmetic differ): pass np.asarray({name}), a plain view "
            "of the same memory"
        )
    raise TypeError(f"{name} must be a numpy.ndarray, but got {kind}")


def scheduled_lr(schedule, step, name="learning rate"):
    """Evaluate a schedule on the host and check the value it returns: a real number
    (not a string, bytes, a bool or an array), by the rules of a constant lr.
    """
    value = schedule(step)
    if not _is_real(value):
        raise TypeError(
            f"Invalid {name} from schedule at step {step}: {value!r} (expected a real "
            f"number, got {type(value).__name__})"
        )
    value = float(value)
    if not value >= 0:
        raise ValueError(f"Invalid {name} from schedule at step {step}: {value} (expected 0 <= lr)")
    return value


def check_device_buffer(name, layout):
    """Like :func:`check_buffer`, for a device array's ``(shape, dtype, contiguous,
    writeable)`` (read from its ``__cuda_array_interface__``).
    """
    shape, dtype, contiguous, writeable = layout
    check_float_dtype(name, dtype)
    if math.prod(shape) == 0:
        raise ValueError(f"optimizer got an empty parameter list ({name} has size 0)")
    if not contiguous:
        raise ValueError(
            f"{name} must be C-contiguous (got a strided device array of shape "
            f"{shape}); pass a contiguous copy and update that, or pack it with "
            "fastopt.FlatParams(..., device='cuda')"
        )
    if not writeable:
        raise ValueError(f"{name} must be writeable, but the device array is read-only")


def check_device_like(name, layout, shape, dtype, reference_name="params"):
    """Like :func:`check_like`, for a device array's layout."""
    got_shape, got_dtype, contiguous, _ = layout
    if got_shape != tuple(shape):
        raise ValueError(
            f"{name} must have the shape of {reference_name}: expects "
            f"{tuple(shape)} but got {got_shape}"
        )
    if got_dtype != dtype:
        raise TypeError(
            f"{name} must have the dtype of {reference_name}: expects {dtype} but got {got_dtype}"
        )
    if not contiguous:
        raise ValueError(f"{name} must be C-contiguous (got a strided device array)")
