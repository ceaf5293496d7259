"""fastopt's 8-bit state code against the dynamic map of bitsandbytes, on the same states.

Usage: python bench/code_comparison.py

Both store a state buffer in blocks of 256 elements with one absmax per block; they differ
in the 256 values a byte can stand for, relative to the block's absmax:

* fastopt (``fastopt.kernels.blockwise``): a float-like code with a 3-bit mantissa, a
  relative error of at most 2**-4 everywhere in its range; signed states (``exp_avg``) a
  sign bit and 16 binades, ``|x| / absmax`` down to about 1.7e-5; unsigned states
  (``exp_avg_sq``) 32 binades, down to about 2.6e-10; below that, zero.
* bitsandbytes (Dettmers et al. 2021, "8-bit optimizers via block-wise quantization"):
  ``create_dynamic_map``, a linear fraction within each decade from 1e-7 to 1, with the
  most entries in the top decade (signed: 64 of them, an absolute step of 0.014; unsigned:
  128) and half as many in each decade below; ``signed=True`` for state1 (``exp_avg``),
  ``signed=False`` for state2 (``exp_avg_sq``), as its 8-bit blockwise Adam builds them.

The script reproduces that map in NumPy (bit for bit the map torch 2.13 builds on an AVX2
or AVX512 CPU, checked here against a checksum; torch's kernel without FMA differs in the
last bit of a few entries) and its optimizer's rounding (the binary
search of ``quantize_2D`` in ``csrc/kernels.cu``: the nearest entry of ``x / absmax``;
for state1 a value whose entry has the wrong sign moves one entry outwards, so that a
negative value is never stored as zero), and compares the two codes on:

(a) synthetic buffers of 2**16 float32 elements: signed ``standard_normal`` and
    ``standard_normal * exp(uniform(-16, 0))``, unsigned ``standard_normal**2`` and
    ``exp(uniform(-28, 2))`` (typical blocks, and blocks that span 7 and 13 decades);
(b) real Adam states: the final ``exp_avg`` and ``exp_avg_sq`` of ``fastopt.Adam(p,
    lr=1e-3)`` (full precision) after 80 steps of the noisy quadratic of
    ``tests/state_helpers.noisy_quadratic`` (8192 parameters, seeds 0 to 4), each rounded
    once with each code;
(c) the 80-step stream: a float32 NumPy Adam (torch's formula, lr 1e-3, betas (0.9,
    0.999), eps 1e-8) on the same gradient stream whose m and v are stored with a code
    after every step (rounded, then read back for the next step; the parameters are
    updated with the unrounded new moments, as both libraries do), against the unrounded
    run; the gradients are taken at the unrounded run's parameters.

Metrics per buffer (``x`` the exact value, ``d`` the value read back): ``nmae`` =
mean|d - x| / mean|x|; ``mrel`` = mean(|d - x| / (|x| + 0.01 mean|x|)); ``>0.25``: the
share of elements with that relative error above 0.25; ``x->0``: the share of nonzero
``x`` read back as exactly 0; for (c), ``drift`` = mean|p_q - p| / mean|p - p0|. Results
of (b) and (c) are means over the 5 seeds. A second table gives the mean relative error
|d - x| / |x| by decade of ``|x| / absmax`` (over the wide-range buffers of (a)), beside
the share of the real states of (b) in each decade (so one can see which decades decide
the totals). Two checks are printed as well: the NumPy Adam against ``fastopt.Adam``, and
the (c) figures of fastopt's own ``state_precision="8bit"`` run (``noisy_quadratic``),
which the emulated fastopt column should match. Seeds are fixed: the output is
reproducible. It takes a few seconds.
"""

import math
import sys
from pathlib import Path

import numpy as np

import fastopt
from fastopt.kernels import blockwise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from state_helpers import noisy_quadratic  # noqa: E402

BLOCK = blockwise.BLOCK  # 256, the block size of both libraries' 8-bit blockwise optimizers
F32 = np.float32
SEEDS = range(5)
SIZE, STEPS = 8192, 80
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8


