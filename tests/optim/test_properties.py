"""Property-based tests (hypothesis) of the optimizers, over random cases:

* params and every state buffer equal the NumPy reference (tests/reference.py) bit for
  bit, for optimizers and options from registry.CONFIGS, both dtypes, random sizes,
  gradients and step counts, and a constant or scheduled learning rate;
* parameter groups (on a plain array or a FlatParams) act as the reference run on each
  segment with the group's ``lr * lr_scale`` and ``weight_decay``;
* a call that raises leaves params, the gradient, the state and the step count bit
  identical (and the next good step is the one it would have been);
* fastopt.functional gives the same bits as the optimizer classes;
* a state_dict round trip (in memory or through np.savez) resumes bit for bit.

The tests are parametrized by optimizer (and by kind of bad call), and every one has a
small, bounded example count with ``derandomize=True``, so that the file runs in seconds
and CI is reproducible; buffers are small, with a few examples above
``_config.PARALLEL_MIN_SIZE`` so that the threaded kernels run too.
"""

import io
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import fastopt
from fastopt import _config
from fastopt import functional as F
from fastopt import schedules as S

import reference
from registry import CASES, CONFIGS, lr_schedule, make

# -- strategies ------------------------------------------------------------------------

DTYPES = st.sampled_from([np.float32, np.float64])
MAX_STEPS = 8
NAMES = list(CONFIGS)  # the tests run for each optimizer, with hypothesis drawing the rest


def configured(name):
    """``(name, options)`` with options from registry.CONFIGS[name]."""
    return st.tuples(st.just(name), st.sampled_from(CONFIGS[name]))


def randomized(name):
    """``(name, options)`` with a random value for every option."""
    return st.tuples(st.just(name), RANDOM_OPTIONS[name])


@st.composite
def sizes(draw, min_size=1):
    """Mostly 1..300 elements; about one example in five around the threaded path's
    threshold (PARALLEL_MIN_SIZE - 1 .. 20_000).
    """
    if draw(st.integers(0, 4)) == 4:  # shrinks towards the small sizes
        return draw(st.integers(_config.PARALLEL_MIN_SIZE - 1, 20_000))
    return draw(st.integers(min_size, 300))


SCALES = st.sampled_from([0.0, 1e-3, 1.0, 30.0, 500.0]) | st.floats(1e-3, 100.0)


@dataclass(frozen=True)
class Problem:
    """Everything but the learning rate, as small drawn values (arrays come from ``seed``)."""

    name: str
    options: dict
    dtype: type
    size: int
    seed: int
    scales: tuple  # one gradient magnitude per step

    @property
    def steps(self):
        return len(self.scales)

    def arrays(self):
        """``(initial params, one gradient per step)``; about 5% of the gradient entries
        are exact zeros.
        """
        rng = np.random.default_rng(self.seed)
        p0 = rng.standard_normal(self.size).astype(self.dtype)
        grads = rng.standard_normal((self.steps, self.size)) * np.array(self.scales)[:, None]
        grads[rng.random(grads.shape) < 0.05] = 0.0
        return p0, grads.astype(self.dtype)


@st.composite
def problems(draw, cases, min_size=1, min_steps=1, max_steps=MAX_STEPS):
    name, options = draw(cases)
    return Problem(
        name=name,
        options=options,
        dtype=draw(DTYPES),
        size=draw(sizes(min_size)),
        seed=draw(st.integers(0, 2**32 - 1)),
        scales=tuple(draw(st.lists(SCALES, min_size=min_steps, max_size=max_steps))),
    )


RATES = st.floats(1e-4, 1.0)

