"""CUDA kernels == CPU kernels == NumPy reference, params and every state buffer, all options,
float32 and float64, over several steps with a changing learning rate; device buffers,
clipping and skipping on the device, checkpoints, and bad input.
"""

import numpy as np
import pytest
from numba import cuda

import fastopt
from fastopt.kernels import cuda as kernels

import reference
from cuda_helpers import MAX_BLOCKS, SIMULATED, SIZES, THREADS, assert_same
from registry import CASE_IDS, CASES, DTYPES, gradients, lr_schedule, make

STEPS = 5


def run_cpu(name, options, p0, grads, **extra):
    p = p0.copy()
    opt = make(name, p, lr=lr_schedule, **options, **extra)
    results = [opt.step(g) for g in grads]
    return p, opt, results


def run_cuda(name, options, p0, grads, **extra):
    d = cuda.to_device(p0)
    opt = make(name, d, lr=lr_schedule, **options, **extra)
    assert opt.device == "cuda"
    results = [opt.step(cuda.to_device(g)) for g in grads]
    return d.copy_to_host(), opt, results


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_cuda_matches_cpu_kernel_and_reference(name, options, dtype, size, rng):
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, STEPS)
    p, opt, _ = run_cuda(name, options, p0, grads)
    cpu_p, cpu_opt, _ = run_cpu(name, options, p0, grads)
    ref_p, ref_state = p0.copy(), reference.new_state(name, size, dtype, **options)
    for t, g in enumerate(grads):
        reference.UPDATES[name](ref_p, g, ref_state, lr=lr_schedule(t), **options)

    scale = np.abs(grads).max(axis=0).astype(np.float64)
    sd = opt.state_dict()
    assert set(opt.state) == set(ref_state)
    assert sd["step"] == opt.step_count == STEPS
    assert p.dtype == dtype
    assert_same(p, ref_p, scale)
    assert_same(p, cpu_p, scale)
    for key in ref_state:
        if key != "step":
            squared = (
                scale**2 if key in ("sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq") else scale
            )
            assert sd[key].dtype == dtype
            assert_same(sd[key], ref_state[key], squared, key)
            assert_same(sd[key], cpu_opt.state[key], squared, key)


def test_launches_cover_the_buffer_with_a_capped_grid():
    size = SIZES[-1]
    assert kernels.launch_shape(size) == (MAX_BLOCKS, THREADS)
    assert MAX_BLOCKS * THREADS < size  # so the grid-stride loops wrap around
    assert kernels.launch_shape(1) == (1, THREADS)


def test_threads_per_block_must_be_a_power_of_two(monkeypatch):
    monkeypatch.setattr(kernels, "THREADS_PER_BLOCK", 12)
    with pytest.raises(ValueError, match="THREADS_PER_BLOCK: 12"):
        kernels.launch_shape(100)


def flat_params(device, dtype=np.float32):
    rng = np.random.default_rng(7)
    arrays = {
        "W": rng.standard_normal((5, 3)),
        "b": rng.standard_normal(3),
        "c": rng.standard_normal(4),
        "d": rng.standard_normal((2, 2)),
    }
    return fastopt.FlatParams(arrays, dtype=dtype, groups={"no_decay": ["b", "c"]}, device=device)


def test_flatparams_on_device_with_parameter_groups_matches_cpu(rng):
    gpu, cpu = flat_params("cuda"), flat_params("cpu")
    assert (gpu.device, cpu.device) == ("cuda", "cpu")
    np.testing.assert_array_equal(gpu.data.copy_to_host(), cpu.data)
    groups = [
        {"params": "no_decay", "weight_decay": 0.0, "lr_scale": 0.5},
        {"params": slice(7, 9), "lr": 0.05},
    ]
    opts = [
        fastopt.AdamW(fp, lr=lr_schedule, amsgrad=True, param_groups=groups) for fp in (gpu, cpu)
    ]
    assert opts[0].device == "cuda" and len(opts[0].param_groups) == 3
    for _ in range(STEPS):
        for name in cpu.names:
            g = rng.standard_normal(cpu.grads[name].shape).astype(np.float32)
            cpu.grads[name][...] = g
            gpu.grads[name].copy_to_device(g)
        assert all(opt.step() for opt in opts)
    assert_same(gpu.data.copy_to_host(), cpu.data)
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert_same(opts[0].state_dict()[key], opts[1].state[key], name=key)
    assert_same(gpu.params["W"].copy_to_host(), cpu.params["W"])
    gpu.zero_grad()
    assert not gpu.grad.copy_to_host().any()


