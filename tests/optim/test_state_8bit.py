"""8-bit blockwise optimizer state (``state_precision="8bit"``).

* every configuration of tests/registry.py equals the NumPy reference bit for bit (params,
  codes and scales), float32 and float64, serial and threaded kernels, with parameter
  groups whose boundaries are not multiples of the block, a schedule as lr and clipping;
* the codes: every code decodes to its format value, values at, between and around the
  code values encode to the nearest code (ties up, zero below the threshold), the top
  code for a value above the top by rounding, NaN and infinite blocks, zero blocks;
* the size threshold, error bounds against full-precision state (one step, and a stream
  of noisy-quadratic gradients), and the rest of the optimizer with 8-bit state: skipping,
  maximize, copies, shards, state_dict (npz, checkpoints, resume, conversions, bad input),
  memory.
"""

import copy
import pickle

import numpy as np
import pytest
from state_helpers import (
    assert_within,
    noisy_quadratic,
    snapshot,
    stream_errors,
    through_npz,
    words,
)

import fastopt
from fastopt import _config
from fastopt import schedules as S
from fastopt.kernels import blockwise
from fastopt.kernels.host import KERNELS

import reference
from registry import CASE_IDS, CASES, DTYPES, gradients, lr_schedule, make

# a centered RMSprop refuses 8-bit state (see test_a_centered_rmsprop_refuses_8bit_state)
CASES_8BIT = [case for case in CASES if not case[1].get("centered")]
CASE_IDS_8BIT = [i for i, case in zip(CASE_IDS, CASES) if not case[1].get("centered")]

EIGHT = "8bit"
BLOCK = reference.BLOCK
TOP = reference.TOP
ABSMAX = reference.ABSMAX
SMALL = blockwise.MIN_SIZE + 1003  # above the 8-bit threshold, not a multiple of BLOCK
# groups [0, 1000) and [1000, 2100) (short last blocks), then the default group: at the
# large size it has at least PARALLEL_MIN_SIZE elements and runs the threaded kernel
LARGE = _config.PARALLEL_MIN_SIZE + 3003
SIZES = [SMALL, LARGE]
STEPS = 15
GROUPS = [
    {"params": slice(0, 1000), "lr_scale": 0.5},
    {"params": slice(1000, 2100), "weight_decay": 0.0},
]


def group_bounds(size):
    return [(0, 1000), (1000, 2100), (2100, size)]


def group_options(lr):
    """The reference's per-group options matching GROUPS (the default group last)."""
    return [{"lr": lr * 0.5}, {"lr": lr, "weight_decay": 0.0}, {"lr": lr}]


# every option set that uses each state buffer, for the tests that touch all of them
FULL_STATE = [
    ("SGD", {"momentum": 0.9}),
    ("Adagrad", {"initial_accumulator_value": 0.1}),
    ("RMSprop", {"momentum": 0.5}),  # grad_avg (centered) is never 8-bit
    ("Adam", {"amsgrad": True}),
    ("AdamW", {"amsgrad": True}),
]
FULL_STATE_IDS = [name for name, _ in FULL_STATE]


def signed(key):
    return key not in reference.UNSIGNED


def ref_encode(values, key, bounds):
    """The reference's ``(codes, absmax)`` of a whole buffer laid out in ``bounds``."""
    parts = [reference.to_8bit(values[a:b], signed(key)) for a, b in bounds]
    return np.concatenate([c for c, _ in parts]), np.concatenate([s for _, s in parts])


def ref_decode(codes, absmax, key, bounds, dtype):
    """The reference's values of a whole 8-bit buffer laid out in ``bounds``."""
    out, first = [], 0
    for a, b in bounds:
        blocks = -(-(b - a) // BLOCK)
        scales = absmax[first : first + blocks]
        out.append(reference.from_8bit(codes[a:b], scales, signed(key), dtype))
        first += blocks
    return np.concatenate(out)


def assert_equals_reference(opt, p, ref_p, ref_state, steps):
    assert opt.state_precision == EIGHT
    assert set(opt.state) == set(ref_state)
    assert words(p) == words(ref_p), f"params: {np.sum(p != ref_p)} elements differ"
    for key, value in ref_state.items():
        if key == "step":
            continue
        if key.endswith(ABSMAX):
            assert opt.state[key].dtype == p.dtype, key
            assert words(opt.state[key]) == words(value), key
        else:
            assert opt.state[key].dtype == np.uint8, key
            np.testing.assert_array_equal(opt.state[key], value, err_msg=key)
    assert opt.step_count == ref_state["step"] == steps


def run_against_reference(name, options, p0, grads, lr, max_grad_norm=None, grouped=True):
    """Run fastopt (with GROUPS, or one group) and the reference with 8-bit state on the
    same gradients; with ``max_grad_norm`` the reference gets the clip factor torch
    computes from the norm the optimizer reports.
    """
    p = p0.copy()
    opt = make(
        name,
        p,
        lr=lr,
        state_precision=EIGHT,
        max_grad_norm=max_grad_norm,
        param_groups=GROUPS if grouped else None,
        **options,
    )
    bounds = group_bounds(p.size) if grouped else [(0, p.size)]
    assert opt.state.bounds == bounds
    ref_p = p0.copy()
    ref_state = reference.new_state(
        name, p.size, p.dtype, state_precision=EIGHT, bounds=bounds, **options
    )
    common = {k: v for k, v in options.items() if k != "lr"}
    clipped = 0
    for t, g in enumerate(grads):
        assert opt.step(g)
        scale = 1.0
        if max_grad_norm is not None:
            norm = opt.last_grad_norm
            np.testing.assert_allclose(norm, np.linalg.norm(g.astype(np.float64)), rtol=1e-12)
            scale = min(1.0, max_grad_norm / (norm + 1e-6))
            clipped += scale < 1.0
        lr_t = float(lr(t)) if callable(lr) else lr
        reference.step_groups(
            name,
            ref_p,
            g,
            ref_state,
            bounds,
            group_options(lr_t) if grouped else [{"lr": lr_t}],
            grad_scale=scale,
            state_precision=EIGHT,
            **common,
        )
    return opt, p, ref_p, ref_state, clipped


# -- bit for bit with the reference ------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES_8BIT, ids=CASE_IDS_8BIT)
def test_matches_numpy_reference_exactly(name, options, dtype, size, rng):
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, STEPS)
    opt, p, ref_p, ref_state, _ = run_against_reference(name, options, p0, grads, lr_schedule)
    assert_equals_reference(opt, p, ref_p, ref_state, STEPS)
    threaded = KERNELS[opt.algorithm.name, EIGHT][1]
    assert [s.kernel is threaded for s in opt._plan.segments] == [False, False, size == LARGE]


ONE_GROUP = [(LARGE, np.float32), (SMALL, np.float64)]


@pytest.mark.parametrize("size, dtype", ONE_GROUP, ids=[f"{s}-{d.__name__}" for s, d in ONE_GROUP])
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_one_group_matches_numpy_reference_exactly(name, options, dtype, size, rng):
    """One parameter group: the step's single-segment path (the checks and the kernel in
    one call for the serial kernel).
    """
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, STEPS)
    opt, p, ref_p, ref_state, _ = run_against_reference(
        name, options, p0, grads, lr_schedule, grouped=False
    )
    assert opt._plan.single
    assert_equals_reference(opt, p, ref_p, ref_state, STEPS)


# a threaded step with clipping runs two threaded kernels (norm, update)
CLIPPED = [(SMALL, np.float32), (LARGE, np.float64)]