SCHEDULES = st.one_of(
    st.just(lr_schedule),
    st.builds(S.cosine_decay, RATES, st.integers(1, 10), end_lr=st.floats(0.0, 1e-3)),
    st.builds(
        S.warmup_cosine_decay,
        RATES,
        st.integers(0, 4),
        st.integers(4, 12),
        init_lr=st.floats(0.0, 1e-3),
        end_lr=st.floats(0.0, 1e-3),
    ),
    st.builds(
        S.exponential_decay,
        RATES,
        st.floats(0.1, 0.999),
        decay_steps=st.integers(1, 4),
        staircase=st.booleans(),
    ),
    st.builds(S.step_decay, RATES, st.integers(1, 4), gamma=st.floats(0.05, 1.0)),
)

LEARNING_RATES = st.floats(0.0, 1.0) | SCHEDULES

WEIGHT_DECAYS = st.sampled_from([0.0, 0.1]) | st.floats(0.0, 0.5)
EPSILONS = st.sampled_from([1e-10, 1e-8, 1e-6]) | st.floats(1e-10, 1e-3)


MOMENTA = st.sampled_from([0.0, 0.9]) | st.floats(0.0, 0.99)


@st.composite
def sgd_options(draw):
    options = draw(
        st.fixed_dictionaries(
            {
                "momentum": MOMENTA,
                "dampening": st.sampled_from([0.0, 0.5]) | st.floats(0.0, 1.0),
                "weight_decay": WEIGHT_DECAYS,
                "maximize": st.booleans(),
            }
        )
    )
    if options["momentum"] > 0 and draw(st.booleans()):
        options.update(nesterov=True, dampening=0.0)
    return options


def adam_options(decoupled):
    options = {
        "betas": st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 0.9999)),
        "eps": EPSILONS,
        "weight_decay": WEIGHT_DECAYS,
        "amsgrad": st.booleans(),
        "maximize": st.booleans(),
    }
    if decoupled:
        options["decoupled_weight_decay"] = st.booleans()
    return st.fixed_dictionaries(options)


# random values for every option (registry.CONFIGS supplies the defaults)
RANDOM_OPTIONS = {
    "SGD": sgd_options(),
    "Adagrad": st.fixed_dictionaries(
        {
            "lr_decay": st.floats(0.0, 0.5),
            "weight_decay": WEIGHT_DECAYS,
            "initial_accumulator_value": st.floats(0.0, 1.0),
            "eps": EPSILONS,
            "maximize": st.booleans(),
        }
    ),
    "RMSprop": st.fixed_dictionaries(
        {
            "alpha": st.floats(0.0, 0.999),
            "eps": st.floats(1e-8, 1e-2),
            "weight_decay": WEIGHT_DECAYS,
            "momentum": MOMENTA,
            "centered": st.booleans(),
            "maximize": st.booleans(),
        }
    ),
    "Adam": adam_options(decoupled=True),
    "AdamW": adam_options(decoupled=False),
}


@st.composite
def layouts(draw, size, max_groups=4, hyperparameters=True):
    """1..``max_groups`` contiguous segments ``(start, stop, spec)`` covering ``[0, size)``;
    ``spec`` is None for a segment left to the default group, else the group's values.
    """
    count = draw(st.integers(1, min(max_groups, size)))
    cuts = st.sets(st.integers(1, max(1, size - 1)), min_size=count - 1, max_size=count - 1)
    cuts = sorted(draw(cuts))
    bounds = [0, *cuts, size]
    values = st.fixed_dictionaries(
        {},
        optional={
            "lr": LEARNING_RATES,
            "weight_decay": WEIGHT_DECAYS,
            "lr_scale": st.sampled_from([0.0, 0.5, 1.0, 2.0]) | st.floats(0.0, 4.0),
        }
        if hyperparameters
        else {"lr": RATES},
    )
    return [(a, b, draw(st.none() | values)) for a, b in zip(bounds, bounds[1:])]


# -- helpers ---------------------------------------------------------------------------


def label(problem, lr=None):
    """Name what an example covers (shown by pytest --hypothesis-show-statistics)."""
    event(problem.name)
    event("threaded" if problem.size >= _config.PARALLEL_MIN_SIZE else "serial")
    if lr is not None:
        event("scheduled lr" if callable(lr) else "constant lr")