# -- bitsandbytes' dynamic map and blockwise rounding ---------------------------------------
# Source: github.com/bitsandbytes-foundation/bitsandbytes, commit
# 95f9af309d4d5793847169c39288dcd3fcbdf564:
# bitsandbytes/functional.py (create_dynamic_map), bitsandbytes/optim/optimizer.py (fill_qmap,
# name2qmap["dynamic"] / ["udynamic"]), csrc/kernels.cu (quantize_2D,
# kOptimizerStatic8bit2StateBlockwise: the 8-bit blockwise Adam step, blocks of 256).
def _linspace32(start, end, steps):
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` on the CPU: the lower half
    ``start + step * i``, the upper half ``end - step * (steps - 1 - i)``, each with one
    rounding (a fused multiply-add, as torch's AVX2 and AVX512 kernels compute it).
    """
    start, end = F32(start), F32(end)
    step = (end - start) / F32(steps - 1)
    i = np.arange(steps)
    low = (np.float64(start) + np.float64(step) * i).astype(F32)
    high = (np.float64(end) - np.float64(step) * (steps - 1 - i)).astype(F32)
    return np.where(i < steps // 2, low, high)


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """The dynamic quantisation map of bitsandbytes (256 sorted float32 values in [-1, 1]).

    A NumPy transcription of ``create_dynamic_map`` in ``bitsandbytes/functional.py`` of
    github.com/bitsandbytes-foundation/bitsandbytes (formerly TimDettmers/bitsandbytes),
    snapshot 95f9af309d4d5793847169c39288dcd3fcbdf564; its optimizer builds
    ``name2qmap["dynamic"] = create_dynamic_map(signed=True)`` for state1 and
    ``name2qmap["udynamic"] = create_dynamic_map(signed=False)`` for state2
    (``bitsandbytes/optim/optimizer.py``, ``fill_qmap``).
    """
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        extra = 0 if signed else 1
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits + extra) + 1)
        boundaries = _linspace32(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / F32(2.0)
        scale = F32(10 ** (-(max_exponent_bits - 1) + i))  # a float32 tensor times a scalar
        data += list(scale * means)
        if signed:
            data += list(-scale * means)
    if additional_items > 0:
        boundaries = _linspace32(0.1, 1, additional_items + 1)
        means = (boundaries[:-1] + boundaries[1:]) / F32(2.0)
        scale = F32(10 ** (-(max_exponent_bits - 1) + i))
        data += list(scale * means)
        if signed:
            data += list(-scale * means)
    data += [F32(0.0), F32(1.0)]
    assert len(data) == 2**total_bits
    data += [F32(0.0)] * (256 - len(data))
    return np.sort(np.array(data, F32))


BNB_SIGNED = create_dynamic_map(signed=True)
BNB_UNSIGNED = create_dynamic_map(signed=False)
# sum of (index + 1) * (float32 bits) of the maps torch 2.13 builds (CPU, AVX512 and AVX2)
BNB_CHECKSUMS = {True: 51200865550848, False: 34477682547726}


def _checksum(table):
    return int((table.view(np.uint32).astype(np.int64) * np.arange(1, 257)).sum())


def bnb_codes(normalised, table, signed):
    """The bytes of ``x / absmax`` as the optimizer's ``quantize_2D`` picks them: a binary
    search from entry 127 in steps of 64, 32, ..., 1, then the nearer of the final entry
    and its bracketing neighbour (midpoints in float32; a tie goes to the final entry);
    for a signed state, an entry of the wrong sign moves one entry outwards.
    """
    x = normalised
    pivot = np.full(x.shape, 127, np.int64)
    upper_pivot = np.full(x.shape, 255, np.int64)
    lower_pivot = np.zeros(x.shape, np.int64)
    upper = np.full(x.shape, 1.0, F32)
    lower = np.full(x.shape, -1.0 if signed else 0.0, F32)
    value = table[pivot]
    for step in (64, 32, 16, 8, 4, 2, 1):
        above = x > value
        lower_pivot = np.where(above, pivot, lower_pivot)
        lower = np.where(above, value, lower)
        upper_pivot = np.where(above, upper_pivot, pivot)
        upper = np.where(above, upper, value)
        pivot = np.where(above, pivot + step, pivot - step)
        value = table[pivot]
    above = x > value
    code = np.where(
        above,
        np.where(x > (upper + value) * F32(0.5), upper_pivot, pivot),
        np.where(x < (lower + value) * F32(0.5), lower_pivot, pivot),
    )
    if signed:
        wrong = np.signbit(table[code]) != np.signbit(x)
        code = np.where(wrong, np.where(x > 0, code + 1, code - 1), code) % 256
    return code.astype(np.uint8)


def bnb_round(values, signed):
    """``values`` (float32, whole blocks) stored with bitsandbytes' blockwise code and read
    back: absmax = max|x| per block, the byte of ``x / absmax``, then ``map[byte] * absmax``
    (an IEEE float32 division here, the CUDA kernel's ``__fdividef`` within 2 ulp of it).
    """
    table = BNB_SIGNED if signed else BNB_UNSIGNED
    rows = np.asarray(values, F32).reshape(-1, BLOCK)
    absmax = np.abs(rows).max(axis=1)
    safe = np.where(absmax > 0, absmax, F32(1.0))
    codes = bnb_codes(rows / safe[:, None], table, signed)
    out = table[codes] * absmax[:, None]
    return np.where(absmax[:, None] > 0, out, F32(0.0)).reshape(-1)


def fastopt_round(values, signed):
    """``values`` (float32) stored with fastopt's 8-bit code and read back (one group)."""
    values = np.asarray(values, F32)
    bounds = [(0, values.size)]
    codes, absmax = blockwise.quantize(values, signed, bounds)
    return blockwise.dequantize(codes, absmax, signed, bounds, np.float32)


CODES = {"fastopt": fastopt_round, "bnb": bnb_round}


# -- metrics --------------------------------------------------------------------------------
def errors(x, d):
    """``nmae, mrel, >0.25, x->0`` of the values ``d`` read back for the exact ``x``."""
    x, d = np.asarray(x, np.float64), np.asarray(d, np.float64)
    err = np.abs(d - x)
    scale = np.abs(x).mean()
    rel = err / (np.abs(x) + 0.01 * scale)
    nonzero = x != 0
    return {
        "nmae": err.mean() / scale,
        "mrel": rel.mean(),
        ">0.25": (rel > 0.25).mean(),
        "x->0": (nonzero & (d == 0)).sum() / max(nonzero.sum(), 1),
    }


def mean_dicts(dicts):
    return {key: float(np.mean([d[key] for d in dicts])) for key in dicts[0]}


DECADES = [(10.0**-k, 10.0 ** (1 - k)) for k in range(1, 8)] + [(0.0, 1e-7)]


def relative_by_decade(x, d):
    """Mean |d - x| / |x| by decade of |x| / absmax (block of 256), NaN where empty."""
    x, d = np.asarray(x, np.float64), np.asarray(d, np.float64)
    r = (np.abs(x).reshape(-1, BLOCK) / np.abs(x).reshape(-1, BLOCK).max(axis=1)[:, None]).ravel()
    rel = np.abs(d - x) / np.where(x != 0, np.abs(x), np.inf)
    out = []
    for low, high in DECADES:
        inside = (r >= low) & (r < high) if high < 1 else (r >= low)
        inside &= x != 0
        out.append(rel[inside].mean() if inside.any() else math.nan)
    return out


def decade_shares(x):
    r = np.abs(x).reshape(-1, BLOCK) / np.abs(x).reshape(-1, BLOCK).max(axis=1)[:, None]
    r = r.ravel()
    return [((r >= lo) & ((r < hi) if hi < 1 else True)).mean() for lo, hi in DECADES]


# -- the cases ------------------------------------------------------------------------------
def synthetic():
    """(a): ``{name: (values, signed)}``, 2**16 float32 elements each."""
    rng = np.random.default_rng(2021)
    n = 2**16
    return {
        "normal": (rng.standard_normal(n).astype(F32), True),
        "normal*exp(U(-16,0))": (
            (rng.standard_normal(n) * np.exp(rng.uniform(-16, 0, n))).astype(F32),
            True,
        ),
        "normal**2": ((rng.standard_normal(n) ** 2).astype(F32), False),
        "exp(U(-28,2))": (np.exp(rng.uniform(-28, 2, n)).astype(F32), False),
    }


def quadratic(seed):
    """The noisy quadratic of ``tests/state_helpers.noisy_quadratic``: ``(p0, gradient)``,
    where ``gradient(param)`` draws the next step's float32 gradient at ``param``.
    """
    rng = np.random.default_rng(seed)
    h = np.exp(rng.uniform(np.log(0.1), np.log(10), SIZE))
    c = rng.standard_normal(SIZE)
    sigma = 0.5 * np.exp(rng.uniform(-2, 2, SIZE))
    p0 = rng.standard_normal(SIZE).astype(F32)

    def gradient(param):
        return (h * (param - c) + sigma * rng.standard_normal(SIZE)).astype(F32)

    return p0, gradient


def fastopt_states(seed):
    """(b): the full-precision ``fastopt.Adam`` state after the stream."""
    p0, gradient = quadratic(seed)
    opt = fastopt.Adam(p0.copy(), lr=LR)
    for _ in range(STEPS):
        opt.step(gradient(opt.param))
    return opt.state["exp_avg"].copy(), opt.state["exp_avg_sq"].copy(), opt.param.copy()


def check_stream(seed):
    """Our gradient stream is ``noisy_quadratic``'s: the same final fastopt.Adam state."""
    full, _, _, _ = noisy_quadratic("Adam", {"lr": LR}, seed, "full")
    m, v, p = fastopt_states(seed)
    return (
        np.array_equal(full.state["exp_avg"], m)
        and np.array_equal(full.state["exp_avg_sq"], v)
        and np.array_equal(full.param, p)
    )


def adam_stream(seed):
    """(c): ``{code: (m, v, p)}`` after the stream, ``"exact"`` unrounded, and ``p0``."""
    p0, gradient = quadratic(seed)
    b1, b2 = BETAS
    runs = {name: [np.zeros(SIZE, F32), np.zeros(SIZE, F32), p0.copy()] for name in CODES}
    runs["exact"] = [np.zeros(SIZE, F32), np.zeros(SIZE, F32), p0.copy()]
    for t in range(1, STEPS + 1):
        g = gradient(runs["exact"][2])
        step_size = F32(LR / (1 - b1**t))
        bc2_sqrt = F32(math.sqrt(1 - b2**t))
        for name, run in runs.items():
            m, v, p = run
            m = F32(b1) * m + F32(1 - b1) * g
            v = F32(b2) * v + F32(1 - b2) * g * g
            p = p - step_size * m / (np.sqrt(v) / bc2_sqrt + F32(EPS))
            if name != "exact":
                m, v = CODES[name](m, True), CODES[name](v, False)
            run[:] = m, v, p.astype(F32)
    return runs, p0


# -- the report -----------------------------------------------------------------------------
METRICS = ("nmae", "mrel", ">0.25", "x->0")


def print_table(rows):
    """One row per buffer; each metric in percent, fastopt then bnb, '<' on the smaller."""
    names = (*METRICS, "drift")
    print(f"{'':<38}" + "".join(f"{name + ' %':^18}" for name in names))
    head = f"{'case':<26}{'buffer':<12}" + f"{'fastopt':>9}{'bnb':>9}" * len(names)
    print(head)
    print("-" * len(head))
    for case, buffer, pair in rows:
        cells = ""
        for name in names:
            if name not in pair["fastopt"]:
                cells += " " * 18
                continue
            a, b = 100 * pair["fastopt"][name], 100 * pair["bnb"][name]
            marks = ("<", " ") if a < b else ((" ", "<") if b < a else (" ", " "))
            cells += f"{a:>8.3g}{marks[0]}{b:>8.3g}{marks[1]}"
        print(f"{case:<26}{buffer:<12}{cells}")


def library_stream():
    """The (c) figures of fastopt itself (``state_precision="8bit"``), means over seeds."""
    recorded = [
        noisy_quadratic("Adam", {"lr": LR}, seed, "8bit", record=(STEPS,))[3][STEPS]
        for seed in SEEDS
    ]
    return {
        key: np.mean([r[key] for r in recorded], axis=0) for key in ("exp_avg", "exp_avg_sq")
    }, float(np.mean([r["param"] for r in recorded]))


def main():
    for signed, table in ((True, BNB_SIGNED), (False, BNB_UNSIGNED)):
        assert _checksum(table) == BNB_CHECKSUMS[signed], "the map differs from bitsandbytes'"
    assert check_stream(0), "the gradient stream differs from noisy_quadratic's"

    rows = []
    wide = {}
    for name, (x, signed) in synthetic().items():
        decoded = {code: f(x, signed) for code, f in CODES.items()}
        pair = {code: errors(x, d) for code, d in decoded.items()}
        rows.append((f"(a) {name}", "signed" if signed else "unsigned", pair))
        if "exp" in name:
            wide[signed] = {code: relative_by_decade(x, d) for code, d in decoded.items()}

    states = [fastopt_states(seed) for seed in SEEDS]
    for key, index, signed in (("exp_avg", 0, True), ("exp_avg_sq", 1, False)):
        pair = {
            code: mean_dicts([errors(s[index], f(s[index], signed)) for s in states])
            for code, f in CODES.items()
        }
        rows.append(("(b) Adam state, once", key, pair))

    streams = [adam_stream(seed) for seed in SEEDS]
    drift = {code: [] for code in CODES}
    per_key = {"exp_avg": {c: [] for c in CODES}, "exp_avg_sq": {c: [] for c in CODES}}
    for runs, p0 in streams:
        m, v, p = runs["exact"]
        moved = np.abs(p.astype(np.float64) - p0).mean()
        for code in CODES:
            mq, vq, pq = runs[code]
            per_key["exp_avg"][code].append(errors(m, mq))
            per_key["exp_avg_sq"][code].append(errors(v, vq))
            drift[code].append(np.abs(pq.astype(np.float64) - p).mean() / moved)
    for key, by_code in per_key.items():
        rows.append(("(c) 80-step stream", key, {c: mean_dicts(d) for c, d in by_code.items()}))
    rows.append(
        ("(c) 80-step stream", "param", {c: {"drift": float(np.mean(d))} for c, d in drift.items()})
    )
    # the NumPy Adam against fastopt.Adam (full precision) on the same stream
    gap = max(
        float(np.abs(runs["exact"][2] - s[2]).max() / np.abs(s[2] - p0).mean())
        for (runs, p0), s in zip(streams, states)
    )

    print("8-bit blockwise state (256 per block): fastopt's code against bitsandbytes' map")
    print(f"('<' marks the smaller of the pair; (b), (c): means over seeds {list(SEEDS)})\n")
    print_table(rows)
    print(f"\nNumPy Adam vs fastopt.Adam, full precision: max |dp| / mean |p - p0| = {gap:.1e}")
    buffers, library_drift = library_stream()
    print(
        "(c) with fastopt itself (state_precision='8bit', noisy_quadratic): "
        + ", ".join(
            f"{key} nmae {100 * e[0]:.3g} mrel {100 * e[1]:.3g} >0.25 {100 * e[2]:.3g}"
            for key, e in buffers.items()
        )
        + f", drift {100 * library_drift:.3g} (%)"
    )

    print("\nmean |d - x| / |x| (%) by decade of |x| / block absmax, on the wide-range (a)")
    print("buffers, and the share (%) of the (b) states (all seeds) in each decade")
    shares = {
        True: decade_shares(np.concatenate([s[0] for s in states])),
        False: decade_shares(np.concatenate([s[1] for s in states])),
    }
    print(
        f"{'|x|/absmax':<16}{'signed fastopt':>16}{'bnb':>10}{'exp_avg':>10}"
        f"{'unsigned fastopt':>19}{'bnb':>10}{'exp_avg_sq':>12}"
    )
    for k, (low, high) in enumerate(DECADES):
        label = f"[{low:.0e}, {high:.0e})" if low else f"< {high:.0e}"
        print(
            f"{label:<16}{100 * wide[True]['fastopt'][k]:>16.3g}"
            f"{100 * wide[True]['bnb'][k]:>10.3g}{100 * shares[True][k]:>10.3g}"
            f"{100 * wide[False]['fastopt'][k]:>19.3g}{100 * wide[False]['bnb'][k]:>10.3g}"
            f"{100 * shares[False][k]:>12.3g}"
        )
    for signed, table in ((True, BNB_SIGNED), (False, BNB_UNSIGNED)):
        zero = (blockwise.ZERO_SIGNED if signed else blockwise.ZERO_UNSIGNED) / blockwise.TOP
        print(
            f"{'signed' if signed else 'unsigned'}: |x|/absmax reads as 0 below "
            f"{zero:.2e} (fastopt), below {table[table > 0].min() / 2:.2e} (bnb; half its "
            f"smallest entry{', positive values only' if signed else ''})"
        )
    print(
        "(bnb, signed: a negative value below its smallest entry is stored as that entry,"
        " -5.5e-7 absmax,\n so its relative error can exceed 100%)"
    )


if __name__ == "__main__":
    main()
