"""Launch sizes and comparisons shared by the CUDA tests (see conftest.py)."""

import numpy as np
from numba import cuda

from fastopt.kernels import cuda as kernels

SIMULATED = kernels.simulated()
if not SIMULATED and not cuda.is_available():
    raise RuntimeError(
        "tests/cuda needs NUMBA_ENABLE_CUDASIM=1 (set before numba is imported) or a GPU"
    )

# the simulator runs every thread in Python: keep arrays small there
SIZES = [1, 7, 67] if SIMULATED else [1, 7, 1027, 100_003]
THREADS = 8 if SIMULATED else 128
MAX_BLOCKS = 3


def assert_same(actual, desired, grad_scale=None, name="param"):
    """Bit for bit under the simulator (it runs the shared per-element math in NumPy); on a
    GPU to a few ulp, since NVVM contracts multiply-adds into FMAs (see the backend's
    docstring): the tolerance of the torch parity tests.
    """
    if SIMULATED:
        np.testing.assert_array_equal(actual, desired, err_msg=name)
        return
    from registry import assert_close_to_torch

    scale = np.abs(desired) if grad_scale is None else grad_scale
    assert_close_to_torch(actual, desired, scale, name)
