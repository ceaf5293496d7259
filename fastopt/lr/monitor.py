"""CostMonitor: watch the cost in your own training loop and say what a rise means."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..schedules.plateau import ReduceOnPlateau


class CostWarning(UserWarning):
    """The cost went up or stopped being finite."""


class CostIncreaseError(RuntimeError):
    """Raised by a CostMonitor with ``on_increase="raise"``."""


class NonFiniteCostError(FloatingPointError):
    """Raised by a CostMonitor with ``on_nonfinite="raise"`` (the default)."""


class CostEvent:
    """One finding: ``kind`` ("increase" or "nonfinite"), ``iteration``, ``previous``,
    ``cost`` and a ``message``.
    """

    def __init__(self, kind: str, iteration: int, previous: float | None, cost: float) -> None:
        self.kind, self.iteration, self.previous, self.cost = kind, iteration, previous, cost
        if kind == "nonfinite":
            self.message = (
                f"cost is {cost} at iteration {iteration}: the learning rate is far "
                "too large or the gradient is wrong; try lr/10, and a very small "
                "lr to check that the cost then decreases every iteration"
            )
        else:
            self.message = (
                f"cost went up at iteration {iteration} ({previous:.6g} -> "
                f"{cost:.6g}): the learning rate may be too large, or the gradient "
                "may be wrong; try lr/3, or a very small lr to check that the cost "
                "then decreases every iteration"
            )

    def __repr__(self) -> str:
        return f"<CostEvent {self.message}>"


class CostMonitor:
    """Feed it one cost per iteration; it flags non-finite costs and increases.

    Parameters
    ----------
    rtol, atol : float
        An increase counts when ``cost > previous + rtol * |previous| + atol`` (defaults:
        any rise above 1e-6 relative, so rounding noise is not reported).
    on_increase, on_nonfinite : {"warn", "raise", "ignore"} or callable
        What to do: warn with :class:`CostWarning`, raise :class:`CostIncreaseError` /
        :class:`NonFiniteCostError`, stay silent (the events are still recorded), or call
        ``callback(event)``. Defaults: warn on increases, raise on non-finite costs.
    plateau : fastopt.schedules.reduce_on_plateau, optional
        Fed every cost (its ``step(cost)`` is called), so the monitor can drive a plateau
        schedule; any other object with a ``step(cost)`` method works too.

    Examples
    --------
    >>> monitor = CostMonitor(on_increase="ignore")
    >>> for cost in [3.0, 2.5, 2.7, 2.0]:
    ...     event = monitor(cost)
    >>> monitor.increases
    [2]
    >>> print(monitor.events[0].message)  # doctest: +ELLIPSIS
    cost went up at iteration 2 (2.5 -> 2.7): the learning rate may be too large, ...
    """

    ACTIONS = ("warn", "raise", "ignore")

    def __init__(
        self,
        *,
        rtol: float = 1e-6,
        atol: float = 0.0,
        on_increase: str | Callable[[CostEvent], object] = "warn",
        on_nonfinite: str | Callable[[CostEvent], object] = "raise",
        plateau: ReduceOnPlateau | None = None,
    ) -> None:
        for name, action in (("on_increase", on_increase), ("on_nonfinite", on_nonfinite)):
            if not callable(action) and action not in self.ACTIONS:
                raise ValueError(
                    f"Invalid {name}: {action!r} (expected 'warn', 'raise', 'ignore' or a callable)"
                )
        if not (rtol >= 0 and atol >= 0):
            raise ValueError(f"Invalid tolerance: rtol={rtol}, atol={atol} (expected >= 0)")
        if plateau is not None and not callable(getattr(plateau, "step", None)):
            raise TypeError(
                f"Invalid plateau: {plateau!r} (expected a schedule fed the cost, such as "
                "fastopt.schedules.reduce_on_plateau: an object with a step(cost) method; "
                f"{type(plateau).__name__} has none)"
            )
        self.rtol, self.atol = float(rtol), float(atol)
        self.on_increase, self.on_nonfinite, self.plateau = on_increase, on_nonfinite, plateau
        self.costs, self.events = [], []

    @property
    def increases(self) -> list[int]:
        """Iterations at which the cost went up."""
        return [e.iteration for e in self.events if e.kind == "increase"]

    def __call__(self, cost: float) -> CostEvent | None:
        """Record the cost of the next iteration; returns a CostEvent or None."""
        cost = float(cost)
        iteration = len(self.costs)
        previous = self.costs[-1] if self.costs else None
        self.costs.append(cost)
        if self.plateau is not None:
            self.plateau.step(cost)  # a NaN counts as a bad step, as in torch
        event = None
        if not math.isfinite(cost):
            event = CostEvent("nonfinite", iteration, previous, cost)
            action, error = self.on_nonfinite, NonFiniteCostError
        elif (
            previous is not None
            and math.isfinite(previous)
            and cost > previous + self.rtol * abs(previous) + self.atol
        ):
            event = CostEvent("increase", iteration, previous, cost)
            action, error = self.on_increase, CostIncreaseError
        if event is None:
            return None
        self.events.append(event)
        if callable(action):
            action(event)
        elif action == "raise":
            raise error(event.message)
        elif action == "warn":
            warnings.warn(event.message, CostWarning, stacklevel=2)
        return event

    update = __call__

    def summary(self) -> str:
        n = len(self.costs) - 1
        if n < 1:
            return "no iterations recorded"
        ups = len(self.increases)
        text = (
            f"{n} iterations, cost {self.costs[0]:.6g} -> {self.costs[-1]:.6g}, "
            f"went up {ups} time{'s' * (ups != 1)}"
        )
        if any(e.kind == "nonfinite" for e in self.events):
            text += ", became non-finite"
        return text
