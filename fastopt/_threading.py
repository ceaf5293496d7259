"""Thread count and a guard for processes that also use PyTorch.

numba's OpenMP layer needs ``libgomp.so.1.0.0``. If that system library is loaded first
and ``torch`` is imported afterwards, libtorch binds to the already loaded system copy
instead of its own bundled ``libgomp.so.1``, and some torch operations become orders of
magnitude slower for the rest of the process. Importing torch first does not have that
problem. :func:`preload_torch_openmp` reproduces the good order without importing torch:
when torch is installed but not imported, it loads torch's bundled OpenMP runtime before
numba starts its pool, so a later ``import torch`` finds its own runtime already loaded.

:func:`preload_tbb` makes ``NUMBA_THREADING_LAYER=tbb`` work with the ``tbb`` package
from PyPI: its wheel puts ``libtbb.so.12`` in the environment's ``lib`` folder, where
numba's TBB pool does not look.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import numbers
import os
import sys

import numba

_preloaded = None


def preload_torch_openmp() -> str | None:
    """Load torch's bundled libgomp if torch is installed but not yet imported.

    Returns the path loaded, or None when nothing needed loading. Set the environment
    variable ``FASTOPT_NO_OPENMP_PRELOAD=1`` to switch this off.
    """
    global _preloaded
    if _preloaded is not None or "torch" in sys.modules:
        return _preloaded
    if os.environ.get("FASTOPT_NO_OPENMP_PRELOAD"):
        return None
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for path in sorted(glob.glob(os.path.join(folder, "lib", "libgomp*.so*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            _preloaded = path
            return path
    return None


def preload_tbb() -> str | None:
    """Load the ``tbb`` package's libtbb when numba is asked for its TBB layer.

    Returns the path loaded, or None (another layer asked for, no ``tbb`` package, or a
    libtbb the system already provides).
    """
    if str(numba.config.THREADING_LAYER).lower() != "tbb":
        return None
    try:
        from importlib import metadata

        files = metadata.distribution("tbb").files or ()
    except Exception:  # no tbb package: numba reports what is missing itself
        return None
    for file in files:
        if file.name.startswith("libtbb.so"):
            path = str(file.locate())
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return path
    return None


def set_num_threads(n: int) -> None:
    """Set the number of threads the parallel kernels use (numba's thread count).

    Like numba's setting, it holds for the calling Python thread only: a step run from
    another thread uses that thread's count (every core, unless it sets its own).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"Invalid thread count: {n!r} (expected an integer >= 1)")
    n = int(n)
    maximum = numba.config.NUMBA_NUM_THREADS
    if n > maximum:
        raise ValueError(
            f"Invalid thread count: {n} (expected at most {maximum}, "
            "set NUMBA_NUM_THREADS before import to allow more)"
        )
    numba.set_num_threads(n)


def get_num_threads() -> int:
    """Return the number of threads the parallel kernels use."""
    return numba.get_num_threads()