@pytest.mark.parametrize("size, dtype", CLIPPED, ids=[f"{s}-{d.__name__}" for s, d in CLIPPED])
@pytest.mark.parametrize("name, options", CASES_8BIT, ids=CASE_IDS_8BIT)
def test_clipped_steps_match_numpy_reference_exactly(name, options, dtype, size, rng):
    steps = 10
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, steps)
    opt, p, ref_p, ref_state, clipped = run_against_reference(
        name, options, p0, grads, lr_schedule, max_grad_norm=50.0
    )
    assert clipped == steps  # element 0 alone has norm 500
    assert_equals_reference(opt, p, ref_p, ref_state, steps)


@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_a_fastopt_schedule_as_lr_matches_the_reference(name, options, rng):
    schedule = S.warmup_cosine_decay(0.05, warmup_steps=5, total_steps=STEPS)
    p0 = rng.standard_normal(SMALL).astype(np.float32)
    grads = gradients(rng, SMALL, np.float32, STEPS)
    opt, p, ref_p, ref_state, _ = run_against_reference(name, options, p0, grads, schedule)
    assert_equals_reference(opt, p, ref_p, ref_state, STEPS)
    assert opt.last_lrs == [schedule(STEPS - 1) * 0.5, schedule(STEPS - 1), schedule(STEPS - 1)]


# -- the codes -------------------------------------------------------------------------------

# (code, value) worked out by hand from the format definitions
HAND_UNSIGNED = [
    (0x00, 0.0),
    (0x01, 1.125 * 2.0**-31),  # smallest nonzero: e = 0, m = 1
    (0x07, 1.875 * 2.0**-31),
    (0x08, 2.0**-30),  # e = 1
    (0x09, 1.125 * 2.0**-30),
    (0x78, 2.0**-16),  # e = 15
    (0xF8, 1.0),  # e = 31 = bias
    (0xFC, 1.5),
    (0xFF, 1.875),  # TOP
]
HAND_SIGNED = [
    (0x00, 0.0),
    (0x80, 0.0),  # both zeros read +0
    (0x01, 1.125 * 2.0**-15),
    (0x81, -1.125 * 2.0**-15),
    (0x07, 1.875 * 2.0**-15),
    (0x08, 2.0**-14),
    (0x38, 2.0**-8),  # e = 7
    (0x78, 1.0),  # e = 15 = bias
    (0x7F, 1.875),
    (0xFF, -1.875),
    (0xFB, -1.375),
]


def test_the_reference_code_values_are_the_formats():
    for table, hand in ((reference.code_values(False), HAND_UNSIGNED),
                        (reference.code_values(True), HAND_SIGNED)):  # fmt: skip
        for code, value in hand:
            assert words(table[code]) == words(np.float64(value)), hex(code)
        assert np.all(table.astype(np.float32) == table)  # all exact in float32
    unsigned, signed_table = reference.code_values(False), reference.code_values(True)
    assert np.all(np.diff(unsigned) > 0)  # increasing: the code is an order on magnitudes
    assert np.all(np.diff(signed_table[:128]) > 0)
    np.testing.assert_array_equal(signed_table[129:], -signed_table[1:128])
    # 8 evenly spaced steps per binade, from the first nonzero code on
    for table, bias in ((unsigned, 31), (signed_table[:128], 15)):
        binades = table[8:].reshape(-1, 8)
        steps = np.diff(np.concatenate([binades, 2 * binades[:, :1]], axis=1), axis=1)
        np.testing.assert_array_equal(steps, np.broadcast_to(binades[:, :1] / 8, steps.shape))
        np.testing.assert_array_equal(np.diff(table[1:9]), 2.0**-bias / 8)  # codes 1..8
        assert table[8] == 2.0 ** (1 - bias) and table[8 * bias] == 1.0
    # the thresholds of the kernels' constants
    assert blockwise.ZERO_UNSIGNED == reference.zero_threshold(False) == 17 / 16 * 2.0**-31
    assert blockwise.ZERO_SIGNED == reference.zero_threshold(True) == 17 / 16 * 2.0**-15


def optimizer_with(key, dtype, size=blockwise.MIN_SIZE):
    """A fresh 8-bit optimizer holding state ``key``: SGD momentum (signed) or Adagrad
    (unsigned), on zero parameters.
    """
    p = np.zeros(size, dtype)
    if key == "momentum_buffer":
        return fastopt.SGD(p, lr=0.5, momentum=0.9, state_precision=EIGHT)
    return fastopt.Adagrad(p, lr=0.5, state_precision=EIGHT)


