"""Kernel properties: one compilation per dtype, no allocation, serial == parallel, clipping,
non-finite gradients and parameter groups.
"""

import tracemalloc

import numpy as np
import pytest
from numba.core.runtime import _nrt_python, rtsys

import fastopt
from fastopt import _config
from fastopt.kernels import host

import reference
from registry import CASE_IDS, CASES, gradients, lr_schedule, make

KERNELS = [kernel for pair in host.KERNELS.values() for kernel in pair] + [
    host.grad_sumsq_serial,
    host.grad_sumsq_parallel,
]
CHECKED = list(host.CHECKED.values())  # compiled per dtype and parameter ndim


def signature_count():
    return {k.__name__: len(k.signatures) for k in KERNELS + CHECKED}


@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_no_recompilation_across_steps_and_one_compilation_per_dtype(name, options, rng):
    for dtype in (np.float32, np.float64):
        for size in (1000, 70_001):
            p = rng.standard_normal(size).astype(dtype)
            opt = make(name, p, lr=lr_schedule, max_grad_norm=10.0, **options)
            opt.step(np.ones(size, dtype))
    before = signature_count()
    for dtype in (np.float32, np.float64):
        for size in (999, 70_003):
            p = rng.standard_normal(size).astype(dtype)
            opt = make(name, p, lr=lr_schedule, max_grad_norm=10.0, **options)
            for t in range(40):
                opt.param_groups[0]["weight_decay"] = 0.0 if t % 2 else 0.01
                opt.step(rng.standard_normal(size).astype(dtype))
    assert signature_count() == before
    for kernel in KERNELS:
        dtypes = [s[0].dtype for s in kernel.signatures]
        assert len(dtypes) == len(set(dtypes)), (kernel.__name__, kernel.signatures)


def flatparams_clipped(name, options, rng):
    """Threaded kernels, the norm reduction, a schedule: ``(step, arrays per step)``."""
    size = 100_003
    fp = fastopt.FlatParams([rng.standard_normal(size).astype(np.float32)])
    opt = make(name, fp, lr=lr_schedule, max_grad_norm=1.0, skip_nonfinite=True, **options)
    fp.grad[:] = rng.standard_normal(size)
    # numba wraps each ndarray argument in a small MemInfo on entry (freed on return);
    # anything beyond one per array argument would be an allocation inside a kernel.
    arrays = sum(2 + len(state) for *_, state in opt._plan.segments) + 2
    return opt.step, arrays


def array_with_gradient(name, options, rng):
    """A serial kernel behind the fused gradient checks, constant hyperparameters."""
    size = 10_000  # below PARALLEL_MIN_SIZE; one float32 temporary would be 40 kB
    opt = make(name, rng.standard_normal(size).astype(np.float32), lr=0.01, **options)
    grad = rng.standard_normal(size).astype(np.float32)
    assert opt._plan.segments[0].kernel in host.CHECKED
    (state,) = [segment.state for segment in opt._plan.segments]
    return lambda: opt.step(grad), 4 + len(state)  # owner, layout, param, grad, state


@pytest.mark.parametrize("setup", [flatparams_clipped, array_with_gradient])
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_step_allocates_nothing(name, options, setup, rng):
    step, arrays_per_step = setup(name, options, rng)
    step()
    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    nrt_before = rtsys.get_allocation_stats()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(50):
            step()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nrt_after = rtsys.get_allocation_stats()
    if not was_enabled:
        _nrt_python.memsys_disable_stats()
    assert nrt_after.alloc - nrt_before.alloc == 50 * arrays_per_step
    assert nrt_after.free - nrt_before.free == 50 * arrays_per_step
    assert current - baseline < 1024
    # one float32 temporary of the buffer would be 400 kB
    assert peak - baseline < 16 * 1024


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_serial_and_parallel_paths_agree_bit_for_bit(name, options, dtype, rng, monkeypatch):
    size = 40_009
    grads = gradients(rng, size, dtype, 12)
    p0 = rng.standard_normal(size).astype(dtype)
    results = []
    for threshold in (10**12, 1):
        monkeypatch.setattr(_config, "PARALLEL_MIN_SIZE", threshold)
        p = p0.copy()
        opt = make(name, p, lr=lr_schedule, max_grad_norm=50.0, **options)
        compiled = host.KERNELS[opt.algorithm.name, "full"]
        assert opt._plan.segments[0].kernel is compiled[threshold == 1]
        for g in grads:
            opt.step(g)
        results.append((p, opt.state))
    (p_serial, s_serial), (p_parallel, s_parallel) = results
    assert p_serial.tobytes() == p_parallel.tobytes()
    for key in s_serial:
        assert np.asarray(s_serial[key]).tobytes() == np.asarray(s_parallel[key]).tobytes()


