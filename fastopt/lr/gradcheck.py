"""check_grad: is the gradient right? Central finite differences, array by array."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._json import json_number, json_numbers
from .._validation import check_number
from ..buffers import FlatParams
from .problem import Problem

if TYPE_CHECKING:
    import numpy.typing as npt

DEFAULT_TOLERANCE = {np.dtype(np.float32): 1e-2, np.dtype(np.float64): 1e-5}
DEFAULT_MAX_COORDINATES = 20
"""Coordinates checked per array by default: all of an array with at most this many."""
PLAIN_ARRAY_NAME = "params"
"""The name a plain 1-D parameter array goes by in the results."""


class GradCheckError(ValueError):
    """:func:`check_grad` cannot check the gradient at this point with these arguments: the
    parameters are not finite, the step ``eps`` (or the default step) is too small or too
    large for them, or there is nothing to check. Raised by ``check_grad`` itself, never by
    ``loss_grad``; a wrong gradient is not an error (the result's ``ok`` is False).

    Attributes
    ----------
    argument : str
        What to change: ``"eps"`` or ``"params"``.
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


@dataclass(frozen=True)
class ArrayCheck:
    """How one array of the parameters fared in :func:`check_grad`.

    Attributes
    ----------
    name : str or int
        The array's name in ``FlatParams.names`` (a position for a FlatParams built from a
        list; ``"params"`` for a plain 1-D array).
    label : str
        How messages write it: the name, ``"params[0]"`` for a position.
    size : int
        Its number of elements.
    checked : int
        How many of its coordinates were checked.
    rel_error : float
        The relative error of its worst check, ``analytic`` against ``numeric``. A failing
        coordinate is reported in preference to the random direction, since it says where.
    index : tuple of int or None
        Where that check is within the array (``()`` for a 0-d array); None when the worst
        check is the random direction and no single coordinate was found to be wrong.
    coordinate : int or None
        The same place as a flat index into the whole parameter buffer.
    analytic, numeric : float
        The gradient ``loss_grad`` wrote and the central difference there (for the random
        direction: the derivatives along it).
    direction_rel_error : float or None
        The relative error of the random-direction check over the whole array (None when
        every coordinate was checked, or with explicit ``coordinates``).
    ok : bool
        Whether every check of this array is within the tolerance.
    """

    name: str | int
    label: str
    size: int
    checked: int
    rel_error: float
    index: tuple[int, ...] | None
    coordinate: int | None
    analytic: float
    numeric: float
    direction_rel_error: float | None
    ok: bool

    @property
    def where(self) -> str:
        """The element (``"W[1, 2]"``), or ``"a random direction over W"``."""
        if self.index is None:
            return f"a random direction over all {self.size} elements of {self.label}"
        return _element(self.label, self.index)

    def to_dict(self) -> dict[str, Any]:
        """The record as strict JSON data (non-finite numbers as in
        :meth:`GradCheckResult.to_dict`).
        """
        direction = self.direction_rel_error
        return {
            "name": self.label,
            "size": self.size,
            "checked": self.checked,
            "rel_error": json_number(self.rel_error),
            "index": None if self.index is None else list(self.index),
            "coordinate": self.coordinate,
            "analytic": json_number(self.analytic),
            "numeric": json_number(self.numeric),
            "direction_rel_error": None if direction is None else json_number(direction),
            "ok": self.ok,
        }


class GradCheckResult:
    """What :func:`check_grad` found.

    Attributes
    ----------
    per_array : dict of name to ArrayCheck
        One record per checked array, in the order of ``FlatParams.names`` (the single key
        ``"params"`` for a plain 1-D array): its worst relative error, where it is, and the
        analytic and numeric values there.
    unchecked : tuple
        Names of the arrays nothing was checked in: arrays with no elements, and arrays that
        explicit ``coordinates`` did not reach.
    coordinates : ndarray of int
        Flat indices that were checked, array by array.
    analytic, numeric, rel_errors : ndarray
        The gradient ``loss_grad`` wrote, the central difference, and their relative
        difference at each checked coordinate.
    directions : int
        How many random-direction checks were run (one per sampled array).
    max_rel_error : float
        The worst relative error found, at ``worst_name`` (``"W[1, 1]"``, or ``"W (random
        direction)"``); ``worst_coordinate`` is its flat index (None for a direction).
    tolerance : float
        The largest acceptable relative error.
    ok : bool
        Whether every array passed, i.e. ``max_rel_error <= tolerance``.
    failed : list of ArrayCheck
        The records of the arrays that failed, in order.
    message : str
        Names every failing array with its worst error, and the arrays that passed.
    """

    def __init__(
        self,
        coordinates: np.ndarray,
        analytic: np.ndarray,
        numeric: np.ndarray,
        rel_errors: np.ndarray,
        per_array: dict[str | int, ArrayCheck],
        unchecked: tuple[str | int, ...],
        unchecked_labels: tuple[str, ...],
        directions: int,
        tolerance: float,
    ) -> None:
        self.coordinates = coordinates
        self.analytic, self.numeric, self.rel_errors = analytic, numeric, rel_errors
        self.per_array = per_array
        self.unchecked = unchecked
        self._unchecked_labels = unchecked_labels
        self.directions = directions
        self.tolerance = tolerance
        self._worst = worst = max(per_array.values(), key=lambda r: (not r.ok, r.rel_error))
        self.max_rel_error = worst.rel_error
        self.worst_coordinate = worst.coordinate
        self.worst_name = (
            f"{worst.label} (random direction)" if worst.index is None else worst.where
        )
        self.ok = all(r.ok for r in per_array.values())

    @property
    def failed(self) -> list[ArrayCheck]:
        """The records of the arrays that failed, in order."""
        return [r for r in self.per_array.values() if not r.ok]

    @property
    def message(self) -> str:
        checked = f"{len(self.coordinates)} coordinates"
        if self.directions:
            plural = "s" if self.directions > 1 else ""
            checked += f" and {self.directions} random direction{plural}"
        tail = f"tolerance {self.tolerance:g}, {checked} checked"
        if self._unchecked_labels:
            tail += f"; not checked: {', '.join(self._unchecked_labels)}"
        passed = [f"{r.label} ({r.rel_error:.2g})" for r in self.per_array.values() if r.ok]
        if self.ok:
            worst = self._worst
            return (
                f"gradient check passed for {', '.join(passed)}: max relative error "
                f"{worst.rel_error:.2g} at {worst.where} (analytic {worst.analytic:.6g} vs "
                f"numeric {worst.numeric:.6g}); {tail}"
            )
        failures = ", ".join(_failure(r) for r in self.failed)
        others = f"; passed: {', '.join(passed)}" if passed else ""
        return (
            f"gradient check FAILED for {failures}{others}; {tail}: the gradient is probably wrong"
        )

    def __repr__(self) -> str:
        return f"<GradCheckResult {self.message}>"

    def to_dict(self) -> dict[str, Any]:
        """The findings as strict JSON data (``json.dumps(..., allow_nan=False)`` accepts
        them): a number that is not finite, such as the difference at a point where the
        cost is NaN and the relative error there, is written as None for NaN and as
        ``"inf"`` or ``"-inf"`` for an infinity (``np.asarray(values, dtype=float)``
        reads both back).
        """
        return {
            "ok": bool(self.ok),
            "max_rel_error": json_number(self.max_rel_error),
            "worst_coordinate": self.worst_coordinate,
            "worst_name": self.worst_name,
            "tolerance": self.tolerance,
            "coordinates": self.coordinates.tolist(),
            "analytic": json_numbers(self.analytic),
            "numeric": json_numbers(self.numeric),
            "rel_errors": json_numbers(self.rel_errors),
            "directions": self.directions,
            "per_array": {r.label: r.to_dict() for r in self.per_array.values()},
            "unchecked": list(self._unchecked_labels),
        }


def check_grad(
    loss_grad: Callable[..., float],
    params: FlatParams | np.ndarray | Any,
    *,
    max_coordinates: int = DEFAULT_MAX_COORDINATES,
    coordinates: npt.ArrayLike | None = None,
    eps: float | None = None,
    tolerance: float | None = None,
    batch: Any = None,
    seed: int = 0,
) -> GradCheckResult:
    r"""Compare the gradient that ``loss_grad`` writes with central finite differences.

    Every array is checked (for a FlatParams, each of ``names``; a plain array is one
    array called ``"params"``):

    * an array with at most ``max_coordinates`` elements: every coordinate;
    * a larger one: ``max_coordinates`` coordinates, namely its largest-magnitude
      gradient entry and a random sample of the rest, plus the derivative along one
      random direction over the whole array, which a wrong element anywhere in it
      disturbs. When that direction disagrees and no sampled coordinate does, bisection
      on the direction (two halves at a time, about :math:`4 \log_2 n` evaluations)
      finds the wrong element, which is then checked like any coordinate.

    For a checked coordinate :math:`i`, with step :math:`h = \epsilon^{1/3}
    \max(1, |x_i|)` (:math:`\epsilon` the dtype's machine epsilon),

    .. math:: n_i = \frac{f(x + h e_i) - f(x - h e_i)}{2h}, \qquad
        r_i = \frac{|g_i - n_i|}{\max(|g_i|, |n_i|, 10^{-3} \max_j |g_j|)}

    where the last term keeps coordinates whose gradient is (nearly) zero from dividing
    rounding noise by nothing. A random direction :math:`u` (a unit vector over one
    array) is checked the same way, with :math:`g \cdot u` for :math:`g_i` and a step of
    :math:`\epsilon^{1/3} \max(1, \max |x|)` over the array. Steps are measured after
    rounding to the parameter dtype.

    Parameters
    ----------
    loss_grad : callable
        ``loss_grad(params, grad)`` (or ``(params, grad, batch)``) returns the cost and
        writes the gradient into ``grad``, as for :func:`fastopt.sweep`.
    params : FlatParams or 1-D float ndarray or device array
        The point to check at. The parameters and a FlatParams' gradient buffer are
        restored bit for bit afterwards, also when an error is raised.
    max_coordinates : int, default 20
        Coordinates checked per array (an integer >= 1): all of an array with at most
        this many elements, otherwise this many, sampled as above.
    coordinates : sequence of int, optional
        Check exactly these flat indices into the parameter buffer instead (integers in
        ``[0, size)``, a non-empty 1-D sequence; duplicates are checked once). Arrays
        they do not reach are listed as not checked, and no random direction is used.
    eps : float, optional
        A fixed finite-difference step (finite, > 0) instead of the rule above.
    tolerance : float, optional
        Largest acceptable relative error (finite, > 0): by default 1e-5 for float64,
        1e-2 for float32 parameters (float32 differences are too coarse for less). With
        float32 parameters, compute the cost in float64 inside ``loss_grad``: float32
        rounding of the cost fails correct entries that are small next to the cost.
    batch : optional
        A fixed batch passed as the third argument of ``loss_grad``.
    seed : int, default 0
        Seed of the coordinate sample and the random directions.

    Returns
    -------
    GradCheckResult
        ``ok``; ``per_array``, one :class:`ArrayCheck` per array with its worst relative
        error, where it is (index within the array) and the analytic and numeric values
        there; ``message``, which names every failing array and the arrays that passed;
        the overall ``max_rel_error`` at ``worst_name`` / ``worst_coordinate``; and the
        per-coordinate ``coordinates``, ``analytic``, ``numeric`` and ``rel_errors``.

    Raises
    ------
    TypeError, ValueError
        For an invalid argument (the message names it, its value and the rule), before
        ``loss_grad`` is called; TypeError also when ``loss_grad`` returns no number.
    GradCheckError
        A ValueError raised when the check cannot be made at ``params``: a non-finite
        parameter, an ``eps`` (or default step) too small or too large for the parameters'
        dtype and magnitude, or no element to check. Errors raised by ``loss_grad`` itself
        pass through unchanged, so the two can be told apart.

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"w": np.array([1.0, -2.0]), "b": np.array([0.5])})
    >>> def loss_grad(p, grad):
    ...     w, b = p.params["w"], p.params["b"]
    ...     p.grads["w"][:] = 2 * w
    ...     p.grads["b"][:] = 3 * b  # should be 2 * b
    ...     return float(w @ w + b @ b)
    >>> result = fastopt.check_grad(loss_grad, fp)
    >>> result.ok, [r.label for r in result.failed], result.per_array["b"].index
    (False, ['b'], (0,))
    """
    max_coordinates = _check_count(max_coordinates)
    if eps is not None:
        eps = check_number("eps", eps, "a finite step > 0", lambda v: 0 < v < math.inf)
    if tolerance is not None:
        tolerance = check_number(
            "tolerance", tolerance, "a finite relative error > 0", lambda v: 0 < v < math.inf
        )
    problem = Problem(loss_grad, params)
    arrays = _arrays(problem.params, problem.data.size)
    size = problem.data.size
    if coordinates is not None:
        coordinates = _check_coordinates(coordinates, size)
    dtype = np.dtype(problem.data.dtype)
    if tolerance is None:
        tolerance = DEFAULT_TOLERANCE[dtype]
    checker = _Checker(problem, arrays, batch, eps, tolerance)
    try:
        checker.start()
        report = checker.run(coordinates, max_coordinates, seed)
    finally:
        problem.restore()
    return report


class _Array:
    """One named array: its slice of the flat buffer and its shape."""

    def __init__(self, name, label, start, stop, shape):
        self.name, self.label, self.start, self.stop = name, label, start, stop
        self.shape = tuple(int(n) for n in shape)
        self.size = stop - start

    def index(self, flat):
        return tuple(int(i) for i in np.unravel_index(flat - self.start, self.shape))

    def element(self, flat):
        return _element(self.label, self.index(flat))


class _Checker:
    """The evaluations: the analytic gradient once, then the central differences."""

    def __init__(self, problem, arrays, batch, eps, tolerance):
        self.problem, self.batch, self.eps, self.tolerance = problem, batch, eps, tolerance
        self.arrays = arrays
        packed = sorted(range(len(arrays)), key=lambda k: (arrays[k].start, arrays[k].stop))
        self.packed_order = np.array(packed)
        self.packed_stops = np.array([arrays[k].stop for k in packed])
        self.data = problem.data
        self.dtype = np.dtype(self.data.dtype)
        self.cbrt_eps = float(np.finfo(self.dtype).eps) ** (1 / 3)

    def start(self):
        problem = self.problem
        self.x = problem.host(self.data)
        bad = np.flatnonzero(~np.isfinite(self.x))
        if bad.size:
            raise GradCheckError(
                "params",
                f"the parameters must be finite to check the gradient, but "
                f"{self.element(int(bad[0]))} = {self.x[bad[0]]}",
            )
        problem.zero_grad()
        self.cost()
        self.g = problem.host(problem.grad).astype(np.float64)
        finite = np.abs(self.g[np.isfinite(self.g)])
        self.floor = 1e-3 * max(float(finite.max()) if finite.size else 0.0, 1e-300)

    def owners(self, flat):
        """Positions in ``arrays`` of the arrays holding the flat indices ``flat``."""
        return self.packed_order[np.searchsorted(self.packed_stops, flat, side="right")]

    def element(self, flat):
        return self.arrays[int(self.owners(np.array([flat]))[0])].element(flat)

    def cost(self):
        problem = self.problem
        if self.batch is None:
            value = problem.loss_grad(problem.params, problem.grad)
        else:
            value = problem.loss_grad(problem.params, problem.grad, self.batch)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"loss_grad must return the cost as a number, got {value!r}") from None

    def put(self, start, values):
        self.problem.backend.copy_from_host(self.data[start : start + values.size], values)

    def relative(self, analytic, numeric):
        a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            rel = np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), self.floor)
        return np.where(np.isfinite(rel), rel, np.inf)

    def coordinate(self, i, label):
        """The central difference at flat index ``i``."""
        x = self.x[i : i + 1]
        h = self.eps if self.eps is not None else self.cbrt_eps * max(1.0, abs(float(x[0])))
        with np.errstate(over="ignore"):
            up = (x.astype(np.float64) + h).astype(self.dtype)
            down = (x.astype(np.float64) - h).astype(self.dtype)
        self._check_step(up, down, f"{label} = {x[0]}")
        self.put(i, up)
        plus = self.cost()
        self.put(i, down)
        minus = self.cost()
        self.put(i, x)
        return (plus - minus) / (float(up[0]) - float(down[0]))

    def direction(self, array, seed_rng):
        """Analytic and numeric derivatives along a random unit direction over ``array``,
        and the function that measures the same on a part of it (for the bisection).
        """
        s = slice(array.start, array.stop)
        x = self.x[s].astype(np.float64)
        v = seed_rng.standard_normal(array.size)
        v /= np.linalg.norm(v)
        scale = float(np.max(np.abs(x)))
        h = self.eps if self.eps is not None else self.cbrt_eps * max(1.0, scale)
        with np.errstate(over="ignore"):
            up, down = (x + h * v).astype(self.dtype), (x - h * v).astype(self.dtype)
        self._check_step(up, down, f"every element of {array.label}")
        delta = up.astype(np.float64) - down.astype(np.float64)
        g = self.g[s]

        def part(lo, hi):
            """``(g . delta, f(up) - f(down), |delta|)`` on elements ``lo:hi`` alone."""
            if not np.any(delta[lo:hi]):
                return 0.0, 0.0, 0.0
            self.put(array.start + lo, up[lo:hi])
            plus = self.cost()
            self.put(array.start + lo, down[lo:hi])
            minus = self.cost()
            self.put(array.start + lo, self.x[array.start + lo : array.start + hi])
            with np.errstate(invalid="ignore", over="ignore"):
                return float(g[lo:hi] @ delta[lo:hi]), plus - minus, np.linalg.norm(delta[lo:hi])

        analytic, numeric, norm = part(0, array.size)
        return analytic / norm, numeric / norm, part

    def _check_step(self, up, down, what):
        if self.eps is None:
            if not (np.all(np.isfinite(up)) and np.all(np.isfinite(down))):
                raise GradCheckError(
                    "eps",
                    f"the default finite-difference step overflows {self.dtype} at {what}: "
                    "pass a fixed eps",
                )
            if np.all(up == down):
                raise GradCheckError(
                    "eps",
                    f"the default finite-difference step does not move {what} in "
                    f"{self.dtype}: pass a fixed eps",
                )
            return
        if not (np.all(np.isfinite(up)) and np.all(np.isfinite(down))):
            raise GradCheckError(
                "eps",
                f"Invalid eps: {self.eps} (too large for {what}: x +/- eps overflows "
                f"{self.dtype}; use a smaller eps, or eps=None for the default step)",
            )
        if np.all(up == down):
            raise GradCheckError(
                "eps",
                f"Invalid eps: {self.eps} (too small for {what}: x + eps rounds to x in "
                f"{self.dtype}; use a larger eps, or eps=None for the default step)",
            )

    def run(self, coordinates, max_coordinates, seed):
        rng = np.random.default_rng(seed)
        if coordinates is not None:
            owner = self.owners(coordinates)
            chosen = {k: coordinates[owner == k] for k in range(len(self.arrays))}
        rows, records, unchecked, directions = [], {}, [], 0
        for k, array in enumerate(self.arrays):
            g = self.g[array.start : array.stop]
            if coordinates is not None:
                flat = chosen[k]
            elif array.size <= max_coordinates:
                flat = np.arange(array.start, array.stop)
            else:
                top = int(np.argmax(np.abs(g)))
                others = rng.choice(array.size - 1, max_coordinates - 1, replace=False)
                others[others >= top] += 1
                flat = array.start + np.sort(np.append(others, top))
            if flat.size == 0:
                unchecked.append(array)
                continue
            numeric = [self.coordinate(int(i), array.element(int(i))) for i in flat]
            rel = self.relative(self.g[flat], numeric)
            checks = [
                (float(r), int(i), float(self.g[i]), float(n))
                for r, i, n in zip(rel, flat, numeric)
            ]
            direction = None
            if coordinates is None and array.size > max_coordinates:
                directions += 1
                a, n, part = self.direction(array, rng)
                direction = float(self.relative(a, n))
                if direction > self.tolerance and max(c[0] for c in checks) <= self.tolerance:
                    found = array.start + _bisect(part, array.size)
                    if found not in flat:
                        n_found = self.coordinate(found, array.element(found))
                        r_found = float(self.relative(self.g[found], n_found))
                        checks.append((r_found, found, float(self.g[found]), n_found))
                checks.append((direction, None, float(a), float(n)))
            rows.extend(c for c in checks if c[1] is not None)
            records[array.name] = self._record(array, checks, direction)
        if not records:
            raise GradCheckError(
                "params", "check_grad found nothing to check: every array is empty"
            )
        flat_rows = np.array([c[1] for c in rows], dtype=np.int64)
        return GradCheckResult(
            flat_rows,
            np.array([c[2] for c in rows]),
            np.array([c[3] for c in rows]),
            np.array([c[0] for c in rows]),
            records,
            tuple(a.name for a in unchecked),
            tuple(a.label for a in unchecked),
            directions,
            self.tolerance,
        )

    def _record(self, array, checks, direction):
        tolerance = self.tolerance
        failing = [c for c in checks if c[0] > tolerance]
        if failing:
            located = [c for c in failing if c[1] is not None]
            worst = max(located or failing, key=lambda c: c[0])
        else:
            worst = max(checks, key=lambda c: c[0])
        rel, flat, analytic, numeric = worst
        return ArrayCheck(
            name=array.name,
            label=array.label,
            size=array.size,
            checked=sum(c[1] is not None for c in checks),
            rel_error=rel,
            index=None if flat is None else array.index(flat),
            coordinate=flat,
            analytic=analytic,
            numeric=numeric,
            direction_rel_error=direction,
            ok=not failing,
        )


