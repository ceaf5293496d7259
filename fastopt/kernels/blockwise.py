"""8-bit blockwise state: the codes, the per-block scales and the update driver.

With ``state_precision="8bit"`` each state buffer is stored as one byte per element and one
scale per block of :data:`BLOCK` elements: the block's largest magnitude (``absmax``, in
the parameter dtype). Blocks start at each parameter group's first element (the last
block of a group may be shorter), so every group's kernel owns whole blocks.

The byte is a small floating-point code of the element's magnitude relative to its block,
``y = |x| * TOP / absmax`` in ``[0, TOP]``, taken from the float32 value of ``y``. A
nonzero code ``c`` (``c & 127`` for a signed state) has ``e = c >> 3`` and ``m = c & 7``
and stands for ``(1 + m / 8) * 2**(e - bias)``; code 0 stands for zero:

* unsigned states (sums and averages of squares: ``sum``, ``square_avg``,
  ``exp_avg_sq``, ``max_exp_avg_sq``): 8 bits, ``bias = 31``, from ``1.125 * 2**-31``
  to ``1.875`` (32 binades of 8 steps, the lowest with 7 nonzero codes);
* signed states (momenta and first moments): a sign bit (``0x80``), then 7 bits with
  ``bias = 15``, from ``1.125 * 2**-15`` to ``1.875`` (16 binades). ``0x00`` and ``0x80``
  both read as ``+0``.

A code's value is the float32 whose upper 12 bits are ``c + 768`` (unsigned) or ``(c &
127) + 896`` (signed, with the sign bit), and ``y`` is encoded by rounding its float32
bits at bit 20, half up: ``code = (bits(y) + 2**19) >> 20`` less the offset, at least 0.
So ``y`` gets the nearest code value, a tie going to the larger one, down to the
threshold :data:`ZERO_UNSIGNED` or :data:`ZERO_SIGNED` (``17/16 * 2**-bias``); below
it, code 0. The largest magnitude of a block maps exactly to the top code ``TOP =
1.875``. From the threshold up a value is stored to a relative error of at most 1/17
(5.9%, below ``2**-4``); below it, it reads as 0, an absolute error under ``threshold *
absmax / TOP`` (``2**-31.8`` of absmax unsigned, ``2**-15.8`` signed). A block holding a
NaN or an infinity stores a NaN scale: all its elements read back as NaN (use
``skip_nonfinite`` to keep a non-finite gradient out of the state). A block of zeros has
scale 0.

A value reads back as ``code_value * (absmax / TOP)``, the scale computed first (in the
parameter dtype). A block whose absmax is below the smallest normal float32 (``2**-126``)
is stored as zeros, since ``TOP / absmax`` would overflow.

A step is one pass over the buffers: each host thread takes :data:`TILE_BLOCKS` blocks at a
time, decodes their state into its workspace (in cache), runs the algorithm's
full-precision update loop on them, then takes each block's new absmax and encodes it. On
the GPU one CUDA block of ``BLOCK`` threads handles one block, with its absmax from a
shared-memory maximum. The arithmetic is exactly the full-precision arithmetic; the
parameters are updated with the unrounded new state.

The choice of code over the dynamic quantisation map of Dettmers et al. (2021): the same
dynamic range per block (a floating-point exponent) with a fixed 3-bit mantissa, decoded
and encoded with a handful of integer operations on float32 bits instead of a table
search, so the loops vectorise; no subnormal codes and no ties-to-even, which would cost
several operations more per element on a step that is bound by arithmetic on the host.
Buffers of fewer than :data:`MIN_SIZE` elements keep full-precision state.
"""

import bisect

import numpy as np