KINDS = ["momentum_buffer", "sum"]  # a signed and an unsigned state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key", KINDS, ids=["signed", "unsigned"])
def test_every_code_decodes_to_its_format_value(key, dtype, rng):
    """All 256 codes in every block: with absmax = TOP (scale 1) a code reads back as its
    format value exactly (signs and -0.0 included); with another scale as value * scale.
    """
    opt = optimizer_with(key, dtype)
    blocks = opt.state[key + ABSMAX].size
    codes = np.tile(np.arange(256, dtype=np.uint8), blocks)
    absmax = np.exp(rng.uniform(-30, 30, blocks)).astype(np.float32).astype(dtype)
    absmax[0], absmax[1] = TOP, 1.0
    opt.state[key][:] = codes
    opt.state[key + ABSMAX][:] = absmax
    decoded = opt.state.decoded(key)
    assert decoded.dtype == dtype
    table = reference.code_values(signed(key)).astype(dtype)
    assert words(decoded[:256]) == words(table)
    assert words(decoded) == words(reference.from_8bit(codes, absmax, signed(key), dtype))
    # the scale is absmax / TOP, computed first
    scale = absmax[5] / dtype(TOP)
    assert words(decoded[5 * 256 : 6 * 256]) == words(table * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_written_codes_are_what_the_next_step_reads(name, options, dtype, rng):
    """Every code value (each appears in every buffer) and random scales written into the
    buffers: the next step's params and state equal the reference's, so the kernels'
    branch-free decoding agrees with the format's values on every code.
    """
    size = SMALL
    p0 = rng.standard_normal(size).astype(dtype)
    p = p0.copy()
    opt = make(name, p, lr=0.01, state_precision=EIGHT, **options)
    ref_state = reference.new_state(name, size, dtype, state_precision=EIGHT, **options)
    blocks = -(-size // BLOCK)
    sd = opt.state_dict() | {"step": 3}
    for key in opt.state.names():
        codes = rng.permutation(np.resize(np.arange(256, dtype=np.uint8), size))
        if name == "RMSprop" and key == "grad_avg":
            codes = np.minimum(codes & 0x7F, 0x40) | (codes & 0x80)  # |grad_avg| <= 2**-7
        absmax = np.exp(rng.uniform(-4, 2, blocks)).astype(np.float32).astype(dtype)
        if key == "grad_avg":
            absmax = np.minimum(absmax, 1e-2)  # small next to square_avg: v - grad_avg**2 > 0
        sd[key], sd[key + ABSMAX] = codes, absmax
        ref_state[key], ref_state[key + ABSMAX] = codes.copy(), absmax.copy()
    ref_state["step"] = 3
    opt.load_state_dict(sd)
    g = gradients(rng, size, dtype, 1)[0]
    ref_p = p.copy()
    opt.step(g)
    with np.errstate(invalid="ignore"):
        reference.UPDATES[name](ref_p, g, ref_state, lr=0.01, state_precision=EIGHT, **options)
    assert np.isfinite(ref_p).all()
    assert_equals_reference(opt, p, ref_p, ref_state, 4)


def encoding_targets(signed_state):
    """float32 values ``y`` in ``[0, TOP]`` with the code each must get, worked out from the
    rule (not from the reference's search): every code value (its own code), every
    midpoint between neighbouring nonzero values (the upper one of the two), the float32
    values just above (the upper code) and just below (the lower code) each midpoint, the
    zero threshold (code 1) and just below it (code 0), and random values below the
    smallest nonzero code (code 0 below the threshold, 1 from it).
    """
    table = reference.code_values(signed_state)[: 128 if signed_state else 256]
    values = table.astype(np.float32)
    codes = np.arange(table.size)
    mids = ((table[1:-1] + table[2:]) / 2).astype(np.float32)
    assert np.all(mids.astype(np.float64) == (table[1:-1] + table[2:]) / 2)  # exact
    lower = np.arange(1, table.size - 1)
    up = np.nextafter(mids, np.float32(np.inf))
    down = np.nextafter(mids, np.float32(0))
    zero = np.float32(17 / 16 * 2.0 ** -(15 if signed_state else 31))
    below_zero = np.nextafter(zero, np.float32(0))
    small = np.random.default_rng(7).uniform(0, table[1], 500).astype(np.float32)
    small_codes = (small >= zero).astype(int)
    y = np.concatenate([values, mids, up, down, [zero, below_zero], small, [0, 0]])
    expected = np.concatenate([codes, lower + 1, lower + 1, lower, [1, 0], small_codes, [0, 0]])
    return y.astype(np.float32), expected.astype(np.uint8)


def blocks_with_top(y):
    """``(values, where)``: ``y`` laid out in blocks of BLOCK elements, each starting with
    TOP (its absmax, so that the scale is exactly 1), padded to at least MIN_SIZE with
    zeros; ``where`` marks the elements of ``y``.
    """
    per = BLOCK - 1
    blocks = max(-(-y.size // per), blockwise.MIN_SIZE // BLOCK)
    values = np.zeros((blocks, BLOCK), np.float32)
    where = np.zeros((blocks, BLOCK), bool)
    values[:, 0] = TOP
    padded = np.zeros(blocks * per, np.float32)
    padded[: y.size] = y
    values[:, 1:] = padded.reshape(blocks, per)
    mask = np.zeros(blocks * per, bool)
    mask[: y.size] = True
    where[:, 1:] = mask.reshape(blocks, per)
    return values.reshape(-1), where.reshape(-1)


@pytest.mark.parametrize(
    "key, dtype",
    [("momentum_buffer", np.float32), ("momentum_buffer", np.float64), ("sum", np.float64)],
    ids=["signed-float32", "signed-float64", "unsigned-float64"],
)
def test_encoding_rounds_to_the_nearest_code_ties_up(key, dtype, rng):
    """A step stores y = |x| * TOP / absmax as the nearest code. With absmax = TOP the
    scale is 1 and y = |x| exactly: SGD's first momentum step stores the gradient (signs
    at random: the sign bit for x < 0, also on a zero magnitude code; -0.0 keeps code
    0); Adagrad's first step stores g * g, here the float64 square of sqrt(y), which
    rounds to y in float32.
    """
    y, expected = encoding_targets(signed(key))
    values, where = blocks_with_top(y)
    if signed(key):
        negative = rng.random(values.size) < 0.5
        grad = np.where(negative, -values, values).astype(dtype)
        grad[np.flatnonzero(where & (values == 0))[0]] = -0.0
        code = np.zeros(values.size, np.uint8)  # the padding: zeros
        code[::BLOCK] = 127  # TOP
        code[where] = expected
        code = np.where(grad < 0, code | 0x80, code).astype(np.uint8)
    else:
        grad = np.sqrt(values.astype(np.float64))
        assert np.all((grad * grad).astype(np.float32) == values)  # y itself, exactly
        code = np.zeros(values.size, np.uint8)
        code[::BLOCK] = 255
        code[where] = expected
    opt = optimizer_with(key, dtype, values.size)
    opt.step(grad)
    assert np.all(opt.state[key + ABSMAX] == TOP)
    stored = opt.state[key]
    bad = np.flatnonzero(stored != code)
    assert bad.size == 0, [(float(values[i]), int(stored[i]), int(code[i])) for i in bad[:5]]
    ref_codes, ref_absmax = reference.to_8bit(grad if signed(key) else grad * grad, signed(key))
    np.testing.assert_array_equal(ref_codes, code)  # the reference's search agrees
    np_codes, _ = blockwise.quantize(grad if signed(key) else grad * grad, signed(key),
                                     opt.state.bounds)  # fmt: skip
    np.testing.assert_array_equal(np_codes, code)  # and fastopt's conversions


def above_the_top(dtype, squared, rng):
    """A value x (the gradient g with x = g * g for ``squared``) whose y = float32(|x| *
    (TOP / absmax)) rounds above TOP, absmax being float32(|x|): found by search.
    """
    f = np.dtype(dtype).type
    for _ in range(100000):
        if dtype == np.float64:
            a = np.float32(rng.uniform(1, 2))
            g = f(a) * (1 + rng.uniform(0.4, 1.0) * 2.0**-24)  # rounds down to a in float32
        else:
            g = f(rng.uniform(0.5, 4))
        x = g * g if squared else g
        amax = f(np.float32(abs(x)))
        y = np.float32(abs(x) * (f(TOP) / amax))
        if y > np.float32(TOP):
            return g
    raise AssertionError("no value found")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key", KINDS, ids=["signed", "unsigned"])
def test_a_value_above_the_top_by_rounding_gets_the_top_code(key, dtype, rng):
    """The block's largest magnitude can land above TOP by rounding (TOP / absmax is
    rounded; in float64 |x| is also above float32(|x|)): it gets the top code, not a code
    that wraps around.
    """
    opt = optimizer_with(key, dtype)
    grad = np.zeros(opt.param.size, dtype)
    g = above_the_top(dtype, not signed(key), rng)
    grad[0], grad[300] = g, -g if signed(key) else g
    grad[1], grad[301] = g / 2, g / 3
    opt.step(grad)
    stored = opt.state[key]
    top = 127 if signed(key) else 255
    assert stored[0] == top and stored[300] == (top | 0x80 if signed(key) else top)
    assert 0 < stored[1] < top
    values = grad if signed(key) else grad * grad
    ref_codes, ref_absmax = reference.to_8bit(values, signed(key))
    np.testing.assert_array_equal(stored, ref_codes)
    assert words(opt.state[key + ABSMAX]) == words(ref_absmax)
    np.testing.assert_allclose(opt.state.decoded(key)[[0, 300]], values[[0, 300]], rtol=2e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key", KINDS, ids=["signed", "unsigned"])
def test_nan_and_inf_poison_their_block_and_a_zero_block_has_scale_zero(key, dtype, rng):
    """A NaN or infinite value (and in float64 a finite one beyond float32's range) gives
    its block a NaN scale and every code 0, so all its elements read back as NaN, and the
    next step spreads the NaN to the whole block's parameters. Other blocks are untouched;
    a block of zeros has scale 0 and reads back as zeros.
    """
    size = blockwise.MIN_SIZE + 100
    opt = optimizer_with(key, dtype, size)
    g = rng.standard_normal(size).astype(dtype)
    g[300], g[600], g[900] = np.nan, np.inf, -np.inf
    if dtype == np.float64:
        g[1200] = 1e39 if signed(key) else 1e20  # x = 1e39 or 1e40 > FLT_MAX
    g[1280:1536] = 0  # block 5
    ref_p, ref_state = (
        np.zeros(size, dtype),
        reference.new_state(
            type(opt).__name__, size, dtype, EIGHT, **({"momentum": 0.9} if signed(key) else {})
        ),
    )
    update = reference.UPDATES[type(opt).__name__]
    options = {"momentum": 0.9} if signed(key) else {}
    with np.errstate(invalid="ignore", over="ignore"):
        opt.step(g)
        update(ref_p, g, ref_state, lr=0.5, state_precision=EIGHT, **options)
    poisoned = [1, 2, 3] + ([4] if dtype == np.float64 else [])
    absmax = opt.state[key + ABSMAX]
    assert np.isnan(absmax[poisoned]).all()
    assert np.isfinite(np.delete(absmax, poisoned)).all() and absmax[5] == 0
    decoded = opt.state.decoded(key).reshape(-1)
    for b in poisoned:
        assert np.all(opt.state[key][b * BLOCK : (b + 1) * BLOCK] == 0)
        assert np.isnan(decoded[b * BLOCK : (b + 1) * BLOCK]).all()
    assert np.all(decoded[1280:1536] == 0) and np.all(opt.state[key][1280:1536] == 0)
    assert np.isfinite(np.delete(decoded, np.r_[256:1024, 1024:1280])).all()
    assert_equals_reference(opt, opt.param, ref_p, ref_state, 1)
    # the parameters moved by the unrounded state: non-finite only where the gradient was
    np.testing.assert_array_equal(np.flatnonzero(~np.isfinite(opt.param)), [300, 600, 900])
    with np.errstate(invalid="ignore", over="ignore"):
        opt.step(rng.standard_normal(size).astype(dtype))
    nan_params = np.isnan(opt.param).reshape(-1)
    expected = np.zeros(size, bool)
    for b in poisoned:
        expected[b * BLOCK : (b + 1) * BLOCK] = True
    np.testing.assert_array_equal(nan_params, expected)


@pytest.mark.parametrize("key", KINDS, ids=["signed", "unsigned"])
def test_a_block_below_the_normal_float32_range_is_stored_as_zero(key):
    """A block whose largest magnitude is below 2**-126 (the smallest normal float32) is
    stored as a zero block: its inverse scale TOP / absmax would overflow float32. The
    absolute error is then below 2**-126; the next block is unaffected.
    """
    size = blockwise.MIN_SIZE
    opt = optimizer_with(key, np.float32, size)
    x = np.zeros(size, np.float32)
    x[:4] = [1e-39, 5e-40, -2.5e-40 if signed(key) else 2.5e-40, 0.0]
    x[256:259] = [1.0, 0.5, 0.25]
    g = x if signed(key) else np.sqrt(x.astype(np.float64)).astype(np.float32)
    values = g if signed(key) else g * g
    opt.step(g)
    decoded = opt.state.decoded(key).astype(np.float64)
    assert opt.state[key + ABSMAX][0] == 0 and (opt.state[key][:256] & 0x7F == 0).all()
    assert np.abs(decoded[:4] - values[:4]).max() < 2.0**-126
    np.testing.assert_allclose(decoded[256:259], values[256:259], rtol=2.0**-4)
    codes, absmax = blockwise.quantize(values, signed(key), opt.state.bounds)
    np.testing.assert_array_equal(codes, opt.state[key])  # conversions agree with steps
    np.testing.assert_array_equal(absmax, opt.state[key + ABSMAX])


# -- the size threshold ----------------------------------------------------------------------


@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_buffers_below_min_size_keep_full_precision_state(name, options):
    assert blockwise.MIN_SIZE == 4096
    small = make(name, np.zeros(4095, np.float32), state_precision=EIGHT, **options)
    assert small.state_precision == "full" and small.state_dtype == np.float32
    assert all(v.dtype == np.float32 and v.size == 4095 for v in small.state.buffers.values())
    assert not any(k.endswith(ABSMAX) for k in small.state.buffers)
    assert "state_precision" not in repr(small)
    assert small.state_dict()["state_precision"] == "full"
    big = make(name, np.zeros(4096, np.float32), state_precision=EIGHT, **options)
    assert big.state_precision == EIGHT and big.state_dtype == np.uint8
    names = big.state.names()
    assert sorted(big.state.buffers) == sorted(names + [n + ABSMAX for n in names])
    for key in names:
        assert big.state[key].dtype == np.uint8 and big.state[key].shape == (4096,)
        assert big.state[key + ABSMAX].dtype == np.float32
        assert big.state[key + ABSMAX].shape == (16,)
    assert repr(big).endswith("state_precision='8bit')")
    assert "precision='8bit'" in repr(big.state)


def test_scales_follow_the_group_layout():
    opt = fastopt.Adam(np.zeros(LARGE, np.float32), state_precision=EIGHT, param_groups=GROUPS)
    assert opt.state.bounds == group_bounds(LARGE)
    blocks = 4 + 5 + -(-(LARGE - 2100) // BLOCK)  # 1000 -> 4, 1100 -> 5 (short last blocks)
    assert opt.state["exp_avg_absmax"].shape == (blocks,)
    assert blockwise.absmax_size(opt.state.bounds) == blocks


# -- error bounds against full-precision state ---------------------------------------------


def representable_state(opt, rng):
    """Random 8-bit state for ``opt``'s buffers, as ``{name: (codes, absmax)}`` (from the
    reference's encoder, per block): magnitudes spread over many binades inside each block
    (down to below the smallest nonzero code), unsigned ones positive, a centered RMSprop's
    ``grad_avg`` below a third of sqrt(``square_avg``).
    """
    size, dtype = opt.param.size, opt.dtype
    state = {}
    names = sorted(opt.state.names(), key=lambda k: k != "square_avg")  # square_avg first
    for key in names:
        if signed(key):
            raw = rng.standard_normal(size) * np.exp(rng.uniform(-16, 0, size))
            if key == "grad_avg":
                v = reference.from_8bit(*state["square_avg"], False, dtype)
                raw = np.sqrt(v) * rng.uniform(-0.3, 0.3, size)
        else:
            raw = np.exp(rng.uniform(-28, 2, size))
        state[key] = reference.to_8bit(raw.astype(dtype), signed(key))
    return state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES_8BIT, ids=CASE_IDS_8BIT)
def test_one_step_from_the_same_state(name, options, dtype, rng):
    """From the same state (8-bit codes, and their exact values in full precision), one step
    gives bit-equal params -- the update uses the unrounded new state -- and each 8-bit
    block is the full-precision new state encoded once (the reference's encoder).

    The bound: with scale s = absmax / TOP, y = |x| / s is rounded to the nearest code
    value from the zero threshold Z = 17/16 * 2**-bias (bias 31 unsigned, 15 signed) up.
    The code values in [2**e, 2**(e+1)) are 2**(e-3) apart, so |y - code| <= 2**(e-4) <=
    2**-4 * y (the worst case, a tie at 2**e * (1 + 2**-4), Z among them, is 2**-4 / (1 +
    2**-4) = 5.9%, which leaves room for the float32 roundings of y and of the decoded
    value, a few 2**-24 each): |dec - x| <= 2**-4 * |x| for |x| >= Z * s. Below it, code
    0: dec = 0 and |dec - x| < Z * s, up to those roundings (relative 2**-20 of the
    bound). The largest element is stored exactly, to the float32 rounding of absmax.
    """
    size = SMALL
    p0 = rng.standard_normal(size).astype(dtype)
    pf, pb = p0.copy(), p0.copy()
    full = make(name, pf, lr=0.01, **options)
    compact = make(name, pb, lr=0.01, state_precision=EIGHT, **options)
    state = representable_state(compact, rng)
    sd = compact.state_dict() | {"step": 4}
    for key, (codes, absmax) in state.items():
        sd[key], sd[key + ABSMAX] = codes, absmax
    compact.load_state_dict(sd)
    exact = full.state_dict() | {"step": 4}
    for key, (codes, absmax) in state.items():
        exact[key] = reference.from_8bit(codes, absmax, signed(key), dtype)
        assert words(compact.state.decoded(key)) == words(exact[key])
    full.load_state_dict(exact)
    coupled_decay = options.get("weight_decay", 0) != 0 and not (
        name == "AdamW" or options.get("decoupled_weight_decay")
    )
    # magnitudes over many binades, so that some of the new state falls below Z
    g = gradients(rng, size, dtype, 1)[0] * np.exp(rng.uniform(-16, 0, size)).astype(dtype)
    with np.errstate(invalid="ignore"):
        full.step(g)
        compact.step(g)
    assert words(pf) == words(pb)
    for key in state:
        x = full.state[key].astype(np.float64)
        codes, absmax = reference.to_8bit(full.state[key], signed(key))
        np.testing.assert_array_equal(compact.state[key], codes, err_msg=key)
        assert words(compact.state[key + ABSMAX]) == words(absmax), key
        assert np.isfinite(absmax).all()
        dec = compact.state.decoded(key).astype(np.float64)
        scale = np.repeat(absmax.astype(np.float64) / TOP, BLOCK)[:size]
        zero = reference.zero_threshold(signed(key))
        coded = np.abs(x) >= zero * scale
        err = np.abs(dec - x)
        assert coded.mean() > 0.5, key
        if not coupled_decay:  # weight_decay * p keeps every gradient element large
            assert (~coded).sum() > 10, key  # the zero threshold is exercised
        assert np.all(err[coded] <= 2.0**-4 * np.abs(x)[coded]), key
        below = ~coded
        assert np.all(err[below] <= zero * scale[below] * (1 + 2.0**-20)), key
        assert np.all(dec[x == 0] == 0)
        assert err.max() > 0  # rounded


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES_8BIT, ids=CASE_IDS_8BIT)
def test_first_step_gives_the_full_precision_params(name, options, dtype, rng):
    """The first step from the initial state reads zeros (codes 0, scales 0 decode to
    exactly 0), runs the full-precision arithmetic and updates the params with the
    unrounded new state: bit-equal params. (Adagrad's initial_accumulator_value is stored
    as a code like any value: absmax is float32(value), so in float64 the full optimizer
    is given that decoded value.) Only the stored state is rounded, so the second step
    differs.
    """
    p0 = rng.standard_normal(SMALL).astype(dtype)
    pf, pb = p0.copy(), p0.copy()
    full = make(name, pf, lr=0.01, **options)
    compact = make(name, pb, lr=0.01, state_precision=EIGHT, **options)
    initial = {key: compact.state.decoded(key) for key in compact.state.names()}
    fill = options.get("initial_accumulator_value", 0.0)
    for value in initial.values():
        np.testing.assert_array_equal(value, dtype(np.float32(fill)))
    full.load_state_dict(full.state_dict() | initial)
    grads = gradients(rng, SMALL, dtype, 2)
    full.step(grads[0])
    compact.step(grads[0])
    assert words(pf) == words(pb)
    full.step(grads[1])
    compact.step(grads[1])
    if compact.state.names():
        assert words(pf) != words(pb)


# A stream of 80 steps on a noisy quadratic: g = h * (p - c) + sigma * noise, with
# per-coordinate curvature h in [0.1, 10] and noise scale sigma in 0.5 * [e**-2, e**2]
# (log-uniform), the gradient taken at the full-precision run's params and fed to both
# runs, so the state difference is the accumulated rounding (the same stream as
# test_state_precision.py's bfloat16 bounds). Measures, for each buffer (float32, 8192
# elements, worst of seeds 0..9):
#   nmae = mean|dec - full| / mean|full|
#   mrel = mean(|dec - full| / (|full| + 0.01 * mean|full|))   (floored near sign changes)
#   outliers = fraction of elements with that relative error > 25% (four half-steps)
# and for the params mean|p_8bit - p_full| / mean|p_full - p0| (the drift relative to
# the distance moved). Bounds: about 1.5x the worst of the ten seeds. For comparison,
# bfloat16 on the same stream: Adam exp_avg 3.4e-3 / 3.5e-3 / 0, exp_avg_sq 1.6e-2 /
# 6.6e-3 / 0, param 2.2e-3: 8-bit state is 10-25x less accurate, and an exp_avg_sq with
# beta2 = 0.999 (0.1% moves against a 6% half-step) mostly moves with its block's absmax.
STREAM = {
    # (name, options): {buffer: (nmae, mrel, outliers)}; "param": drift
    ("Adam", (("lr", 1e-3),)): {
        "exp_avg": (7.2e-2, 8.8e-2, 2.5e-2),  # measured 4.81e-2, 5.87e-2, 1.69e-2
        "exp_avg_sq": (1.2e-1, 2.5e-1, 3.7e-1),  # measured 7.91e-2, 1.67e-1, 2.49e-1
        "param": 6.5e-2,  # measured 4.36e-2
    },
    ("AdamW", (("lr", 1e-3), ("amsgrad", True))): {
        "exp_avg": (7.2e-2, 8.8e-2, 2.6e-2),  # measured 4.80e-2, 5.85e-2, 1.72e-2
        "exp_avg_sq": (1.2e-1, 2.5e-1, 3.7e-1),  # measured 7.91e-2, 1.67e-1, 2.49e-1
        "max_exp_avg_sq": (1.2e-1, 2.5e-1, 3.7e-1),  # measured 7.91e-2, 1.67e-1, 2.49e-1
        "param": 6.5e-2,  # measured 4.33e-2
    },
    ("SGD", (("lr", 1e-2), ("momentum", 0.9))): {
        "momentum_buffer": (8.6e-2, 2e-1, 1.4e-1),  # measured 5.71e-2, 1.32e-1, 9.61e-2
        "param": 1e-1,  # measured 6.69e-2
    },
    ("RMSprop", (("lr", 1e-3), ("momentum", 0.5))): {
        "square_avg": (2.1e-1, 4.1e-1, 6.5e-1),  # measured 1.39e-1, 2.70e-1, 4.30e-1
        "momentum_buffer": (1.8e-1, 2e-1, 1.3e-1),  # measured 1.20e-1, 1.34e-1, 8.44e-2
        "param": 5.8e-2,  # measured 3.85e-2
    },
    ("Adagrad", (("lr", 1e-2),)): {
        "sum": (1.4e-1, 2.8e-1, 4.3e-1),  # measured 9.20e-2, 1.85e-1, 2.86e-1
        "param": 4.5e-2,  # measured 3.03e-2
    },
}


@pytest.mark.parametrize("case", list(STREAM), ids=[name for name, _ in STREAM])
def test_state_error_over_a_noisy_quadratic(case):
    name, options = case
    full, compact, p0, _ = noisy_quadratic(name, dict(options), seed=0, precision=EIGHT)
    assert_within(stream_errors(full, compact, p0, outlier=0.25), STREAM[case], 1e-3)


def test_adagrad_sum_error_grows_with_the_steps():
    """Adagrad's sum only grows: once an increment g**2 is below half a code step of the
    sum (3-6% of it) it vanishes, except that every element of a block also moves with the
    block's absmax (its largest element is stored exactly, and the others keep their codes
    on the rescaled grid). Measured on the stream above (worst of seeds 0..9, mrel): 3.2e-2
    after 10 steps, 1.1e-1 after 40, 1.9e-1 after 80, 2.3e-1 after 160, 2.8e-1 after 320,
    3.5e-1 after 640: growing, by about 5 points per doubling of the steps. bfloat16 on the
    same stream: 2.1e-3, 4.2e-3, 7.5e-3, 1.8e-2, 4.4e-2, 1.6e-1: smaller, but growing faster
    late (its nmae after 640 steps, 3.5e-1, is twice 8-bit's 1.8e-1: a bfloat16 element has
    no shared scale to move it).
    """
    *_, recorded = noisy_quadratic(
        "Adagrad", {"lr": 1e-2}, seed=0, precision=EIGHT, steps=320, record=(40, 320)
    )
    early, late = recorded[40]["sum"][1], recorded[320]["sum"][1]
    assert early <= 1.7e-1 and late <= 4.2e-1, (early, late)
    assert late > 1.5 * early  # growing
    assert recorded[320]["param"] <= 9.5e-2  # measured 6.29e-2


def test_a_centered_rmsprop_refuses_8bit_state():
    """Measured: a centered RMSprop rounds square_avg and grad_avg on their own (up to 6%
    each), so square_avg - grad_avg**2 went negative on all ten seeds of the noisy
    quadratic after 55-74 steps; sqrt gives NaN and the NaN takes its whole block's
    scale. So centered RMSprop refuses 8-bit state (bfloat16 stays finite here).
    """
    with pytest.raises(ValueError, match=r"centered=True.*state_precision='8bit'"):
        fastopt.RMSprop(np.zeros(8192, np.float32), centered=True, state_precision="8bit")
    options = {"lr": 1e-3, "centered": True, "momentum": 0.5}
    full, compact, _, _ = noisy_quadratic("RMSprop", options, seed=0, precision="bfloat16")
    assert np.isfinite(full.param).all() and np.isfinite(compact.param).all()


EPS_ZERO = [("Adam", {}), ("AdamW", {"amsgrad": True}), ("Adagrad", {}), ("RMSprop", {}),
            ("RMSprop", {"momentum": 0.5})]  # fmt: skip


@pytest.mark.parametrize("name, options", EPS_ZERO, ids=[n for n, _ in EPS_ZERO])
def test_eps_zero_is_refused_with_8bit_state(name, options, rng):
    """With eps=0, an element whose state is below its block's smallest code (stored as
    0) and whose gradient is 0 divides 0 by 0: measured NaN parameters where full and
    bfloat16 state stay finite. So "8bit" refuses eps=0 (at any size, as it refuses a
    centered RMSprop); the other precisions keep accepting it.
    """
    size = 8192
    g = np.ones(size, np.float32)
    g[0] = 1e-6  # its state rounds to 0 in a block of 1.0 gradients
    for precision in ("full", "bfloat16"):
        p = np.ones(size, np.float32)
        opt = make(name, p, lr=0.01, eps=0.0, state_precision=precision, **options)
        opt.step(g)
        opt.step(np.zeros(size, np.float32))
        assert np.isfinite(p).all(), precision
    for n in (size, 100):
        with pytest.raises(ValueError, match=r"eps=0 with state_precision='8bit' is not "
                                             r"supported: .*use eps > 0"):  # fmt: skip
            make(name, np.ones(n, np.float32), lr=0.01, eps=0.0, state_precision=EIGHT,
                 **options)  # fmt: skip


# -- the rest of the optimizer with 8-bit state ----------------------------------------------


def test_a_skipped_step_leaves_every_code_and_scale_unchanged(rng):
    size = SMALL
    p0 = rng.standard_normal(size).astype(np.float32)
    p, twin_p = p0.copy(), p0.copy()
    options = dict(
        lr=0.01, amsgrad=True, skip_nonfinite=True, max_grad_norm=10.0, state_precision=EIGHT
    )
    opt = fastopt.Adam(p, param_groups=GROUPS, **options)
    twin = fastopt.Adam(twin_p, param_groups=GROUPS, **options)
    grads = gradients(rng, size, np.float32, 6)
    for g in grads[:3]:
        assert opt.step(g) and twin.step(g)
    before = snapshot(p, opt)
    assert set(before[1]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"} | {
        k + ABSMAX for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    }
    bad = grads[3].copy()
    bad[1017] = np.nan
    assert not opt.step(bad)
    assert snapshot(p, opt) == before and opt.skipped_steps == 1
    bad[1017] = np.inf
    assert not opt.step(bad)
    assert snapshot(p, opt) == before and opt.skipped_steps == 2
    for g in grads[3:]:
        assert opt.step(g) and twin.step(g)
    assert snapshot(p, opt) == snapshot(twin_p, twin)


@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_maximize_is_minimizing_the_negated_gradient(name, options, rng):
    size = blockwise.MIN_SIZE
    p0 = rng.standard_normal(size)
    p, q = p0.copy(), p0.copy()
    up = make(name, p, lr=0.01, maximize=True, state_precision=EIGHT, **options)
    down = make(name, q, lr=0.01, state_precision=EIGHT, **options)
    for g in gradients(rng, size, np.float64, 8):
        up.step(g)
        down.step(-g)
    assert snapshot(p, up) == snapshot(q, down)
    assert not np.array_equal(p, p0)


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))], ids=["deepcopy", "pickle"]
)
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_copies_keep_8bit_state_and_continue_identically(name, options, clone, rng):
    p = rng.standard_normal(SMALL).astype(np.float32)
    opt = make(name, p, lr=lr_schedule, state_precision=EIGHT, param_groups=GROUPS[:1], **options)
    grads = gradients(rng, SMALL, np.float32, 6)
    for g in grads[:3]:
        opt.step(g)
    twin = clone(opt)
    assert twin.state_precision == EIGHT and twin.state_dtype == np.uint8
    assert twin.state.bounds == opt.state.bounds == [(0, 1000), (1000, SMALL)]
    for key in opt.state.buffers:
        assert twin.state[key].dtype == opt.state[key].dtype
        assert not np.shares_memory(twin.state[key], opt.state[key])
    assert snapshot(twin.param, twin) == snapshot(p, opt)
    for g in grads[3:]:  # interleaved: each has its own workspace
        opt.step(g)
        twin.step(g)
    assert snapshot(twin.param, twin) == snapshot(p, opt)