def _bisect(part, size):
    """The element whose error dominates, halving the range by the larger discrepancy."""
    lo, hi = 0, size
    while hi - lo > 1:
        mid = (lo + hi) // 2
        left = part(lo, mid)
        right = part(mid, hi)
        if abs(left[0] - left[1]) >= abs(right[0] - right[1]):
            hi = mid
        else:
            lo = mid
    return lo


def _arrays(params, size):
    if not isinstance(params, FlatParams):
        return [_Array(PLAIN_ARRAY_NAME, PLAIN_ARRAY_NAME, 0, size, (size,))]
    slices = params.slices
    return [
        _Array(
            name,
            name if isinstance(name, str) else f"params[{name}]",
            slices[name].start,
            slices[name].stop,
            params.params[name].shape,
        )
        for name in params.names
    ]


def _element(label, index):
    return f"{label}[{', '.join(str(i) for i in index)}]" if index else label


def _failure(record):
    if record.index is None:
        return (
            f"{record.label} (relative error {record.rel_error:.2g} along {record.where}: "
            f"analytic {record.analytic:.6g} vs numeric {record.numeric:.6g}; no single "
            "element found wrong)"
        )
    return (
        f"{record.label} (max relative error {record.rel_error:.2g} at {record.where}: "
        f"analytic {record.analytic:.6g} vs numeric {record.numeric:.6g})"
    )


