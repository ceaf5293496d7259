import importlib
import os

import numpy as np
import pytest

# scripts run under mpiexec by test_distributed.py, not test modules; tests/cuda runs in
# its own process (test_cuda.py starts it under the CUDA simulator)
collect_ignore = ["mpi"] + ([] if os.environ.get("FASTOPT_CUDA_TESTS") else ["cuda"])


def required(module, purpose):
    """Import an optional test dependency, or skip; in CI (CI set) it must be there."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is required for {purpose} in CI: pip install -e '.[test]'")
        pytest.skip(f"{module} not installed (pip install -e '.[test]')")


@pytest.fixture(scope="session")
def torch():
    """torch, or a skip; in CI a missing torch fails the test instead."""
    torch_module = required("torch", "the parity tests")
    torch_module.set_num_threads(2)
    return torch_module


@pytest.fixture(scope="session")
def cuda_kernels():
    """fastopt.kernels.cuda, or a skip; in CI a missing numba-cuda fails the test."""
    required("numba_cuda", "the CUDA tests")
    from fastopt.kernels import cuda

    return cuda


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def hide_module(monkeypatch):
    """``hide_module("mpi4py")`` makes importing it fail, as without the optional extra."""
    import builtins

    real_import = builtins.__import__
    hidden = []

    def fake_import(name, *args, **kwargs):
        if any(name == h or name.startswith(h + ".") for h in hidden):
            raise ImportError(f"no {name}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    return hidden.append


@pytest.fixture
def no_matplotlib(hide_module):
    hide_module("matplotlib")