SHARDS = [(768, 1512), (1000, 1768), (0, 256), (2024, SMALL), (0, SMALL)]


@pytest.mark.parametrize("start, stop", SHARDS, ids=[f"{a}-{b}" for a, b in SHARDS])
def test_a_shard_on_block_boundaries_holds_its_codes_and_scales(start, stop, rng):
    """Groups [0, 1000) and [1000, SMALL): blocks start at 0 and 1000. A shard owns whole
    blocks (768 is a block start, 1000 a group's end and start, 1512 = 1000 + 2 blocks, the
    end of the buffer), and steps exactly like the whole optimizer on its slice.
    """
    size = SMALL
    p0 = rng.standard_normal(size).astype(np.float32)
    p, q = p0.copy(), p0.copy()
    options = dict(lr=0.01, momentum=0.5, state_precision=EIGHT)
    groups = [{"params": slice(0, 1000), "lr": 0.02}]
    whole = fastopt.RMSprop(p, param_groups=groups, **options)
    other = fastopt.RMSprop(q, param_groups=groups, **options)
    grads = gradients(rng, size, np.float32, 6)
    for g in grads[:3]:
        whole.step(g)
        other.step(g)
    shard = other.shard(start, stop)
    assert shard.state_precision == EIGHT
    first = blockwise.block_index(other.state.bounds, start)
    last = blockwise.block_index(other.state.bounds, stop)
    expected_bounds = [(max(a, start) - start, min(b, stop) - start)
                       for a, b in other.state.bounds if a < stop and b > start]  # fmt: skip
    assert shard.state.bounds == expected_bounds
    for key in whole.state.names():
        assert words(shard.state[key]) == words(other.state[key][start:stop])
        assert words(shard.state[key + ABSMAX]) == words(other.state[key + ABSMAX][first:last])
    for g in grads[3:]:
        whole.step(g)
        shard.step(g[start:stop])
    assert words(q[start:stop]) == words(p[start:stop])
    for key in whole.state.names():
        assert words(shard.state[key]) == words(whole.state[key][start:stop])
        assert words(shard.state[key + ABSMAX]) == words(whole.state[key + ABSMAX][first:last])