def test_grad_norm_is_the_same_for_any_thread_count(rng):
    g = (rng.standard_normal(1_000_003) * 3).astype(np.float32)
    partials = np.empty(-(-g.size // _config.REDUCTION_BLOCK))
    serial = host.grad_sumsq_serial(g, partials)
    threads = fastopt.get_num_threads()
    try:
        values = []
        for n in range(1, threads + 1):
            fastopt.set_num_threads(n)
            values.append(host.grad_sumsq_parallel(g, partials))
    finally:
        fastopt.set_num_threads(threads)
    assert all(v == serial for v in values)
    np.testing.assert_allclose(
        fastopt.functional.grad_norm(g), np.linalg.norm(g.astype(np.float64)), rtol=1e-13
    )


@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_clipping_matches_reference_with_scaled_gradient(name, options, rng):
    size = 5003
    grads = gradients(rng, size, np.float64, 10)
    p0 = rng.standard_normal(size)
    p = p0.copy()
    opt = make(name, p, lr=lr_schedule, max_grad_norm=20.0, **options)
    ref_p, ref_state = p0.copy(), reference.new_state(name, size, np.float64, **options)
    clipped = 0
    for t, g in enumerate(grads):
        opt.step(g)
        scale = reference.clip_scale(g, 20.0)
        clipped += scale < 1
        reference.UPDATES[name](ref_p, g, ref_state, lr=lr_schedule(t), grad_scale=scale, **options)
        np.testing.assert_allclose(opt.last_grad_norm, np.linalg.norm(g), rtol=1e-13)
    assert clipped >= 5
    np.testing.assert_allclose(p, ref_p, rtol=1e-12, atol=1e-13)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipping_matches_torch_clip_grad_norm(dtype, rng, torch):
    size = 2049
    grads = gradients(rng, size, dtype, 15)
    p0 = rng.standard_normal(size).astype(dtype)
    p = p0.copy()
    opt = fastopt.Adam(p, lr=0.01, max_grad_norm=30.0)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.Adam([tp], lr=0.01, foreach=False)
    for g in grads:
        opt.step(g)
        tp.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_norm_([tp], 30.0, foreach=False)
        topt.step()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=rtol, atol=rtol * 0.1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("size", [7, 100_003])
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_skip_nonfinite_leaves_everything_untouched(name, options, size, bad, rng):
    p = rng.standard_normal(size).astype(np.float32)
    opt = make(name, p, lr=0.01, skip_nonfinite=True, **options)
    opt.step(rng.standard_normal(size).astype(np.float32))
    before = p.copy(), {k: np.copy(v) for k, v in opt.state.items()}
    g = rng.standard_normal(size).astype(np.float32)
    g[size // 2] = bad
    assert opt.step(g) is False
    assert opt.last_step_skipped and opt.skipped_steps == 1 and opt.step_count == 1
    assert p.tobytes() == before[0].tobytes()
    for key, value in before[1].items():
        assert np.asarray(opt.state[key]).tobytes() == value.tobytes()
    g[size // 2] = 0.0
    assert opt.step(g) is True and opt.step_count == 2 and not opt.last_step_skipped


def test_huge_finite_float64_gradient_is_not_skipped():
    p = np.zeros(4)
    opt = fastopt.SGD(p, lr=1e-200, skip_nonfinite=True)
    g = np.array([1e200, -1e200, 3.0, 0.0])  # its sum of squares overflows
    assert opt.step(g) is True
    np.testing.assert_array_equal(p, [-1.0, 1.0, -3e-200, 0.0])


@pytest.mark.torch
def test_nan_gradient_with_clipping_spreads_like_torch_clip_grad_norm(rng, torch):
    p0 = rng.standard_normal(9).astype(np.float32)
    g = rng.standard_normal(9).astype(np.float32)
    g[2] = np.nan
    p = p0.copy()
    fastopt.SGD(p, lr=0.1, max_grad_norm=1.0).step(g)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    tp.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_([tp], 1.0)
    torch.optim.SGD([tp], lr=0.1).step()
    np.testing.assert_array_equal(np.isnan(p), np.isnan(tp.detach().numpy()))
    assert np.isnan(p).all()


@pytest.mark.torch
def test_nonfinite_gradient_propagates_by_default_like_torch(rng, torch):
    p0 = rng.standard_normal(9).astype(np.float32)
    g = rng.standard_normal(9).astype(np.float32)
    g[4] = np.nan
    p = p0.copy()
    fastopt.Adam(p, lr=0.1).step(g)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    tp.grad = torch.from_numpy(g.copy())
    torch.optim.Adam([tp], lr=0.1, foreach=False).step()
    np.testing.assert_array_equal(np.isnan(p), np.isnan(tp.detach().numpy()))
    assert np.isnan(p[4]) and np.isfinite(np.delete(p, 4)).all()


def test_parameter_groups_equal_separate_optimizers(rng):
    arrays = {
        "W1": rng.standard_normal((30, 20)),
        "b1": rng.standard_normal(20),
        "W2": rng.standard_normal((20, 5)),
        "b2": rng.standard_normal(5),
    }
    fp = fastopt.FlatParams(arrays, groups={"bias": ["b1", "b2"], "head": ["W2"]})
    assert fp.segments["bias"] == slice(0, 25) and fp.segments["default"] == slice(125, 725)
    opt = fastopt.AdamW(
        fp,
        lr=lr_schedule,
        weight_decay=0.1,
        param_groups=[{"params": "bias", "weight_decay": 0.0}, {"params": ["W2"], "lr_scale": 3.0}],
    )
    assert [(g["params"], g["start"], g["stop"]) for g in opt.param_groups] == [
        ("bias", 0, 25),
        (["W2"], 25, 125),
        ("default", 125, 725),
    ]
    assert len(opt._plan.segments) == 3

    parts = {k: fp.data[s].copy() for k, s in fp.segments.items()}
    separate = {
        "bias": fastopt.AdamW(parts["bias"], lr=lr_schedule, weight_decay=0.0),
        "head": fastopt.AdamW(parts["head"], lr=lambda t: 3.0 * lr_schedule(t), weight_decay=0.1),
        "default": fastopt.AdamW(parts["default"], lr=lr_schedule, weight_decay=0.1),
    }
    for _ in range(12):
        fp.grad[:] = rng.standard_normal(fp.size)
        opt.step()
        for key, s in fp.segments.items():
            separate[key].step(fp.grad[s].copy())
    for key, s in fp.segments.items():
        assert fp.data[s].tobytes() == parts[key].tobytes(), key
    assert opt.last_lrs == [lr_schedule(11), 3.0 * lr_schedule(11), lr_schedule(11)]


def test_group_slices_on_a_plain_array_leave_gaps_to_the_default_group(rng):
    p = rng.standard_normal(100)
    opt = fastopt.SGD(p, lr=0.1, param_groups=[{"params": slice(40, 60), "lr": 0.0}])
    assert [(g["start"], g["stop"]) for g in opt.param_groups] == [(0, 40), (40, 60), (60, 100)]
    before = p.copy()
    opt.step(np.ones(100))
    np.testing.assert_array_equal(p[40:60], before[40:60])
    np.testing.assert_allclose(p[:40], before[:40] - 0.1)
    np.testing.assert_allclose(p[60:], before[60:] - 0.1)


def test_last_grad_norm_is_reported_for_a_skipped_step():
    opt = fastopt.Adam(np.zeros(3), skip_nonfinite=True)
    opt.step(np.array([3.0, 4.0, 0.0]))
    assert opt.last_grad_norm == 5.0
    assert opt.step(np.array([np.inf, 0.0, 0.0])) is False
    assert opt.last_grad_norm == np.inf


def test_set_num_threads_takes_numpy_integers_and_refuses_other_numbers():
    before = fastopt.get_num_threads()
    try:
        fastopt.set_num_threads(np.int64(1))
        assert fastopt.get_num_threads() == 1
        for bad in (1.0, True, np.float64(2.0), 0):
            with pytest.raises(ValueError, match=r"Invalid thread count"):
                fastopt.set_num_threads(bad)
    finally:
        fastopt.set_num_threads(before)