def lr_at(lr, t):
    """The learning rate of the update after ``t`` updates, as test_parity passes it."""
    return lr(t) if callable(lr) else lr


def default_weight_decay(name, options):
    return options.get("weight_decay", 1e-2 if name == "AdamW" else 0.0)


def run_reference(name, options, p, grads, lr, lr_scale=1.0, state=None):
    """Apply ``grads`` to ``p`` (in place) with the reference; returns the state."""
    if state is None:
        state = reference.new_state(name, p.size, p.dtype, **options)
    for t, g in enumerate(grads):
        reference.UPDATES[name](p, g, state, lr=lr_at(lr, t) * lr_scale, **options)
    return state


def assert_equals_reference(opt, p, ref_p, ref_state, segment=slice(None)):
    assert set(opt.state) == set(ref_state)
    np.testing.assert_array_equal(p[segment], ref_p[segment], err_msg="param")
    for key, value in ref_state.items():
        if key == "step":
            assert opt.state["step"] == value
        else:
            np.testing.assert_array_equal(opt.state[key][segment], value, err_msg=key)
            assert opt.state[key].dtype == p.dtype


def snapshot(opt, *arrays):
    return [a.copy() for a in arrays], {k: np.copy(v) for k, v in opt.state.items()}


def assert_unchanged(opt, arrays, before):
    saved, state = before
    for array, copy in zip(arrays, saved):
        assert array.tobytes() == copy.tobytes()
    assert set(opt.state) == set(state)
    for key, value in state.items():
        assert np.asarray(opt.state[key]).tobytes() == np.asarray(value).tobytes(), key
    assert opt.step_count == state["step"]


def assert_same_bits(opt, other, p, other_p):
    assert p.tobytes() == other_p.tobytes()
    assert set(opt.state) == set(other.state)
    for key in opt.state:
        assert np.asarray(opt.state[key]).tobytes() == np.asarray(other.state[key]).tobytes()


# -- 1. the reference, bit for bit ---------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data(), lr=LEARNING_RATES)
def test_matches_reference_bit_for_bit(name, data, lr):
    problem = data.draw(problems(configured(name)), label="problem")
    label(problem, lr)
    p0, grads = problem.arrays()
    p = p0.copy()
    opt = make(problem.name, p, lr=lr, **problem.options)
    for g in grads:
        assert opt.step(g)

    ref_p = p0.copy()
    ref_state = run_reference(problem.name, problem.options, ref_p, grads, lr)
    assert_equals_reference(opt, p, ref_p, ref_state)
    assert opt.step_count == problem.steps


# -- 2. parameter groups ---------------------------------------------------------------


@st.composite
def grouped_problems(draw, name):
    problem = draw(problems(configured(name)))
    return problem, draw(layouts(problem.size)), draw(st.booleans())


def merged_bounds(layout):
    """The optimizer's groups for a layout: neighbouring default segments form one group."""
    bounds = []
    for a, b, spec in layout:
        if spec is None and bounds and bounds[-1][2]:
            bounds[-1] = (bounds[-1][0], b, True)
        else:
            bounds.append((a, b, spec is None))
    return [(a, b) for a, b, _ in bounds]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20, deadline=None, derandomize=True)