@pytest.mark.parametrize(
    "start, stop, element, group",
    [(1001, 2000, 1001, "[1000, 5099)"), (0, 300, 300, "[0, 1000)"), (256, 999, 999, "[0, 1000)"),
     (1000, 1255, 1255, "[1000, 5099)")],
)  # fmt: skip
def test_a_shard_off_a_block_boundary_is_refused(start, stop, element, group, rng):
    p = rng.standard_normal(SMALL).astype(np.float32)
    opt = fastopt.Adam(p, lr=0.01, param_groups=GROUPS[:1], state_precision=EIGHT)
    opt.step(gradients(rng, SMALL, np.float32, 1)[0])
    before = snapshot(p, opt)
    message = (
        rf"element {element} is inside an 8-bit block of the group \{group[:-1]}\) \(blocks "
        rf"of 256 start at the group's first element\): a slice of 8-bit state must start "
        "and stop on a block boundary"
    )
    with pytest.raises(ValueError, match=message):
        opt.shard(start, stop)
    assert snapshot(p, opt) == before
    opt.step(gradients(rng, SMALL, np.float32, 1)[0])  # still works


CUTS = [([(0, 4097)], 17), ([(0, 5000)], 19), ([(0, 1000), (1000, 5099)], 7),
        ([(0, 1000), (1000, 5099)], 2), ([(0, 10**6)], 32)]  # fmt: skip


