"""On a real GPU only (the simulator has no ``__cuda_array_interface__``): CuPy arrays and
torch CUDA tensors updated in place, zero-copy, and fastopt against torch's fused CUDA Adam
on the same device. Collected only when the tests run on a GPU (see conftest.py).
"""

import numpy as np
import pytest

import fastopt

from cuda_helpers import SIZES, assert_same
from registry import gradients, lr_schedule

STEPS = 5


def test_cupy_arrays_are_updated_in_place(rng):
    cupy = pytest.importorskip("cupy")
    size = SIZES[-1]
    p0 = rng.standard_normal(size).astype(np.float32)
    grads = gradients(rng, size, np.float32, STEPS)
    params = cupy.asarray(p0)
    address = params.data.ptr
    opt = fastopt.Adam(params, lr=lr_schedule, amsgrad=True)
    assert opt.device == "cuda"
    for g in grads:
        assert opt.step(cupy.asarray(g))
    cpu_p = p0.copy()
    cpu = fastopt.Adam(cpu_p, lr=lr_schedule, amsgrad=True)
    for g in grads:
        cpu.step(g)
    assert params.data.ptr == address
    scale = np.abs(grads).max(axis=0).astype(np.float64)
    assert_same(cupy.asnumpy(params), cpu_p, scale)
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        squared = scale if key == "exp_avg" else scale**2
        assert_same(opt.state_dict()[key], cpu.state[key], squared, key)


def test_flatparams_views_wrap_zero_copy_in_cupy(rng):
    cupy = pytest.importorskip("cupy")
    fp = fastopt.FlatParams({"W": np.ones((3, 4)), "b": np.zeros(4)}, device="cuda")
    opt = fastopt.SGD(fp, lr=0.5)
    cupy.asarray(fp.grads["W"])[...] = 2.0  # writes into fp.grad
    assert opt.step()
    np.testing.assert_array_equal(fp.params["W"].copy_to_host(), 0.0)
    np.testing.assert_array_equal(fp.params["b"].copy_to_host(), 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "options",
    [{}, {"amsgrad": True, "weight_decay": 0.01, "decoupled_weight_decay": True}],
    ids=["adam", "adamw-amsgrad"],
)
def test_matches_torch_fused_cuda_adam_on_torch_tensors(options, dtype, rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here")
    size = SIZES[-1]
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, np.dtype(dtype), STEPS)
    mine = torch.tensor(p0, device="cuda")
    opt = fastopt.Adam(mine, lr=1e-2, **options)
    theirs = torch.nn.Parameter(torch.tensor(p0, device="cuda"))
    torch_options = dict(options)
    name = "AdamW" if torch_options.pop("decoupled_weight_decay", False) else "Adam"
    reference = getattr(torch.optim, name)([theirs], lr=1e-2, fused=True, **torch_options)
    for g in grads:
        tg = torch.tensor(g, device="cuda")
        assert opt.step(tg)
        theirs.grad = tg.clone()
        reference.step()
    torch.cuda.synchronize()
    scale = np.abs(grads).max(axis=0).astype(np.float64)
    assert_same(mine.cpu().numpy(), theirs.detach().cpu().numpy(), scale)
    state = reference.state[theirs]
    assert_same(opt.state_dict()["exp_avg"], state["exp_avg"].cpu().numpy(), scale, "exp_avg")
    assert_same(
        opt.state_dict()["exp_avg_sq"], state["exp_avg_sq"].cpu().numpy(), scale**2, "exp_avg_sq"
    )


def test_a_torch_parameter_that_requires_grad_is_refused_clearly():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here")
    p = torch.nn.Parameter(torch.zeros(8, device="cuda"))
    with pytest.raises(TypeError, match=r"pass tensor\.detach\(\)"):
        fastopt.Adam(p)
    opt = fastopt.Adam(p.detach(), lr=0.1)  # shares p's memory
    opt.step(torch.ones(8, device="cuda"))
    torch.cuda.synchronize()
    assert float(p.detach().sum()) == pytest.approx(-0.8, rel=1e-6)