BLOCK = 256
"""Elements per block (one scale each)."""
TILE_BLOCKS = 4
"""Blocks a host thread decodes, updates and encodes at a time (in its workspace, in the
first-level cache); 1 to 16 measured, 1 clearly slowest."""
TILE = TILE_BLOCKS * BLOCK
MIN_SIZE = 4096
"""An optimizer over fewer elements keeps full-precision state with ``"8bit"``."""
TOP = 1.875
"""The largest code value: a block's absmax is stored as this code."""
UNSIGNED_STATE = frozenset({"sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq"})
"""State buffers that are never negative: stored with the unsigned code."""

UNSIGNED_BIAS, SIGNED_BIAS = 31, 15
"""Exponent biases of the codes: code ``8 * bias`` is 1.0."""
ZERO_UNSIGNED, ZERO_SIGNED = 17 / 16 * 2.0**-UNSIGNED_BIAS, 17 / 16 * 2.0**-SIGNED_BIAS
"""The smallest ``y`` given a nonzero code; below it, code 0 (zero)."""
_U_OFFSET = (127 - UNSIGNED_BIAS) << 3  # a code plus this: the upper 12 bits of its float32
_S_OFFSET = (127 - SIGNED_BIAS) << 3
_INF_BITS = 0x7F800000  # float32 bits: an infinity; above it, NaNs
_MIN_NORMAL_BITS = 0x00800000  # the smallest normal float32, 2**-126


