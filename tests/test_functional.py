"""The functional layer runs the same kernels on caller-owned buffers."""

import numpy as np
import pytest

import fastopt
from fastopt import functional as F
from fastopt.kernels import blockwise


def test_adam_matches_the_class(rng):
    size = 40_000
    p0 = rng.standard_normal(size).astype(np.float32)
    p1, p2 = p0.copy(), p0.copy()
    opt = fastopt.Adam(p1, lr=0.01, amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True)
    m, v, vmax = (np.zeros(size, np.float32) for _ in range(3))
    for step in range(1, 8):
        g = rng.standard_normal(size).astype(np.float32)
        opt.step(g)
        F.adam_(
            p2,
            g,
            m,
            v,
            vmax,
            step=step,
            lr=0.01,
            amsgrad=True,
            weight_decay=0.1,
            decoupled_weight_decay=True,
        )
    assert p1.tobytes() == p2.tobytes()
    assert opt.state["max_exp_avg_sq"].tobytes() == vmax.tobytes()


@pytest.mark.parametrize(
    "call, make_opt",
    [
        (
            lambda p, g, s, t: F.sgd_(
                p, g, s["momentum_buffer"], lr=0.1, momentum=0.9, nesterov=True, first_step=t == 1
            ),
            lambda p: fastopt.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        ),
        (
            lambda p, g, s, t: F.adagrad_(p, g, s["sum"], step=t, lr=0.1, lr_decay=0.1),
            lambda p: fastopt.Adagrad(p, lr=0.1, lr_decay=0.1),
        ),
        (
            lambda p, g, s, t: F.rmsprop_(
                p,
                g,
                s["square_avg"],
                s["grad_avg"],
                s["momentum_buffer"],
                lr=0.01,
                centered=True,
                momentum=0.5,
                maximize=True,
            ),
            lambda p: fastopt.RMSprop(p, lr=0.01, centered=True, momentum=0.5, maximize=True),
        ),
    ],
)
def test_other_algorithms_match_their_classes(call, make_opt, rng):
    p0 = rng.standard_normal(333)
    p1, p2 = p0.copy(), p0.copy()
    opt = make_opt(p1)
    state = {k: np.zeros_like(p0) for k in ("momentum_buffer", "sum", "square_avg", "grad_avg")}
    for step in range(1, 6):
        g = rng.standard_normal(333)
        opt.step(g)
        call(p2, g, state, step)
    assert p1.tobytes() == p2.tobytes()


def test_functional_validates_before_touching_anything(rng):
    p = rng.standard_normal(10).astype(np.float32)
    g = rng.standard_normal(10).astype(np.float32)
    m, v = np.zeros(10, np.float32), np.zeros(10, np.float32)
    before = p.copy()
    with pytest.raises(
        ValueError, match=r"exp_avg must have the shape of param: expects \(10,\) but got \(9,\)"
    ):
        F.adam_(p, g, m[:9], v, step=1)
    with pytest.raises(
        TypeError, match=r"exp_avg_sq must have the dtype of param: expects float32 but got float64"
    ):
        F.adam_(p, g, m, v.astype(np.float64), step=1)
    with pytest.raises(ValueError, match=r"exp_avg must not share memory with param"):
        F.adam_(p, g, p, v, step=1)
    with pytest.raises(ValueError, match=r"Invalid step: 0"):
        F.adam_(p, g, m, v, step=0)
    with pytest.raises(ValueError, match=r"max_exp_avg_sq is required"):
        F.adam_(p, g, m, v, step=1, amsgrad=True)
    with pytest.raises(ValueError, match=r"Invalid beta parameter at index 1: 1\.5"):
        F.adam_(p, g, m, v, step=1, betas=(0.9, 1.5))
    with pytest.raises(TypeError, match=r"evaluate the schedule first"):
        F.adam_(p, g, m, v, step=1, lr=lambda t: 0.1)
    readonly = v.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=r"exp_avg_sq must be writeable"):
        F.adam_(p, g, m, readonly, step=1)
    assert p.tobytes() == before.tobytes() and not m.any() and not v.any()


