"""The CUDA backend's tests: kernels vs the CPU kernels vs the NumPy reference.

They run in their own process, either under numba-cuda's simulator (``tests/test_cuda.py``
launches ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda``; the variable must be set
before numba is imported) or on a machine with a GPU (``FASTOPT_CUDA_TESTS=1 python -m
pytest tests/cuda``). Launches are shrunk so that small arrays span several blocks and the
grid-stride loops wrap around.
"""

import numpy as np
import pytest

from fastopt.kernels import cuda as kernels

from cuda_helpers import MAX_BLOCKS, SIMULATED, THREADS

# CuPy and torch tensors need a real device (the simulator has no __cuda_array_interface__)
collect_ignore = ["test_cuda_interop.py"] if SIMULATED else []


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    monkeypatch.setattr(kernels, "THREADS_PER_BLOCK", THREADS)
    monkeypatch.setattr(kernels, "MAX_BLOCKS", MAX_BLOCKS)


@pytest.fixture
def rng():
    return np.random.default_rng(2024)
