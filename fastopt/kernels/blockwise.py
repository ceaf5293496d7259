"""8-bit blockwise state: the codes, the per-block scales and the update driver.

With ``state_precision="8bit"`` each state buffer is stored as one byte per element and one
scale per block of :data:`BLOCK` elements: the block's largest magnitude (``absmax``, in
the parameter dtype). Blocks start at each parameter group's first element (the last
block of a group may be shorter), so every group's kernel owns whole blocks.

The byte is a small floating-point code of the element's magnitude relative to its block,
``y = |x| * TOP / absmax`` in ``[0, TOP]``, rounded to the nearest code (ties to the even
code) from the float32 value of ``y``:

* unsigned states (sums and averages of squares: ``sum``, ``square_avg``,
  ``exp_avg_sq``, ``max_exp_avg_sq``): 5 exponent and 3 mantissa bits, covering
  ``2**-33 .. 1.875`` (32 binades, 8 steps each);
* signed states (momenta and first moments): a sign bit, 4 exponent and 3 mantissa bits,
  covering ``2**-17 .. 1.875`` (16 binades).

The largest magnitude of a block maps exactly to the top code ``TOP = 1.875``. A value is
then within half a code step of itself: a relative error of at most ``2**-4`` (6.25%)
above the smallest normal code, and an absolute error of at most half the smallest step
(``absmax * 2**-34 / 1.875`` unsigned, ``absmax * 2**-18 / 1.875`` signed) below it. A
block holding a NaN or an infinity stores a NaN scale: all its elements read back as NaN
(use ``skip_nonfinite`` to keep a non-finite gradient out of the state). A block of zeros
has scale 0.

A step is one pass over the buffers: for each block it decodes the state into a small
per-thread workspace (``BLOCK`` elements per state, in cache), runs the algorithm's
full-precision update loop on the block, then takes the new absmax and encodes the block.
The arithmetic is exactly the full-precision arithmetic; the parameters are updated with
the unrounded new state.

The choice of code over the dynamic quantisation map of Dettmers et al. (2021): the same
dynamic range per block (a floating-point exponent) with a fixed 3-bit mantissa, encoded
and decoded with a few integer operations instead of a table search, so the loop
vectorises. Buffers of fewer than :data:`MIN_SIZE` elements keep full-precision state.
"""

import numpy as np

BLOCK = 256
"""Elements per block (one scale each)."""
MIN_SIZE = 4096
"""An optimizer over fewer elements keeps full-precision state with ``"8bit"``."""
TOP = 1.875
"""The largest code value: a block's absmax is stored as this code."""
UNSIGNED_STATE = frozenset({"sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq"})
"""State buffers that are never negative: stored with the unsigned code."""

_U_BIAS, _S_BIAS = 31, 15  # exponent biases: e5m3 and e4m3 with TOP at the top code
_U_SUBNORMAL = 2.0 ** (1 - _U_BIAS - 3)  # one step of the subnormal codes
_S_SUBNORMAL = 2.0 ** (1 - _S_BIAS - 3)
_ROUND_TO_INTEGER = 2.0**23  # adding and subtracting it rounds a small float to an integer