def test_required_state_and_aliasing_are_checked(rng):
    p = rng.standard_normal(5).astype(np.float32)
    g = rng.standard_normal(5).astype(np.float32)
    m, v = np.zeros(5, np.float32), np.zeros(5, np.float32)
    before = p.copy()
    with pytest.raises(ValueError, match=r"exp_avg is required \(got None\)"):
        F.adam_(p, g, None, None, step=1)
    with pytest.raises(ValueError, match=r"state_sum is required"):
        F.adagrad_(p, g, None, step=1)
    with pytest.raises(ValueError, match=r"square_avg is required"):
        F.rmsprop_(p, g, None)
    with pytest.raises(ValueError, match=r"exp_avg_sq must not share memory with exp_avg"):
        F.adam_(p, g, m, m, step=1)
    with pytest.raises(ValueError, match=r"state_sum must not share memory with grad"):
        F.adagrad_(p, g, g, step=1)
    with pytest.raises(ValueError, match=r"exp_avg must not share memory with param"):
        F.adam_(p, g, p, v, step=1)
    assert p.tobytes() == before.tobytes() and not m.any() and not v.any()


# -- bfloat16 state ---------------------------------------------------------------------------

BF16_CALLS = [
    (
        lambda p, g, s, t, sp: F.adam_(
            p,
            g,
            s["exp_avg"],
            s["exp_avg_sq"],
            s["max_exp_avg_sq"],
            step=t,
            lr=0.01,
            amsgrad=True,
            weight_decay=0.1,
            decoupled_weight_decay=True,
            state_precision=sp,
        ),
        lambda p, sp: fastopt.AdamW(p, lr=0.01, amsgrad=True, weight_decay=0.1, state_precision=sp),
    ),
    (
        lambda p, g, s, t, sp: F.sgd_(
            p,
            g,
            s["momentum_buffer"],
            lr=0.1,
            momentum=0.9,
            nesterov=True,
            first_step=t == 1,
            state_precision=sp,
        ),
        lambda p, sp: fastopt.SGD(p, lr=0.1, momentum=0.9, nesterov=True, state_precision=sp),
    ),
    (
        lambda p, g, s, t, sp: F.adagrad_(
            p, g, s["sum"], step=t, lr=0.1, lr_decay=0.1, state_precision=sp
        ),
        lambda p, sp: fastopt.Adagrad(p, lr=0.1, lr_decay=0.1, state_precision=sp),
    ),
    (
        lambda p, g, s, t, sp: F.rmsprop_(
            p,
            g,
            s["square_avg"],
            s["grad_avg"],
            s["momentum_buffer"],
            lr=0.01,
            centered=True,
            momentum=0.5,
            maximize=True,
            state_precision=sp,
        ),
        lambda p, sp: fastopt.RMSprop(
            p, lr=0.01, centered=True, momentum=0.5, maximize=True, state_precision=sp
        ),
    ),
]
BF16_IDS = ["adamw", "sgd", "adagrad", "rmsprop"]


@pytest.mark.parametrize("size", [333, 20_000])  # the serial and the threaded kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("call, make_opt", BF16_CALLS, ids=BF16_IDS)
def test_bfloat16_functional_updates_match_the_classes(call, make_opt, dtype, size, rng):
    p0 = rng.standard_normal(size).astype(dtype)
    p1, p2 = p0.copy(), p0.copy()
    opt = make_opt(p1, "bfloat16")
    state = {k: v.copy() for k, v in opt.state.items() if k != "step"}
    assert all(v.dtype == np.uint16 for v in state.values())
    grads = rng.standard_normal((6, size)).astype(dtype)
    for step, g in enumerate(grads, start=1):
        opt.step(g)
        call(p2, g, state, step, "bfloat16")
    assert p1.tobytes() == p2.tobytes()
    for key, value in state.items():
        assert value.tobytes() == opt.state[key].tobytes(), key
    # not vacuous: full-precision state gives other params
    p3 = p0.copy()
    full = {k: np.zeros_like(p0) for k in state}
    for step, g in enumerate(grads, start=1):
        call(p3, g, full, step, "full")
    assert p3.tobytes() != p2.tobytes()


