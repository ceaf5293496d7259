"""Floats for strict JSON (``json.dumps(..., allow_nan=False)``), as the ``to_dict()``
methods of the learning-rate tools and schedules write them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def json_number(value: float) -> float | str | None:
    """A float for strict JSON: itself when finite, None for NaN, ``"inf"`` or ``"-inf"``
    for an infinity (``np.asarray(values, dtype=float)`` reads all three back).
    """
    value = float(value)
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return None
    return "inf" if value > 0 else "-inf"


def json_numbers(values: Iterable[float]) -> list[float | str | None]:
    """:func:`json_number` of each value."""
    return [json_number(v) for v in values]