@pytest.mark.parametrize("bounds, ranks", CUTS, ids=[f"{b[-1][1]}-on-{r}" for b, r in CUTS])
def test_zero_shards_of_8bit_state_each_get_whole_blocks(bounds, ranks):
    """DataParallel(zero=True) cuts 8-bit state on block boundaries: every rank gets at
    least one block while there are enough, each cut the allowed boundary nearest to
    the even split (4097 elements on 17 ranks: 16 blocks of 256 and one of 1).
    """
    size = bounds[-1][1]
    counts, starts = blockwise.aligned_cuts(bounds, size, ranks)
    assert len(counts) == len(starts) == ranks and sum(counts) == size
    assert min(counts) > 0
    assert starts == [sum(counts[:r]) for r in range(ranks)]
    for start in (*starts, size):
        blockwise.block_index(bounds, start)  # raises off a block boundary
    if len(bounds) == 1 and size / ranks >= blockwise.BLOCK:
        assert all(abs(start - r * size / ranks) <= blockwise.BLOCK / 2
                   for r, start in enumerate(starts))  # fmt: skip


def test_zero_shards_of_8bit_state_run_out_only_with_fewer_blocks_than_ranks():
    counts, _ = blockwise.aligned_cuts([(0, 4096)], 4096, 16)
    assert counts == [256] * 16
    counts, _ = blockwise.aligned_cuts([(0, 4096)], 4096, 17)  # 16 blocks for 17 ranks
    assert sorted(counts) == [0] + [256] * 16