def blocks_of(size):
    """The number of blocks of a group of ``size`` elements."""
    return -(-size // BLOCK)


# -- per-element codes (compiled by each backend) ------------------------------------------
# Branch-free 32-bit integer arithmetic on float32 bits, so that the block loops vectorise.
# The operations (add, shr, bits32, ...) are bound per backend: see fastopt.kernels.int32.


def decode_unsigned(code):
    """The float32 value in ``[0, TOP]`` of an unsigned code."""
    c = int32(code)  # noqa: F821
    value = float_of_bits(shl(add(c, _U_OFFSET), 20))  # noqa: F821
    return value if c != 0 else np.float32(0.0)


def decode_signed(code):
    """The float32 value in ``[-TOP, TOP]`` of a signed code (``+0`` for both zeros)."""
    c = int32(code)  # noqa: F821
    magnitude = bit_and(c, 127)  # noqa: F821
    sign = shl(bit_and(c, 128), 24)  # noqa: F821
    value = float_of_bits(bit_or(shl(add(magnitude, _S_OFFSET), 20), sign))  # noqa: F821
    return value if magnitude != 0 else np.float32(0.0)


def _encode(y, offset, top_code):
    """The code of a float32 ``y`` in ``[0, TOP]``: its bits rounded at bit 20 (half up),
    less ``offset``, in ``[0, top_code]``.
    """
    code = shr(add(bits32(y), (1 << 19) - (offset << 20)), 20)  # noqa: F821
    return min(max(code, int32(0)), int32(top_code))  # noqa: F821


def encode_unsigned(y):
    """The unsigned code of a float32 ``y`` in ``[0, TOP]``."""
    return np.uint8(encode_code(y, _U_OFFSET, 255))  # noqa: F821


def encode_signed(y, negative):
    """The signed code of a float32 magnitude ``y`` in ``[0, TOP]``, with the sign bit set
    for ``negative``.
    """
    code = encode_code(y, _S_OFFSET, 127)  # noqa: F821
    return np.uint8(bit_or(code, shl(int32(negative), 7)))  # noqa: F821


# -- tiles of blocks (host; compiled with the codes above) ---------------------------------
def dequantize_tile(codes, absmax, first, out, signed):
    """Decode the blocks of ``codes`` (block ``first`` onwards) into ``out[:codes.size]``
    and return that view.
    """
    f = out.dtype.type
    values = out[: codes.size]
    for k in range((codes.size + BLOCK - 1) // BLOCK):
        scale = absmax[first + k] / f(TOP)
        block = codes[k * BLOCK : (k + 1) * BLOCK]
        decoded = values[k * BLOCK : (k + 1) * BLOCK]
        if signed:
            for j in range(block.size):
                decoded[j] = f(decode_signed(block[j])) * scale
        else:
            for j in range(block.size):
                decoded[j] = f(decode_unsigned(block[j])) * scale
    return values


def quantize_tile(values, codes, absmax, first, signed):
    """Encode ``values`` as the blocks ``first`` onwards: each block's absmax, then each
    element's code.
    """
    f = values.dtype.type
    for k in range((values.size + BLOCK - 1) // BLOCK):
        block = values[k * BLOCK : (k + 1) * BLOCK]
        encoded = codes[k * BLOCK : (k + 1) * BLOCK]
        high = int32(0)  # noqa: F821  (the largest |value| as float32 bits: NaN, inf above)
        for j in range(block.size):
            high = max(high, bit_and(bits32(np.float32(block[j])), 0x7FFFFFFF))  # noqa: F821
        if high >= _INF_BITS:
            absmax[first + k] = f(np.nan)
            for j in range(block.size):
                encoded[j] = 0
            continue
        if high < _MIN_NORMAL_BITS:
            high = int32(0)  # noqa: F821  (below float32's normal range: stored as zero)
        amax = f(float_of_bits(high))  # noqa: F821
        absmax[first + k] = amax
        inverse = f(TOP) / amax if amax > 0 else f(0.0)
        if signed:
            for j in range(block.size):
                x = block[j]
                encoded[j] = encode_signed(np.float32(abs(x) * inverse), x < 0)
        else:
            for j in range(block.size):
                encoded[j] = encode_unsigned(np.float32(abs(block[j]) * inverse))


# -- the drivers (host): one per state count, ``update`` the full-precision serial loop ----
def blockwise_1(param, grad, codes0, absmax0, work, grad_scale, *scalars):
    n = param.size
    tiles = (n + TILE - 1) // TILE
    chunks = work.shape[0]
    per = (tiles + chunks - 1) // chunks
    for c in prange(chunks):  # noqa: F821
        row = work[c]
        for t in range(c * per, min(tiles, c * per + per)):
            lo = t * TILE
            hi = min(n, lo + TILE)
            first = t * TILE_BLOCKS
            s0 = row[0, :0]
            if codes0.size:
                s0 = dequantize(codes0[lo:hi], absmax0, first, row[0], SIGNED0)  # noqa: F821
            update(param[lo:hi], grad[lo:hi], s0, grad_scale, *scalars)  # noqa: F821
            if codes0.size:
                quantize(s0, codes0[lo:hi], absmax0, first, SIGNED0)  # noqa: F821


def blockwise_3(param, grad, codes0, codes1, codes2, absmax0, absmax1, absmax2, work,
                grad_scale, *scalars):  # fmt: skip
    n = param.size
    tiles = (n + TILE - 1) // TILE
    chunks = work.shape[0]
    per = (tiles + chunks - 1) // chunks
    for c in prange(chunks):  # noqa: F821
        row = work[c]
        for t in range(c * per, min(tiles, c * per + per)):
            lo = t * TILE
            hi = min(n, lo + TILE)
            first = t * TILE_BLOCKS
            s0, s1, s2 = row[0, :0], row[1, :0], row[2, :0]
            if codes0.size:
                s0 = dequantize(codes0[lo:hi], absmax0, first, row[0], SIGNED0)  # noqa: F821
            if codes1.size:
                s1 = dequantize(codes1[lo:hi], absmax1, first, row[1], SIGNED1)  # noqa: F821
            if codes2.size:
                s2 = dequantize(codes2[lo:hi], absmax2, first, row[2], SIGNED2)  # noqa: F821
            update(param[lo:hi], grad[lo:hi], s0, s1, s2, grad_scale, *scalars)  # noqa: F821
            if codes0.size:
                quantize(s0, codes0[lo:hi], absmax0, first, SIGNED0)  # noqa: F821
            if codes1.size:
                quantize(s1, codes1[lo:hi], absmax1, first, SIGNED1)  # noqa: F821
            if codes2.size:
                quantize(s2, codes2[lo:hi], absmax2, first, SIGNED2)  # noqa: F821


DRIVERS = {1: blockwise_1, 3: blockwise_3}


# -- whole buffers on the host (NumPy; for state_dict conversions and decoded values) -----
def segment_blocks(bounds):
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
    c = np.arange(256, dtype=np.int64)
    magnitude = c & 127 if signed else c
    bits = (magnitude + (_S_OFFSET if signed else _U_OFFSET)) << 20
    if signed:
        bits |= (c & 0x80) << 24
    values = bits.astype(np.uint32).view(np.float32)
    return np.where(magnitude == 0, np.float32(0), values).astype(np.float32)


def _codes_of(y, signed):
    """The magnitude codes of float32 values ``y`` in ``[0, TOP]``, as a step encodes them."""
    offset, top = (_S_OFFSET, 127) if signed else (_U_OFFSET, 255)
    bits = np.asarray(y, np.float32).view(np.int32).astype(np.int64)
    return np.clip((bits + (1 << 19) - (offset << 20)) >> 20, 0, top).astype(np.uint8)


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
    for start, stop, first in segment_blocks(bounds):
        rows = _blocked(codes, start, stop)
        scales = absmax[first : first + rows.shape[0]].astype(dtype) / dtype.type(TOP)
        out[start:stop] = (table[rows] * scales[:, None]).reshape(-1)[: stop - start]
    return out


def quantize(values, signed, bounds):
    """``(codes, absmax)`` of float values laid out in ``bounds``, rounded as a step
    rounds.
    """
    dtype = np.dtype(values.dtype)
    f = dtype.type
    codes = np.zeros(values.size, np.uint8)
    absmax = np.zeros(absmax_size(bounds), dtype)
    for start, stop, first in segment_blocks(bounds):
        rows = _blocked(values, start, stop)
        with np.errstate(over="ignore", invalid="ignore"):
            magnitudes = np.abs(rows.astype(np.float32))
        finite = np.isfinite(magnitudes).all(axis=1)
        amax = np.where(finite, magnitudes.max(axis=1), np.nan)
        amax = np.where(amax < np.float32(2.0**-126), 0, amax).astype(dtype)
        absmax[first : first + rows.shape[0]] = amax
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = np.where(amax > 0, f(TOP) / amax, f(0)).astype(dtype)
            y = (np.abs(rows) * inverse[:, None]).astype(np.float32)
        code = _codes_of(np.where(finite[:, None], y, 0), signed)
        if signed:
            code = np.where(rows < 0, code | 0x80, code)
        code = np.where(finite[:, None], code, 0).astype(np.uint8)
        codes[start:stop] = code.reshape(-1)[: stop - start]
    return codes, absmax


# -- slicing an 8-bit state (ZeRO shards) ------------------------------------------------
def block_index(bounds, position):
    """The index of the first scale at element ``position``, a block boundary of its group
    (a group start or stop, or ``BLOCK`` elements apart from its start); ValueError for any
    other position, which would cut a block in two.
    """
    for start, stop, first in segment_blocks(bounds):
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
    block boundaries allow: each cut is the boundary nearest to the even split among those
    that leave every slice at least one block. With fewer blocks than ``parts`` some
    slices are empty.
    """
    candidates = sorted(
        {0, size} | {p for start, stop in bounds for p in (*range(start, stop, BLOCK), stop)}
    )
    last = len(candidates) - 1
    cuts, index = [0], 0
    for r in range(1, parts):
        target = r * size / parts
        lo = min(index + 1, last)
        hi = max(lo, last - (parts - r))
        k = bisect.bisect_left(candidates, target, lo, hi + 1)
        index = min(
            (j for j in (k - 1, k) if lo <= j <= hi),
            key=lambda j: (abs(candidates[j] - target), j),
        )
        cuts.append(candidates[index])
    cuts.append(size)
    counts = [b - a for a, b in zip(cuts, cuts[1:])]
    return counts, cuts[:-1]
