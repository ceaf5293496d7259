"""How the optimizer state is stored: ``"full"`` (the parameter dtype), ``"bfloat16"`` or
``"8bit"`` (blockwise codes and scales: :mod:`fastopt.kernels.blockwise`, whose kernels
decode and encode whole blocks around the full-precision loop).

The arithmetic of a step always runs in the parameter dtype; only the stored state is
rounded. An update loop reads a state element with ``load(word, f)`` (``f``: the parameter
dtype's scalar type) and writes it with ``store(value)``; each backend binds the pair of
the optimizer's precision (see :mod:`fastopt.kernels._names`), so one loop source serves
every precision and "full" compiles to the plain loads and stores it always had.

bfloat16 state is kept in ``uint16`` buffers (NumPy has no bfloat16 dtype): each word is
the upper half of a float32, so the value of word ``w`` is the float32 with bits
``w << 16``. A store rounds to nearest, ties to even, from float32; a NaN stays a (quiet)
NaN and an infinity stays infinite; a finite value above the largest bfloat16 becomes
infinite. A float64 value is first rounded to float32 (round to nearest even), then to
bfloat16: two roundings, which the NumPy reference repeats.

The bit casts are bound per backend as well: ``float_bits(x)`` (a float32's bits as a
uint32) and ``bits_float(u)`` (the reverse) are NumPy scalar views on the host and in the
CUDA simulator, libdevice's ``float_as_int``/``int_as_float`` on the GPU.
"""

import numpy as np

PRECISIONS = ("full", "bfloat16", "8bit")
"""The values of ``state_precision``."""


def state_dtype(precision, param_dtype):
    """The dtype of a state buffer for parameters of ``param_dtype``."""
    if precision == "bfloat16":
        return np.dtype(np.uint16)
    if precision == "8bit":
        return np.dtype(np.uint8)
    return np.dtype(param_dtype)


def check_precision(value):
    """``value`` if it is one of :data:`PRECISIONS`, else a ValueError naming it."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ValueError(
            f"Invalid state_precision: {value!r} (expected one of "
            + ", ".join(repr(p) for p in PRECISIONS)
            + ")"
        )
    return value


def check_eps(eps, precision):
    """``eps`` (already checked as a number), unless it is 0 with 8-bit state."""
    if precision == "8bit" and eps == 0:
        raise ValueError(
            "eps=0 with state_precision='8bit' is not supported: a state value below its "
            "block's smallest code is stored as 0, so an element whose state reads back as 0 "
            "and whose gradient is 0 would divide 0 by 0 + eps (NaN); use eps > 0 (or "
            "state_precision='bfloat16')"
        )
    return eps


# -- per-element loads and stores (compiled by each backend) -----------------------------
def full_load(value, f):
    return value


def full_store(value):
    return value


def bfloat16_load(word, f):
    return f(bits_float(np.uint32(np.uint32(word) << np.uint32(16))))  # noqa: F821


def bfloat16_store(value):
    bits = np.uint32(float_bits(np.float32(value)))  # noqa: F821
    high = np.uint32(bits >> np.uint32(16))
    rounded = np.uint32(np.uint32(bits + np.uint32(0x7FFF) + (high & np.uint32(1))) >> 16)
    if np.uint32(bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        rounded = np.uint32(high | np.uint32(0x40))  # a NaN: quiet, its sign and upper payload kept
    return np.uint16(rounded)


def numpy_float_bits(value):
    return np.float32(value).view(np.uint32)


def numpy_bits_float(bits):
    return np.uint32(bits).view(np.float32)


LOAD_STORE = {
    "full": (full_load, full_store),
    "bfloat16": (bfloat16_load, bfloat16_store),
}
"""Precision -> the Python sources of its ``(load, store)`` pair."""


# -- whole buffers on the host ------------------------------------------------------------
def to_bfloat16(values):
    """bfloat16 words (``uint16``) of float values, rounded as a store rounds (a value
    beyond float32's range becomes infinite, as in a store).
    """
    with np.errstate(over="ignore"):
        bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    high = bits >> np.uint32(16)
    words = ((bits + (np.uint32(0x7FFF) + (high & np.uint32(1)))) >> np.uint32(16)).astype(
        np.uint16
    )
    nan = np.isnan(values)
    if nan.any():
        words[nan] = (high[nan] | np.uint32(0x40)).astype(np.uint16)
    return words


def from_bfloat16(words, dtype=np.float32):
    """The values of bfloat16 words (``uint16``) as ``dtype``: exact, except that a
    signalling NaN becomes a quiet NaN in float64.
    """
    words = np.ascontiguousarray(words, np.uint16)
    with np.errstate(invalid="ignore"):
        return (words.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(dtype)


def encode(values, precision, param_dtype):
    """Host values as a state buffer of ``precision`` (a new array)."""
    if precision == "bfloat16":
        return to_bfloat16(values)
    return np.array(values, param_dtype)


def decode(buffer, precision, param_dtype):
    """A state buffer's values in the parameter dtype (a new host array)."""
    if precision == "bfloat16":
        return from_bfloat16(buffer, param_dtype)
    return np.array(buffer, param_dtype)