# -- state_dict ------------------------------------------------------------------------------


def test_state_dict_holds_codes_scales_and_the_precision(rng):
    opt = fastopt.Adam(
        rng.standard_normal(SMALL).astype(np.float32),
        amsgrad=True,
        param_groups=GROUPS,
        state_precision=EIGHT,
    )
    opt.step(rng.standard_normal(SMALL).astype(np.float32))
    sd = opt.state_dict()
    assert sd["state_precision"] == EIGHT and sd["dtype"] == "float32"
    assert sd["group_bounds"].tolist() == [list(b) for b in group_bounds(SMALL)]
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert sd[key].dtype == np.uint8 and words(sd[key]) == words(opt.state[key])
        assert sd[key + ABSMAX].dtype == np.float32
        assert words(sd[key + ABSMAX]) == words(opt.state[key + ABSMAX])
        assert not np.shares_memory(sd[key], opt.state[key])
        assert not np.shares_memory(sd[key + ABSMAX], opt.state[key + ABSMAX])
    saved = through_npz(sd)
    assert str(saved["state_precision"]) == EIGHT and saved["exp_avg"].dtype == np.uint8
    target = fastopt.Adam(
        np.zeros(SMALL, np.float32), amsgrad=True, param_groups=GROUPS, state_precision=EIGHT
    )
    target.load_state_dict(saved)
    assert snapshot(opt.param, opt)[1:] == snapshot(target.param, target)[1:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_resume_is_bit_exact(name, options, dtype, rng):
    size = SMALL
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, 10)
    kwargs = dict(lr=lr_schedule, state_precision=EIGHT, param_groups=GROUPS, **options)
    p = p0.copy()
    opt = make(name, p, **kwargs)
    for g in grads:
        opt.step(g)

    q = p0.copy()
    first = make(name, q, **kwargs)
    for g in grads[:5]:
        first.step(g)
    saved = through_npz(first.state_dict())
    resumed_p = q.copy()
    resumed = make(name, resumed_p, **kwargs)
    resumed.load_state_dict(saved)
    for g in grads[5:]:
        resumed.step(g)
    assert snapshot(resumed_p, resumed) == snapshot(p, opt)


