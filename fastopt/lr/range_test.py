"""The learning-rate range test (Leslie Smith): one run with an exponentially growing rate."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from .._json import json_numbers
from .._plotting import clipped_ylim, finish, pyplot, run_styles
from .._validation import check_number
from ..optim import SGD
from ..schedules import exponential_decay
from .problem import Problem
from .progress import Progress

if TYPE_CHECKING:
    import numpy.typing as npt
    from matplotlib.axes import Axes

    from ..buffers import FlatParams
    from ..optim.base import Optimizer

SUGGESTIONS = ("suggested_lr", "steepest_lr", "valley_lr", "minimum_lr")
_TITLES = {
    "suggested_lr": "minimum / 10",
    "steepest_lr": "steepest descent",
    "valley_lr": "longest valley",
    "minimum_lr": "smoothed minimum",
}


class RangeTestFailed(RuntimeError):
    """``loss_grad`` (or the optimizer) raised during a range test; the original error is
    the ``__cause__``. The parameters were restored.

    Attributes
    ----------
    lr : float
        The rate of the update that failed.
    update : int
        The update that failed (0-based; the updates before it were done).
    repeat : int
        The run that failed (0-based; 0 unless ``repeats > 1``).
    building : bool
        Whether it was building the run's optimizer that failed (an option it rejects),
        before any cost was evaluated.
    partial : RangeTestResult
        That run up to the failure: ``stopped_at`` is ``update`` and ``stopped_by`` is
        ``"error"``; its suggestions are None when fewer than three updates were done.
    completed : tuple of RangeTestResult
        The runs that finished before it (empty unless ``repeats > 1``).
    """

    def __init__(
        self,
        lr: float,
        update: int,
        repeat: int,
        repeats: int,
        partial: RangeTestResult,
        completed: tuple[RangeTestResult, ...],
        error: BaseException,
        building: bool = False,
    ) -> None:
        where = f" of run {repeat + 1} of {repeats}" if repeats > 1 else ""
        if building:
            text = (
                f"the range test failed building the optimizer{where} (lr={lr:.3g}): "
                f"{type(error).__name__}: {error}"
            )
        else:
            text = (
                f"the range test failed at update {update}{where} (lr={lr:.3g}): "
                f"{type(error).__name__}: {error} (the {update} updates before it are in "
                ".partial)"
            )
        super().__init__(text)
        self.lr, self.update, self.repeat = lr, update, repeat
        self.building = building
        self.partial, self.completed = partial, completed


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
    repeats: int = 1,
    progress: bool | None = None,
    **optimizer_kwargs: Any,
) -> RangeTestResult:
    r"""Runs in which the learning rate grows exponentially from ``min_lr`` to ``max_lr``.

    Update :math:`k` uses :math:`\text{lr}_k = \text{min\_lr}\,(\text{max\_lr} /
    \text{min\_lr})^{k / (\text{iterations} - 1)}`. The cost recorded before update
    :math:`k` is smoothed by an exponential moving average with weight ``smoothing`` (bias
    corrected); the run stops when the smoothed cost is not finite or exceeds
    ``diverge_factor`` times its lowest value. Parameters are restored afterwards.

    Three suggestions are read off the smoothed cost (before the stop): the rate at its
    minimum divided by 10 (``suggested_lr``; the minimum itself is already past the edge
    of stability), the rate of its steepest descent against :math:`\log \text{lr}`
    (``steepest_lr``, before the minimum and past the first tenth of the run), and the
    rate two thirds of the way down its longest valley (``valley_lr``, fastai's default
    suggester).

    Parameters
    ----------
    loss_grad : callable
        ``loss_grad(params, grad[, batch])`` returns the cost and writes the gradient.
    params : FlatParams or 1-D array
        The starting point; restored bit for bit when the test ends (also on errors).
    optimizer : callable
        An optimizer class; a fresh one is made for every run.
    min_lr, max_lr : float
        The first and last rate: finite, ``0 < min_lr < max_lr``, and ``max_lr / min_lr``
        finite (the factor the rate grows by).
    iterations : int
        Updates per run (>= 2); the suggestions need at least three finite smoothed costs
        before the stop, and the reason says what to change when there are fewer.
    smoothing : float
        Weight of the newest cost in the moving average (0 < smoothing <= 1).
    diverge_factor : float
        The run stops when the smoothed cost exceeds this times its lowest value.
    batches : sequence or callable, optional
        Mini-batches, one per update (at least ``iterations``): a sequence (the same order
        in every run) or a
        callable returning a fresh iterator (called once per run, so a callable that
        shuffles gives each repeat its own order).
    repeats : int
        Number of runs (>= 1), each from the same starting parameters (restored bit for
        bit between runs) with a fresh optimizer. With ``repeats > 1`` the suggestions are
        the medians over the runs and :attr:`RangeTestResult.spread` gives their range.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    **optimizer_kwargs
        Passed to ``optimizer``.

    Returns
    -------
    RangeTestResult

    Raises
    ------
    RangeTestFailed
        ``loss_grad`` or the optimizer raised (also building the optimizer, for an option
        it rejects: ``building`` is True); it names the update and rate and carries the
        finished part (the original error is its ``__cause__``).

    Notes
    -----
    The range test is fast but its suggestions are heuristics and often unreliable: the
    cost at update :math:`k` reflects the whole history of smaller rates before it, noisy
    mini-batch costs move the curve, and on a pretrained model or an easy problem the
    curve is flat. Use it to find the range, then confirm with :func:`fastopt.sweep`, which
    runs each candidate rate from the same starting point for many updates and judges each
    by its own cost curve.

    The three suggestions differ in how much of the curve they use. The steepest point is
    a derivative at a single place: one noisy batch can put it anywhere, and so can the
    first updates, where the average is still little more than the first raw costs (on a
    noisy problem it often lands at the very first rates), so it is the least robust. The
    minimum is a single extreme value: noise moves it and the lag of the average pushes
    it past the edge of stability, but a tenth of it is usually below that edge, so it
    errs on the safe side. The valley is a property of the whole falling stretch: the
    longest strictly decreasing subsequence of the smoothed cost may skip any number of
    bumps, so an isolated spike neither ends nor moves it, and it tends to change least
    from run to run (``repeats`` measures this). It starts at a high early value, so on
    most curves it spans the slow start too, and the rate two thirds down it is then
    often lower than a tenth of the minimum. Where the suggestions disagree by more than
    a factor of a few, the curve has no clear answer: sweep the range between them.

    The valley rule: over the smoothed costs before the stop, find a longest strictly
    decreasing subsequence (a longest-increasing-subsequence pass over the negated costs,
    :math:`O(n \log n)`), ending at the first update where that length is reached; the
    valley runs from the subsequence's first to its last update and the suggestion is
    the rate two thirds of the way along it (two thirds of the way in :math:`\log
    \text{lr}`, since the rates grow geometrically). fastai's ``valley`` estimates the
    start as the end minus the subsequence's length and so lands about halfway; here the
    start is the subsequence's own first update.

    References
    ----------
    Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186.
    fastai, ``fastai.callback.schedule.valley`` (the longest-valley suggester).
    """
    min_lr = check_number("min_lr", min_lr, "a finite rate > 0", lambda v: 0 < v < math.inf)
    max_lr = check_number("max_lr", max_lr, "a finite rate > 0", lambda v: 0 < v < math.inf)
    if not min_lr < max_lr:
        raise ValueError(
            f"Invalid min_lr/max_lr: {min_lr}, {max_lr} (expected 0 < min_lr < max_lr)"
        )
    if not math.isfinite(max_lr / min_lr):
        raise ValueError(
            f"Invalid min_lr/max_lr: {min_lr}, {max_lr} (expected max_lr / min_lr to be "
            "finite: the rate grows by that factor over the run; raise min_lr)"
        )
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, (int, np.integer))
        or iterations < 2
    ):
        raise ValueError(f"Invalid iterations: {iterations!r} (expected an integer >= 2)")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"Invalid repeats: {repeats!r} (expected an integer >= 1)")
    smoothing = check_number("smoothing", smoothing, "0 < smoothing <= 1", lambda v: 0 < v <= 1)
    check_number("diverge_factor", diverge_factor, "a finite number > 1",
                 lambda v: 1 < v < math.inf)  # fmt: skip
    if batches is not None and hasattr(batches, "__len__") and len(batches) < iterations:
        raise ValueError(
            f"Invalid batches: {len(batches)} batches for {iterations} iterations (expected "
            "at least one per update)"
        )
    schedule = exponential_decay(
        min_lr, decay_rate=max_lr / min_lr, decay_steps=iterations - 1, end_lr=max_lr
    )
    problem = Problem(loss_grad, params, batches)
    lrs = schedule(np.arange(iterations))
    name = getattr(optimizer, "__name__", "")
    bar = Progress(iterations * repeats, "range test", enabled=progress)
    runs: list[RangeTestResult] = []
    try:
        for repeat in range(repeats):
            problem.restore()
            costs = np.full(iterations, np.nan)
            smoothed = np.full(iterations, np.nan)
            stopped = None
            k, building = 0, True
            try:
                step = problem.make_step(optimizer, schedule, optimizer_kwargs)
                building = False
                stream = problem.batch_stream(iterations, "one per update: iterations")
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
            except Exception as error:
                partial = RangeTestResult(lrs, costs, smoothed, k, name, stopped_by="error")
                raise RangeTestFailed(
                    float(lrs[k]), k, repeat, repeats, partial, tuple(runs), error, building
                ) from error
            bar.advance(iterations - 1 - k)
            runs.append(RangeTestResult(lrs, costs, smoothed, stopped, name))
    finally:
        problem.restore()
        bar.close()
    if repeats == 1:
        return runs[0]
    first = runs[0]
    return RangeTestResult(lrs, first.costs, first.smoothed, first.stopped_at, name, runs=runs)


def longest_valley(losses: npt.ArrayLike) -> tuple[int, int] | None:
    """The first and last index of a longest strictly decreasing subsequence of ``losses``.

    Parameters
    ----------
    losses : array_like
        Finite values, in order.

    Returns
    -------
    (int, int) or None
        ``(start, end)``; None when no value is below an earlier one.

    Notes
    -----
    A longest-increasing-subsequence pass (patience sorting) over the negated values. The
    end is the first index at which the longest length is reached; each element's
    predecessor is, among the earlier elements ending a chain one shorter, the one with
    the highest value, so the valley starts at its rim.
    """
    values = -np.asarray(losses, dtype=np.float64)
    tails: list[float] = []  # tails[m]: the lowest last value of a chain of length m + 1
    tail_index: list[int] = []
    before = np.full(values.size, -1)
    end, length = -1, 0
    for i, value in enumerate(values.tolist()):
        m = bisect_left(tails, value)
        if m:
            before[i] = tail_index[m - 1]
        if m == len(tails):
            tails.append(value)
            tail_index.append(i)
        else:
            tails[m], tail_index[m] = value, i
        if m + 1 > length:
            end, length = i, m + 1
    if length < 2:
        return None
    start = end
    while before[start] >= 0:
        start = int(before[start])
    return start, end


def _log_median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    low, high = ordered[middle - 1], ordered[middle]
    return min(max(math.sqrt(low * high), low), high)


class RangeTestResult:
    """The costs of a range test and the rates suggested from them.

    Attributes
    ----------
    lrs : ndarray
        The rate of each update.
    costs : ndarray
        The cost before each update (NaN after the stop).
    smoothed : ndarray
        The bias-corrected moving average of ``costs``.
    stopped_at : int or None
        The update at which the run stopped, or None if it ran to the end.
    stopped_by : str or None
        ``"divergence"`` (the smoothed cost diverged), ``"error"`` (``loss_grad`` raised;
        see :class:`RangeTestFailed`) or None.
    suggested_lr : float or None
        The rate at the smoothed minimum divided by 10 (None when the minimum is the first
        update).
    steepest_lr : float or None
        The rate of steepest descent of the smoothed cost against log lr.
    valley_lr : float or None
        The rate two thirds down the longest valley of the smoothed cost.
    valley : (int, int) or None
        First and last update of that valley.
    minimum_lr : float or None
        The rate at the smoothed minimum.
    runs : tuple of RangeTestResult
        Every run (``(self,)`` for a single run). With several, the curves above are the
        first run's and the suggestions the medians over the runs.
    spread : dict
        For each of ``"suggested_lr"``, ``"steepest_lr"``, ``"valley_lr"`` and
        ``"minimum_lr"``: ``(min, median, max)`` over the runs that gave one, or None.
    reason : str
        The suggestions in words.

    Notes
    -----
    Medians over runs are taken of the log rates (the plain median for an odd number of
    runs, the geometric mean of the middle two for an even number).
    """

    def __init__(
        self,
        lrs: np.ndarray,
        costs: np.ndarray,
        smoothed: np.ndarray,
        stopped_at: int | None,
        optimizer: str,
        *,
        stopped_by: str | None = None,
        runs: Sequence[RangeTestResult] | None = None,
    ) -> None:
        self.lrs, self.costs, self.smoothed = lrs, costs, smoothed
        self.stopped_at, self.optimizer = stopped_at, optimizer
        if stopped_at is None:
            stopped_by = None
        self.stopped_by = stopped_by or (None if stopped_at is None else "divergence")
        valid = np.flatnonzero(np.isfinite(smoothed))
        if stopped_at is not None:
            valid = valid[valid < stopped_at]
        self.suggested_lr = self.steepest_lr = self.minimum_lr = self.valley_lr = None
        self.valley: tuple[int, int] | None = None
        self._usable = int(valid.size)
        if valid.size >= 3:
            curve = smoothed[valid]
            lowest = valid[np.argmin(curve)]
            self.minimum_lr = float(lrs[lowest])
            slope = np.gradient(curve, np.log(lrs[valid]))
            # the steepest point before the minimum, past the first tenth of the run
            # (where the moving average has seen only a few costs)
            end = int(np.argmin(curve)) + 1
            begin = min(valid.size // 10, max(end - 2, 0))
            self.steepest_lr = float(lrs[valid[begin + np.argmin(slope[begin:end])]])
            if lowest > valid[0]:
                self.suggested_lr = self.minimum_lr / 10
            span = longest_valley(curve)
            if span is not None:
                self.valley = (int(valid[span[0]]), int(valid[span[1]]))
                pick = span[0] + round((span[1] - span[0]) * 2 / 3)
                self.valley_lr = float(lrs[valid[pick]])
        self.runs: tuple[RangeTestResult, ...] = (self,) if not runs else tuple(runs)
        self.spread: dict[str, tuple[float, float, float] | None] = {}
        for key in SUGGESTIONS:
            found = [getattr(run, key) for run in self.runs if getattr(run, key) is not None]
            self.spread[key] = (min(found), _log_median(found), max(found)) if found else None
        if len(self.runs) > 1:
            for key in SUGGESTIONS:
                setattr(self, key, None if self.spread[key] is None else self.spread[key][1])
        self.reason = self._reason()

    def _reason(self) -> str:
        if self.stopped_at is None:
            stop = "ran to the end"
        else:
            if self.stopped_by == "error":
                why = "loss_grad raised an error"
            elif not math.isfinite(self.smoothed[self.stopped_at]):
                why = f"the smoothed cost is {self.smoothed[self.stopped_at]}"
            else:
                why = "the smoothed cost diverged"
            stop = (
                f"stopped at update {self.stopped_at} (lr={self.lrs[self.stopped_at]:.3g}): {why}"
            )
        if len(self.runs) > 1:
            stop = f"{len(self.runs)} runs, medians over them (spread in table()); first run {stop}"
        valley = (
            ""
            if self.valley_lr is None
            else f"; two thirds down the longest valley at lr={self.valley_lr:.3g}"
        )
        if self.suggested_lr is None and self._usable < 3:
            return f"{stop}; no suggestion: {self._too_few()}"
        if self.suggested_lr is None:
            return (
                f"{stop}; no suggestion: the smoothed cost never fell below its start"
                f"{valley}. Lower min_lr, or run fastopt.sweep."
            )
        return (
            f"{stop}; lowest smoothed cost at lr={self.minimum_lr:.3g}, suggestion "
            f"lr={self.suggested_lr:.3g} (a tenth of it); steepest descent at "
            f"lr={self.steepest_lr:.3g}{valley}. Confirm with fastopt.sweep around these rates."
        )

    def _too_few(self) -> str:
        """Why fewer than three smoothed costs are not enough, and what to change."""
        if not math.isfinite(self.costs[0]):
            return (
                f"the starting cost is {self.costs[0]}, not a finite number: loss_grad "
                "returns it at the starting parameters, before any update; fix the cost there."
            )
        n = self._usable
        counted = f"{n} smoothed cost{'s' if n != 1 else ''}"
        if self.stopped_by == "error":
            return f"too few updates before the error ({counted}; the suggestions need 3)."
        if self.stopped_at is not None:
            return (
                f"too few updates before the stop ({counted}; the suggestions need 3): "
                "lower min_lr, or run fastopt.sweep."
            )
        return f"too few updates ({counted}; the suggestions need 3): raise iterations."

    def table(self, rows: int = 12) -> str:
        """A few rows of the (first) run, evenly spaced, then the suggestions (with their
        spread over the runs when there are several) and the reason.
        """
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
        several = len(self.runs) > 1
        head = f"  {'':13s} {'rule':17s} {'lr':>9s}"
        if several:
            head = f"  {'':13s} {'rule':17s} {'min':>9s} {'median':>9s} {'max':>9s}  runs"
        lines.append(head)
        for key in SUGGESTIONS:
            spread = self.spread[key]
            start = f"  {key:13s} {_TITLES[key]:17s}"
            if spread is None:
                lines.append(f"{start} {'-':>9s}")
            elif several:
                count = sum(getattr(run, key) is not None for run in self.runs)
                lines.append(
                    f"{start} {spread[0]:9.3g} {spread[1]:9.3g} {spread[2]:9.3g}  "
                    f"{count}/{len(self.runs)}"
                )
            else:
                lines.append(f"{start} {spread[1]:9.3g}")
        lines.append(f"suggestion: {self.reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything as strict JSON data (``json.dumps(..., allow_nan=False)`` accepts
        it): a cost that is not finite is None for NaN (also after the stop) and ``"inf"``
        or ``"-inf"`` for an infinity; ``runs`` holds each run's own dict when there are
        several.
        """
        data = {
            "optimizer": self.optimizer,
            "lrs": self.lrs.tolist(),
            "costs": json_numbers(self.costs),
            "smoothed": json_numbers(self.smoothed),
            "stopped_at": self.stopped_at,
            "stopped_by": self.stopped_by,
            "suggested_lr": self.suggested_lr,
            "minimum_lr": self.minimum_lr,
            "steepest_lr": self.steepest_lr,
            "valley_lr": self.valley_lr,
            "valley": None if self.valley is None else list(self.valley),
            "repeats": len(self.runs),
            "spread": {k: None if v is None else list(v) for k, v in self.spread.items()},
            "reason": self.reason,
        }
        if len(self.runs) > 1:
            data["runs"] = [run.to_dict() for run in self.runs]
        return data

    def __repr__(self) -> str:
        return (
            f"<RangeTestResult suggested_lr={self.suggested_lr} valley_lr={self.valley_lr} "
            f"stopped_at={self.stopped_at} repeats={len(self.runs)}>"
        )

    def plot(self, path: str | PathLike[str] | None = None, *, ax: Axes | None = None) -> Axes:
        """Cost (raw and smoothed) against the learning rate, with the suggestions marked.

        Parameters
        ----------
        path : str or path-like, optional
            Write the figure there (PNG, or any format matplotlib knows). A figure made
            here for ``path`` is closed once written, so that plotting in a loop does not
            pile up open figures; the returned Axes still holds it.
        ax : matplotlib Axes, optional
            Draw into it instead of a new figure.

        Returns
        -------
        matplotlib Axes

        Notes
        -----
        The x axis is logarithmic. The y axis is logarithmic when every value drawn is
        positive, linear otherwise, and clipped to the useful range either way: from the
        lowest smoothed cost (or the 5th percentile of the raw costs, if lower) up to at
        most 3 times the starting cost (log axis) or the start plus the drop from it to
        that floor (linear axis), with 5% padding; the spike at the end of the run is cut
        off instead of flattening the curve (the x marking the stop sits on the top edge
        when the cost there is above it). The starting cost is the median smoothed
        cost over the first tenth of the updates drawn (the highest such value over the
        runs), so one noisy first batch does not set the scale. With several runs every run's
        smoothed cost is drawn in its own style and the suggestions (medians) are placed
        on the median curve, with bars spanning their range over the runs.
        """
        plt = pyplot(headless=ax is None and path is not None)
        created = ax is None
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        several = len(self.runs) > 1
        drawn, floors, starts = [], [], []
        styles = run_styles(len(self.runs), points=len(self.lrs))
        for i, run in enumerate(self.runs):
            k = np.flatnonzero(np.isfinite(run.costs))
            if not k.size:
                continue
            drawn.append(run.costs[k])
            drawn.append(run.smoothed[k])
            floors.extend([np.min(run.smoothed[k]), np.percentile(run.costs[k], 5)])
            starts.append(np.median(run.smoothed[k[: max(1, k.size // 10)]]))
            ax.plot(
                run.lrs[k], run.costs[k], color="0.75", lw=0.8, label="cost" if i == 0 else None
            )
            if several:
                style = dict(styles[i], lw=1.4, label=f"run {i + 1} (smoothed)")
            else:
                style = {"color": "C0", "lw": 2, "label": "smoothed"}
            ax.plot(run.lrs[k], run.smoothed[k], **style)
        curve_lrs, curve = self._marker_curve()
        if curve.size:
            if several:
                ax.plot(curve_lrs, curve, color="k", lw=2.2, label="median smoothed")
            elif self.valley is not None:
                ax.axvspan(
                    self.lrs[self.valley[0]],
                    self.lrs[self.valley[1]],
                    color="C4",
                    alpha=0.08,
                    label="longest valley",
                )
            for key, marker, color in (
                ("suggested_lr", "o", "C3"),
                ("steepest_lr", "^", "C2"),
                ("valley_lr", "D", "C4"),
            ):
                lr, spread = getattr(self, key), self.spread[key]
                if lr is None:
                    continue
                y = np.interp(np.log(lr), np.log(curve_lrs), curve)
                xerr = [[max(lr - spread[0], 0.0)], [max(spread[2] - lr, 0.0)]] if several else None
                ax.errorbar(
                    [lr],
                    [y],
                    xerr=xerr,
                    fmt=marker,
                    color=color,
                    mec="k",
                    ms=8,
                    capsize=3,
                    zorder=6,
                    label=f"{_TITLES[key]}: {lr:.2g}",
                )
        ax.set_xscale("log")
        top = math.inf
        if drawn:
            values = np.concatenate(drawn)
            log = bool(np.all(values > 0))
            if log:
                ax.set_yscale("log")
            limits = clipped_ylim(min(floors), max(starts), float(np.max(values)), log=log)
            ax.set_ylim(*limits)
            top = limits[1]
        stops = [
            run
            for run in self.runs
            if run.stopped_at is not None and math.isfinite(run.costs[run.stopped_at])
        ]
        if stops:
            ax.plot(
                [run.lrs[run.stopped_at] for run in stops],
                [min(run.costs[run.stopped_at], top) for run in stops],  # on the edge if above
                "x",
                color="C3",
                ms=9,
                mew=2,
                clip_on=False,
                zorder=7,
                label=f"stopped ({stops[0].stopped_by})",
            )
        ax.set_xlabel("learning rate")
        ax.set_ylabel("cost")
        runs = f" ({len(self.runs)} runs)" if several else ""
        ax.set_title(f"{self.optimizer}: learning-rate range test{runs}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        return finish(ax, path, created)

    def _marker_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Where the suggestion markers sit: the smoothed cost before the stop (the median
        over runs, up to the earliest stop, when there are several).
        """
        ends = [len(run.lrs) if run.stopped_at is None else run.stopped_at for run in self.runs]
        end = min(ends)
        curves = np.array([run.smoothed[:end] for run in self.runs])
        keep = np.all(np.isfinite(curves), axis=0)
        return self.lrs[:end][keep], np.median(curves[:, keep], axis=0)