@given(data=st.data(), lr=LEARNING_RATES)
def test_groups_match_the_reference_on_each_segment(name, data, lr):
    problem, layout, flat_params = data.draw(grouped_problems(name), label="case")
    label(problem, lr)
    event(f"{len(layout)} segments" + (" in a FlatParams" if flat_params else ""))
    options = problem.options
    p0, grads = problem.arrays()
    if flat_params:  # one array per segment, selected by name
        fp = fastopt.FlatParams({f"a{i}": p0[a:b] for i, (a, b, _) in enumerate(layout)})
        params, p = fp, fp.data
        selectors = [f"a{i}" for i in range(len(layout))]
    else:
        params = p = p0.copy()
        selectors = [slice(a, b) for a, b, _ in layout]
    assert p.tobytes() == p0.tobytes()
    specs = [dict(spec, params=s) for (_, _, spec), s in zip(layout, selectors) if spec is not None]
    opt = make(name, params, lr=lr, param_groups=specs, **options)
    assert [(g["start"], g["stop"]) for g in opt.param_groups] == merged_bounds(layout)
    for g in grads:
        if flat_params:
            fp.grad[:] = g
            assert opt.step()
        else:
            assert opt.step(g)

    ref_p = p0.copy()
    for a, b, spec in layout:
        spec = spec or {}
        group_options = dict(
            options, weight_decay=spec.get("weight_decay", default_weight_decay(name, options))
        )
        state = run_reference(
            name,
            group_options,
            ref_p[a:b],
            grads[:, a:b],
            spec.get("lr", lr),
            lr_scale=spec.get("lr_scale", 1.0),
        )
        assert_equals_reference(opt, p, ref_p, state, slice(a, b))


# -- 3. a call that raises changes nothing ---------------------------------------------


class Armed:
    """A schedule: ``good``'s value, except ``bad`` at step ``at`` while armed."""

    def __init__(self, good, at, bad):
        self.good, self.at, self.bad, self.armed = good, at, bad, True

    def __call__(self, t):
        return self.bad if self.armed and t == self.at else lr_at(self.good, t)

    def __repr__(self):
        return f"Armed({self.good!r}, at={self.at}, bad={self.bad!r})"


GRAD_ERRORS = [
    "short",
    "long",
    "2-d",
    "other dtype",
    "strided",
    "list",
    "params",
    "overlaps params",
    "state buffer",
]
SCHEDULE_ERRORS = [float("nan"), -0.5, "0.1", None]
GROUP_ERRORS = [
    ("lr", -1.0),
    ("lr", "0.1"),
    ("lr", float("nan")),
    ("weight_decay", float("nan")),
    ("weight_decay", -1.0),
    ("lr_scale", True),
    ("lr_scale", -1.0),
    ("lr_scale", float("inf")),
]
LOAD_ERRORS = [
    "buffer short",
    "buffer long",
    "buffer 2-d",
    "buffer int",
    "step -1",
    "step 1.5",
    "step True",
    "step '3'",
    "step [3]",
    "step None",
]


def has_buffers(case):
    name, options = case
    return set(reference.new_state(name, 1, np.float64, **options)) != {"step"}


BAD_CALLS = (
    [("grad", kind) for kind in GRAD_ERRORS]
    + [("schedule", value) for value in SCHEDULE_ERRORS]
    + [("group", edit) for edit in GROUP_ERRORS]
    + [("load", kind) for kind in LOAD_ERRORS]
)


def bad_call_id(kind, detail):
    if kind == "group":
        return f"group-{detail[0]}={detail[1]!r}"
    return f"{kind}-{detail!r}" if kind == "schedule" else f"{kind}-{detail}"


def needs_buffers(kind, detail):
    return (kind, detail) == ("grad", "state buffer") or str(detail).startswith("buffer")


@st.composite
def failing_setups(draw, with_buffers):
    """``(problem, layout, lr)`` for an optimizer built with ``layout``'s slice groups and
    stepped ``problem.steps - 1`` times before the bad call.
    """
    cases = st.sampled_from([c for c in CASES if has_buffers(c)] if with_buffers else CASES)
    problem = draw(problems(cases, min_size=2, min_steps=2, max_steps=4))
    layout = draw(layouts(problem.size, max_groups=3, hyperparameters=False))
    return problem, layout, draw(LEARNING_RATES)


