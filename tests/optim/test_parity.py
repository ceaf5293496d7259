"""fastopt vs the NumPy reference (bit for bit) and vs torch.optim (to rounding), params and
every state buffer, over many steps with a learning rate that changes every step.
"""

import numpy as np
import pytest

import reference
from registry import CASE_IDS, CASES, DTYPES, assert_close_to_torch, gradients, lr_schedule, make

SIZES = [1, 7, 1027, 100_003]
STEPS = 31


def run_fastopt(name, options, p0, grads):
    p = p0.copy()
    opt = make(name, p, lr=lr_schedule, **options)
    for g in grads:
        assert opt.step(g)
    return p, opt


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_matches_numpy_reference_exactly(name, options, dtype, size, rng):
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, STEPS)
    p, opt = run_fastopt(name, options, p0, grads)

    ref_p = p0.copy()
    ref_state = reference.new_state(name, size, dtype, **options)
    for t, g in enumerate(grads):
        reference.UPDATES[name](ref_p, g, ref_state, lr=lr_schedule(t), **options)

    assert set(opt.state) == set(ref_state)
    np.testing.assert_array_equal(p, ref_p)
    for key, value in ref_state.items():
        np.testing.assert_array_equal(opt.state[key], value, err_msg=key)
        if key != "step":
            assert opt.state[key].dtype == dtype
    assert opt.step_count == STEPS


TORCH_STATE = {
    "momentum_buffer",
    "sum",
    "square_avg",
    "grad_avg",
    "exp_avg",
    "exp_avg_sq",
    "max_exp_avg_sq",
}


def rtol_ulps_for(name, options, dtype):
    # Centered RMSprop with a short memory (alpha < 0.5) divides by sqrt(v - g_avg^2),
    # a difference of nearly equal numbers: rounding differences grow by the condition
    # number (measured up to 4.5e-3 relative in float32, 4e-14 in float64).
    if name == "RMSprop" and options.get("centered") and options.get("alpha", 0.99) < 0.5:
        return 1e-2 / np.finfo(dtype).eps if dtype == np.float32 else 1e-12 / np.finfo(dtype).eps
    return 16


@pytest.mark.torch
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_matches_torch(name, options, dtype, size, rng, torch):
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, STEPS)
    p, opt = run_fastopt(name, options, p0, grads)

    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = getattr(torch.optim, name)([tp], foreach=False, lr=lr_schedule(0), **options)
    for t, g in enumerate(grads):
        for group in topt.param_groups:
            group["lr"] = lr_schedule(t)
        tp.grad = torch.from_numpy(g.copy())
        topt.step()

    grad_scale = np.abs(grads).max(axis=0).astype(np.float64)
    assert_close_to_torch(
        p, tp.detach().numpy(), grad_scale, "param", rtol_ulps=rtol_ulps_for(name, options, dtype)
    )
    tstate = topt.state[tp]
    for key in TORCH_STATE & set(tstate):
        assert_close_to_torch(opt.state[key], tstate[key].numpy(), grad_scale, key)
    assert set(opt.state) - {"step"} == TORCH_STATE & set(tstate)
    if "step" in tstate:
        assert int(tstate["step"]) == opt.state["step"]