def test_flatparams_packs_device_arrays_and_moves_between_devices(rng):
    host = {"W": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    fp = fastopt.FlatParams({k: cuda.to_device(v) for k, v in host.items()})
    assert fp.device == "cuda" and fp.dtype == np.float64
    assert "device='cuda'" in repr(fp)
    back = fp.to("cpu")
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.params["W"], host["W"])
    again = back.to("cuda")
    back.data[:] = 0  # copies, not views of each other
    np.testing.assert_array_equal(again.params["b"].copy_to_host(), host["b"])
    view = fp.view(fp.grad)["W"]
    view.copy_to_device(np.ones((4, 3)))
    assert fp.grad.copy_to_host()[fp.slices["W"]].sum() == 12
    with pytest.raises(TypeError, match=r"device array 'W' has dtype float64"):
        fastopt.FlatParams(
            {"W": cuda.to_device(host["W"]), "b": np.zeros(2, np.float32)}, dtype=np.float32
        )


def test_optimizer_on_device_flatparams_uses_its_gradient_buffer():
    fp = flat_params("cuda", np.float64)
    opt = fastopt.SGD(fp, lr=0.5)
    fp.grad.copy_to_device(np.ones(fp.size))
    assert opt.step()
    np.testing.assert_array_equal(fp.data.copy_to_host(), flat_params("cpu", np.float64).data - 0.5)


@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_clipping_is_computed_on_the_device(name, options, rng):
    size = SIZES[-1]
    p0 = rng.standard_normal(size)
    grads = gradients(rng, size, np.float64, STEPS)
    p, opt, _ = run_cuda(name, options, p0, grads, max_grad_norm=2.0)
    cpu_p, cpu_opt, _ = run_cpu(name, options, p0, grads, max_grad_norm=2.0)
    # the two reductions add in different orders: the norms agree to rounding
    np.testing.assert_allclose(opt.last_grad_norm, np.linalg.norm(grads[-1]), rtol=1e-13)
    np.testing.assert_allclose(p, cpu_p, rtol=1e-12, atol=1e-14)
    assert all(np.linalg.norm(g) > 2.0 for g in grads)  # every step was clipped


def test_clipping_float32_matches_cpu(rng):
    size = SIZES[-1]
    p0 = rng.standard_normal(size).astype(np.float32)
    grads = gradients(rng, size, np.float32, STEPS)
    p, opt, _ = run_cuda("Adam", {}, p0, grads, max_grad_norm=1.0)
    cpu_p, _, _ = run_cpu("Adam", {}, p0, grads, max_grad_norm=1.0)
    np.testing.assert_allclose(p, cpu_p, rtol=1e-6, atol=1e-7)


class TransferCounter:
    """Counts host<->device copies made through numba's device-array API."""

    def __init__(self, monkeypatch, array):
        self.count = 0
        for method in ("copy_to_host", "copy_to_device"):
            self._wrap(monkeypatch, type(array), method)
        monkeypatch.setattr(cuda, "to_device", self._counted(cuda.to_device))

    def _counted(self, function):
        def counted(*args, **kwargs):
            self.count += 1
            return function(*args, **kwargs)

        return counted

    def _wrap(self, monkeypatch, cls, method):
        monkeypatch.setattr(cls, method, self._counted(getattr(cls, method)))


