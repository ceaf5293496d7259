"""Math that works on a Python float (fast, for the optimizer's one call per step) and on a
float64 array (for plotting and tests), so each schedule's formula is written once.
"""

import bisect
import math

import numpy as np


def _scalar(x):
    return isinstance(x, float)


def floor(x):
    return float(math.floor(x)) if _scalar(x) else np.floor(x)


def ceil(x):
    return float(math.ceil(x)) if _scalar(x) else np.ceil(x)


def cos(x):
    return math.cos(x) if _scalar(x) else np.cos(x)


def log(x):
    return math.log(x) if _scalar(x) else np.log(x)


def minimum(a, b):
    if _scalar(a) and _scalar(b):
        return a if a <= b else b
    return np.minimum(a, b)


def maximum(a, b):
    if _scalar(a) and _scalar(b):
        return a if a >= b else b
    return np.maximum(a, b)


def where(condition, a, b):
    if isinstance(condition, (bool, np.bool_)):
        return a if condition else b
    return np.where(condition, a, b)


def power(base, exponent):
    if _scalar(base) and _scalar(exponent):
        return base**exponent
    return np.power(base, exponent)


def count_le(sorted_values, t):
    """How many of ``sorted_values`` are <= t (``bisect_right``)."""
    if _scalar(t):
        return float(bisect.bisect_right(sorted_values, t))
    return np.searchsorted(np.asarray(sorted_values, np.float64), t, side="right").astype(
        np.float64
    )


def take(values, index):
    """``values[index]`` for a float index (scalar) or an index array."""
    if _scalar(index):
        return float(values[int(index)])
    return np.asarray(values, np.float64)[index.astype(np.int64)]