def bad_gradient(kind, p, backing, opt, rng, which):
    """A gradient that step() must reject."""
    size, dtype = p.size, p.dtype
    other = np.float64 if dtype == np.float32 else np.float32
    buffers = [v for k, v in opt.state.items() if k != "step"]
    return {
        "short": lambda: rng.standard_normal(size - 1).astype(dtype),
        "long": lambda: rng.standard_normal(size + 1).astype(dtype),
        "2-d": lambda: rng.standard_normal((size, 1)).astype(dtype),
        "other dtype": lambda: rng.standard_normal(size).astype(other),
        "strided": lambda: rng.standard_normal(2 * size).astype(dtype)[::2],
        "list": lambda: [1.0] * size,
        "params": lambda: p,
        "overlaps params": lambda: backing[:size] if which % 2 else backing[2:],
        "state buffer": lambda: buffers[which % len(buffers)],
    }[kind]()


def bad_state_dict(kind, opt, which):
    """The optimizer's state_dict with every value changed (step + 3, buffers + 1), then
    one entry broken: a load that copied anything before raising would show.
    """
    sd = opt.state_dict()
    sd["step"] += 3
    buffers = [k for k in opt.state if k != "step"]
    for key in buffers:
        sd[key] = sd[key] + 1
    if kind.startswith("buffer"):
        key = buffers[which % len(buffers)]
        value = sd[key]
        sd[key] = {
            "buffer short": value[:-1],
            "buffer long": np.append(value, value[:1]),
            "buffer 2-d": value.reshape(1, -1),
            "buffer int": value.astype(np.int64),
        }[kind]
    else:
        sd["step"] = {
            "step -1": -1,
            "step 1.5": 1.5,
            "step True": True,
            "step '3'": "3",
            "step [3]": np.array([3]),
            "step None": None,
        }[kind]
    return sd


@pytest.mark.parametrize("kind, detail", BAD_CALLS, ids=[bad_call_id(*c) for c in BAD_CALLS])
@settings(max_examples=20, deadline=None, derandomize=True)
@given(data=st.data(), which=st.integers(0, 7))
def test_a_call_that_raises_changes_nothing(kind, detail, data, which):
    problem, layout, lr = data.draw(failing_setups(needs_buffers(kind, detail)), label="setup")
    label(problem, lr)
    name, options, size = problem.name, problem.options, problem.size
    p0, grads = problem.arrays()
    good_steps = problem.steps - 1
    bad_group = which % len(layout)  # the segment whose schedule or edited value is bad
    groups, armed = [], None
    for i, (a, b, spec) in enumerate(layout):
        if spec is not None or i == bad_group:
            group_lr = (spec or {}).get("lr", lr)
            if kind == "schedule" and i == bad_group:
                group_lr = armed = Armed(group_lr, at=good_steps, bad=detail)
            groups.append({"params": slice(a, b), "lr": group_lr})

    backing = np.zeros(size + 2, problem.dtype)  # params with a neighbour on each side
    p = backing[1:-1]
    p[:] = p0
    opt = make(name, p, lr=lr, param_groups=groups, **options)
    twin_p = p0.copy()
    # never sees the bad call (it shares the Armed schedule, bad only at the failing step)
    twin = make(name, twin_p, lr=lr, param_groups=groups, **options)
    for g in grads[:good_steps]:
        assert opt.step(g) and twin.step(g)

    g = grads[good_steps]
    arrays = [p, g]
    call = lambda: opt.step(g)  # noqa: E731
    if kind == "grad":
        bad = bad_gradient(detail, p, backing, opt, np.random.default_rng(which), which)
        arrays += [bad] if isinstance(bad, np.ndarray) else []
        call = lambda: opt.step(bad)  # noqa: E731
    elif kind == "load":
        sd = bad_state_dict(detail, opt, which)
        call = lambda: opt.load_state_dict(sd)  # noqa: E731
    elif kind == "group":
        key, value = detail
        (edited,) = [group for group in opt.param_groups if group["start"] == layout[bad_group][0]]
        good_value = edited[key]
        edited[key] = value

    before = snapshot(opt, *arrays)
    with pytest.raises((TypeError, ValueError)):
        call()
    assert_unchanged(opt, arrays, before)

    # put the good value back: the next step is the one it would have been
    if kind == "group":
        edited[key] = good_value
    if armed is not None:
        armed.armed = False
    assert opt.step(g) and twin.step(g)
    assert_same_bits(opt, twin, p, twin_p)


