"""Misuse that used to corrupt silently or crash: aliasing, rebinding, resizing, edited
groups, bad schedule values and checkpoints, subclasses, tiny momenta, threads, fork and
read-only caches. Each case failed (or crashed) before it was fixed.
"""

import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastopt
from fastopt import functional as F

import reference
from registry import CASE_IDS, CASES, make


def snapshot(opt, *arrays):
    return [a.copy() for a in arrays], {k: np.copy(v) for k, v in opt.state.items()}


def assert_unchanged(opt, arrays, before):
    saved_arrays, saved_state = before
    for array, saved in zip(arrays, saved_arrays):
        assert array.tobytes() == saved.tobytes()
    for key, value in saved_state.items():
        assert np.asarray(opt.state[key]).tobytes() == value.tobytes(), key


# -- aliasing --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 40_001])
def test_a_gradient_overlapping_the_parameters_is_rejected(size):
    buf = np.arange(size + 1.0)
    before = buf.copy()
    opt = fastopt.SGD(buf[1:], lr=1)
    with pytest.raises(ValueError, match="grad must not share memory with the parameters"):
        opt.step(buf[:-1])
    assert buf.tobytes() == before.tobytes() and opt.step_count == 0
    with pytest.raises(ValueError, match="grad must not share memory with param"):
        F.sgd_(buf[1:], buf[:-1], lr=1.0)
    assert buf.tobytes() == before.tobytes()


@pytest.mark.parametrize("offset", [1, 50, 99, 101, 150, 199])
def test_any_overlap_at_any_offset_is_rejected(offset):
    big = np.zeros(400)
    p = big[100:200]
    opt = fastopt.Adam(p, lr=0.1)
    before = snapshot(opt, big)
    with pytest.raises(ValueError, match="must not share memory"):
        opt.step(big[offset : offset + 100])
    assert_unchanged(opt, [big], before)
    assert opt.step(big[200:300]) and opt.step(big[0:100])  # adjacent: no overlap


@pytest.mark.parametrize("name", ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
def test_a_gradient_that_is_a_state_buffer_is_rejected(name):
    p = np.ones(100)
    opt = fastopt.Adam(p, lr=0.1, amsgrad=True)
    opt.step(np.ones(100))
    before = snapshot(opt, p)
    with pytest.raises(ValueError, match="must not share memory"):
        opt.step(opt.state[name])
    assert_unchanged(opt, [p], before)


def test_the_gradient_buffer_of_a_flatparams_passed_back_is_fine_but_its_data_is_not():
    fp = fastopt.FlatParams({"w": np.ones(5)})
    opt = fastopt.SGD(fp, lr=0.5)
    fp.grad[:] = 1.0
    assert opt.step(fp.grad)
    with pytest.raises(ValueError, match="must not share memory"):
        opt.step(fp.data)


@pytest.mark.parametrize("size", [8, 40_001])
@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda g: g[::2], ValueError, "must have the shape"),
        (lambda g: np.repeat(g, 2)[::2], ValueError, "C-contiguous"),
        (lambda g: g.astype(np.float32), TypeError, "must have the dtype"),
        (lambda g: g.tolist(), TypeError, "must be a numpy.ndarray, but got list"),
        (lambda g: np.ma.masked_array(g), TypeError, "ndarray subclass"),
    ],
    ids=["shape", "strided", "dtype", "list", "subclass"],
)
def test_a_wrong_gradient_is_rejected_before_any_write(size, bad, error, match):
    p = np.linspace(-1, 1, size)
    opt = fastopt.SGD(p, lr=0.5, momentum=0.9)
    opt.step(np.ones(size))
    before = snapshot(opt, p)
    with pytest.raises(error, match=match):
        opt.step(bad(np.full(size, 2.0)))
    assert_unchanged(opt, [p], before)
    assert opt.step_count == 1


@pytest.mark.parametrize("size", [8, 40_001])
def test_a_gradient_of_any_equal_layout_is_accepted(size):
    """2-D parameters, an equal but distinct dtype object: the same update as a flat copy."""
    p2d, flat = np.ones((2, size)), np.ones(2 * size)
    g = np.linspace(0, 1, 2 * size)
    equal_dtype = np.dtype("f8", metadata={"origin": "a test"})
    assert equal_dtype == np.float64 and equal_dtype is not np.dtype(np.float64)
    opt_2d, opt_flat = fastopt.Adam(p2d, lr=0.1), fastopt.Adam(flat, lr=0.1)
    opt_2d.step(g.reshape(2, size).view(equal_dtype))
    opt_flat.step(g)
    assert p2d.tobytes() == flat.tobytes()