def blocks_of(size):
    """The number of blocks of a group of ``size`` elements."""
    return -(-size // BLOCK)


# -- per-element codes (compiled by each backend; float_bits/bits_float bound per backend) --
# Branch-free int32 arithmetic, so that the block loops vectorise: ``normal`` is 1 for a
# code (or a value) in the normal range and 0 in the subnormal one.
_I = np.int32


def decode_unsigned(code):
    """The float32 value in ``[0, TOP]`` of an unsigned (e5m3) code."""
    c = _I(code)
    e = _I(c >> _I(3))
    normal = _I(_I(e + _I(31)) >> _I(5))
    significand = _I(_I(normal << _I(3)) | _I(c & _I(7)))
    power = _I(_I(e - normal + _I(125 - _U_BIAS)) << _I(23))
    return np.float32(significand) * bits_float(np.uint32(power))  # noqa: F821


def decode_signed(code):
    """The float32 value in ``[-TOP, TOP]`` of a signed (sign + e4m3) code."""
    c = _I(code)
    e = _I(_I(c >> _I(3)) & _I(15))
    normal = _I(_I(e + _I(15)) >> _I(4))
    significand = _I(_I(normal << _I(3)) | _I(c & _I(7)))
    power = _I(_I(e - normal + _I(125 - _S_BIAS)) << _I(23))
    sign = np.float32(_I(1) - _I(_I(c >> _I(6)) & _I(2)))
    return np.float32(significand) * bits_float(np.uint32(power)) * sign  # noqa: F821


def encode_unsigned(y):
    """The nearest unsigned (e5m3) code of a float32 ``y`` in ``[0, TOP]`` (ties even)."""
    bits = _I(float_bits(y))  # noqa: F821
    odd = _I(_I(bits >> _I(20)) & _I(1))
    normal_code = _I(_I(_I(bits + _I(0x7FFFF) + odd) >> _I(20)) - _I((127 - _U_BIAS) << 3))
    scaled = min(np.float32(y) * np.float32(1.0 / _U_SUBNORMAL), np.float32(16.0))  # in int range
    subnormal_code = _I((scaled + np.float32(_ROUND_TO_INTEGER)) - np.float32(_ROUND_TO_INTEGER))
    normal = _I(_I(_I(_I(127 - _U_BIAS) - _I(bits >> _I(23))) >> _I(31)) & _I(1))
    code = _I(subnormal_code + _I(_I(normal_code - subnormal_code) * normal))
    return np.uint8(code - _I(code >> _I(8)))  # 256 (above TOP by rounding) -> 255


def encode_signed(y, negative):
    """The nearest signed code of a float32 magnitude ``y`` in ``[0, TOP]``, with the sign
    bit set for ``negative``.
    """
    bits = _I(float_bits(y))  # noqa: F821
    odd = _I(_I(bits >> _I(20)) & _I(1))
    normal_code = _I(_I(_I(bits + _I(0x7FFFF) + odd) >> _I(20)) - _I((127 - _S_BIAS) << 3))
    scaled = min(np.float32(y) * np.float32(1.0 / _S_SUBNORMAL), np.float32(16.0))  # in int range
    subnormal_code = _I((scaled + np.float32(_ROUND_TO_INTEGER)) - np.float32(_ROUND_TO_INTEGER))
    normal = _I(_I(_I(_I(127 - _S_BIAS) - _I(bits >> _I(23))) >> _I(31)) & _I(1))
    code = _I(subnormal_code + _I(_I(normal_code - subnormal_code) * normal))
    code = _I(code - _I(code >> _I(7)))  # 128 -> 127
    return np.uint8(code | _I(_I(negative) << _I(7)))


# -- one block (host; compiled with the codes above) -------------------------------------
def dequantize_block(codes, absmax, b, out, signed):
    """Decode block ``b`` (its ``codes``) into ``out[:codes.size]`` and return that view."""
    f = out.dtype.type
    scale = absmax[b] / f(TOP)
    values = out[: codes.size]
    if signed:
        for j in range(codes.size):
            values[j] = f(decode_signed(codes[j])) * scale
    else:
        for j in range(codes.size):
            values[j] = f(decode_unsigned(codes[j])) * scale
    return values


def quantize_block(values, codes, absmax, b, signed):
    """Encode ``values`` as block ``b``: its absmax, then each element's code."""
    f = values.dtype.type
    high = np.uint32(0)  # the largest |value| as float32 bits: NaN and inf sort above
    for j in range(values.size):
        high = max(high, np.uint32(float_bits(np.float32(values[j]))) & np.uint32(0x7FFFFFFF))  # noqa: F821
    if high >= np.uint32(0x7F800000):
        absmax[b] = f(np.nan)
        for j in range(values.size):
            codes[j] = 0
        return
    amax = f(bits_float(high))  # noqa: F821
    absmax[b] = amax
    inverse = f(TOP) / amax if amax > 0 else f(0.0)
    if signed:
        for j in range(values.size):
            x = values[j]
            codes[j] = encode_signed(np.float32(abs(x) * inverse), x < 0)
    else:
        for j in range(values.size):
            codes[j] = encode_unsigned(np.float32(abs(values[j]) * inverse))


# -- the drivers (host): one per state count, ``update`` the full-precision serial loop ----
def blockwise_1(param, grad, codes0, absmax0, work, grad_scale, *scalars):
    n = param.size
    blocks = (n + BLOCK - 1) // BLOCK
    chunks = work.shape[0]
    per = (blocks + chunks - 1) // chunks
    for c in prange(chunks):  # noqa: F821
        row = work[c]
        for b in range(c * per, min(blocks, c * per + per)):
            lo = b * BLOCK
            hi = min(n, lo + BLOCK)
            s0 = row[0, :0]
            if codes0.size:
                s0 = dequantize(codes0[lo:hi], absmax0, b, row[0], SIGNED0)  # noqa: F821
            update(param[lo:hi], grad[lo:hi], s0, grad_scale, *scalars)  # noqa: F821
            if codes0.size:
                quantize(s0, codes0[lo:hi], absmax0, b, SIGNED0)  # noqa: F821


def blockwise_3(param, grad, codes0, codes1, codes2, absmax0, absmax1, absmax2, work,
                grad_scale, *scalars):  # fmt: skip
    n = param.size
    blocks = (n + BLOCK - 1) // BLOCK
    chunks = work.shape[0]
    per = (blocks + chunks - 1) // chunks
    for c in prange(chunks):  # noqa: F821
        row = work[c]
        for b in range(c * per, min(blocks, c * per + per)):
            lo = b * BLOCK
            hi = min(n, lo + BLOCK)
            s0, s1, s2 = row[0, :0], row[1, :0], row[2, :0]
            if codes0.size:
                s0 = dequantize(codes0[lo:hi], absmax0, b, row[0], SIGNED0)  # noqa: F821
            if codes1.size:
                s1 = dequantize(codes1[lo:hi], absmax1, b, row[1], SIGNED1)  # noqa: F821
            if codes2.size:
                s2 = dequantize(codes2[lo:hi], absmax2, b, row[2], SIGNED2)  # noqa: F821
            update(param[lo:hi], grad[lo:hi], s0, s1, s2, grad_scale, *scalars)  # noqa: F821
            if codes0.size:
                quantize(s0, codes0[lo:hi], absmax0, b, SIGNED0)  # noqa: F821
            if codes1.size:
                quantize(s1, codes1[lo:hi], absmax1, b, SIGNED1)  # noqa: F821
            if codes2.size:
                quantize(s2, codes2[lo:hi], absmax2, b, SIGNED2)  # noqa: F821


DRIVERS = {1: blockwise_1, 3: blockwise_3}


# -- whole buffers on the host (NumPy; for state_dict conversions and decoded values) -----
def _segment_blocks(bounds):
    """``(element start, element stop, first block)`` of each segment ``[start, stop)``."""
    first, out = 0, []
    for start, stop in bounds:
        out.append((start, stop, first))
        first += blocks_of(stop - start)
    return out


def absmax_size(bounds):
    """The number of scales of a buffer with these segments."""
    return sum(blocks_of(stop - start) for start, stop in bounds)


def _code_values(signed):
    """The float32 value of every code (256 entries)."""
    c = np.arange(256, dtype=np.uint32)
    if signed:
        e, m, bias = (c >> 3) & 15, c & 7, _S_BIAS
        sub = _S_SUBNORMAL
    else:
        e, m, bias = c >> 3, c & 7, _U_BIAS
        sub = _U_SUBNORMAL
    normal = (((e + 127 - bias) << 23) | (m << 20)).astype(np.uint32).view(np.float32)
    values = np.where(e > 0, normal, m.astype(np.float32) * np.float32(sub)).astype(np.float32)
    if signed:
        values = np.where(c & 0x80, -values, values).astype(np.float32)
    return values


def _blocked(array, start, stop, fill=0):
    """``array[start:stop]`` as rows of ``BLOCK`` elements, the last row padded."""
    size = stop - start
    rows = np.full((blocks_of(size), BLOCK), fill, array.dtype)
    rows.reshape(-1)[:size] = array[start:stop]
    return rows


def dequantize(codes, absmax, signed, bounds, dtype):
    """The values (``dtype``) of a whole 8-bit buffer laid out in ``bounds``."""
    dtype = np.dtype(dtype)
    table = _code_values(signed).astype(dtype)
    out = np.empty(codes.size, dtype)
    for start, stop, first in _segment_blocks(bounds):
        rows = _blocked(codes, start, stop)
        scales = absmax[first : first + rows.shape[0]].astype(dtype) / dtype.type(TOP)
        out[start:stop] = (table[rows] * scales[:, None]).reshape(-1)[: stop - start]
    return out


def quantize(values, signed, bounds):
    """``(codes, absmax)`` of float values laid out in ``bounds``, rounded as a step
    rounds (NumPy, a table search instead of the kernels' bit operations).
    """
    dtype = np.dtype(values.dtype)
    f = dtype.type
    codes = np.zeros(values.size, np.uint8)
    absmax = np.zeros(absmax_size(bounds), dtype)
    table = _code_values(True)[:128] if signed else _code_values(False)
    for start, stop, first in _segment_blocks(bounds):
        rows = _blocked(values, start, stop)
        with np.errstate(over="ignore", invalid="ignore"):
            magnitudes = np.abs(rows.astype(np.float32))
        finite = np.isfinite(magnitudes).all(axis=1)
        amax = np.where(finite, magnitudes.max(axis=1), np.nan).astype(dtype)
        absmax[first : first + rows.shape[0]] = amax
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = np.where(amax > 0, f(TOP) / amax, f(0)).astype(dtype)
            y = (np.abs(rows) * inverse[:, None]).astype(np.float32)
        code = _nearest(table, np.where(finite[:, None], y, 0).astype(np.float32))
        if signed:
            code = np.where(rows < 0, code | 0x80, code)
        code = np.where(finite[:, None], code, 0).astype(np.uint8)
        codes[start:stop] = code.reshape(-1)[: stop - start]
    return codes, absmax


def _nearest(table, y):
    """The index of the nearest entry of an increasing ``table`` (ties to the even index),
    for ``y`` clipped to the table's range.
    """
    y = np.minimum(y, table[-1])
    upper = np.searchsorted(table, y, side="left").clip(1, table.size - 1)
    lower = upper - 1
    below, above = y - table[lower], table[upper] - y
    pick_upper = (above < below) | ((above == below) & (upper % 2 == 0))
    return np.where(pick_upper, upper, lower).astype(np.uint8)


# -- slicing an 8-bit state (ZeRO shards) ------------------------------------------------
def block_index(bounds, position):
    """The index of the first scale at element ``position``, a block boundary of its group
    (a group start or stop, or ``BLOCK`` elements apart from its start); ValueError for any
    other position, which would cut a block in two.
    """
    for start, stop, first in _segment_blocks(bounds):
        if start <= position <= stop:
            offset = position - start
            if position != stop and offset % BLOCK:
                raise ValueError(
                    f"element {position} is inside an 8-bit block of the group "
                    f"[{start}, {stop}) (blocks of {BLOCK} start at the group's first "
                    "element): a slice of 8-bit state must start and stop on a block boundary"
                )
            return first + blocks_of(offset)
    raise ValueError(f"element {position} is outside the buffer")


def aligned_cuts(bounds, size, parts):
    """``(counts, starts)`` of ``parts`` contiguous slices of ``size`` elements, as even as
    block boundaries allow: each cut is the boundary nearest to the even split.
    """
    candidates = sorted(
        {0, size} | {p for start, stop in bounds for p in (*range(start, stop, BLOCK), stop)}
    )
    cuts = [0]
    for r in range(1, parts):
        target = r * size / parts
        best = min(candidates, key=lambda p: (abs(p - target), p))
        cuts.append(max(best, cuts[-1]))
    cuts.append(size)
    counts = [b - a for a, b in zip(cuts, cuts[1:])]
    return counts, cuts[:-1]
