"""Schedules: torch parity step by step, Keras/optax closed forms, vectorisation, round trips,
validation, and use by the optimizers.
"""

import json
import math
import pickle
import warnings

import numpy as np
import pytest

import fastopt
from fastopt import schedules as S

STEPS = 1200


def torch_lrs(torch, make_scheduler, base_lr, steps=STEPS, costs=None):
    """The lr torch's scheduler gives for updates 0..steps-1 (read before each step)."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base_lr, momentum=0.9)
    scheduler = make_scheduler(opt)
    lrs = []
    for t in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if costs is None:
            scheduler.step()
        else:
            scheduler.step(costs[t])
    return np.array(lrs)


def assert_lrs_close(ours, theirs):
    # rtol 1e-10; the atol only matters where both are (nearly) zero
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-15)


TORCH_CASES = [
    (
        "StepLR",
        lambda o, T: T.StepLR(o, step_size=70, gamma=0.5),
        S.step_decay(0.3, step_size=70, gamma=0.5),
    ),
    (
        "MultiStepLR",
        lambda o, T: T.MultiStepLR(o, milestones=[100, 250, 251, 900], gamma=0.3),
        S.multistep_decay(0.3, milestones=[100, 250, 251, 900], gamma=0.3),
    ),
    (
        "ExponentialLR",
        lambda o, T: T.ExponentialLR(o, gamma=0.997),
        S.exponential_decay(0.3, decay_rate=0.997),
    ),
    (
        "PolynomialLR",
        lambda o, T: T.PolynomialLR(o, total_iters=800, power=2.0),
        S.polynomial_decay(0.3, decay_steps=800, power=2.0),
    ),
    (
        "CosineAnnealingLR",
        lambda o, T: T.CosineAnnealingLR(o, T_max=STEPS, eta_min=0.001),
        S.cosine_decay(0.3, decay_steps=STEPS, end_lr=0.001),
    ),
    (
        "LinearLR",
        lambda o, T: T.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=300),
        S.linear_warmup(0.3, warmup_steps=300, init_lr=0.03),
    ),
    (
        "CosineAnnealingWarmRestarts",
        lambda o, T: T.CosineAnnealingWarmRestarts(o, T_0=50, eta_min=0.01),
        S.cosine_restarts(0.3, first_cycle_steps=50, end_lr=0.01),
    ),
    (
        "CosineAnnealingWarmRestarts-mult3",
        lambda o, T: T.CosineAnnealingWarmRestarts(o, T_0=7, T_mult=3),
        S.cosine_restarts(0.3, first_cycle_steps=7, cycle_mult=3),
    ),
    (
        "OneCycleLR",
        lambda o, T: T.OneCycleLR(o, max_lr=0.3, total_steps=STEPS, cycle_momentum=False),
        S.one_cycle(0.3, total_steps=STEPS),
    ),
    (
        "OneCycleLR-3phase-linear",
        lambda o, T: T.OneCycleLR(
            o,
            max_lr=0.3,
            total_steps=STEPS,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            div_factor=10,
            final_div_factor=100,
            cycle_momentum=False,
        ),
        S.one_cycle(
            0.3,
            total_steps=STEPS,
            pct_start=0.25,
            anneal="linear",
            three_phase=True,
            div_factor=10,
            final_div_factor=100,
        ),
    ),
]


@pytest.mark.torch
@pytest.mark.parametrize("name, make, schedule", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_matches_torch_scheduler_at_every_step(name, make, schedule, torch):
    base = schedule.max_lr if hasattr(schedule, "max_lr") else schedule.lr
    theirs = torch_lrs(torch, lambda o: make(o, torch.optim.lr_scheduler), base)
    ours = schedule(np.arange(STEPS))
    assert_lrs_close(ours, theirs)
    assert_lrs_close([schedule(t) for t in range(STEPS)], theirs)


@pytest.mark.torch
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"mode": "max", "patience": 3, "factor": 0.5, "cooldown": 2},
        {"threshold_mode": "abs", "threshold": 0.05, "patience": 2, "min_lr": 1e-3},
    ],
)
def test_reduce_on_plateau_matches_torch(kwargs, torch, rng):
    costs = np.concatenate(
        [
            np.linspace(5, 1, 30),
            np.ones(40) + 0.01 * rng.standard_normal(40),
            np.linspace(1, 0.5, 20),
            np.full(60, 0.5),
        ]
    )
    theirs = torch_lrs(
        torch,
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kwargs),
        0.2,
        steps=len(costs),
        costs=costs,
    )
    plateau = S.reduce_on_plateau(0.2, **kwargs)
    ours = []
    for cost in costs:
        ours.append(plateau(0))
        plateau.step(cost)
    np.testing.assert_array_equal(ours, theirs)
    assert len(set(ours)) > 1


def optax_exponential(init, rate, steps, t, staircase, end_value):
    p = np.floor(t / steps) if staircase else t / steps
    with np.errstate(over="ignore"):  # inf before the clip, as in optax
        v = init * rate**p
    return np.maximum(v, end_value) if rate < 1 else np.minimum(v, end_value)


def keras_polynomial(lr0, steps, end, power, cycle, t):
    if cycle:
        mult = np.where(t == 0, 1.0, np.ceil(t / steps))
        d, tt = steps * mult, t
    else:
        d, tt = steps, np.minimum(t, steps)
    return (lr0 - end) * (1 - tt / d) ** power + end


def optax_warmup_cosine(init, peak, warmup, decay_steps, end, t):
    warm = init + (peak - init) * np.minimum(t, warmup) / warmup
    tc = np.clip(t - warmup, 0, decay_steps - warmup)
    cos = (peak - end) * 0.5 * (1 + np.cos(np.pi * tc / (decay_steps - warmup))) + end
    return np.where(t < warmup, warm, cos)


T_GRID = np.array(
    sorted(
        {
            0,
            1,
            2,
            9,
            10,
            11,
            99,
            100,
            101,
            149,
            150,
            151,
            499,
            500,
            501,
            999,
            1000,
            1001,
            12345,
            10**6,
            10**9,
        }
    )
)


@pytest.mark.parametrize(
    "schedule, expected",
    [
        (
            S.inverse_time_decay(0.5, decay_rate=0.3, decay_steps=10),
            lambda t: 0.5 / (1 + 0.3 * t / 10),
        ),
        (
            S.inverse_time_decay(0.5, decay_rate=0.3, decay_steps=10, staircase=True),
            lambda t: 0.5 / (1 + 0.3 * np.floor(t / 10)),
        ),
        (
            S.polynomial_decay(0.5, decay_steps=150, end_lr=0.01, power=0.5),
            lambda t: keras_polynomial(0.5, 150, 0.01, 0.5, False, t),
        ),
        (
            S.polynomial_decay(0.5, decay_steps=150, end_lr=0.01, power=2.0, cycle=True),
            lambda t: keras_polynomial(0.5, 150, 0.01, 2.0, True, t),
        ),
        (
            S.exponential_decay(0.5, decay_rate=0.9, decay_steps=100, end_lr=0.05),
            lambda t: optax_exponential(0.5, 0.9, 100, t, False, 0.05),
        ),
        (
            S.exponential_decay(0.01, decay_rate=1.1, decay_steps=10, staircase=True, end_lr=0.2),
            lambda t: optax_exponential(0.01, 1.1, 10, t, True, 0.2),
        ),
        (
            S.warmup_cosine_decay(
                0.5, warmup_steps=100, total_steps=1000, init_lr=0.01, end_lr=0.02
            ),
            lambda t: optax_warmup_cosine(0.01, 0.5, 100, 1000, 0.02, t),
        ),
        (
            S.join(
                [S.constant(0.1), S.linear_warmup(0.5, 50), S.cosine_decay(0.5, 400)], [100, 150]
            ),
            lambda t: np.where(
                t < 100,
                0.1,
                np.where(
                    t < 150,
                    0.5 * np.minimum(t - 100, 50) / 50,
                    0.5 * 0.5 * (1 + np.cos(np.pi * np.clip(t - 150, 0, 400) / 400)),
                ),
            ),
        ),
        (
            S.warmup(S.step_decay(0.4, 100, 0.5), warmup_steps=10, init_lr=0.1),
            lambda t: np.where(t < 10, 0.1 + 0.3 * t / 10, 0.4 * 0.5 ** np.floor((t - 10) / 100)),
        ),
        (
            S.piecewise_constant([10, 100], [0.3, 0.2, 0.1]),
            lambda t: np.select([t < 10, t < 100], [0.3, 0.2], 0.1),
        ),
    ],
)
def test_closed_forms_at_boundaries_and_far_beyond(schedule, expected):
    t = T_GRID.astype(np.float64)
    ours = schedule(T_GRID)
    np.testing.assert_allclose(ours, expected(t), rtol=1e-12, atol=1e-18)
    assert np.isfinite(ours).all()
    for step, value in zip(T_GRID, ours):
        assert schedule(int(step)) == pytest.approx(value, rel=3e-16, abs=0)


def all_schedules():
    return [
        S.constant(0.1),
        S.step_decay(0.1, 30),
        S.multistep_decay(0.1, [3, 8], gamma=0.5),
        S.piecewise_constant([10, 20], [1.0, 0.5, 0.1]),
        S.exponential_decay(0.1, 0.96, 100, staircase=True, end_lr=1e-3),
        S.inverse_time_decay(0.1, 0.5, 10),
        S.polynomial_decay(0.1, 100, 0.01, 2.0, cycle=True),
        S.cosine_decay(0.1, 100, 0.001),
        S.cosine_restarts(0.1, 10, 2, 0.001),
        S.one_cycle(0.1, 100),
        S.one_cycle(0.1, 100, three_phase=True, anneal="linear"),
        S.linear_warmup(0.1, 10, 0.01),
        S.warmup(S.cosine_decay(0.1, 50), 10),
        S.warmup_cosine_decay(0.1, 10, 100, 0.001, 0.002),
        S.join([S.constant(0.1), S.warmup(S.inverse_time_decay(0.1, 1.0), 5)], [7]),
        S.reduce_on_plateau(0.1, patience=2),
    ]


@pytest.mark.parametrize("schedule", all_schedules(), ids=lambda s: s.name)
def test_vectorised_equals_scalar_and_round_trips(schedule):
    t = np.arange(0, 2500)
    values = schedule(t)
    assert values.shape == t.shape and values.dtype == np.float64
    scalar = np.array([schedule(int(k)) for k in t])
    # Python's and NumPy's pow may round differently in the last bit
    np.testing.assert_allclose(values, scalar, rtol=3e-16, atol=0)
    assert schedule(np.int64(5)) == schedule(5)
    assert schedule(np.array([[3, 4], [5, 6]])).shape == (2, 2)
    assert isinstance(schedule(3), float)
    assert math.isfinite(schedule(10**9))

    text = json.dumps(schedule.to_dict())
    rebuilt = S.from_dict(json.loads(text))
    assert rebuilt == schedule and repr(rebuilt) == repr(schedule)
    np.testing.assert_array_equal(rebuilt(t), values)
    unpickled = pickle.loads(pickle.dumps(schedule))
    np.testing.assert_array_equal(unpickled(t), values)
    assert repr(schedule).startswith(schedule.name + "(")


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: S.step_decay(0.1, 0),
            ValueError,
            r"Invalid step_size: 0 \(expected an integer >= 1\)",
        ),
        (
            lambda: S.step_decay(0.1, 10, gamma=0),
            ValueError,
            r"Invalid gamma: 0\.0 \(expected 0 < gamma <= 1\)",
        ),
        (
            lambda: S.step_decay(0.1, 10, gamma=2),
            ValueError,
            r"Invalid gamma: 2\.0 \(expected 0 < gamma <= 1\)",
        ),
        (lambda: S.step_decay(-0.1, 10), ValueError, r"Invalid lr: -0\.1"),
        (lambda: S.step_decay(float("nan"), 10), ValueError, r"Invalid lr: nan"),
        (
            lambda: S.multistep_decay(0.1, []),
            ValueError,
            r"Invalid milestones: \[\] \(expected at least one step\)",
        ),
        (
            lambda: S.multistep_decay(0.1, [30, 10]),
            ValueError,
            r"Invalid milestones: \[30, 10\] \(expected strictly increasing",
        ),
        (lambda: S.multistep_decay(0.1, [10, 20], gamma=-1), ValueError, r"Invalid gamma"),
        (
            lambda: S.piecewise_constant([20, 10], [1, 2, 3]),
            ValueError,
            r"Invalid boundaries: \[20, 10\]",
        ),
        (
            lambda: S.piecewise_constant([10, 20], [1, 2]),
            ValueError,
            r"one more value than boundaries: got 2 values for 2",
        ),
        (lambda: S.exponential_decay(0.1, 0.0), ValueError, r"Invalid decay_rate: 0\.0"),
        (
            lambda: S.exponential_decay(0.1, 1.5),
            ValueError,
            r"a growing exponential, decay_rate=1\.5, needs end_lr",
        ),
        (
            lambda: S.exponential_decay(0.1, 0.5, decay_steps=-3),
            ValueError,
            r"Invalid decay_steps: -3",
        ),
        (lambda: S.inverse_time_decay(0.1, -1.0), ValueError, r"Invalid decay_rate: -1\.0"),
        (lambda: S.polynomial_decay(0.1, 0), ValueError, r"Invalid decay_steps: 0"),
        (lambda: S.polynomial_decay(0.1, 10, power=0), ValueError, r"Invalid power: 0\.0"),
        (
            lambda: S.cosine_decay(0.1, 10.5),
            TypeError,
            r"Invalid decay_steps: 10\.5 \(expected an integer",
        ),
        (lambda: S.cosine_restarts(0.1, 10, cycle_mult=0), ValueError, r"Invalid cycle_mult: 0"),
        (lambda: S.one_cycle(0.1, 100, pct_start=1.2), ValueError, r"Invalid pct_start: 1\.2"),
        (lambda: S.one_cycle(0.1, 3, pct_start=0.1), ValueError, r"one_cycle phases are empty"),
        (lambda: S.one_cycle(0.1, 100, anneal="exp"), ValueError, r"Invalid anneal: 'exp'"),
        (lambda: S.linear_warmup(0.1, -5), ValueError, r"Invalid warmup_steps: -5"),
        (
            lambda: S.warmup_cosine_decay(0.1, 200, 100),
            ValueError,
            r"Invalid warmup_steps: 200 \(expected warmup_steps <= total_steps = 100\)",
        ),
        (
            lambda: S.join([S.constant(0.1)], [5]),
            ValueError,
            r"one more schedule than boundaries: got 1 schedules for 1",
        ),
        (
            lambda: S.join([S.constant(0.1), S.constant(0.2)], [0]),
            ValueError,
            r"Invalid entry of boundaries: 0",
        ),
        (
            lambda: S.join([S.constant(0.1), lambda t: 0.1], [3]),
            TypeError,
            r"expected a fastopt schedule",
        ),
        (
            lambda: S.warmup(S.reduce_on_plateau(0.1), 5),
            TypeError,
            r"reduce_on_plateau is stateful",
        ),
        (
            lambda: S.reduce_on_plateau(0.1, factor=1.0),
            ValueError,
            r"Invalid factor: 1\.0 \(expected 0 < factor < 1\)",
        ),
        (lambda: S.reduce_on_plateau(0.1, mode="up"), ValueError, r"Invalid mode: 'up'"),
        (lambda: S.from_dict({"type": "nope"}), ValueError, r"unknown schedule 'nope'"),
    ],
)
def test_invalid_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "step, error, message",
    [
        (-1, ValueError, r"Invalid step: -1 \(expected an integer >= 0\)"),
        (np.array([3, -2]), ValueError, r"Invalid step: -2"),
        (1.5, TypeError, r"expected integers, got dtype float64"),
        (True, TypeError, r"Invalid step: True"),
    ],
)
def test_invalid_steps(step, error, message):
    with pytest.raises(error, match=message):
        S.cosine_decay(0.1, 10)(step)


def test_reduce_on_plateau_state_round_trip():
    plateau = S.reduce_on_plateau(0.1, patience=1)
    for cost in [3, 2, 2, 2, 2]:
        plateau.step(cost)
    assert plateau(0) == pytest.approx(0.01)
    copy = S.from_dict(json.loads(json.dumps(plateau.to_dict())))
    assert copy.state_dict() == plateau.state_dict()
    fresh = S.reduce_on_plateau(0.1, patience=1)
    fresh.load_state_dict(plateau.state_dict())
    for cost in [2, 2, 2]:
        assert fresh.step(cost) == plateau.step(cost)
    with pytest.raises(ValueError, match=r"state expects keys"):
        fresh.load_state_dict({"best": 1.0})


def test_scale_lr():
    assert fastopt.scale_lr(0.1, 1024, 256) == pytest.approx(0.4)
    assert fastopt.scale_lr(1e-3, 1024, 256, rule="sqrt") == pytest.approx(2e-3)
    assert fastopt.scale_lr(0.1, 64, 256, rule="sqrt") == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"Invalid rule: 'cubic'"):
        fastopt.scale_lr(0.1, 2, 1, rule="cubic")
    with pytest.raises(ValueError, match=r"Invalid batch_size: 0"):
        fastopt.scale_lr(0.1, 0, 1)
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1"):
        fastopt.scale_lr(-1, 2, 1)


def test_optimizer_uses_schedule_k_at_update_k(rng):
    schedule = S.warmup_cosine_decay(0.1, 5, 40, end_lr=0.001)
    p0 = rng.standard_normal(50)
    p = p0.copy()
    opt = fastopt.SGD(p, lr=schedule, param_groups=[{"params": slice(0, 10), "lr_scale": 0.5}])
    expected = p0.copy()
    for k in range(45):
        g = rng.standard_normal(50)
        opt.step(g)
        assert opt.last_lrs == [schedule(k) * 0.5, schedule(k)]
        assert opt.last_lr == schedule(k)  # the default group's, always a float
        expected[:10] -= np.float64(schedule(k) * 0.5) * g[:10]
        expected[10:] -= np.float64(schedule(k)) * g[10:]
    np.testing.assert_array_equal(p, expected)


@pytest.mark.torch
def test_optimizer_with_schedule_matches_torch_with_scheduler(rng, torch):
    p0 = rng.standard_normal(64).astype(np.float32)
    grads = rng.standard_normal((300, 64)).astype(np.float32)
    p = p0.copy()
    opt = fastopt.Adam(p, lr=S.one_cycle(0.01, 300))
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.Adam([tp], lr=0.01, foreach=False)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        topt, 0.01, total_steps=300, cycle_momentum=False
    )
    for g in grads:
        opt.step(g)
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        scheduler.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_resumed_optimizer_continues_the_schedule_exactly(rng, tmp_path):
    schedule = S.cosine_restarts(0.05, 7, cycle_mult=2)
    grads = rng.standard_normal((30, 20))
    straight = np.zeros(20)
    opt = fastopt.Adam(straight, lr=schedule)
    for g in grads:
        opt.step(g)
    first = np.zeros(20)
    opt1 = fastopt.Adam(first, lr=schedule)
    for g in grads[:13]:
        opt1.step(g)
    np.savez(tmp_path / "c.npz", **opt1.state_dict())
    opt2 = fastopt.Adam(first, lr=S.from_dict(schedule.to_dict()))
    opt2.load_state_dict(dict(np.load(tmp_path / "c.npz")))
    for g in grads[13:]:
        opt2.step(g)
    assert first.tobytes() == straight.tobytes()


def test_plot_schedule_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "lr.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ax = fastopt.plot_schedule(S.warmup_cosine_decay(0.1, 100, 1000), 1200, path=path)
    assert path.stat().st_size > 1000
    assert len(ax.lines[0].get_xdata()) == 1200


def test_plot_schedule_to_a_file_closes_the_figure_it_made(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    open_before = plt.get_fignums()
    for k in range(3):
        ax = fastopt.plot_schedule(S.cosine_decay(0.1, 100), 100, path=tmp_path / f"{k}.png")
    assert plt.get_fignums() == open_before and ax.get_lines()
    _, mine = plt.subplots()
    fastopt.plot_schedule(S.cosine_decay(0.1, 100), 100, ax=mine, path=tmp_path / "mine.png")
    assert mine.figure.number in plt.get_fignums()  # the caller's figure stays open
    plt.close(mine.figure)


def test_plot_without_matplotlib_names_the_extra(no_matplotlib):
    with pytest.raises(ImportError, match=r'pip install "fastopt\[plot\]"'):
        fastopt.plot_schedule(S.constant(0.1), 10)


def test_growing_exponential_from_zero_stays_finite():
    s = S.exponential_decay(0.0, 2.0, end_lr=1.0)
    assert s(2000) == 0.0 and s(10**9) == 0.0
    assert not np.isnan(s(np.array([0, 2000, 10**9]))).any()


@pytest.mark.parametrize("mode", ["min", "max"])
def test_reduce_on_plateau_to_dict_is_strict_json_and_reads_back(mode):
    """A fresh plateau's best is an infinity: to_dict writes it as a string, from_dict
    reads it back, and the copy goes on exactly as the original.
    """
    plateau = S.reduce_on_plateau(0.1, mode=mode, patience=0)
    assert math.isinf(plateau.state_dict()["best"])
    text = json.dumps(plateau.to_dict(), allow_nan=False)
    assert json.loads(text)["state"]["best"] == ("inf" if mode == "min" else "-inf")
    copy = S.from_dict(json.loads(text))
    assert copy.state_dict() == plateau.state_dict() and copy == plateau
    for cost in [3.0, 3.0, 2.0, 2.0]:
        assert copy.step(cost) == plateau.step(cost)
    with pytest.raises(ValueError, match=r"Invalid reduce_on_plateau state best: 'big'"):
        copy.load_state_dict({**plateau.state_dict(), "best": "big"})