@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_reused_host_scalars_follow_every_edit(name, options):
    """With constant hyperparameters a step reuses the last host scalars; the same values
    from a schedule are recomputed at every step: the two runs must stay bit-equal through
    edits of lr, weight_decay and lr_scale.
    """
    rng = np.random.default_rng(3)
    grads = rng.standard_normal((8, 50))
    lrs = [0.01, 0.01, 0.01, 0.03, 0.03, 0.002, 0.002, 0.002]
    constant_p, scheduled_p = np.ones(50), np.ones(50)
    constant = make(name, constant_p, **dict(options, lr=lrs[0]))
    scheduled = make(name, scheduled_p, **dict(options, lr=lambda t: lrs[t]))
    for t, g in enumerate(grads):
        constant.param_groups[0]["lr"] = lrs[t]
        if t == 4:
            for opt in (constant, scheduled):
                opt.param_groups[0]["weight_decay"] = 0.2
        if t == 6:
            for opt in (constant, scheduled):
                opt.param_groups[0]["lr_scale"] = 0.5
        constant.step(g)
        scheduled.step(g)
        assert constant_p.tobytes() == scheduled_p.tobytes(), f"step {t + 1}"
    assert constant.last_lr == scheduled.last_lr == 0.001


# -- a step applies to every group or to none --------------------------------------------
def test_a_failing_second_group_changes_no_group():
    p = np.ones(20_100)
    opt = fastopt.SGD(
        p, lr=0.1, momentum=0.9, param_groups=[{"params": slice(100, 20_100), "lr": 0.2}]
    )
    opt.step(np.ones(p.size))
    before = snapshot(opt, p)
    opt.param_groups[1]["lr"] = lambda t: float("nan")
    with pytest.raises(ValueError, match="from schedule at step 1: nan"):
        opt.step(np.ones(p.size))
    assert_unchanged(opt, [p], before)


