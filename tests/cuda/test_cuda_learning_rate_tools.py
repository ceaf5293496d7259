"""The learning-rate tools on parameters that live on the GPU: the sweep, the range test
and the gradient check give what they give on the host, and restore the device buffers.
"""

import numpy as np
import pytest
from numba import cuda

import fastopt

A = np.random.default_rng(3).standard_normal((12, 6))
B = np.random.default_rng(4).standard_normal(12)
W0 = {"w": np.random.default_rng(5).standard_normal(4), "c": np.zeros(2)}


def host(array):
    return array if isinstance(array, np.ndarray) else array.copy_to_host()


def write(grad, values):
    if isinstance(grad, np.ndarray):
        grad[:] = values
    else:
        grad.copy_to_device(values)


def least_squares(params, grad, *, wrong=False):
    w = host(params.data if isinstance(params, fastopt.FlatParams) else params)
    r = A @ w - B
    g = A.T @ r
    if wrong:
        g[3] *= 1.5
    write(grad, g)
    return 0.5 * float(r @ r)


def both(device):
    return fastopt.FlatParams(dict(W0), device=device)


def test_sweep_on_the_gpu_matches_the_host_and_restores_the_buffers():
    results = {}
    for device in ("cpu", "cuda"):
        fp = both(device)
        assert fp.device == device
        fp.grad.copy_to_device(np.full(6, 7.0)) if device == "cuda" else fp.grad.fill(7.0)
        results[device] = fastopt.sweep(
            least_squares,
            fp,
            optimizer=fastopt.Adam,
            lrs=[1e-3, 1e-2, 1e-1, 1.0, 10.0],
            iterations=8,
        )
        np.testing.assert_array_equal(host(fp.data), both("cpu").data)
        np.testing.assert_array_equal(host(fp.grad), 7.0)
    gpu, cpu = results["cuda"], results["cpu"]
    np.testing.assert_array_equal(gpu.costs, cpu.costs)
    assert gpu.verdicts == cpu.verdicts and gpu.best_lr == cpu.best_lr
    assert gpu.best_lr is not None


def test_range_test_on_a_plain_device_array():
    p0 = np.concatenate([W0["w"], W0["c"]])
    d = cuda.to_device(p0)
    gpu = fastopt.lr_range_test(least_squares, d, optimizer=fastopt.SGD, iterations=12)
    cpu = fastopt.lr_range_test(least_squares, p0.copy(), optimizer=fastopt.SGD, iterations=12)
    np.testing.assert_array_equal(gpu.costs, cpu.costs)
    assert gpu.suggested_lr == cpu.suggested_lr
    np.testing.assert_array_equal(d.copy_to_host(), p0)


def test_gradient_check_finds_a_wrong_gradient_on_the_gpu():
    fp = both("cuda")
    good = fastopt.check_grad(least_squares, fp)
    bad = fastopt.check_grad(lambda p, g: least_squares(p, g, wrong=True), fp)
    assert good.ok and not bad.ok
    assert bad.worst_name == "w[3]"
    np.testing.assert_array_equal(fp.data.copy_to_host(), both("cpu").data)


def test_a_device_array_of_several_dimensions_is_refused():
    with pytest.raises(ValueError, match="must be a 1-D array"):
        fastopt.sweep(least_squares, cuda.to_device(np.zeros((2, 3))))