def test_bfloat16_state_dtype_is_checked_before_touching_anything(rng):
    p = rng.standard_normal(10).astype(np.float32)
    g = rng.standard_normal(10).astype(np.float32)
    m, v = np.zeros(10, np.uint16), np.zeros(10, np.uint16)
    before = p.copy()
    with pytest.raises(
        TypeError,
        match=r"exp_avg_sq must hold bfloat16 words with state_precision='bfloat16': "
        r"expects uint16 but got float32",
    ):
        F.adam_(p, g, m, v.astype(np.float32), step=1, state_precision="bfloat16")
    with pytest.raises(TypeError, match=r"state_sum must hold bfloat16 words.*but got float64"):
        F.adagrad_(p, g, np.zeros(10), step=1, state_precision="bfloat16")
    with pytest.raises(
        TypeError,
        match=r"exp_avg must have the dtype of param: expects float32 but got uint16 "
        r"\(bfloat16 words\? pass state_precision='bfloat16'\)",
    ):
        F.adam_(p, g, m, v, step=1)
    with pytest.raises(
        ValueError, match=r"exp_avg must have the shape of param: expects \(10,\) but got \(9,\)"
    ):
        F.adam_(p, g, m[:9], v, step=1, state_precision="bfloat16")
    with pytest.raises(ValueError, match=r"Invalid state_precision: 'fp8' \(expected one of"):
        F.sgd_(p, g, m, momentum=0.9, state_precision="fp8")
    with pytest.raises(ValueError, match=r"Invalid state_precision: None"):
        F.rmsprop_(p, g, v, state_precision=None)
    assert p.tobytes() == before.tobytes() and not m.any() and not v.any()


EIGHT_BIT_CALLS = BF16_CALLS[:3] + [
    (
        lambda p, g, s, t, sp: F.rmsprop_(
            p, g, s["square_avg"], None, s["momentum_buffer"], lr=0.01, momentum=0.5,
            state_precision=sp,
        ),
        lambda p, sp: fastopt.RMSprop(p, lr=0.01, momentum=0.5, state_precision=sp),
    )
]  # fmt: skip


@pytest.mark.parametrize("size", [5000, 20_000])  # the serial and the threaded kernel
@pytest.mark.parametrize("call, make_opt", EIGHT_BIT_CALLS, ids=BF16_IDS)
def test_8bit_functional_updates_match_the_classes(call, make_opt, size, rng):
    p0 = rng.standard_normal(size).astype(np.float32)
    p1, p2 = p0.copy(), p0.copy()
    opt = make_opt(p1, "8bit")
    assert opt.state_precision == "8bit"
    state = {
        name: (opt.state[name].copy(), opt.state[name + "_absmax"].copy())
        for name in opt.state.names()
    }
    grads = rng.standard_normal((5, size)).astype(np.float32)
    for step, g in enumerate(grads, start=1):
        opt.step(g)
        call(p2, g, state, step, "8bit")
    assert p1.tobytes() == p2.tobytes()
    for name, (codes, absmax) in state.items():
        assert codes.tobytes() == opt.state[name].tobytes(), name
        assert absmax.tobytes() == opt.state[name + "_absmax"].tobytes(), name
    signed = name not in blockwise.UNSIGNED_STATE  # the last buffer: decoded the same way
    np.testing.assert_array_equal(F.decode_8bit(codes, absmax, signed), opt.state.decoded(name))