# -- 4. the functional layer ------------------------------------------------------------


def functional_step(name, options, p, g, state, step, lr):
    """Update number ``step`` (1 for the first) with fastopt.functional, on ``state``
    (a dict of caller-owned buffers named as opt.state).
    """
    o = dict(options)
    if name == "SGD":
        F.sgd_(p, g, state.get("momentum_buffer"), lr=lr, first_step=step == 1, **o)
    elif name == "Adagrad":
        o.pop("initial_accumulator_value", None)  # only the initial value of state["sum"]
        F.adagrad_(p, g, state["sum"], step=step, lr=lr, **o)
    elif name == "RMSprop":
        F.rmsprop_(
            p, g, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer"),
            lr=lr, **o,
        )  # fmt: skip
    else:
        if name == "AdamW":
            o.update(weight_decay=default_weight_decay(name, options), decoupled_weight_decay=True)
        F.adam_(
            p, g, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
            step=step, lr=lr, **o,
        )  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data(), lr=st.floats(0.0, 1.0))
def test_functional_matches_the_classes(name, data, lr):
    problem = data.draw(problems(randomized(name) | configured(name)), label="problem")
    label(problem)
    options = problem.options
    p0, grads = problem.arrays()
    p = p0.copy()
    opt = make(name, p, lr=lr, **options)
    fn_p = p0.copy()
    state = reference.new_state(name, problem.size, problem.dtype, **options)
    state.pop("step")
    for step, g in enumerate(grads, start=1):
        assert opt.step(g)
        functional_step(name, options, fn_p, g, state, step, lr)
    assert fn_p.tobytes() == p.tobytes()
    assert set(opt.state) == {"step", *state}
    for key, value in state.items():
        assert value.tobytes() == opt.state[key].tobytes(), key


# -- 5. state_dict round trip -------------------------------------------------------------


@st.composite
def resumed_runs(draw, name):
    problem = draw(problems(configured(name), min_steps=2))
    layout = draw(layouts(problem.size, max_groups=3))
    return (
        problem,
        layout,
        draw(st.integers(1, problem.steps - 1)),  # updates before the checkpoint
        draw(st.booleans()),  # through np.savez / np.load
        draw(st.booleans()),  # skip_nonfinite, with a NaN gradient before the checkpoint
    )


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20, deadline=None, derandomize=True)
@given(data=st.data(), lr=LEARNING_RATES)
def test_state_dict_round_trip_resumes_bit_for_bit(name, data, lr):
    problem, layout, saved_at, via_npz, skip = data.draw(resumed_runs(name), label="case")
    label(problem, lr)
    options = problem.options
    p0, grads = problem.arrays()
    groups = [dict(spec, params=slice(a, b)) for a, b, spec in layout if spec is not None]

    def build(p):
        return make(name, p, lr=lr, param_groups=groups, skip_nonfinite=skip, **options)

    p = p0.copy()
    opt = build(p)
    if skip:
        nan_grad = grads[0].copy()
        nan_grad[-1] = np.nan
        assert not opt.step(nan_grad)
    for g in grads[:saved_at]:
        assert opt.step(g)
    sd = opt.state_dict()
    if via_npz:
        file = io.BytesIO()
        np.savez(file, **sd)
        file.seek(0)
        with np.load(file) as saved:
            sd = {k: saved[k] for k in saved.files}

    resumed_p = p.copy()
    resumed = build(resumed_p)
    resumed.load_state_dict(sd)
    assert resumed.step_count == opt.step_count == saved_at
    assert resumed.skipped_steps == opt.skipped_steps == int(skip)
    assert_same_bits(resumed, opt, resumed_p, p)
    for g in grads[saved_at:]:
        assert opt.step(g) and resumed.step(g)
    assert_same_bits(resumed, opt, resumed_p, p)
    assert resumed.step_count == problem.steps
