"""The learning-rate sweep: short runs on a 3x ladder of rates, from one snapshot.

"Try alpha in ... 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1 ..., run each for a handful of
iterations, plot the cost against the iteration, and pick the alpha that decreases the cost
rapidly but also consistently." Data first (:class:`SweepResult`), plot second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from .._json import json_number, json_numbers
from .._plotting import finish, pyplot
from .._validation import check_number
from ..optim import SGD
from .gradcheck import GradCheckError, check_grad
from .problem import Problem, diverged
from .progress import Progress

if TYPE_CHECKING:
    import numpy.typing as npt
    from matplotlib.axes import Axes

    from ..buffers import FlatParams
    from ..optim.base import Optimizer
    from .gradcheck import GradCheckResult

DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
VERDICTS = ("good", "slow", "flat", "oscillating", "diverged")


class SweepFailed(RuntimeError):
    """``loss_grad`` (or the optimizer) raised during a sweep; the original error is the
    ``__cause__``. The parameters were restored.

    Attributes
    ----------
    lr : float
        The rate of the run that failed.
    update : int
        The update after which the cost was being evaluated (0: the starting cost, or
        building the optimizer).
    building : bool
        Whether it was building the run's optimizer that failed (an option it rejects),
        before any cost was evaluated.
    costs : ndarray
        That run's costs up to the failure.
    partial : SweepResult or None
        The runs that finished before it, or None if none did.
    """

    def __init__(self, lr, update, costs, partial, error, building=False):
        if building:
            what = "building the optimizer"
        elif update == 0:
            what = "evaluating the starting cost"
        else:
            what = f"evaluating the cost after update {update}"
        super().__init__(
            f"the sweep failed in the run at lr={lr:g}, {what}: "
            f"{type(error).__name__}: {error}"
            + (f" ({len(partial.lrs)} finished runs are in .partial)" if partial else "")
        )
        self.lr, self.update, self.costs, self.partial = lr, update, costs, partial
        self.building = building


def check_rules(
    *, diverge_factor: float, max_increase_share: float, min_decrease: float, increase_rtol: float
) -> dict[str, float]:
    """The verdict rules of :func:`sweep`, checked, as floats."""
    return {
        "diverge_factor": check_number(
            "diverge_factor", diverge_factor, "a finite number > 1",
            lambda v: 1 < v < math.inf,
        ),
        "max_increase_share": check_number(
            "max_increase_share", max_increase_share, "0 <= max_increase_share < 1",
            lambda v: 0 <= v < 1,
        ),
        "min_decrease": check_number(
            "min_decrease", min_decrease, "0 <= min_decrease < 1", lambda v: 0 <= v < 1
        ),
        "increase_rtol": check_number(
            "increase_rtol", increase_rtol, "0 <= increase_rtol < 1", lambda v: 0 <= v < 1
        ),
    }  # fmt: skip


def sweep(
    loss_grad: Callable[..., float],
    params: FlatParams | np.ndarray | Any,
    *,
    optimizer: Callable[..., Optimizer] = SGD,
    lrs: npt.ArrayLike | None = None,
    iterations: int = 50,
    batches: Sequence[Any] | Callable[[], Iterable[Any]] | None = None,
    diverge_factor: float = 4.0,
    max_increase_share: float = 0.1,
    min_decrease: float = 0.01,
    increase_rtol: float = 1e-6,
    progress: bool | None = None,
    **optimizer_kwargs: Any,
) -> SweepResult:
    """Run ``optimizer`` for ``iterations`` updates at each learning rate and pick one.

    Every run starts from the same snapshot of ``params``; when the sweep ends (also when a
    run diverges or ``loss_grad`` raises) the parameters, and a FlatParams' gradient
    buffer, are restored bit for bit.

    Parameters
    ----------
    loss_grad : callable
        ``loss_grad(params, grad)`` returns the cost at ``params`` and writes its gradient
        into ``grad``. For a FlatParams, ``params`` is the FlatParams and ``grad`` its flat
        gradient buffer (writing through ``params.grads[...]`` works too). With
        ``batches``, it is called as ``loss_grad(params, grad, batch)``.
    params : FlatParams or 1-D float ndarray or device array
        The starting point.
    optimizer : optimizer class, default fastopt.SGD
        Built as ``optimizer(params, lr=lr, **optimizer_kwargs)`` for each run.
    lrs : sequence of float, optional
        Default: the 3x ladder 1e-4, 3e-4, 1e-3, ..., 1, 3.
    iterations : int, default 50
        Updates per run; each run records ``iterations + 1`` costs (the first is the
        starting cost).
    batches : sequence or callable, optional
        For mini-batch problems: a sequence of at least ``iterations + 1`` batches, or a
        callable returning a fresh iterator; every run sees the same batches in the same
        order. Mini-batch costs are noisy: raise ``max_increase_share`` accordingly.
    diverge_factor : float, default 4
        A run is stopped as diverged when its cost is not finite or exceeds
        ``diverge_factor`` times the starting cost (a run whose starting cost is not
        finite is stopped there, before any update).
    max_increase_share : float, default 0.1
        A run in which more than this share of the updates increased the cost (by more
        than ``increase_rtol`` relative) is "oscillating".
    min_decrease : float, default 0.01
        A run whose cost fell by less than this fraction of the starting cost is "slow".
    increase_rtol : float, default 1e-6
        Rounding: a change of the cost by at most this fraction of it is no change. A run
        in which no cost differs from the starting cost by more than this is "flat".
    progress : bool, optional
        Show a progress bar on stderr (default: only on a terminal, after 0.5 s).
    **optimizer_kwargs
        Passed to every optimizer (momentum, betas, weight_decay, ...).

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepFailed
        When ``loss_grad`` or the optimizer raises (also building the optimizer, for an
        option it rejects: ``.building``): it names the rate and the update, and carries
        the finished runs (``.partial``); the original error is its cause.

    Notes
    -----
    Verdicts, in this order of precedence:

    * ``"diverged"``: a non-finite cost, a cost above ``diverge_factor`` x the start, or a
      final cost above the start by more than rounding (``increase_rtol`` relative).
    * ``"flat"``: the cost never moved beyond rounding (``increase_rtol``): the updates
      changed nothing the cost can see.
    * ``"oscillating"``: more than ``max_increase_share`` of the updates raised the cost.
      "If the cost sometimes goes up, alpha is too large or there is a bug."
    * ``"slow"``: consistent but the cost fell by less than ``min_decrease`` of the start.
    * ``"good"``: it decreased consistently and substantially.

    The pick: among "good" runs, the lowest final cost (the fastest decrease over the same
    number of updates; the larger rate on a tie); if there is none, the lowest final cost
    among "slow" runs. A diverged, flat or oscillating run is never picked. When even the
    smallest rate failed to decrease the cost, :func:`fastopt.check_grad` is run once and
    its finding is part of the reason: "with a small enough alpha, the cost should
    decrease on every iteration" (when the check cannot be made, e.g. at non-finite
    parameters, its refusal is the finding; when the starting cost is not finite, the
    reason says that instead). When no run moved the cost at all, the reason says so
    and names the likely causes: ``loss_grad`` does not write the gradient, the gradient
    is zero, or it is not the gradient of this cost (whether the gradient buffer was left
    at zero at the starting point tells the first two from the third).
    """
    lrs = np.array(DEFAULT_LRS if lrs is None else lrs, dtype=np.float64)
    if lrs.ndim != 1 or lrs.size == 0 or not np.all(np.isfinite(lrs)) or np.any(lrs < 0):
        raise ValueError(f"Invalid lrs: {lrs.tolist()} (expected finite rates >= 0)")
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, (int, np.integer))
        or iterations < 1
    ):
        raise ValueError(f"Invalid iterations: {iterations!r} (expected an integer >= 1)")
    rules = check_rules(
        diverge_factor=diverge_factor,
        max_increase_share=max_increase_share,
        min_decrease=min_decrease,
        increase_rtol=increase_rtol,
    )
    if batches is not None and hasattr(batches, "__len__") and len(batches) < iterations + 1:
        raise ValueError(
            f"Invalid batches: {len(batches)} batches for {iterations} iterations (expected "
            f"at least iterations + 1 = {iterations + 1}: one per cost evaluated)"
        )
    problem = Problem(loss_grad, params, batches)
    costs = np.full((lrs.size, iterations + 1), np.nan)
    stopped_at: list[int | None] = [None] * lrs.size
    bar = Progress(lrs.size * iterations, "sweep", enabled=progress)
    grad_check = grad_zero = grad_check_error = None
    result = lambda rows: SweepResult(  # noqa: E731
        lrs[:rows], costs[:rows], [classify(c, **rules) for c in costs[:rows]], rules,
        optimizer, optimizer_kwargs, grad_check, grad_zero, stopped_at=stopped_at[:rows],
        grad_check_error=grad_check_error,
    )  # fmt: skip
    needed = (iterations + 1, "one per cost evaluated: iterations + 1")
    try:
        for row, lr in enumerate(lrs):
            k, building = 0, True
            try:
                problem.restore()
                step = problem.make_step(optimizer, float(lr), optimizer_kwargs)
                building = False
                stream = problem.batch_stream(*needed)
                costs[row, 0] = start = problem.cost(stream)
                if not math.isfinite(start):
                    stopped_at[row] = 0
                    bar.advance(iterations, f"lr={lr:g} starting cost {start}")
                    continue
                for k in range(1, iterations + 1):
                    step()
                    costs[row, k] = cost = problem.cost(stream)
                    if diverged(cost, start, rules["diverge_factor"]):
                        costs[row, k + 1 :] = np.nan
                        stopped_at[row] = k
                        bar.advance(iterations - k + 1, f"lr={lr:g} diverged")
                        break
                    bar.advance(1, f"lr={lr:g}")
            except Exception as error:
                partial = result(row) if row else None
                raise SweepFailed(
                    float(lr), k, costs[row, :k].copy(), partial, error, building=building
                ) from error
        verdicts = [classify(c, **rules) for c in costs]
        smallest = int(np.argmin(lrs))
        if verdicts[smallest] not in ("good", "slow") and math.isfinite(costs[smallest, 0]):
            problem.restore()
            stream = problem.batch_stream(1, "the batch the gradient is checked on")
            batch = None if stream is None else next(stream)
            if all(v == "flat" for v in verdicts):
                problem.cost(None if stream is None else iter([batch]))
                grad_zero = not np.any(problem.host(problem.grad))
                problem.restore()
            try:
                grad_check = check_grad(loss_grad, problem.params, batch=batch)
            except GradCheckError as error:  # the finished runs stand; say why not checked
                grad_check_error = str(error)
    finally:
        problem.restore()
        bar.close()
    return result(lrs.size)


def classify(
    costs: npt.ArrayLike,
    *,
    diverge_factor: float = 4.0,
    max_increase_share: float = 0.1,
    min_decrease: float = 0.01,
    increase_rtol: float = 1e-6,
) -> str:
    """The verdict for one run's costs (NaN after a divergence stop); see :func:`sweep`."""
    check_rules(
        diverge_factor=diverge_factor,
        max_increase_share=max_increase_share,
        min_decrease=min_decrease,
        increase_rtol=increase_rtol,
    )
    costs = np.asarray(costs, dtype=np.float64)
    start = costs[0]
    finite = costs[np.isfinite(costs)]
    stopped = finite.size < costs.size
    if (
        stopped
        or any(diverged(c, start, diverge_factor) for c in finite)
        or finite[-1] > start + increase_rtol * abs(start)
    ):
        return "diverged"
    if np.all(np.abs(finite - start) <= increase_rtol * abs(start)):
        return "flat"
    steps = np.diff(finite)
    increases = steps > increase_rtol * np.abs(finite[:-1])
    if steps.size and increases.mean() > max_increase_share:
        return "oscillating"
    if start - finite[-1] < min_decrease * abs(start):
        return "slow"
    return "good"