def test_8bit_functional_arguments_are_checked_before_touching_anything(rng):
    p = rng.standard_normal(600).astype(np.float32)
    g = rng.standard_normal(600).astype(np.float32)
    m, v = F.encode_8bit(np.zeros(600, np.float32)), F.encode_8bit(np.zeros(600), False)
    before = p.copy()
    with pytest.raises(TypeError, match=r"exp_avg must be a \(codes, absmax\) pair"):
        F.adam_(p, g, m[0], v, step=1, state_precision="8bit")
    with pytest.raises(ValueError, match=r"exp_avg_sq absmax must hold one scale per block of "
                                         r"256 elements of param \(600 elements, 3 blocks\): "
                                         r"expects shape \(3,\) but got \(2,\)"):  # fmt: skip
        F.adam_(p, g, m, (v[0], v[1][:2]), step=1, state_precision="8bit")
    with pytest.raises(TypeError, match=r"exp_avg_sq absmax must have the dtype of param"):
        F.adam_(p, g, m, v, step=1, state_precision="8bit")  # float64 scales of encode_8bit
    with pytest.raises(ValueError, match=r"centered=True with state_precision='8bit'"):
        F.rmsprop_(p, g, v, m, centered=True, state_precision="8bit")
    with pytest.raises(
        TypeError,
        match=r"exp_avg codes must be uint8 with "
        r"state_precision='8bit': expects uint8 but got float32",
    ):
        F.adam_(p, g, (p.copy(), m[1]), v, step=1, state_precision="8bit")
    for call in (lambda: F.adam_(p, g, m, v, step=1, eps=0.0, state_precision="8bit"),
                 lambda: F.adagrad_(p, g, v, step=1, eps=0.0, state_precision="8bit"),
                 lambda: F.rmsprop_(p, g, v, eps=0.0, state_precision="8bit")):  # fmt: skip
        with pytest.raises(ValueError, match=r"eps=0 with state_precision='8bit'"):
            call()
    assert p.tobytes() == before.tobytes() and not m[0].any() and not m[1].any()


def test_encode_8bit_keeps_the_shape_for_a_multidimensional_param(rng):
    p = rng.standard_normal((64, 80)).astype(np.float32)
    q = p.copy()
    g = rng.standard_normal((64, 80)).astype(np.float32)
    m, v = F.encode_8bit(np.zeros_like(p)), F.encode_8bit(np.zeros_like(p), signed=False)
    assert m[0].shape == (64, 80) and m[1].shape == (blockwise.blocks_of(p.size),)
    F.adam_(p, g, m, v, step=1, state_precision="8bit")
    zeros = np.zeros(q.size, np.float32)
    flat_m, flat_v = F.encode_8bit(zeros), F.encode_8bit(zeros, signed=False)
    F.adam_(q.reshape(-1), g.reshape(-1), flat_m, flat_v, step=1, state_precision="8bit")
    assert p.tobytes() == q.tobytes()
    assert m[0].tobytes() == flat_m[0].tobytes() and v[0].tobytes() == flat_v[0].tobytes()
    decoded = F.decode_8bit(*m)
    assert decoded.shape == (64, 80)
    np.testing.assert_array_equal(decoded.reshape(-1), F.decode_8bit(*flat_m))


@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.uint8])
def test_encode_8bit_takes_float32_or_float64_only(dtype):
    with pytest.raises(TypeError, match=rf"values must be float32 or float64 .* but got "
                                        rf"{np.dtype(dtype)}"):  # fmt: skip
        F.encode_8bit(np.ones(300, dtype))


def test_decode_8bit_checks_its_codes_and_scales():
    codes, absmax = F.encode_8bit(np.linspace(-1, 1, 600))
    with pytest.raises(ValueError, match=r"absmax must hold one scale per block of 256 codes "
                                         r"\(600 codes, 3 blocks\): expects shape \(3,\) "
                                         r"but got \(2,\)"):  # fmt: skip
        F.decode_8bit(codes, absmax[:2])
    with pytest.raises(TypeError, match=r"codes must be uint8 8-bit codes, but got int64"):
        F.decode_8bit(codes.astype(np.int64), absmax)
    with pytest.raises(TypeError, match=r"absmax must be float32 or float64"):
        F.decode_8bit(codes, absmax.astype(np.int32))