ATOMIC_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba.core import dispatcher
    import fastopt

    p = np.ones(20_100, np.float32)
    opt = fastopt.Adam(p, lr=0.1, param_groups=[{"params": slice(100, 20_100), "lr": 0.2}])
    assert all(segment.kernel.signatures for segment in opt._plan.segments)

    def interrupted(self, *args, **kwargs):  # a Ctrl-C while a kernel would compile
        raise KeyboardInterrupt
    dispatcher.Dispatcher._compile_for_args = interrupted
    assert opt.step(np.ones(p.size, np.float32)) and opt.step_count == 1
    assert (p[:100] < 1).all() and (p[100:] < 1).all()
    print("ok")
    """
)


def test_kernels_are_ready_when_the_optimizer_is_built(tmp_path):
    """In a process with an empty JIT cache, nothing compiles during a step: an
    interrupt at compile time can no longer land between two groups' updates.
    """
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", ATOMIC_SCRIPT], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


# -- nothing can be rebound ---------------------------------------------------------------
def test_assigning_a_view_copies_into_the_buffer():
    fp = fastopt.FlatParams({"W": np.zeros((2, 3)), "b": np.zeros(3)})
    opt = fastopt.SGD(fp, lr=1.0)
    dW = np.full((2, 3), 2.0)
    fp.grads["W"] = dW  # forgetting [:] no longer rebinds the entry
    fp.params["b"] = 1.0
    assert np.shares_memory(fp.grads["W"], fp.grad) and np.shares_memory(fp.params["b"], fp.data)
    assert opt.step()
    np.testing.assert_array_equal(fp.params["W"], -2.0)
    np.testing.assert_array_equal(fp.params["b"], 1.0)
    with pytest.raises(ValueError):  # the checks of [:] =
        fp.grads["W"] = np.ones(4)
    with pytest.raises(KeyError):
        fp.grads["missing"] = 1.0
    with pytest.raises(TypeError, match="cannot be added, removed or replaced"):
        fp.params.pop("W")
    listed = fastopt.FlatParams([np.zeros(2), np.zeros(3)])
    listed.grads[1] = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(listed.grad, [0, 0, 1, 2, 3])
    with pytest.raises(TypeError, match="cannot be added"):
        listed.params.append(np.zeros(2))


@pytest.mark.parametrize("name", ["data", "grad", "params", "grads"])
def test_flatparams_buffers_cannot_be_rebound(name):
    fp = fastopt.FlatParams({"w": np.zeros(3)})
    with pytest.raises(AttributeError, match=rf"FlatParams.{name} .* cannot be rebound"):
        setattr(fp, name, np.ones(3))
    setattr(fp, name, getattr(fp, name))  # what an in-place operator (fp.grad *= 2) does


def test_optimizer_state_buffers_cannot_be_rebound():
    p = np.ones(4)
    opt = fastopt.Adam(p, lr=0.1)
    opt.step(np.ones(4))
    with pytest.raises(TypeError, match=r"opt.state\['exp_avg'\] cannot be rebound"):
        opt.state["exp_avg"] = np.zeros(4)
    with pytest.raises(TypeError, match="cannot be rebound"):
        opt.state["momentum"] = np.zeros(4)
    with pytest.raises(AttributeError, match="opt.state cannot be rebound"):
        opt.state = {}
    opt.state["exp_avg"][:] = 0.0  # writing into a buffer is how to change it
    opt.state["exp_avg_sq"] *= 0.0  # an in-place operator binds the same array back
    assert not opt.state_dict()["exp_avg"].any() and not opt.state_dict()["exp_avg_sq"].any()


def test_parameter_groups_keep_their_layout():
    fp = fastopt.FlatParams({"W": np.ones(6), "b": np.ones(2)}, groups={"bias": ["b"]})
    opt = fastopt.SGD(fp, lr=0.1, param_groups=[{"params": "bias", "lr": 0.5}])
    bounds = opt.state_dict()["group_bounds"].tolist()
    for edit in (opt.param_groups.pop, lambda: opt.param_groups.append({"params": "b"}),
                 lambda: opt.param_groups.__setitem__(0, {}), opt.param_groups.clear):  # fmt: skip
        with pytest.raises(TypeError, match="param_groups cannot be added, removed"):
            edit()
    for key in ("params", "start", "stop", "momentum"):
        with pytest.raises(ValueError, match=rf"key '{key}' cannot be set"):
            opt.param_groups[0][key] = 3
    with pytest.raises(AttributeError, match="param_groups cannot be rebound"):
        opt.param_groups = []
    assert len(opt.param_groups) == 2 and opt.state_dict()["group_bounds"].tolist() == bounds
    fresh = fastopt.SGD(fp, lr=0.1, param_groups=[{"params": "bias", "lr": 0.5}])
    fresh.load_state_dict(opt.state_dict())


@pytest.mark.parametrize(
    "key, value, error",
    [("lr_scale", True, TypeError), ("lr", "0.25", TypeError), ("weight_decay", -1, ValueError)],
)
def test_edited_group_values_follow_the_constructor_rules(key, value, error):
    with pytest.raises(error):
        fastopt.SGD(np.ones(4), param_groups=[{"params": slice(0, 2), key: value}])
    p = np.ones(4)
    opt = fastopt.SGD(p, lr=0.1)
    opt.step(np.ones(4))
    before = snapshot(opt, p)
    opt.param_groups[0][key] = value
    with pytest.raises(error):
        opt.step(np.ones(4))
    assert_unchanged(opt, [p], before)
    assert opt.step_count == 1


# -- schedules, checkpoints and inputs follow the rules --------------------------------
@pytest.mark.parametrize("value", ["0.25", b"0.25", True, np.array([0.1])])
def test_a_schedule_must_return_a_real_number(value):
    p = np.ones(4)
    opt = fastopt.SGD(p, lr=lambda t: 0.1 if t < 1 else value)
    opt.step(np.ones(4))
    before = snapshot(opt, p)
    with pytest.raises(TypeError, match=r"from schedule at step 1: .*expected a real number"):
        opt.step(np.ones(4))
    assert_unchanged(opt, [p], before)


def test_load_state_dict_converts_everything_before_copying():
    source = fastopt.Adam(np.ones(3), lr=0.1)
    source.step(np.ones(3))
    sd = source.state_dict()
    sd["exp_avg_sq"] = np.array([1.0, 1e300, 1.0])  # overflows float32
    target = fastopt.Adam(np.ones(3, np.float32), lr=0.1)
    target.step(np.ones(3, np.float32))
    before = snapshot(target)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        target.load_state_dict(dict(sd, dtype="float64"))
    assert_unchanged(target, [], before)


@pytest.mark.parametrize("key, value", [("size", "4"), ("size", 4.7), ("size", None),
                                        ("step", True), ("skipped_steps", 1.5)])  # fmt: skip
def test_malformed_state_dict_counts_are_rejected_with_the_rule(key, value):
    opt = fastopt.SGD(np.ones(4), lr=0.1, momentum=0.9)
    opt.step(np.ones(4))
    sd = dict(opt.state_dict(), **{key: value})
    before = snapshot(opt)
    with pytest.raises(ValueError, match=rf"Invalid {key} in state_dict: .*expected an integer"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, [], before)


SUBCLASSES = [
    lambda: np.matrix(np.ones((2, 2))),
    lambda: np.ma.masked_array(np.ones(4), mask=[0, 1, 0, 0]),
]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("make", SUBCLASSES, ids=["matrix", "masked"])
def test_ndarray_subclasses_are_rejected_at_construction(make):
    array = make()
    with pytest.raises(TypeError, match=r"params must be a plain numpy.ndarray.*np.asarray"):
        fastopt.Adam(array, lr=0.1)
    with pytest.raises(TypeError, match=r"grad must be a plain numpy.ndarray"):
        fastopt.Adam(np.ones(array.shape), lr=0.1).step(array)
    opt = fastopt.Adam(np.asarray(array), lr=0.1)  # the suggested fix updates the same memory
    assert opt.step(np.ones(array.shape))


@pytest.mark.parametrize("size", [1_000, 100_000])  # serial kernel (checks fused), threaded
def test_a_resized_array_gives_an_error_not_a_crash(size):
    p = np.ones(size)
    opt = fastopt.SGD(p, lr=0.1)
    p.resize(4 * size, refcheck=False)  # the optimizer's views now point at freed memory
    with pytest.raises(ValueError, match=rf"expects \({size},\) but got \({4 * size},\)"):
        opt.step(np.ones(4 * size))
    with pytest.raises(RuntimeError, match="resized or reallocated"):
        opt.step(np.ones(size))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_momentum_that_rounds_to_zero_still_takes_torchs_momentum_path(dtype):
    options = {"lr": 0.5, "momentum": 1e-50, "dampening": 0.5}
    p = np.ones(3, dtype)
    opt = fastopt.SGD(p, **options)
    ref_p, ref_state = p.copy(), reference.new_state("SGD", 3, dtype, momentum=1e-50)
    for _ in range(2):
        g = np.full(3, 0.4, dtype)
        opt.step(g)
        reference.sgd(ref_p, g, ref_state, **options)
    np.testing.assert_array_equal(p, ref_p)
    np.testing.assert_array_equal(opt.state["momentum_buffer"], ref_state["momentum_buffer"])
    # torch: the first step copies g into the buffer; the second damps it:
    # buf = 0 (1e-50 x buf underflows) + 0.5 g, so p = 1 - 0.5 g - 0.5 (0.5 g) = 0.7
    np.testing.assert_allclose(p, 1 - 0.5 * 0.4 - 0.5 * 0.5 * 0.4, rtol=1e-6)


# -- threads and processes ---------------------------------------------------------------
@pytest.mark.parametrize("size", [10, 50_000])
def test_one_optimizer_stepped_from_two_threads_loses_nothing(size):
    steps = 200
    p = np.zeros(size)
    opt = fastopt.SGD(p, lr=1.0)
    grads = [np.full(size, 1.0), np.full(size, 1.0)]
    threads = [threading.Thread(target=lambda g=g: [opt.step(g) for _ in range(steps)])
               for g in grads]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert opt.step_count == 2 * steps
    np.testing.assert_array_equal(p, -2.0 * steps)


def test_state_dict_taken_while_another_thread_steps_is_one_step_s_state():
    """momentum=1 with a gradient of ones: after step t every element of the buffer is t.
    A copy taken in the middle of a step would hold t and t + 1 (or a step count that
    does not match the buffer).
    """
    size, steps = 2_000_000, 60
    opt = fastopt.SGD(np.zeros(size), lr=1e-3, momentum=1.0)
    g = np.ones(size)
    stepping = threading.Thread(target=lambda: [opt.step(g) for _ in range(steps)])
    stepping.start()
    seen = set()
    while stepping.is_alive():
        saved = opt.state_dict()
        buffer = saved.get("momentum_buffer")
        if buffer is not None:
            assert (buffer == saved["step"]).all(), (saved["step"], np.unique(buffer)[:4])
            seen.add(int(saved["step"]))
    stepping.join()
    assert opt.step_count == steps and len(seen) > 1


def test_independent_optimizers_in_threads_match_a_serial_run(rng):
    size, steps = 50_000, 100
    starts = [rng.standard_normal(size) for _ in range(3)]
    grads = [rng.standard_normal(size) for _ in range(3)]

    def run(p, g):
        opt = fastopt.Adam(p, lr=1e-3, amsgrad=True)
        for _ in range(steps):
            opt.step(g)

    serial = [p.copy() for p in starts]
    for p, g in zip(serial, grads):
        run(p, g)
    threaded = [p.copy() for p in starts]
    threads = [threading.Thread(target=run, args=(p, g)) for p, g in zip(threaded, grads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a, b in zip(serial, threaded):
        assert a.tobytes() == b.tobytes()


def _child_step(queue):
    p = np.zeros(50_000)
    fastopt.SGD(p, lr=1.0).step(np.ones(50_000))
    queue.put(float(p.sum()))


def test_a_forked_child_can_run_a_threaded_step():
    p = np.zeros(50_000)
    fastopt.SGD(p, lr=1.0).step(np.ones(50_000))  # the parent's thread pool is running
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_step, args=(queue,))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert queue.get(timeout=10) == -50_000.0


READ_ONLY_SCRIPT = textwrap.dedent(
    """
    import warnings
    from numba.core import caching
    caching.CacheImpl._locator_classes = []  # no writable cache location anywhere
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import numpy as np
        import fastopt
        opt = fastopt.Adam(np.zeros(20_000), lr=0.1)
        assert opt.step(np.ones(20_000))
    messages = [str(w.message) for w in caught if "no writable location" in str(w.message)]
    assert len(messages) == 1, messages
    assert "NUMBA_CACHE_DIR" in messages[0]
    print("ok")
    """
)


def test_a_read_only_environment_warns_once_and_works():
    result = subprocess.run(
        [sys.executable, "-c", READ_ONLY_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


HYPERPARAMETERS = {
    "SGD": {"momentum": 0.5, "dampening": 0.1, "nesterov": True},
    "Adagrad": {"lr_decay": 0.1, "initial_accumulator_value": 1.0, "eps": 1e-3},
    "RMSprop": {"alpha": 0.5, "eps": 1e-3, "momentum": 0.5, "centered": True},
    "Adam": {"betas": (0.5, 0.5), "eps": 1e-3, "amsgrad": True, "decoupled_weight_decay": True},
    "AdamW": {"betas": (0.5, 0.5), "eps": 1e-3, "amsgrad": True},
}


@pytest.mark.parametrize("name", list(HYPERPARAMETERS))
def test_hyperparameters_cannot_be_reassigned_after_the_build(name, rng):
    """A new value assigned to ``opt.eps`` (say) was used by some optimizers and ignored by
    others, and state_dict() kept recording the old one: assigning is refused, and
    ``defaults`` is read-only. Only a group's lr, lr_scale and weight_decay are edited.
    """
    p = rng.standard_normal(50)
    opt = make(name, p, lr=0.01)
    opt.step(rng.standard_normal(50))
    before = (p.copy(), {k: v.copy() for k, v in opt.state_dict().items() if np.ndim(v)})
    extra = {"maximize": True, "skip_nonfinite": True, "max_grad_norm": -1.0}
    for key, value in {**HYPERPARAMETERS[name], **extra}.items():
        old = getattr(opt, key)
        rule = rf"{name}\.{key} cannot be changed after the optimizer is built .*build a new"
        with pytest.raises(AttributeError, match=rule):
            setattr(opt, key, value)
        assert getattr(opt, key) == old
    with pytest.raises(TypeError):
        opt.defaults["eps" if "eps" in opt.defaults else "momentum"] = 1.0
    assert p.tobytes() == before[0].tobytes()
    for key, value in before[1].items():
        assert np.array_equal(opt.state_dict()[key], value), key
    opt.param_groups[0]["lr"] = 0.02  # still editable
    opt.step(rng.standard_normal(50))
    twin = pickle.loads(pickle.dumps(opt))
    assert dict(twin.defaults) == dict(opt.defaults)
    with pytest.raises(TypeError):
        twin.defaults["lr"] = 1.0