class SweepResult:
    """Costs of every run, their verdicts, the pick and why.

    Attributes
    ----------
    lrs : ndarray, shape (n,)
    costs : ndarray, shape (n, iterations + 1)
        Row ``i`` is the run at ``lrs[i]``: the starting cost, then the cost after each
        update; NaN after a run was stopped for divergence.
    verdicts : list of str
        "good", "slow", "flat", "oscillating" or "diverged" per rate (rules in
        :func:`sweep`).
    best_lr : float or None
        The pick; None when no run decreased the cost consistently.
    reason : str
        Why this rate (or why none).
    grad_check : GradCheckResult or None
        Set when the smallest rate failed to decrease the cost.
    grad_check_error : str or None
        Why that gradient check could not be made (the :class:`fastopt.lr.GradCheckError`
        message, e.g. a parameter that is not finite); None otherwise.
    grad_zero : bool or None
        When no run moved the cost: whether ``loss_grad`` left the gradient at zero at the
        starting point (it does not write it, or it is zero); None otherwise.
    stopped_at : list of int or None
        Per run, the update at which it was stopped (its cost there was not finite or
        above ``diverge_factor`` x the start; 0 when the starting cost was not finite), or
        None when it ran to the end.
    """

    def __init__(
        self,
        lrs: np.ndarray,
        costs: np.ndarray,
        verdicts: list[str],
        rules: dict[str, float],
        optimizer: Callable[..., Optimizer],
        options: Mapping[str, Any],
        grad_check: GradCheckResult | None,
        grad_zero: bool | None = None,
        *,
        stopped_at: Sequence[int | None] | None = None,
        grad_check_error: str | None = None,
    ) -> None:
        self.lrs, self.costs, self.verdicts = lrs, costs, verdicts
        self.rules, self.grad_check, self.grad_zero = rules, grad_check, grad_zero
        self.grad_check_error = grad_check_error
        if stopped_at is None:
            stopped_at = [_stop(row, rules["diverge_factor"]) for row in costs]
        self.stopped_at = list(stopped_at)
        self.optimizer = getattr(optimizer, "__name__", repr(optimizer))
        self.options = dict(options)
        self.iterations = costs.shape[1] - 1
        self.best_index = self._pick()
        self.best_lr = None if self.best_index is None else float(lrs[self.best_index])
        self.reason = self._reason()

    def _starts_finite(self, i):
        return math.isfinite(self.costs[i, 0])

    def _final(self, i):
        finite = self.costs[i][np.isfinite(self.costs[i])]
        return finite[-1]

    def _pick(self):
        for wanted in ("good", "slow"):
            rows = [i for i, v in enumerate(self.verdicts) if v == wanted]
            if rows:
                return min(rows, key=lambda i: (self._final(i), -self.lrs[i]))
        return None

    def _reason(self):
        count = {v: self.verdicts.count(v) for v in VERDICTS}
        unstarted = [i for i in range(len(self.lrs)) if not self._starts_finite(i)]
        bad = [
            f"{self.lrs[i]:g}"
            for i, v in enumerate(self.verdicts)
            if v in ("diverged", "oscillating") and i not in unstarted
        ]
        bad_text = (
            f"; cost went up with lr {', '.join(bad)} (diverged or oscillating)" if bad else ""
        )
        flat = [f"{self.lrs[i]:g}" for i, v in enumerate(self.verdicts) if v == "flat"]
        if flat and len(flat) < len(self.verdicts):
            bad_text += f"; the cost did not move with lr {', '.join(flat)}"
        if unstarted and len(unstarted) < len(self.verdicts):
            bad_text += "; the starting cost was not finite with lr " + ", ".join(
                f"{self.lrs[i]:g} ({self.costs[i, 0]})" for i in unstarted
            )
        if len(unstarted) == len(self.verdicts):
            shown = sorted({str(self.costs[i, 0]) for i in unstarted})
            text = (
                f"the starting cost is {' or '.join(shown)}, not a finite number, so no run "
                "can be judged and no rate is picked: loss_grad returns it at the starting "
                "parameters, before any update; fix the cost there (a log of 0, an overflow, "
                "a NaN in the data or the parameters) and sweep again."
            )
        elif flat and len(flat) == len(self.verdicts):
            text = (
                f"no run changed the cost beyond rounding (relative change at most "
                f"{self.rules['increase_rtol']:g} in every run, lr {self.lrs.min():g} to "
                f"{self.lrs.max():g}), so no rate is picked. The likely causes: loss_grad "
                "does not write the gradient into grad, the gradient is zero, or it is not "
                "connected to the cost (not the gradient of the cost it returns)"
            )
            if self.grad_zero is True:
                text += (
                    "; here loss_grad left grad at zero at the starting point: it does not "
                    "write the gradient, or the gradient is zero there"
                )
            elif self.grad_zero is False:
                text += (
                    "; here loss_grad wrote a nonzero gradient, so it is probably not the "
                    "gradient of the returned cost (or the rates are far too small)"
                )
            text += "."
        elif self.best_index is None:
            text = (
                "no run decreased the cost consistently"
                + bad_text
                + ". With a small enough learning rate the cost should decrease on every "
                "iteration: try smaller rates; if it still does not, the gradient is "
                "probably wrong."
            )
        else:
            i = self.best_index
            start, final = self.costs[i, 0], self._final(i)
            kind = "decreased consistently"
            if self.verdicts[i] == "slow":
                kind += f" but slowly ({self._slow_advice(i)})"
            text = (
                f"lr={self.lrs[i]:g}: lowest cost after {self.iterations} updates "
                f"({start:.6g} -> {final:.6g}) among the {count['good'] or count['slow']} "
                f"runs that {kind}" + bad_text
            )
            if self.lrs[i] == self.lrs.max() and len(self.lrs) > 1:
                text += "; it is the largest rate tried: larger ones may be faster still"
            elif self.lrs[i] == self.lrs.min() and len(self.lrs) > 1:
                text += "; it is the smallest rate tried: smaller ones may be better"
            text += "."
        if self.grad_check is not None:
            text += (
                f" Even the smallest rate ({self.lrs.min():g}) failed to decrease the "
                f"cost, so the gradient was checked: {self.grad_check.message}."
            )
        elif self.grad_check_error is not None:
            text += (
                f" Even the smallest rate ({self.lrs.min():g}) failed to decrease the "
                f"cost, but the gradient could not be checked: {self.grad_check_error}."
            )
        return text

    def _slow_advice(self, picked):
        """What to try when the pick is a slow run: larger rates, unless they failed."""
        lr = self.lrs[picked]
        failed = [
            self.lrs[i]
            for i, v in enumerate(self.verdicts)
            if self.lrs[i] > lr and v in ("diverged", "oscillating")
        ]
        if not failed:
            return "every run is slow: try larger rates or more iterations"
        plural = "s" if len(failed) > 1 else ""
        shown = ", ".join(f"{r:g}" for r in failed)
        return (
            f"no run is good and the larger rate{plural} {shown} diverged or oscillated: try "
            f"rates between {lr:g} and {min(failed):g}, or more iterations"
        )

    def table(self) -> str:
        """The runs as a text table, the pick marked with ``*``."""
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        lines = [
            f"sweep: {self.optimizer}({options}), {self.iterations} updates per run",
            f"  {'lr':>10s} {'start':>12s} {'final':>12s} {'change':>8s} "
            f"{'increases':>10s}  verdict",
        ]
        for i, lr in enumerate(self.lrs):
            row = self.costs[i]
            finite = row[np.isfinite(row)]
            stopped = self.stopped_at[i] is not None or finite.size < row.size
            final = f"{finite[-1]:12.6g}" if not stopped else f"{'stopped':>12s}"
            change = (
                f"{(finite[-1] - row[0]) / abs(row[0]) * 100:+7.1f}%"
                if not stopped and row[0] != 0
                else f"{'-':>8s}"
            )
            ups = int(np.sum(np.diff(finite) > self.rules["increase_rtol"] * np.abs(finite[:-1])))
            compared = max(finite.size - 1, 0)
            if not self._starts_finite(i):
                note = f" (starting cost {row[0]})"
            elif stopped:
                note = f" (at update {self.stopped_at[i]})"
            else:
                note = ""
            mark = "*" if i == self.best_index else " "
            lines.append(
                f"{mark} {lr:10.4g} {row[0]:12.6g} {final} {change} "
                f"{ups:>4d}/{compared:<5d}  {self.verdicts[i]}{note}"
            )
        lines.append(f"pick: {self.reason}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<SweepResult best_lr={self.best_lr} verdicts={self.verdicts}>"

    def to_dict(self) -> dict[str, Any]:
        """Everything as strict JSON data (``json.dumps(..., allow_nan=False)`` accepts it).

        A cost that is not finite is written as None for NaN (also after a run was
        stopped) and as ``"inf"`` or ``"-inf"`` for an infinity, as in the gradient check
        under ``"grad_check"``; ``np.asarray(costs, dtype=float)`` reads them back.
        """
        return {
            "optimizer": self.optimizer,
            "options": {k: _option(v) for k, v in self.options.items()},
            "iterations": self.iterations,
            "rules": dict(self.rules),
            "lrs": self.lrs.tolist(),
            "costs": [json_numbers(row) for row in self.costs],
            "verdicts": list(self.verdicts),
            "stopped_at": list(self.stopped_at),
            "best_lr": self.best_lr,
            "reason": self.reason,
            "grad_check": None if self.grad_check is None else self.grad_check.to_dict(),
            "grad_check_error": self.grad_check_error,
            "grad_zero": self.grad_zero,
        }

    def plot(self, path: str | PathLike[str] | None = None, *, ax: Axes | None = None) -> Axes:
        """Cost against update number, one line per rate; the pick drawn thick, diverged
        runs ended with an x. Log y-axis when the costs span more than 10x.

        Every run has its own colour (the qualitative "tab10" palette), marker (every few
        updates) and, past ten runs, line style, so 10-20 runs stay apart; see
        :func:`fastopt._plotting.run_styles`.

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
        """
        from .._plotting import run_styles

        plt = pyplot(headless=ax is None and path is not None)
        created = ax is None
        if ax is None:
            _, ax = plt.subplots(figsize=(8.5 if len(self.lrs) > 6 else 7, 4.5))
        styles = run_styles(len(self.lrs), points=self.costs.shape[1])
        for i, lr in enumerate(self.lrs):
            row = self.costs[i]
            k = np.flatnonzero(np.isfinite(row))
            if not k.size:
                continue
            verdict = self.verdicts[i]
            style = dict(styles[i], lw=1.3, label=f"lr={lr:.3g} ({verdict})")
            if i == self.best_index:
                style.update(lw=3.2, markersize=7, label=f"lr={lr:.3g} (chosen)", zorder=5)
            ax.plot(k, row[k], **style)
            if verdict == "diverged":
                ax.plot(k[-1], row[k[-1]], "x", color=style["color"], ms=10, mew=2.5, zorder=6)
        positive = self.costs[np.isfinite(self.costs)]
        if positive.size and positive.min() > 0 and positive.max() / positive.min() > 10:
            ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_ylabel("cost")
        best = "none" if self.best_lr is None else f"{self.best_lr:.3g}"
        ax.set_title(f"{self.optimizer}: learning-rate sweep, pick lr={best}")
        ax.grid(True, alpha=0.3)
        if len(self.lrs) > 6:
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize="small")
        return finish(ax, path, created)


def _option(value):
    """An optimizer option as strict JSON: numbers as :func:`json_number`, else its repr."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, (list, tuple)):
        return [_option(v) for v in value]
    return repr(value)


def _stop(costs, diverge_factor):
    """Where a run with these costs was stopped (see :attr:`SweepResult.stopped_at`)."""
    for k, cost in enumerate(costs):
        if not math.isfinite(cost) or (k and diverged(cost, costs[0], diverge_factor)):
            return k
    return None