def _check_count(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Invalid max_coordinates: {value!r} (expected an integer >= 1, the number of "
            f"coordinates checked per array; got {type(value).__name__})"
        )
    if value < 1:
        raise ValueError(
            f"Invalid max_coordinates: {value} (expected an integer >= 1, the number of "
            "coordinates checked per array)"
        )
    return int(value)


def _check_coordinates(coordinates, size):
    rule = f"a non-empty 1-D sequence of integer flat indices in [0, {size})"
    try:
        array = np.asarray(coordinates)
    except (TypeError, ValueError):
        raise TypeError(f"Invalid coordinates: {coordinates!r} (expected {rule})") from None
    if array.size == 0:
        raise ValueError(f"Invalid coordinates: {_show(array)} (expected {rule})")
    if array.ndim != 1:
        raise ValueError(
            f"Invalid coordinates: {_show(array)} (expected {rule}; got shape {array.shape})"
        )
    if array.dtype.kind not in "iu":
        raise TypeError(
            f"Invalid coordinates: {_show(array)} (expected {rule}; got {array.dtype} "
            "values, which are not rounded or truncated)"
        )
    outside = array[(array < 0) | (array >= size)]
    if outside.size:
        raise ValueError(f"Invalid coordinates: {_show(outside)} out of range (expected {rule})")
    _, first = np.unique(array, return_index=True)
    return array[np.sort(first)].astype(np.int64)


def _show(array):
    if array.ndim != 1 or array.size <= 8:
        return repr(array.tolist())
    return repr(array[:8].tolist())[:-1] + ", ...]"
