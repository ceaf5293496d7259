"""The functional layer runs the same kernels on caller-owned buffers."""

import numpy as np
import pytest

import fastopt
from fastopt import functional as F


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
