"""What an optimizer updates, and where: the parameter types and their placement checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..buffers import FlatParams
from ..kernels import backend as backends

Params = FlatParams | np.ndarray | Any
"""What an optimizer updates: a FlatParams, a NumPy array or a device array."""
LearningRate = float | Callable[[int], float]
"""A learning rate: a number, or a schedule ``step -> lr`` evaluated once per step."""


def resolve_params(params, device):
    """``(params, flat parameter view, backend)`` after the placement and layout checks."""
    if isinstance(params, FlatParams):
        backend = backends.resolve(device, params.device)
        return params, backend.check_buffer("params", params.data), backend
    if not isinstance(params, np.ndarray) and not backends.is_device_array(params):
        raise TypeError(
            "params argument given to the optimizer should be a fastopt.FlatParams, "
            "a numpy.ndarray or a device array (numba.cuda, CuPy, a torch CUDA "
            f"tensor), but got {type(params).__name__}"
        )
    backend = backends.resolve(device, backends.located(params))
    return params, backend.check_buffer("params", params), backend