@pytest.mark.parametrize("extra", [{}, {"max_grad_norm": 1.0}], ids=["plain", "clipping"])
def test_a_step_copies_nothing_between_host_and_device(extra, rng, monkeypatch):
    size = SIZES[-1]
    d = cuda.to_device(rng.standard_normal(size).astype(np.float32))
    g = cuda.to_device(rng.standard_normal(size).astype(np.float32))
    opt = fastopt.Adam(d, lr=lambda t: 1e-3 / (1 + t), amsgrad=True, **extra)
    opt.step(g)
    counter = TransferCounter(monkeypatch, d)
    for _ in range(3):
        assert opt.step(g)
    assert counter.count == 0
    norm = opt.last_grad_norm  # reading it back is a copy, on request
    assert (norm is None) == (not extra)
    assert counter.count == (1 if extra else 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_skip_nonfinite_on_device_leaves_everything_unchanged(bad, rng):
    size = SIZES[-1]
    p0 = rng.standard_normal(size).astype(np.float32)
    grads = gradients(rng, size, np.float32, 3)
    grads[1, size // 2] = bad
    p, opt, results = run_cuda(
        "Adam", {"amsgrad": True}, p0, grads, skip_nonfinite=True, max_grad_norm=5.0
    )
    cpu_p, cpu_opt, cpu_results = run_cpu(
        "Adam", {"amsgrad": True}, p0, grads, skip_nonfinite=True, max_grad_norm=5.0
    )
    assert results == cpu_results == [True, False, True]
    assert opt.skipped_steps == 1 and opt.step_count == 2
    np.testing.assert_allclose(p, cpu_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(opt.last_grad_norm, cpu_opt.last_grad_norm, rtol=1e-13)


def test_skip_nonfinite_keeps_params_bit_identical(rng):
    d = cuda.to_device(rng.standard_normal(SIZES[-1]))
    opt = fastopt.RMSprop(d, lr=0.01, centered=True, momentum=0.9, skip_nonfinite=True)
    assert opt.step(cuda.to_device(rng.standard_normal(d.size)))
    before_p, before = d.copy_to_host(), opt.state_dict()
    bad = rng.standard_normal(d.size)
    bad[-1] = np.nan
    assert opt.step(cuda.to_device(bad)) is False
    np.testing.assert_array_equal(d.copy_to_host(), before_p)
    after = opt.state_dict()
    assert after.pop("skipped_steps") == before.pop("skipped_steps") + 1
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


@pytest.mark.filterwarnings("ignore:.*overflow encountered:RuntimeWarning")  # simulator
def test_an_overflowing_norm_is_not_mistaken_for_a_nonfinite_gradient():
    g = np.full(SIZES[-1], 1e200)  # every element finite, the sum of squares is inf
    d = cuda.to_device(np.zeros_like(g))
    opt = fastopt.SGD(d, lr=1e-200, skip_nonfinite=True)
    assert opt.step(cuda.to_device(g)) is True
    np.testing.assert_array_equal(d.copy_to_host(), -1.0)
    assert opt.last_grad_norm == np.inf


def test_grad_norm_reduction_is_deterministic_and_exact_enough(rng):
    g = cuda.to_device(rng.standard_normal(SIZES[-1]).astype(np.float32) * 30)
    norm = kernels.CUDA.grad_norm(g.size)
    norm.compute(g, 1.0, 1.0, None)
    first = norm.sumsq()
    norm.compute(g, 1.0, 1.0, None)
    second = norm.sumsq()
    assert first == second
    np.testing.assert_allclose(first, np.sum(g.copy_to_host().astype(np.float64) ** 2), rtol=1e-13)


def test_state_dict_moves_between_gpu_and_cpu_and_resumes(rng):
    size = SIZES[-1]
    p0 = rng.standard_normal(size)
    grads = gradients(rng, size, np.float64, 2 * STEPS)
    straight, _, _ = run_cpu("Adam", {"amsgrad": True}, p0, grads)

    d = cuda.to_device(p0)
    gpu = fastopt.Adam(d, lr=lr_schedule, amsgrad=True)
    for g in grads[:STEPS]:
        gpu.step(cuda.to_device(g))
    sd = gpu.state_dict()
    assert all(isinstance(sd[k], np.ndarray) for k in gpu.state if k != "step")
    p = d.copy_to_host()
    cpu = fastopt.Adam(p, lr=lr_schedule, amsgrad=True)
    cpu.load_state_dict(sd)
    for g in grads[STEPS:]:
        cpu.step(g)
    assert_same(p, straight)

    d2 = cuda.to_device(p0)
    gpu2 = fastopt.Adam(d2, lr=lr_schedule, amsgrad=True)
    for g in grads[:STEPS]:
        gpu2.step(cuda.to_device(g))
    reloaded = fastopt.Adam(cuda.to_device(d2.copy_to_host()), lr=lr_schedule, amsgrad=True)
    reloaded.load_state_dict(gpu2.state_dict())
    assert reloaded.step_count == STEPS


def test_bad_state_dict_changes_nothing_on_device(rng):
    d = cuda.to_device(rng.standard_normal(SIZES[-1]).astype(np.float32))
    opt = fastopt.Adagrad(d, lr=0.1, initial_accumulator_value=0.5)
    opt.step(cuda.to_device(rng.standard_normal(d.size).astype(np.float32)))
    before = opt.state_dict()
    bad = dict(before, sum=np.zeros(d.size + 1, np.float32))
    with pytest.raises(ValueError, match=r"state_dict\['sum'\] expects"):
        opt.load_state_dict(bad)
    np.testing.assert_array_equal(opt.state_dict()["sum"], before["sum"])
    assert (before["sum"] >= 0.5).all()  # the initial value was filled on the device


def test_bad_gradients_raise_and_change_nothing(rng):
    d = cuda.to_device(rng.standard_normal((3, 5)).astype(np.float32))
    opt = fastopt.Adam(d, lr=0.1)
    before = d.copy_to_host()
    with pytest.raises(TypeError, match="grad must be a device array .* got ndarray"):
        opt.step(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"expects \(3, 5\) but got \(15,\)"):
        opt.step(cuda.to_device(np.ones(15, np.float32)))
    with pytest.raises(TypeError, match="expects float32 but got float64"):
        opt.step(cuda.to_device(np.ones((3, 5))))
    np.testing.assert_array_equal(d.copy_to_host(), before)
    assert opt.step_count == 0 and not opt.state_dict()["exp_avg"].any()
    assert opt.step(cuda.to_device(np.ones((3, 5), np.float32)))


def test_the_gradient_wrapping_is_reused_for_the_same_array(rng):
    p0 = rng.standard_normal(SIZES[-1])
    d = cuda.to_device(p0)
    opt = fastopt.SGD(d, lr=0.125, param_groups=[{"params": slice(0, 1), "lr": 0.25}])
    g = cuda.to_device(np.ones(d.size))
    opt.step(g)
    cached = opt._plan.gradient_views.cached
    opt.step(g)
    assert opt._plan.gradient_views.cached is cached
    other = cuda.to_device(np.full(d.size, 2.0))
    opt.step(other)
    assert opt._plan.gradient_views.cached is not cached
    lr = np.where(np.arange(d.size) < 1, 0.25, 0.125)
    np.testing.assert_allclose(d.copy_to_host(), p0 - lr * 4, rtol=1e-15, atol=1e-15)


def test_placement_errors(rng):
    d = cuda.to_device(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="device='cpu', but params are in GPU memory"):
        fastopt.SGD(d, lr=0.1, device="cpu")
    with pytest.raises(ValueError, match="device='cuda', but params are in host memory"):
        fastopt.SGD(np.zeros(4, np.float32), lr=0.1, device="cuda")
    opt = fastopt.SGD(d, lr=0.1, device="cuda")
    assert "device='cuda'" in repr(opt)
    with pytest.raises(TypeError, match="cannot be pickled"):
        __import__("copy").deepcopy(opt)
    with pytest.raises(NotImplementedError, match="host buffers only"):
        opt.shard(0, 2)
    from fastopt.distributed import DataParallel

    with pytest.raises(NotImplementedError, match="this optimizer is on the GPU"):
        DataParallel(opt)


def test_gpu_bench_script_runs(capsys):
    import runpy
    import sys

    argv = sys.argv
    sys.argv = ["gpu_bench.py", "--sizes", "64", "--repeat", "2", "--dtype", "float32"]
    try:
        runpy.run_path("bench/gpu_bench.py", run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    for name in ("copy", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW"):
        assert name in out
    assert "GB/s" in out and "of copy" in out
    if SIMULATED:
        assert "simulator" in out


FUNCTIONAL = [
    ("sgd_", ["momentum_buffer"], {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("adagrad_", ["state_sum"], {"step": 3, "lr": 0.1, "lr_decay": 0.01}),
    (
        "rmsprop_",
        ["square_avg", "grad_avg", "momentum_buffer"],
        {"lr": 0.01, "centered": True, "momentum": 0.5, "maximize": True},
    ),
    (
        "adam_",
        ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
        {
            "step": 4,
            "lr": 0.01,
            "amsgrad": True,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
        },
    ),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, states, options", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional_updates_on_device_arrays_match_the_host(name, states, options, dtype, rng):
    shape = (SIZES[-1],)
    host = [rng.standard_normal(shape).astype(dtype) for _ in range(2 + len(states))]
    host[2:] = [np.zeros(shape, dtype) for _ in states]  # a consistent starting state
    device = [cuda.to_device(a) for a in host]
    function = getattr(fastopt.functional, name)
    for _ in range(3):
        function(*host, **options)
        function(*device, **options)
    for index, (h, d) in enumerate(zip(host, device)):
        assert_same(d.copy_to_host(), h, name=str(index))
    assert fastopt.functional.grad_norm(device[1]) == pytest.approx(
        fastopt.functional.grad_norm(host[1]), rel=1e-13
    )


def test_functional_on_device_checks_before_running(rng):
    p, g = (cuda.to_device(rng.standard_normal(SIZES[-1])) for _ in range(2))
    m, v = (cuda.to_device(np.zeros(SIZES[-1])) for _ in range(2))
    before = p.copy_to_host()
    with pytest.raises(ValueError, match="exp_avg_sq is required"):
        fastopt.functional.adam_(p, g, m, None, step=1)
    with pytest.raises(ValueError, match="exp_avg_sq must not share memory with exp_avg"):
        fastopt.functional.adam_(p, g, m, m, step=1)
    with pytest.raises(TypeError, match="exp_avg must be a device array like param"):
        fastopt.functional.adam_(p, g, np.zeros(SIZES[-1]), v, step=1)
    with pytest.raises(TypeError, match="expects float64 but got float32"):
        fastopt.functional.adam_(p, g, m, cuda.to_device(np.zeros(SIZES[-1], np.float32)), step=1)
    np.testing.assert_array_equal(p.copy_to_host(), before)
    assert not m.copy_to_host().any()
