"""The learning-rate range test (Leslie Smith): one run with an exponentially growing rate."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from .._plotting import finish, pyplot
from ..optim import SGD
from ..schedules import exponential_decay
from .problem import Problem
from .progress import Progress

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..buffers import FlatParams
    from ..optim.base import Optimizer


def lr_range_test(
    loss_grad: Callable[..., float],
    params: FlatParams | np.ndarray | Any,
    *,
    optimizer: Callable[..., Optimizer] = SGD,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    iterations: int = 100,
    smoothing: float = 0.05,
    diverge_factor: float = 4.0,
    batches: Sequence[Any] | Callable[[], Iterable[Any]] | None = None,
    progress: bool | None = None,
    **optimizer_kwargs: Any,
) -> RangeTestResult:
    r"""One run in which the learning rate grows exponentially from ``min_lr`` to ``max_lr``.

    Update :math:`k` uses :math:`\text{lr}_k = \text{min\_lr}\,(\text{max\_lr} /
    \text{min\_lr})^{k / (\text{iterations} - 1)}`. The cost recorded before update
    :math:`k` is smoothed by an exponential moving average with weight ``smoothing`` (bias
    corrected); the run stops when the smoothed cost is not finite or exceeds
    ``diverge_factor`` times its lowest value. Parameters are restored afterwards.

    The suggestion is the rate at the minimum of the smoothed cost divided by 10 (the
    minimum itself is already past the edge of stability), with the rate of steepest
    descent of the smoothed cost against :math:`\log \text{lr}` reported beside it.

    Notes
    -----
    The range test is fast but the suggestion is a heuristic and often unreliable: the
    cost at update :math:`k` reflects the whole history of smaller rates before it, noisy
    mini-batch costs move the minimum and the steepest point (early spikes are a common
    trap), and on a pretrained model or an easy problem the curve is flat. Use it to find
    the range, then confirm with :func:`fastopt.sweep`, which runs each candidate rate from
    the same starting point for many updates and judges each by its own cost curve.

    References
    ----------
    Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186.

    Returns
    -------
    RangeTestResult
    """
    if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
        raise ValueError(
            f"Invalid min_lr/max_lr: {min_lr}, {max_lr} (expected 0 < min_lr < max_lr, finite)"
        )
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, (int, np.integer))
        or iterations < 2
    ):
        raise ValueError(f"Invalid iterations: {iterations!r} (expected an integer >= 2)")
    if not 0 < smoothing <= 1:
        raise ValueError(f"Invalid smoothing: {smoothing} (expected 0 < smoothing <= 1)")
    schedule = exponential_decay(
        min_lr, decay_rate=max_lr / min_lr, decay_steps=iterations - 1, end_lr=max_lr
    )
    problem = Problem(loss_grad, params, batches)
    lrs = schedule(np.arange(iterations))
    costs = np.full(iterations, np.nan)
    smoothed = np.full(iterations, np.nan)
    bar = Progress(iterations, "range test", enabled=progress)
    stopped = None
    try:
        step = problem.make_step(optimizer, schedule, optimizer_kwargs)
        stream = problem.batch_stream()
        average, best = 0.0, math.inf
        for k in range(iterations):
            costs[k] = cost = problem.cost(stream)
            average = (1 - smoothing) * average + smoothing * cost
            smoothed[k] = value = average / (1 - (1 - smoothing) ** (k + 1))
            best = min(best, value)
            bar.advance(1, f"lr={lrs[k]:.2g}")
            if not math.isfinite(value) or value > best + (diverge_factor - 1) * abs(best):
                stopped = k
                break
            step()
    finally:
        problem.restore()
        bar.close()
    return RangeTestResult(lrs, costs, smoothed, stopped, getattr(optimizer, "__name__", ""))


class RangeTestResult:
    """``lrs`` (the rate of each update), ``costs`` (cost before each update, NaN after the
    stop), ``smoothed``, ``stopped_at`` (update index or None), ``suggested_lr``,
    ``steepest_lr`` and ``reason``.
    """

    def __init__(
        self,
        lrs: np.ndarray,
        costs: np.ndarray,
        smoothed: np.ndarray,
        stopped_at: int | None,
        optimizer: str,
    ) -> None:
        self.lrs, self.costs, self.smoothed = lrs, costs, smoothed
        self.stopped_at, self.optimizer = stopped_at, optimizer
        valid = np.flatnonzero(np.isfinite(smoothed))
        if stopped_at is not None:
            valid = valid[valid < stopped_at]
        self.suggested_lr = self.steepest_lr = self.minimum_lr = None
        if valid.size >= 3:
            lowest = valid[np.argmin(smoothed[valid])]
            self.minimum_lr = float(lrs[lowest])
            slope = np.gradient(smoothed[valid], np.log(lrs[valid]))
            self.steepest_lr = float(lrs[valid[np.argmin(slope)]])
            if lowest > valid[0]:
                self.suggested_lr = self.minimum_lr / 10
        self.reason = self._reason()

    def _reason(self):
        stop = (
            "ran to the end"
            if self.stopped_at is None
            else f"stopped at update {self.stopped_at} (lr={self.lrs[self.stopped_at]:.3g}): "
            "the smoothed cost diverged"
        )
        if self.suggested_lr is None:
            return (
                f"{stop}; no suggestion: the smoothed cost never fell below its start. "
                "Lower min_lr, or run fastopt.sweep."
            )
        return (
            f"{stop}; lowest smoothed cost at lr={self.minimum_lr:.3g}, suggestion "
            f"lr={self.suggested_lr:.3g} (a tenth of it); steepest descent at "
            f"lr={self.steepest_lr:.3g}. Confirm with fastopt.sweep around these rates."
        )

    def table(self, rows: int = 12) -> str:
        """A few rows of the run (evenly spaced) and the suggestion."""
        end = len(self.lrs) if self.stopped_at is None else self.stopped_at + 1
        picks = np.unique(np.linspace(0, end - 1, min(rows, end)).astype(int))
        lines = [
            f"range test: {self.optimizer}",
            f"  {'update':>6s} {'lr':>10s} {'cost':>12s} {'smoothed':>12s}",
        ]
        for k in picks:
            lines.append(
                f"  {k:6d} {self.lrs[k]:10.3g} {self.costs[k]:12.6g} {self.smoothed[k]:12.6g}"
            )
        lines.append(f"suggestion: {self.reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def clean(values):
            return [None if not math.isfinite(v) else float(v) for v in values]

        return {
            "optimizer": self.optimizer,
            "lrs": self.lrs.tolist(),
            "costs": clean(self.costs),
            "smoothed": clean(self.smoothed),
            "stopped_at": self.stopped_at,
            "suggested_lr": self.suggested_lr,
            "minimum_lr": self.minimum_lr,
            "steepest_lr": self.steepest_lr,
            "reason": self.reason,
        }

    def __repr__(self) -> str:
        return f"<RangeTestResult suggested_lr={self.suggested_lr} stopped_at={self.stopped_at}>"

    def plot(self, path: str | PathLike[str] | None = None, *, ax: Axes | None = None) -> Axes:
        """Cost (raw and smoothed) against the learning rate on a log x-axis, with the
        suggestion marked.
        """
        plt = pyplot(headless=ax is None and path is not None)
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        k = np.flatnonzero(np.isfinite(self.costs))
        ax.plot(self.lrs[k], self.costs[k], color="0.7", lw=1, label="cost")
        ax.plot(self.lrs[k], self.smoothed[k], lw=2, label="smoothed")
        if self.suggested_lr is not None:
            ax.axvline(
                self.suggested_lr, color="C3", ls="--", label=f"suggestion {self.suggested_lr:.2g}"
            )
        if self.stopped_at is not None:
            ax.plot(
                self.lrs[self.stopped_at],
                self.costs[self.stopped_at],
                "x",
                color="C3",
                ms=9,
                mew=2,
                label="stopped (diverged)",
            )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("cost")
        ax.set_title(f"{self.optimizer}: learning-rate range test")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        return finish(ax, path)
