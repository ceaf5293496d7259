"""The Schedule base class: step checking, vectorised calls, repr, to_dict/from_dict."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

_REGISTRY = {}


def _check_steps(step):
    """Return (t as float or float64 array, is_scalar); steps are integers >= 0."""
    if isinstance(step, (bool, np.bool_)):
        raise TypeError(f"Invalid step: {step!r} (expected an integer >= 0)")
    if isinstance(step, numbers.Integral):
        if step < 0:
            raise ValueError(f"Invalid step: {step} (expected an integer >= 0)")
        return float(step), True
    array = np.asarray(step)
    if array.dtype.kind not in "iu":
        raise TypeError(f"Invalid steps: expected integers, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"Invalid step: {array.min()} (expected integers >= 0)")
    return array.astype(np.float64), array.ndim == 0


class Schedule:
    """A learning rate as a pure function of the number of updates already applied.

    ``schedule(t)`` takes an int (returns a float) or an integer array (returns a float64
    array of the same shape); the first update uses ``schedule(0)``.
    """

    name: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    @overload
    def __call__(self, step: int | np.integer) -> float: ...
    @overload
    def __call__(self, step: np.ndarray | Sequence[int]) -> np.ndarray: ...
    def __call__(self, step: int | np.integer | np.ndarray | Sequence[int]) -> float | np.ndarray:
        if type(step) is int and step >= 0:
            return float(self._values(float(step)))
        t, scalar = _check_steps(step)
        values = self._values(t)
        if scalar:
            return float(values)
        return np.broadcast_to(np.asarray(values, np.float64), t.shape).copy()

    def _values(self, t):
        raise NotImplementedError

    def _params(self):
        """Constructor arguments, in order (numbers, lists, or nested schedules)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description; ``fastopt.schedules.from_dict`` rebuilds it."""
        return {"type": self.name, **{k: _encode(v) for k, v in self._params().items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{self.name}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))


def _encode(value):
    if isinstance(value, Schedule):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, dict) and "type" in value:
        return from_dict(value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def from_dict(description: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.to_dict` output (or its JSON)."""
    if not isinstance(description, dict) or "type" not in description:
        raise ValueError(f"from_dict expects a dict with a 'type' key, got {description!r}")
    kwargs = dict(description)
    name = kwargs.pop("type")
    if name not in _REGISTRY:
        raise ValueError(f"unknown schedule {name!r}; known: {sorted(_REGISTRY)}")
    state = kwargs.pop("state", None)
    schedule = _REGISTRY[name](**{k: _decode(v) for k, v in kwargs.items()})
    if state is not None:
        schedule.load_state_dict(state)
    return schedule


# -- argument checks -----------------------------------------------------------------------


def check_rate(name, value, allow_zero=True):
    """A learning rate: a finite number >= 0 (> 0 if not allow_zero)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"Invalid {name}: {value!r} (expected a real number)")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and np.isfinite(value)):
        rule = "0 <=" if allow_zero else "0 <"
        raise ValueError(f"Invalid {name}: {value} (expected a finite number, {rule} {name})")
    return value


def check_number(name, value, rule, ok):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"Invalid {name}: {value!r} (expected a real number)")
    value = float(value)
    if not (np.isfinite(value) and ok(value)):
        raise ValueError(f"Invalid {name}: {value} (expected {rule})")
    return value


def check_steps(name, value, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"Invalid {name}: {value!r} (expected an integer >= {minimum})")
    if value < minimum:
        raise ValueError(f"Invalid {name}: {value} (expected an integer >= {minimum})")
    return int(value)


def check_increasing(name, values, minimum=0, allow_empty=False):
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"Invalid {name}: {values!r} (expected a list of integers)") from None
    if not values and not allow_empty:
        raise ValueError(f"Invalid {name}: [] (expected at least one step)")
    for v in values:
        check_steps(f"entry of {name}", v, minimum)
    values = [int(v) for v in values]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"Invalid {name}: {values} (expected strictly increasing steps)")
    return values
