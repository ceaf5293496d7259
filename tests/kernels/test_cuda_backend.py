"""The CUDA backend without a GPU: the simulator suite (tests/cuda, in its own process),
every kernel compiled for real to PTX, and the errors for a missing extra, driver or GPU.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastopt

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_simulator_suite_passes(cuda_kernels):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTOPT_CUDA_TESTS="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/cuda", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary


def ptx_signatures(dtype, precision="full"):
    from numba import boolean, float64, int64, uint16
    from numba.np.numpy_support import from_dtype

    a, scale, f = from_dtype(np.dtype(dtype))[::1], float64[::1], float64
    s = a if precision == "full" else uint16[::1]
    return {
        "sgd": (a, a, s, scale, f, f, f, f, boolean, boolean),
        "adagrad": (a, a, s, scale, f, f, f),
        "rmsprop": (a, a, s, s, s, scale, f, f, f, f, f, f, boolean),
        "adam": (a, a, s, s, s, scale, f, f, f, f, f, f, f, f, boolean),
        "block_sumsq": (a, float64[::1]),
        "finish_sumsq": (float64[::1], float64[::1], float64[::1], f, f, f, boolean),
        "flag_nonfinite": (a, int64[::1]),
        "fill_kernel": (a, f),
    }


UPDATE_KERNELS = ("sgd", "adagrad", "rmsprop", "adam")


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm80", "sm90"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kernel_compiles_to_ptx(cuda_kernels, dtype, cc):
    """A real NVVM compilation (no GPU needed): catches typing errors the simulator, which
    runs the kernels as Python, would let through.
    """
    from numba import cuda

    suffix = "f32" if dtype == np.float32 else "f64"
    for name, signature in ptx_signatures(dtype).items():
        compiled = cuda_kernels.KERNELS.get((name, "full")) or getattr(cuda_kernels, name)
        ptx, _ = cuda.compile_ptx(compiled.py_func, signature, cc=cc)
        assert f".target sm_{cc[0]}{cc[1]}" in ptx, name
        assert ".approx" not in ptx and "div.full" not in ptx, f"{name}: inexact math"
        if name in UPDATE_KERNELS:
            assert f"ld.global.{suffix}" in ptx and f"st.global.{suffix}" in ptx, name
        if name in ("adagrad", "rmsprop", "adam"):  # IEEE-rounded, as on the CPU
            assert f"div.rn.{suffix}" in ptx and f"sqrt.rn.{suffix}" in ptx, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bfloat16_kernels_compile_to_ptx(cuda_kernels, dtype):
    """The bfloat16-state kernels: 16-bit state loads and stores, float arithmetic, IEEE
    division and square root, and no conversion instruction that would round the state
    differently from the bit operations (``cvt.rn.bf16``).
    """
    from numba import cuda

    suffix = "f32" if dtype == np.float32 else "f64"
    for name in UPDATE_KERNELS:
        signature = ptx_signatures(dtype, "bfloat16")[name]
        compiled = cuda_kernels.KERNELS[name, "bfloat16"]
        ptx, _ = cuda.compile_ptx(compiled.py_func, signature, cc=(8, 0))
        assert "ld.global.u16" in ptx and "st.global.u16" in ptx, name
        assert f"ld.global.{suffix}" in ptx and f"st.global.{suffix}" in ptx, name
        assert ".approx" not in ptx and "bf16" not in ptx, name
        if name != "sgd":
            assert f"div.rn.{suffix}" in ptx and f"sqrt.rn.{suffix}" in ptx, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_8bit_kernels_compile_to_ptx(cuda_kernels, dtype):
    """The 8-bit kernels: byte codes in and out, a shared-memory block maximum, IEEE
    division and square root, float arithmetic in the parameter dtype.
    """
    from numba import boolean, cuda, float64, types, uint8
    from numba.np.numpy_support import from_dtype

    a, scale, f = from_dtype(np.dtype(dtype))[::1], float64[::1], float64
    c, work = uint8[::1], from_dtype(np.dtype(dtype))[:, :, ::1]
    star = types.StarArgTuple.from_types
    signatures = {
        "sgd": (a, a, c, a, work, scale, star((f, f, f, f, boolean, boolean))),
        "adagrad": (a, a, c, a, work, scale, star((f, f, f))),
        "rmsprop": (a, a, c, c, c, a, a, a, work, scale, star((f,) * 6 + (boolean,))),
        "adam": (a, a, c, c, c, a, a, a, work, scale, star((f,) * 8 + (boolean,))),
    }
    suffix = "f32" if dtype == np.float32 else "f64"
    for name, signature in signatures.items():
        compiled = cuda_kernels.BLOCKWISE[name]
        ptx, _ = cuda.compile_ptx(compiled.py_func, signature, cc=(8, 0))
        assert "ld.global.u8" in ptx and "st.global.u8" in ptx, name
        assert "bar.sync" in ptx and ".shared" in ptx, name
        assert f"st.global.{suffix}" in ptx and ".approx" not in ptx, name
        if name != "sgd":
            assert f"div.rn.{suffix}" in ptx and f"sqrt.rn.{suffix}" in ptx, name


def test_importing_fastopt_never_imports_numba_cuda():
    code = (
        "import sys, numpy as np, fastopt\n"
        "p = fastopt.FlatParams({'w': np.zeros(3, np.float32)})\n"
        "fastopt.Adam(p, max_grad_norm=1.0).step()\n"
        "loaded = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def no_gpu(cuda_kernels):
    if cuda_kernels.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU error cannot happen")


@pytest.mark.parametrize(
    "make",
    [
        lambda: fastopt.Adam(np.zeros(3, np.float32), device="cuda"),
        lambda: fastopt.SGD(fastopt.FlatParams([np.zeros(3)]), lr=0.1, device="cuda"),
        lambda: fastopt.FlatParams({"w": np.zeros(3)}, device="cuda"),
        lambda: fastopt.FlatParams({"w": np.zeros(3)}).to("cuda"),
    ],
    ids=["array", "flatparams", "pack", "to"],
)
def test_asking_for_cuda_without_a_gpu_says_what_is_missing(cuda_kernels, make):
    no_gpu(cuda_kernels)
    with pytest.raises(
        RuntimeError,
        match=r"device='cuda' needs a usable NVIDIA GPU, but "
        r"none was found: CUDA driver library cannot be found",
    ):
        make()


def test_asking_for_cuda_without_numba_cuda_names_the_extra(hide_module):
    hide_module("numba_cuda")
    with pytest.raises(ImportError, match=r"needs numba-cuda.*pip install 'fastopt\[cuda\]'"):
        fastopt.RMSprop(np.zeros(3), device="cuda")


class FakeDeviceArray:
    """An object with ``__cuda_array_interface__`` only, as CuPy or torch hand one over."""

    def __init__(self, shape, typestr="<f4", strides=None, readonly=False):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "strides": strides,
            "data": (1 << 20, readonly),
            "version": 3,
        }


def test_device_arrays_are_recognised_without_importing_cuda():
    from fastopt.kernels import backend

    assert backend.is_device_array(FakeDeviceArray((3,)))
    assert not backend.is_device_array(np.zeros(3))


def test_cpu_optimizer_refuses_device_arrays_before_touching_cuda():
    with pytest.raises(ValueError, match="device='cpu', but params are in GPU memory"):
        fastopt.Adam(FakeDeviceArray((4,)), device="cpu")


@pytest.mark.parametrize("device", ["gpu", "CUDA", None, 0])
def test_invalid_device_names(device):
    with pytest.raises(
        ValueError,
        match=r"Invalid device: .* \(expected 'cpu', 'cuda' or "
        r"'auto'\)",
    ):
        fastopt.SGD(np.zeros(3), lr=0.1, device=device)


@pytest.mark.parametrize(
    "array, error, message",
    [
        (FakeDeviceArray((3, 4), strides=(4, 16)), ValueError, "must be C-contiguous"),
        (FakeDeviceArray((3,), readonly=True), ValueError, "must be writeable"),
        (FakeDeviceArray((3,), typestr="<f2"), TypeError, "must be float32 or float64"),
        (FakeDeviceArray((0,)), ValueError, "empty parameter list"),
    ],
)
def test_device_array_layout_checks(cuda_kernels, array, error, message):
    from fastopt._validation import check_device_buffer

    with pytest.raises(error, match=message):
        check_device_buffer("params", cuda_kernels.device_layout(array))


def test_device_array_layout_of_a_contiguous_array(cuda_kernels):
    from fastopt._validation import check_device_like

    layout = cuda_kernels.device_layout(FakeDeviceArray((3, 4), strides=(16, 4)))
    assert layout == ((3, 4), np.dtype(np.float32), True, True)
    check_device_like("grad", layout, (3, 4), np.dtype(np.float32))
    with pytest.raises(ValueError, match=r"expects \(12,\) but got \(3, 4\)"):
        check_device_like("grad", layout, (12,), np.dtype(np.float32))


class RequiresGradTensor:
    """Behaves like a torch CUDA tensor that requires grad: its interface raises."""

    @property
    def __cuda_array_interface__(self):
        raise RuntimeError(
            "Can't get __cuda_array_interface__ on Variable that requires "
            "grad. If gradients aren't required, use var.detach() to get "
            "Variable that doesn't require grad."
        )


def test_a_tensor_that_requires_grad_gets_a_fastopt_error():
    with pytest.raises(TypeError, match=r"requires grad.*pass tensor\.detach\(\), which shares"):
        fastopt.Adam(RequiresGradTensor())
    with pytest.raises(TypeError, match=r"pass tensor\.detach\(\)"):
        fastopt.FlatParams([RequiresGradTensor()])


def test_small_grids_are_configured_without_a_low_occupancy_warning(cuda_kernels, monkeypatch):
    """numba-cuda warns for grids under 128 blocks; fastopt asks for small grids on
    purpose (small groups, the reduction's one-block second pass).
    """
    import warnings

    if cuda_kernels.simulated():
        pytest.skip("the simulator does not warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Warning, match="Grid size 1 will likely result"):
            cuda_kernels.block_sumsq[1, 8]
        cuda_kernels.configure(cuda_kernels.block_sumsq, (1, 8))
        monkeypatch.setattr(cuda_kernels, "MAX_BLOCKS", 3)  # no device to ask here
        cuda_kernels.launcher(cuda_kernels.KERNELS["adam", "full"], 10)