def test_checkpoint_files_round_trip(tmp_path, rng):
    params = {"W": rng.standard_normal((60, 80)).astype(np.float32), "b": np.zeros(80, np.float32)}
    fp = fastopt.FlatParams(params, groups={"bias": ["b"]})
    groups = [{"params": "bias", "weight_decay": 0.0}]
    opt = fastopt.AdamW(fp, lr=0.01, amsgrad=True, param_groups=groups, state_precision=EIGHT)
    assert opt.state_precision == EIGHT and len(opt.state.bounds) == 2
    grads = gradients(rng, fp.size, np.float32, 8)
    for g in grads[:4]:
        fp.grad[:] = g
        opt.step()
    fastopt.save_checkpoint(tmp_path / "ckpt", fp, opt, epoch=3)
    fp2 = fastopt.FlatParams(
        {k: np.zeros_like(v) for k, v in params.items()}, groups={"bias": ["b"]}
    )
    opt2 = fastopt.AdamW(fp2, lr=0.01, amsgrad=True, param_groups=groups, state_precision=EIGHT)
    assert fastopt.load_checkpoint(tmp_path / "ckpt", fp2, opt2) == {"epoch": 3}
    assert snapshot(fp2.data, opt2) == snapshot(fp.data, opt)
    for g in grads[4:]:
        fp.grad[:] = g
        fp2.grad[:] = g
        opt.step()
        opt2.step()
    assert snapshot(fp2.data, opt2) == snapshot(fp.data, opt)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_loads_convert_across_precisions(name, options, dtype, rng):
    """A full -> 8bit load encodes each group's blocks as a step does (the reference's encoder);
    8bit -> full decodes exactly; 8bit -> bfloat16 rounds the decoded values; bfloat16 ->
    8bit encodes the exact bfloat16 values.
    """
    size = SMALL
    bounds = [(0, 1000), (1000, size)]
    kwargs = dict(lr=0.01, param_groups=GROUPS[:1], **options)
    states = {
        precision: make(name, rng.standard_normal(size).astype(dtype), state_precision=precision,
                        **kwargs)
        for precision in ("full", "bfloat16", EIGHT)
    }  # fmt: skip
    with np.errstate(invalid="ignore"):
        for g in gradients(rng, size, dtype, 4):
            for opt in states.values():
                opt.step(g)
    full, bf16, compact = states["full"], states["bfloat16"], states[EIGHT]
    names = full.state.names()

    target = make(name, np.zeros(size, dtype), state_precision=EIGHT, **kwargs)
    target.load_state_dict(full.state_dict())
    assert target.step_count == 4
    for key in names:
        codes, absmax = ref_encode(full.state[key], key, bounds)
        np.testing.assert_array_equal(target.state[key], codes, err_msg=key)
        assert words(target.state[key + ABSMAX]) == words(absmax), key

    back = make(name, np.zeros(size, dtype), **kwargs)
    back.load_state_dict(compact.state_dict())
    for key in names:
        exact = ref_decode(compact.state[key], compact.state[key + ABSMAX], key, bounds, dtype)
        assert back.state[key].dtype == dtype
        assert words(back.state[key]) == words(exact), key
        assert words(compact.state.decoded(key)) == words(exact), key

    to_bf16 = make(name, np.zeros(size, dtype), state_precision="bfloat16", **kwargs)
    to_bf16.load_state_dict(compact.state_dict())
    for key in names:
        exact = ref_decode(compact.state[key], compact.state[key + ABSMAX], key, bounds, dtype)
        assert words(to_bf16.state[key]) == words(reference._to_bfloat16(exact)), key

    from_bf16 = make(name, np.zeros(size, dtype), state_precision=EIGHT, **kwargs)
    from_bf16.load_state_dict(bf16.state_dict())
    for key in names:
        codes, absmax = ref_encode(reference._from_bfloat16(bf16.state[key], dtype), key, bounds)
        np.testing.assert_array_equal(from_bf16.state[key], codes, err_msg=key)
        assert words(from_bf16.state[key + ABSMAX]) == words(absmax), key


def bad_state_dicts(sd):
    blocks = sd["exp_avg_absmax"].size
    return {
        "float codes": (
            sd | {"exp_avg": sd["exp_avg"].astype(np.float32)},
            r"state_dict\['exp_avg'\] expects a uint8 array \(8-bit codes\) of shape "
            rf"\({SMALL},\) but got float32",
        ),
        "uint16 codes": (
            sd | {"exp_avg_sq": sd["exp_avg_sq"].astype(np.uint16)},
            r"state_dict\['exp_avg_sq'\] expects a uint8 array \(8-bit codes\).*got uint16",
        ),
        "short codes": (
            sd | {"exp_avg": sd["exp_avg"][:-1]},
            rf"state_dict\['exp_avg'\] expects a uint8 array.*got uint8 \({SMALL - 1},\)",
        ),
        "short scales": (
            sd | {"exp_avg_absmax": sd["exp_avg_absmax"][:-1]},
            rf"state_dict\['exp_avg_absmax'\] expects a float array of shape \({blocks},\) "
            rf"but got float32 \({blocks - 1},\)",
        ),
        "2-d scales": (
            sd | {"exp_avg_sq_absmax": sd["exp_avg_sq_absmax"][:, None]},
            r"state_dict\['exp_avg_sq_absmax'\] expects a float array.*\(\d+, 1\)",
        ),
        "integer scales": (
            sd | {"exp_avg_sq_absmax": sd["exp_avg_sq_absmax"].astype(np.uint8)},
            r"state_dict\['exp_avg_sq_absmax'\] expects a float array .*got uint8",
        ),
        "missing scales": (
            {k: v for k, v in sd.items() if k != "exp_avg_absmax"},
            r"expects keys \[.*'exp_avg_absmax'.*\] but got \[(?!.*'exp_avg_absmax')",
        ),
        "codes under full": (
            sd | {"state_precision": "full"},
            r"expects keys \[(?:(?!_absmax)[^\]])*\] but got \[[^\]]*'exp_avg_absmax'",
        ),
    }


BAD = [
    "float codes",
    "uint16 codes",
    "short codes",
    "short scales",
    "2-d scales",
    "integer scales",
    "missing scales",
    "codes under full",
]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_state_dict_changes_nothing(case, rng):
    size = SMALL
    p = rng.standard_normal(size).astype(np.float32)
    opt = fastopt.Adam(p, lr=0.01, param_groups=GROUPS[:1], state_precision=EIGHT)
    for g in gradients(rng, size, np.float32, 3):
        opt.step(g)
    sd = opt.state_dict()
    opt.step(rng.standard_normal(size).astype(np.float32))  # the state now differs from sd
    cases = bad_state_dicts(sd)
    assert list(cases) == BAD
    bad, message = cases[case]
    before = snapshot(p, opt)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(through_npz(bad))
    assert snapshot(p, opt) == before
    opt.load_state_dict(sd)  # the good one still loads


# -- memory ----------------------------------------------------------------------------------


def test_8bit_state_takes_about_a_quarter_of_the_bytes_of_float32():
    def state_bytes(precision, dtype=np.float32):
        opt = fastopt.Adam(np.zeros(100_000, dtype), state_precision=precision)
        return sum(v.nbytes for k, v in opt.state.items() if k != "step")

    full, compact = state_bytes("full"), state_bytes(EIGHT)
    ratio = compact / full
    assert ratio <= 0.27, f"8-bit state is {ratio:.2%} of float32 state ({compact} / {full})"
    # codes: one byte per element; scales: one float32 per block of 256 elements
    assert compact == 2 * (100_000 + 4 * -(-100_000 // BLOCK))
    assert state_bytes(EIGHT, np.float64) == 2 * (100_000 + 8 * -(-100_000 // BLOCK))


@pytest.mark.parametrize("size", [5000, LARGE], ids=["serial", "threaded"])
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_a_plain_array_with_one_group_steps_like_a_flat_buffer(name, options, size, rng):
    """The single-group fast path (a plain array, an explicit gradient, a constant rate)
    runs the same 8-bit update as the gradient-buffer path, bit for bit.
    """
    p0 = rng.standard_normal(size).astype(np.float32)
    plain = p0.copy()
    a = make(name, plain, lr=0.01, state_precision=EIGHT, **options)
    fp = fastopt.FlatParams({"w": p0.copy()})
    b = make(name, fp, lr=0.01, state_precision=EIGHT, **options)
    for g in gradients(rng, size, np.float32, 4):
        a.step(g)
        fp.grad[:] = g
        b.step()
    assert words(plain) == words(fp.data)
    for key in a.state.buffers:
        assert words(a.state[key]) == words(b.state[key]), key
