"""bfloat16 optimizer state (``state_precision="bfloat16"``).

* every configuration of tests/registry.py equals the NumPy reference bit for bit (params
  and every state word), float32 and float64, serial and threaded kernels, with a schedule
  as lr and with clipping;
* the rounding itself (fastopt.to_bfloat16) against the reference's own encoder on every
  high half with the edge low halves, hand-computed words, and torch's bfloat16 cast;
* error bounds against full-precision state (one step, and 80 steps of a noisy quadratic),
  and the documented hazard (a bfloat16 exp_avg_sq with beta2 = 0.999 cannot move by 0.1%);
* the rest of the optimizer with compact state: groups, skipping, maximize, copies, shards,
  state_dict (npz, resume, checkpoints, conversions, bad input), validation, memory.
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

import reference
from registry import CASE_IDS, CASES, DTYPES, QUADRATIC_STATE, gradients, lr_schedule, make

BF16 = "bfloat16"
SIZES = [7, _config.PARALLEL_MIN_SIZE + 1003]  # the serial and the threaded kernel
STEPS = 20
HALF_ULP = 2.0**-8  # RNE to 8 significant bits: |dec(x) - x| <= 2**-8 / (1 + 2**-8) * |x|
BF16_MAX = float(np.uint32(0x7F7F0000).view(np.float32))
FLT_MIN = float(np.finfo(np.float32).tiny)

# every option set that uses each state buffer, for the tests that touch all of them
FULL_STATE = [
    ("SGD", {"momentum": 0.9}),
    ("Adagrad", {"initial_accumulator_value": 0.1}),
    ("RMSprop", {"centered": True, "momentum": 0.5}),
    ("Adam", {"amsgrad": True}),
    ("AdamW", {"amsgrad": True}),
]
FULL_STATE_IDS = [name for name, _ in FULL_STATE]


def assert_equals_reference(opt, p, ref_p, ref_state, steps):
    assert set(opt.state) == set(ref_state)
    np.testing.assert_array_equal(p, ref_p, err_msg="param")
    assert words(p) == words(ref_p)
    for key, value in ref_state.items():
        if key == "step":
            continue
        assert opt.state[key].dtype == np.uint16, key
        np.testing.assert_array_equal(opt.state[key], value, err_msg=key)
    assert opt.step_count == ref_state["step"] == steps


def run_against_reference(name, options, p0, grads, lr, max_grad_norm=None):
    """Run fastopt and the reference with bfloat16 state on the same gradients; with
    ``max_grad_norm`` the reference gets the clip factor torch computes from the norm the
    optimizer reports (the norm's own summation order is tested in test_kernels.py).
    """
    p = p0.copy()
    opt = make(name, p, lr=lr, state_precision=BF16, max_grad_norm=max_grad_norm, **options)
    ref_p = p0.copy()
    ref_state = reference.new_state(name, p.size, p.dtype, state_precision=BF16, **options)
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
        reference.UPDATES[name](
            ref_p, g, ref_state, lr=lr_t, grad_scale=scale, state_precision=BF16, **options
        )
    return opt, p, ref_p, ref_state, clipped


# -- bit for bit with the reference ------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_matches_numpy_reference_exactly(name, options, dtype, size, rng):
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, STEPS)
    opt, p, ref_p, ref_state, _ = run_against_reference(name, options, p0, grads, lr_schedule)
    assert_equals_reference(opt, p, ref_p, ref_state, STEPS)


# a threaded step with clipping runs two threaded kernels (norm, update): the large size
# once, in float32, to keep the file fast
CLIPPED = [(SIZES[0], np.float32), (SIZES[0], np.float64), (SIZES[1], np.float32)]


@pytest.mark.parametrize("size, dtype", CLIPPED, ids=[f"{s}-{d.__name__}" for s, d in CLIPPED])
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_clipped_steps_match_numpy_reference_exactly(name, options, dtype, size, rng):
    steps = 12
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, steps)
    opt, p, ref_p, ref_state, clipped = run_against_reference(
        name, options, p0, grads, lr_schedule, max_grad_norm=50.0
    )
    assert clipped == steps  # element 0 alone has norm 500
    assert_equals_reference(opt, p, ref_p, ref_state, steps)


@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_a_fastopt_schedule_as_lr_matches_the_reference(name, options, rng):
    size = 2000
    schedule = S.warmup_cosine_decay(0.05, warmup_steps=5, total_steps=STEPS)
    p0 = rng.standard_normal(size).astype(np.float32)
    grads = gradients(rng, size, np.float32, STEPS)
    opt, p, ref_p, ref_state, _ = run_against_reference(name, options, p0, grads, schedule)
    assert_equals_reference(opt, p, ref_p, ref_state, STEPS)
    assert opt.last_lr == schedule(STEPS - 1)


def test_bfloat16_state_changes_the_trajectory(rng):
    """Not vacuous: the stored rounding feeds back into later steps (so the reference
    comparison above tests the rounding of every step, not only of the last one).
    """
    p0 = rng.standard_normal(500).astype(np.float32)
    grads = gradients(rng, 500, np.float32, 10)
    p_full, p_bf16 = p0.copy(), p0.copy()
    full, compact = (
        fastopt.Adam(p_full, lr=0.01),
        fastopt.Adam(p_bf16, lr=0.01, state_precision=BF16),
    )
    for g in grads:
        full.step(g)
        compact.step(g)
    assert (p_full != p_bf16).mean() > 0.5
    np.testing.assert_allclose(p_bf16, p_full, atol=1e-3)


# -- the rounding --------------------------------------------------------------------------

EDGE_LOWS = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)


def every_high_half():
    """float32 values: all 2**16 high halves, each with the edge low halves (exact, ties
    below/at/above the midpoint, the largest): every sign, exponent, NaN and infinity.
    """
    high = np.arange(2**16, dtype=np.uint32)
    bits = ((high[:, None] << np.uint32(16)) | EDGE_LOWS[None, :]).reshape(-1)
    return bits.view(np.float32)


def test_to_bfloat16_matches_the_reference_encoder_on_every_high_half():
    values = every_high_half()
    with np.errstate(invalid="ignore"):
        assert words(fastopt.to_bfloat16(values)) == words(reference._to_bfloat16(values))
        as64 = values.astype(np.float64)
        assert words(fastopt.to_bfloat16(as64)) == words(reference._to_bfloat16(as64))


def test_the_reference_encoder_rounds_to_nearest_even():
    """The reference's rounding rule, checked on its own: round to nearest even on the
    top 16 bits, with the carry of a round-up moving into the exponent.
    """
    values = every_high_half()
    bits = values.view(np.uint32).astype(np.int64)
    high, low = bits >> 16, bits & 0xFFFF
    result = reference._to_bfloat16(values).astype(np.int64)
    nan = np.isnan(values)
    up = (low > 0x8000) | ((low == 0x8000) & (high % 2 == 1))
    np.testing.assert_array_equal(result[~nan], (high + up)[~nan])
    np.testing.assert_array_equal(result[nan], high[nan] | 0x40)
    decoded = reference._from_bfloat16(result[~nan].astype(np.uint16))
    finite = np.isfinite(values[~nan]) & np.isfinite(decoded)
    err = np.abs(decoded[finite].astype(np.float64) - values[~nan][finite])
    ulp = np.abs(
        reference._from_bfloat16((high[~nan][finite] | 1).astype(np.uint16)).astype(np.float64)
        - reference._from_bfloat16((high[~nan][finite] & ~1).astype(np.uint16))
    )  # one bf16 ulp at this exponent (neighbouring words with the same exponent)
    assert np.all(err <= ulp / 2)


# (float32 bits, bfloat16 word) worked out by hand
HAND_ROUNDED = [
    (0x3F800000, 0x3F80),  # 1.0: exact
    (0x3F807FFF, 0x3F80),  # just below the midpoint: down
    (0x3F808000, 0x3F80),  # tie, even high half: stays
    (0x3F808001, 0x3F81),  # just above the midpoint: up
    (0x3F818000, 0x3F82),  # tie, odd high half: up to even
    (0xBF818000, 0xBF82),  # the same, negative
    (0x3FFF8000, 0x4000),  # tie with a carry into the exponent: 2.0
    (0x7F7F7FFF, 0x7F7F),  # below the midpoint above the largest bfloat16: finite
    (0x7F7F8000, 0x7F80),  # tie above the largest bfloat16 (odd): +inf
    (0x7F7FFFFF, 0x7F80),  # FLT_MAX: +inf
    (0xFF7FFFFF, 0xFF80),  # -FLT_MAX: -inf
    (0x7F800000, 0x7F80),  # +inf
    (0xFF800000, 0xFF80),  # -inf
    (0x7FC00000, 0x7FC0),  # the default quiet NaN
    (0xFFC00000, 0xFFC0),  # a negative quiet NaN: sign kept
    (0x7F800001, 0x7FC0),  # a signalling NaN with only a low payload: quiet, not inf
    (0x7F812345, 0x7FC1),  # payload kept in the high half, quiet bit set
    (0xFFFFFFFF, 0xFFFF),  # all ones: the round-up would wrap to +0
    (0x7FBFFFFF, 0x7FFF),  # signalling NaN whose round-up would carry into the sign
    (0x00000000, 0x0000),  # +0
    (0x80000000, 0x8000),  # -0: sign kept
    (0x00000001, 0x0000),  # smallest subnormal: to +0
    (0x80000001, 0x8000),  # to -0
    (0x00008000, 0x0000),  # subnormal tie, even: down
    (0x00018000, 0x0002),  # subnormal tie, odd: up
    (0x00008001, 0x0001),  # smallest bfloat16 subnormal
    (0x007FFFFF, 0x0080),  # largest float32 subnormal rounds up to the smallest normal
]


@pytest.mark.parametrize(
    "encode", [fastopt.to_bfloat16, reference._to_bfloat16], ids=["fastopt", "reference"]
)
def test_hand_rounded_words(encode):
    bits = np.array([b for b, _ in HAND_ROUNDED], np.uint32)
    expected = np.array([w for _, w in HAND_ROUNDED], np.uint16)
    with np.errstate(invalid="ignore"):
        got = encode(bits.view(np.float32))
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "encode", [fastopt.to_bfloat16, reference._to_bfloat16], ids=["fastopt", "reference"]
)
def test_float64_rounds_twice_through_float32(encode):
    """1 + 2**-8 + 2**-30 rounds to the float32 1 + 2**-8, a bfloat16 tie that goes to even
    (1.0); rounded once from float64 it would be 0x3F81. Beyond float32's range: inf.
    """
    values = np.array(
        [
            1 + 2**-8 + 2**-30,
            -(1 + 2**-8 + 2**-30),
            1 + 2**-8 + 2**-20,
            1e39,
            -1e300,
            1e-50,
            np.nan,
            -np.nan,
        ]
    )
    np.testing.assert_array_equal(
        encode(values),
        np.array([0x3F80, 0xBF80, 0x3F81, 0x7F80, 0xFF80, 0, 0x7FC0, 0xFFC0], np.uint16),
    )


def test_from_bfloat16_is_exact_and_inverts_to_bfloat16():
    every = np.arange(2**16, dtype=np.uint16)
    decoded = fastopt.from_bfloat16(every)
    assert decoded.dtype == np.float32
    assert words(decoded.view(np.uint32) >> np.uint32(16)) == words(every.astype(np.uint32))
    assert not (decoded.view(np.uint32) & np.uint32(0xFFFF)).any()
    assert words(decoded) == words(reference._from_bfloat16(every))
    with np.errstate(invalid="ignore"):  # signalling-NaN words warn when cast to float64
        as64 = fastopt.from_bfloat16(every, np.float64)
        assert as64.dtype == np.float64
        assert words(as64) == words(decoded.astype(np.float64))
        nan = np.isnan(decoded)
        back = fastopt.to_bfloat16(decoded)
    np.testing.assert_array_equal(back[~nan], every[~nan])  # exact values stay as they are
    np.testing.assert_array_equal(back[nan], every[nan] | 0x40)  # a NaN becomes quiet
    assert nan.sum() == 2 * (2**7 - 1)  # exponent all ones, mantissa not zero, either sign


@pytest.mark.torch
def test_to_bfloat16_matches_torch_for_every_non_nan_value(torch):
    values = every_high_half()
    values = values[~np.isnan(values)]
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(fastopt.to_bfloat16(values), theirs)
    back = torch.from_numpy(fastopt.to_bfloat16(values).view(np.int16)).view(torch.bfloat16)
    assert words(back.float().numpy()) == words(fastopt.from_bfloat16(fastopt.to_bfloat16(values)))


# -- what the kernels store ------------------------------------------------------------------

SPECIAL = np.array(
    [
        np.uint32(0x7FC00000),  # NaN
        np.uint32(0xFFC00000),  # negative NaN
        np.uint32(0x7F812345),  # signalling NaN with a payload
        np.uint32(0x7F800000),  # +inf
        np.uint32(0xFF800000),  # -inf
        np.uint32(0x7F7FFFFF),  # FLT_MAX: rounds to inf
        np.uint32(0x3F808000),  # tie, even
        np.uint32(0x3F818000),  # tie, odd
        np.uint32(0x3F807FFF),
        np.uint32(0x80000000),  # -0.0
        np.uint32(0x00018000),  # a subnormal tie
        np.uint32(0x40490FDB),  # pi
    ],
    np.uint32,
).view(np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_sgd_momentum_store_rounds_like_to_bfloat16(dtype, size, rng):
    """The first SGD momentum step stores the gradient itself: the words must be
    to_bfloat16(g) for NaN payloads, infinities, ties and signed zeros; the params move by
    the unrounded gradient. The second step stores dec(buf) * momentum + g, rounded.
    """
    g1 = rng.standard_normal(size).astype(dtype)
    with np.errstate(invalid="ignore"):  # the signalling NaN, cast to float64
        g1[: SPECIAL.size] = SPECIAL[:size].astype(dtype)
    g2 = rng.standard_normal(size).astype(dtype)
    p0 = rng.standard_normal(size).astype(dtype)
    p = p0.copy()
    opt = fastopt.SGD(p, lr=0.5, momentum=0.9, state_precision=BF16)
    with np.errstate(invalid="ignore", over="ignore"):
        opt.step(g1)
        first = opt.state["momentum_buffer"].copy()
        assert words(first) == words(fastopt.to_bfloat16(g1))
        assert words(first) == words(reference._to_bfloat16(g1))
        np.testing.assert_array_equal(p, p0 - dtype(0.5) * g1)
        buf = fastopt.from_bfloat16(opt.state["momentum_buffer"], dtype) * dtype(0.9) + g2
        p_before = p.copy()
        opt.step(g2)
        assert words(opt.state["momentum_buffer"]) == words(fastopt.to_bfloat16(buf))
        np.testing.assert_array_equal(p, p_before - dtype(0.5) * buf)
    expected = [0x7FC0, 0xFFC0, 0x7FC1, 0x7F80, 0xFF80, 0x7F80, 0x3F80, 0x3F82, 0x3F80, 0x8000]
    expected += [0x0002, 0x4049]
    n = min(size, SPECIAL.size)
    np.testing.assert_array_equal(first[:n], np.array(expected[:n], np.uint16))


def test_adam_stores_nan_and_inf_moments(rng):
    """A non-finite gradient reaches the stored moments as NaN (quiet) or inf words."""
    g = np.array([np.nan, np.inf, -np.inf, 1e30, 3.0], np.float32)
    p = np.zeros(5, np.float32)
    opt = fastopt.Adam(p, lr=0.1, amsgrad=True, state_precision=BF16)
    ref_p, ref_state = p.copy(), reference.new_state("Adam", 5, np.float32, BF16, amsgrad=True)
    with np.errstate(invalid="ignore", over="ignore"):
        opt.step(g)
        reference.adam(ref_p, g, ref_state, lr=0.1, amsgrad=True, state_precision=BF16)
    assert words(p) == words(ref_p)
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        np.testing.assert_array_equal(opt.state[key], ref_state[key], err_msg=key)
    assert opt.state["max_exp_avg_sq"][:4].tolist() == [0x7FC0, 0x7F80, 0x7F80, 0x7F80]
    assert opt.state["exp_avg"][:3].tolist() == [0x7FC0, 0x7F80, 0xFF80]
    assert opt.state["exp_avg_sq"][:4].tolist() == [0x7FC0, 0x7F80, 0x7F80, 0x7F80]  # 1e57: inf


# -- "full" is unchanged ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_full_precision_keeps_the_param_dtype(name, options, dtype, rng):
    p = rng.standard_normal(33).astype(dtype)
    twin = p.copy()
    opt = make(name, p, lr=0.01, **options)
    explicit = make(name, twin, lr=0.01, state_precision="full", **options)
    assert opt.state_precision == "full" and opt.state_dtype == dtype
    for key, value in opt.state.items():
        if key != "step":
            assert value.dtype == dtype and value.shape == (33,), key
    for _ in range(3):
        g = rng.standard_normal(33).astype(dtype)
        opt.step(g)
        explicit.step(g)
    assert snapshot(p, opt) == snapshot(twin, explicit)
    assert "state_precision" not in repr(opt) and "precision" not in repr(opt.state)
    assert opt.state_dict()["state_precision"] == "full"
    for key in opt.state.buffers:
        assert words(opt.state.decoded(key)) == words(opt.state[key])


def test_bfloat16_shows_in_the_reprs():
    opt = fastopt.Adam(np.zeros(3, np.float32), state_precision=BF16)
    assert repr(opt).endswith("state_precision='bfloat16')")
    assert "precision='bfloat16'" in repr(opt.state)


# -- error bounds against full-precision state ---------------------------------------------


def exact_state(opt, rng):
    """Random bfloat16-representable state values for ``opt``'s buffers (unsigned ones
    positive, a centered RMSprop's ``grad_avg`` small next to ``square_avg``).
    """
    values = {}
    for key in opt.state.buffers:
        if key in QUADRATIC_STATE:
            raw = np.exp(rng.uniform(-3, 3, opt.param.size))
        else:
            raw = 0.1 * rng.standard_normal(opt.param.size)
        values[key] = fastopt.from_bfloat16(fastopt.to_bfloat16(raw), opt.dtype)
    return values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_one_step_from_the_same_state(name, options, dtype, rng):
    """From the same state (bfloat16-representable, so both optimizers hold exactly the
    same values), one step gives bit-equal params -- the update uses the unrounded new
    state -- and the bfloat16 words are the full-precision new state rounded once:
    ``to_bfloat16(x)``. Rounding to nearest with 8 significant bits moves a normal value
    ``x`` in ``[2**e, 2**(e+1))`` by at most half an ulp, ``2**(e-8)``, so
    ``|dec(x) - x| <= 2**-8 * |x|`` (the bound is reached just above a power of two:
    ``x = 1 + 2**-8`` is a tie that rounds to 1.0, a relative error of ``u = 2**-8 / (1 +
    2**-8)``, above ``2**-9``; ``u`` is the exact bound). From float64, the first rounding
    to float32 adds at most ``2**-24 * |x|``: ``u * (1 + 2**-24) + 2**-24``, still below
    ``2**-8``.
    """
    size = 3001
    p0 = rng.standard_normal(size).astype(dtype)
    pf, pb = p0.copy(), p0.copy()
    full = make(name, pf, lr=0.01, **options)
    compact = make(name, pb, lr=0.01, state_precision=BF16, **options)
    sd = full.state_dict() | exact_state(full, rng) | {"step": 4}
    full.load_state_dict(sd)
    compact.load_state_dict(sd)  # full -> bfloat16: exact for representable values
    for key in full.state.buffers:
        assert words(compact.state.decoded(key)) == words(full.state[key])
    g = gradients(rng, size, dtype, 1)[0]
    full.step(g)
    compact.step(g)
    assert words(pf) == words(pb)
    u = HALF_ULP / (1 + HALF_ULP)
    bound = (u * (1 + 2.0**-24) + 2.0**-24 if dtype == np.float64 else u) * (1 + 2.0**-40)
    assert bound < HALF_ULP
    for key in full.state.buffers:
        x = full.state[key].astype(np.float64)
        np.testing.assert_array_equal(compact.state[key], reference._to_bfloat16(full.state[key]))
        dec = compact.state.decoded(key).astype(np.float64)
        normal = (np.abs(x) >= FLT_MIN) & (np.abs(x) <= BF16_MAX)
        assert normal.mean() > 0.99
        assert np.all(np.abs(dec - x)[normal] <= bound * np.abs(x)[normal]), key
        assert np.all(dec[x == 0] == 0)


def test_the_half_ulp_bound_is_reached_and_two_to_minus_nine_is_not_a_bound():
    x = np.array([1 + 2**-8 - 2**-23, 1 + 2**-8], np.float32)  # just below a tie, the tie
    dec = fastopt.from_bfloat16(fastopt.to_bfloat16(x)).astype(np.float64)
    rel = np.abs(dec - x) / x
    assert np.all(rel <= HALF_ULP) and np.all(rel > 2.0**-9)


# 80 steps on a noisy quadratic: g = h * (p - c) + sigma * noise, with per-coordinate
# curvature h in [0.1, 10] and noise scale sigma in 0.5 * [e**-2, e**2] (log-uniform),
# the gradient taken at the full-precision run's params and fed to both runs, so the
# state difference is the accumulated rounding. Measures, for each buffer, over seeds
# 0..9 (float32, 8192 elements, worst seed):
#   nmae = mean|dec - full| / mean|full|
#   mrel = mean(|dec - full| / (|full| + 0.01 * mean|full|))   (floored near sign changes)
#   outliers = fraction of elements with that relative error > 5%
# and for the params mean|p_bf16 - p_full| / mean|p_full - p0| (the drift relative to
# the distance moved). Bounds: about 1.5x the worst of the ten seeds.
STREAM = {
    # (name, options): {buffer: (nmae, mrel, outliers)}; "param": drift
    ("Adam", (("lr", 1e-3),)): {
        "exp_avg": (5e-3, 5e-3, 3e-3),  # measured 3.42e-3, 3.51e-3, 1.71e-3
        "exp_avg_sq": (2.5e-2, 1e-2, 7e-3),  # measured 1.65e-2, 6.64e-3, 4.27e-3
        "param": 3.3e-3,  # measured 2.20e-3
    },
    ("AdamW", (("lr", 1e-3), ("amsgrad", True))): {
        "exp_avg": (5e-3, 5e-3, 3e-3),  # measured 3.44e-3, 3.55e-3, 2.08e-3
        "exp_avg_sq": (2.5e-2, 1e-2, 7e-3),  # measured 1.65e-2, 6.63e-3, 4.52e-3
        "max_exp_avg_sq": (2.5e-2, 1e-2, 7e-3),  # measured 1.65e-2, 6.62e-3, 4.52e-3
        "param": 3.3e-3,  # measured 2.18e-3
    },
    ("SGD", (("lr", 1e-2), ("momentum", 0.9))): {
        "momentum_buffer": (5.5e-3, 1.3e-2, 3.8e-2),  # measured 3.63e-3, 8.58e-3, 2.56e-2
        "param": 6.5e-3,  # measured 4.24e-3
    },
    ("RMSprop", (("lr", 1e-3), ("centered", True), ("momentum", 0.5))): {
        "square_avg": (1.3e-2, 9e-3, 1e-3),  # measured 8.65e-3, 5.79e-3, 1.22e-4
        "grad_avg": (1.3e-2, 1.1e-2, 6e-3),  # measured 8.55e-3, 7.32e-3, 3.91e-3
        "momentum_buffer": (1.3e-2, 1.1e-2, 4e-3),  # measured 8.34e-3, 7.62e-3, 2.44e-3
        "param": 3.3e-3,  # measured 2.22e-3
    },
    ("Adagrad", (("lr", 1e-2),)): {
        "sum": (2.6e-2, 1.1e-2, 9e-3),  # measured 1.75e-2, 7.50e-3, 5.74e-3
        "param": 2e-3,  # measured 1.36e-3
    },
}


@pytest.mark.parametrize("case", list(STREAM), ids=[name for name, _ in STREAM])
def test_state_error_over_a_noisy_quadratic(case):
    name, options = case
    full, compact, p0, _ = noisy_quadratic(name, dict(options), seed=0, precision=BF16)
    assert_within(stream_errors(full, compact, p0, outlier=0.05), STREAM[case], 1e-4)


def constant_adam(v0, beta2):
    """An Adam whose exp_avg is 0 and exp_avg_sq the bfloat16 value ``v0``, with its
    full-precision twin.
    """
    size = v0.size
    full = fastopt.Adam(np.zeros(size, np.float32), lr=1e-3, betas=(0.9, beta2))
    compact = fastopt.Adam(
        np.zeros(size, np.float32), lr=1e-3, betas=(0.9, beta2), state_precision=BF16
    )
    sd = full.state_dict() | {"exp_avg": np.zeros(size, np.float32), "exp_avg_sq": v0, "step": 10}
    full.load_state_dict(sd)
    compact.load_state_dict(sd)
    return full, compact


def test_bfloat16_exp_avg_sq_cannot_move_by_a_tenth_of_a_percent():
    """The documented hazard. With beta2 = 0.999 and g = 0, a step multiplies exp_avg_sq
    by 0.999: a 0.1% decrease, below half a bfloat16 ulp (2**-9 to 2**-8 of the value),
    so the stored value rounds back to itself forever, while the full-precision value
    decays as 0.999**t. The same holds upward: with g**2 = 2 * v the step multiplies v by
    1.001 and the bfloat16 value never grows, while the full value tends to 2 * v.
    A beta2 of 0.99 (1% steps, more than half an ulp) does move.
    """
    rng = np.random.default_rng(0)
    v0 = fastopt.from_bfloat16(fastopt.to_bfloat16(np.exp(rng.uniform(-5, 5, 1000))))
    start = fastopt.to_bfloat16(v0)
    full, compact = constant_adam(v0, beta2=0.999)
    zero = np.zeros(v0.size, np.float32)
    for _ in range(100):
        full.step(zero)
        compact.step(zero)
    assert words(compact.state["exp_avg_sq"]) == words(start)  # stuck
    decay = full.state["exp_avg_sq"] / v0
    np.testing.assert_allclose(decay, 0.999**100, rtol=1e-4)  # 9.5% lower

    full, compact = constant_adam(v0, beta2=0.999)
    g = np.sqrt(2 * v0).astype(np.float32)
    for _ in range(100):
        full.step(g)
        compact.step(g)
    assert words(compact.state["exp_avg_sq"]) == words(start)  # stuck
    assert np.all(full.state["exp_avg_sq"] / v0 > 1.09)

    full, compact = constant_adam(v0, beta2=0.99)
    for _ in range(10):
        full.step(zero)
        compact.step(zero)
    # each step rounds 0.99 * v to within u = 2**-8 / (1 + 2**-8) of itself
    ratio = compact.state.decoded("exp_avg_sq").astype(np.float64) / v0
    low, high = 0.99**10 * (1 - 1.01 * 2**-8) ** 10, 0.99**10 * (1 + 1.01 * 2**-8) ** 10
    assert np.all(ratio > low) and np.all(ratio < high)
    assert np.all(compact.state["exp_avg_sq"] < start)  # every word moved down


# -- the rest of the optimizer with compact state ------------------------------------------


def test_parameter_groups_match_the_reference_on_each_segment(rng):
    """Groups with their own lr and weight decay; the default group is above the
    threaded-kernel size, the explicit one below it.
    """
    size = _config.PARALLEL_MIN_SIZE + 4000
    p0 = rng.standard_normal(size).astype(np.float32)
    grads = gradients(rng, size, np.float32, 12)
    p = p0.copy()
    groups = [{"params": slice(0, 3000), "lr": 0.05, "weight_decay": 0.0}]
    opt = fastopt.Adam(p, lr=0.01, weight_decay=0.1, param_groups=groups, state_precision=BF16)
    ref_p = p0.copy()
    segments = [(slice(0, 3000), 0.05, 0.0), (slice(3000, size), 0.01, 0.1)]
    states = [
        reference.new_state("Adam", s.stop - s.start, np.float32, state_precision=BF16)
        for s, _, _ in segments
    ]
    for g in grads:
        assert opt.step(g)
        for (s, lr, wd), state in zip(segments, states):
            reference.adam(ref_p[s], g[s], state, lr=lr, weight_decay=wd, state_precision=BF16)
    assert words(p) == words(ref_p)
    for key in ("exp_avg", "exp_avg_sq"):
        joined = np.concatenate([state[key] for state in states])
        np.testing.assert_array_equal(opt.state[key], joined, err_msg=key)


def test_a_skipped_step_leaves_every_word_unchanged(rng):
    size = 500
    p0 = rng.standard_normal(size).astype(np.float32)
    p, twin_p = p0.copy(), p0.copy()
    options = dict(
        lr=0.01, amsgrad=True, skip_nonfinite=True, max_grad_norm=10.0, state_precision=BF16
    )
    opt, twin = fastopt.Adam(p, **options), fastopt.Adam(twin_p, **options)
    grads = gradients(rng, size, np.float32, 6)
    for g in grads[:3]:
        assert opt.step(g) and twin.step(g)
    before = snapshot(p, opt)
    bad = grads[3].copy()
    bad[17] = np.nan
    assert not opt.step(bad)
    assert snapshot(p, opt) == before and opt.skipped_steps == 1
    bad[17] = np.inf
    assert not opt.step(bad)
    assert snapshot(p, opt) == before and opt.skipped_steps == 2
    for g in grads[3:]:
        assert opt.step(g) and twin.step(g)
    assert snapshot(p, opt) == snapshot(twin_p, twin)


@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_maximize_is_minimizing_the_negated_gradient(name, options, rng):
    p0 = rng.standard_normal(300)
    p, q = p0.copy(), p0.copy()
    up = make(name, p, lr=0.01, maximize=True, state_precision=BF16, **options)
    down = make(name, q, lr=0.01, state_precision=BF16, **options)
    for g in gradients(rng, 300, np.float64, 8):
        up.step(g)
        down.step(-g)
    assert snapshot(p, up) == snapshot(q, down)
    assert not np.array_equal(p, p0)


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))], ids=["deepcopy", "pickle"]
)
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_copies_keep_compact_state_and_continue_identically(name, options, clone, rng):
    p = rng.standard_normal(200).astype(np.float32)
    opt = make(name, p, lr=lr_schedule, state_precision=BF16, **options)
    grads = gradients(rng, 200, np.float32, 6)
    for g in grads[:3]:
        opt.step(g)
    twin = clone(opt)
    assert twin.state_precision == BF16 and twin.state_dtype == np.uint16
    for key in opt.state.buffers:
        assert twin.state[key].dtype == np.uint16
        assert not np.shares_memory(twin.state[key], opt.state[key])
    assert snapshot(twin.param, twin) == snapshot(p, opt)
    for g in grads[3:]:
        opt.step(g)
        twin.step(g)
    assert snapshot(twin.param, twin) == snapshot(p, opt)


def test_a_shard_holds_the_slice_of_the_words(rng):
    size, start, stop = 1000, 300, 700
    p0 = rng.standard_normal(size).astype(np.float32)
    p, q = p0.copy(), p0.copy()
    whole = fastopt.RMSprop(p, lr=0.01, centered=True, momentum=0.5, state_precision=BF16)
    other = fastopt.RMSprop(q, lr=0.01, centered=True, momentum=0.5, state_precision=BF16)
    grads = gradients(rng, size, np.float32, 6)
    for g in grads[:3]:
        whole.step(g)
        other.step(g)
    shard = other.shard(start, stop)
    assert shard.state_precision == BF16
    for key in whole.state.buffers:
        assert shard.state[key].dtype == np.uint16
        assert words(shard.state[key]) == words(other.state[key][start:stop])
    for g in grads[3:]:
        whole.step(g)
        shard.step(g[start:stop])
    assert words(q[start:stop]) == words(p[start:stop])
    for key in whole.state.buffers:
        assert words(shard.state[key]) == words(whole.state[key][start:stop])


# -- state_dict ------------------------------------------------------------------------------


def test_state_dict_holds_the_words_and_the_precision(rng):
    opt = fastopt.Adam(
        rng.standard_normal(50).astype(np.float32), amsgrad=True, state_precision=BF16
    )
    opt.step(rng.standard_normal(50).astype(np.float32))
    sd = opt.state_dict()
    assert sd["state_precision"] == BF16 and sd["dtype"] == "float32"
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert sd[key].dtype == np.uint16 and words(sd[key]) == words(opt.state[key])
        assert not np.shares_memory(sd[key], opt.state[key])
    saved = through_npz(sd)
    assert str(saved["state_precision"]) == BF16 and saved["exp_avg"].dtype == np.uint16
    target = fastopt.Adam(np.zeros(50, np.float32), amsgrad=True, state_precision=BF16)
    target.load_state_dict(saved)
    assert snapshot(opt.param, opt)[1:] == snapshot(target.param, target)[1:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_resume_is_bit_exact(name, options, dtype, rng):
    size = 400
    p0 = rng.standard_normal(size).astype(dtype)
    grads = gradients(rng, size, dtype, 12)
    p = p0.copy()
    opt = make(name, p, lr=lr_schedule, state_precision=BF16, **options)
    for g in grads:
        opt.step(g)

    q = p0.copy()
    first = make(name, q, lr=lr_schedule, state_precision=BF16, **options)
    for g in grads[:5]:
        first.step(g)
    saved = through_npz(first.state_dict())
    resumed_p = q.copy()
    resumed = make(name, resumed_p, lr=lr_schedule, state_precision=BF16, **options)
    resumed.load_state_dict(saved)
    for g in grads[5:]:
        resumed.step(g)
    assert snapshot(resumed_p, resumed) == snapshot(p, opt)


def test_checkpoint_files_round_trip(tmp_path, rng):
    params = {"W": rng.standard_normal((30, 20)).astype(np.float32), "b": np.zeros(20, np.float32)}
    fp = fastopt.FlatParams(params)
    opt = fastopt.AdamW(fp, lr=0.01, amsgrad=True, state_precision=BF16)
    grads = gradients(rng, fp.size, np.float32, 8)
    for g in grads[:4]:
        fp.grad[:] = g
        opt.step()
    fastopt.save_checkpoint(tmp_path / "ckpt", fp, opt, epoch=3)
    fp2 = fastopt.FlatParams({k: np.zeros_like(v) for k, v in params.items()})
    opt2 = fastopt.AdamW(fp2, lr=0.01, amsgrad=True, state_precision=BF16)
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
    """A full -> bfloat16 load rounds each value as a store does (from float64 through float32);
    bfloat16 -> full decodes exactly; a state_dict without the key (saved before
    state_precision existed) is full precision.
    """
    size = 300
    full = make(name, rng.standard_normal(size).astype(dtype), lr=0.01, **options)
    compact = make(
        name, rng.standard_normal(size).astype(dtype), lr=0.01, state_precision=BF16, **options
    )
    for g in gradients(rng, size, dtype, 4):
        full.step(g)
        compact.step(g)

    target = make(name, np.zeros(size, dtype), lr=0.01, state_precision=BF16, **options)
    target.load_state_dict(full.state_dict())
    old = {k: v for k, v in full.state_dict().items() if k != "state_precision"}
    older = make(name, np.zeros(size, dtype), lr=0.01, state_precision=BF16, **options)
    older.load_state_dict(old)
    for key in full.state.buffers:
        expected = fastopt.to_bfloat16(full.state[key])
        assert words(target.state[key]) == words(expected), key
        assert words(expected) == words(reference._to_bfloat16(full.state[key])), key
        assert words(older.state[key]) == words(expected), key
    assert target.step_count == 4

    back = make(name, np.zeros(size, dtype), lr=0.01, **options)
    back.load_state_dict(compact.state_dict())
    for key in compact.state.buffers:
        assert back.state[key].dtype == dtype
        assert words(back.state[key]) == words(fastopt.from_bfloat16(compact.state[key], dtype))
        assert words(back.state[key]) == words(compact.state.decoded(key))


def bad_state_dicts(sd, size):
    return {
        "float32 under bfloat16": (
            sd | {"exp_avg": fastopt.from_bfloat16(sd["exp_avg"])},
            r"state_dict\['exp_avg'\] expects a uint16 array \(bfloat16 state\).*got float32",
        ),
        "uint8 under bfloat16": (
            sd | {"exp_avg_sq": sd["exp_avg_sq"].astype(np.uint8)},
            r"state_dict\['exp_avg_sq'\] expects a uint16 array.*got uint8",
        ),
        "words under full": (
            sd | {"state_precision": "full"},
            r"state_dict\['exp_avg'\] expects a float array .*got uint16",
        ),
        "unknown precision": (
            sd | {"state_precision": "bf16"},
            r"state_dict has state_precision 'bf16' \(expected one of 'full', 'bfloat16', "
            r"'8bit'\)",
        ),
        "short": (
            sd | {"exp_avg": sd["exp_avg"][:-1]},
            rf"state_dict\['exp_avg'\] expects a uint16 array \(bfloat16 state\) "
            rf"of shape \({size},\)",
        ),
    }


@pytest.mark.parametrize("case", range(5))
def test_a_bad_state_dict_changes_nothing(case, rng):
    size = 40
    p = rng.standard_normal(size).astype(np.float32)
    opt = fastopt.Adam(p, lr=0.01, state_precision=BF16)
    for g in gradients(rng, size, np.float32, 3):
        opt.step(g)
    sd = opt.state_dict()
    opt.step(rng.standard_normal(size).astype(np.float32))  # the state now differs from sd
    bad, message = list(bad_state_dicts(sd, size).values())[case]
    before = snapshot(p, opt)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(through_npz(bad))
    assert snapshot(p, opt) == before


# -- validation, decoded state, memory -------------------------------------------------------


@pytest.mark.parametrize("value", ["fp8", None, 1, "BFLOAT16", "", b"bfloat16", 16.0])
@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_invalid_state_precision_is_refused(name, value):
    p = np.ones(4, np.float32)
    fp = fastopt.FlatParams({"w": np.ones(3)})
    with pytest.raises(ValueError, match="state_precision") as raised:
        make(name, p, state_precision=value)
    assert repr(value) in str(raised.value)
    assert all(f"'{p}'" in str(raised.value) for p in ("full", "bfloat16", "8bit"))
    with pytest.raises(ValueError, match="state_precision"):
        make(name, fp, state_precision=value)
    assert words(p) == words(np.ones(4, np.float32)) and not fp.grad.any()
    with pytest.raises(ValueError, match="state_precision"):  # checked before anything else
        make(name, "not an array", state_precision=value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_decoded_state_and_written_words(name, options, dtype, rng):
    size = 100
    p0 = rng.standard_normal(size).astype(dtype)
    p = p0.copy()
    opt = make(name, p, lr=0.01, state_precision=BF16, **options)
    grads = gradients(rng, size, dtype, 3)
    opt.step(grads[0])
    for key in opt.state.buffers:
        decoded = opt.state.decoded(key)
        assert decoded.dtype == dtype and decoded.shape == (size,)
        assert words(decoded) == words(fastopt.from_bfloat16(opt.state[key], dtype))
        decoded[:] = 12345.0  # a copy
        assert not np.any(opt.state.decoded(key) == 12345.0)

    # words written into the buffers are what the next step reads
    ref_state = reference.new_state(name, size, dtype, state_precision=BF16, **options)
    ref_state["step"] = 1
    for key in opt.state.buffers:
        raw = (
            np.abs(rng.standard_normal(size))
            if key in QUADRATIC_STATE
            else rng.standard_normal(size)
        )
        new = fastopt.to_bfloat16(0.01 * raw)
        opt.state[key][:] = new
        ref_state[key][:] = new
    ref_p = p.copy()
    opt.step(grads[1])
    reference.UPDATES[name](ref_p, grads[1], ref_state, lr=0.01, state_precision=BF16, **options)
    assert words(p) == words(ref_p)
    for key in opt.state.buffers:
        assert words(opt.state[key]) == words(ref_state[key]), key


@pytest.mark.parametrize("name, options", FULL_STATE, ids=FULL_STATE_IDS)
def test_compact_state_takes_half_the_bytes_of_float32(name, options):
    def state_bytes(dtype, precision):
        opt = make(name, np.zeros(1001, dtype), state_precision=precision, **options)
        return sum(v.nbytes for k, v in opt.state.items() if k != "step")

    assert state_bytes(np.float32, BF16) * 2 == state_bytes(np.float32, "full")
    assert state_bytes(np.float64, BF16) * 4 == state_bytes(np.float64, "full")
    assert state_bytes(np.float64, BF16) == state_bytes(np.float32, BF16)
    n_buffers = len(make(name, np.zeros(3), **options).state.buffers)
    assert state_bytes(np.float32, BF16) == 2 * 1001 * n_buffers


def test_initial_accumulator_is_rounded_once(rng):
    """Adagrad's initial_accumulator_value fills the sum with its bfloat16 word."""
    for value, word in [(0.1, 0x3DCD), (1.0, 0x3F80), (0.0, 0)]:
        opt = fastopt.Adagrad(np.zeros(5), initial_accumulator_value=value, state_precision=BF16)
        assert opt.state["sum"].tolist() == [word] * 5
        assert fastopt.to_bfloat16(np.array([value]))[0] == word
