"""Cosine annealing, cosine annealing with warm restarts, and the one-cycle policy."""

from __future__ import annotations

import math

from . import _ops as ops
from ._base import Schedule, check_number, check_rate, check_steps


def _half_cosine(start, end, fraction):
    """From ``start`` (fraction 0) to ``end`` (fraction 1) along half a cosine."""
    return end + (start - end) * (1.0 + ops.cos(math.pi * fraction)) / 2.0


class CosineDecay(Schedule):
    r"""Half-cosine from ``lr`` to ``end_lr`` over ``decay_steps``, then ``end_lr``.

    .. math:: \text{lr}_t = \text{end\_lr} + (\text{lr} - \text{end\_lr})\,
        \frac{1 + \cos(\pi \min(t, D) / D)}{2}

    This is torch ``CosineAnnealingLR(T_max=decay_steps, eta_min=end_lr)`` in closed form
    for :math:`t \le D` (torch computes it recursively, with rounding drift, and keeps
    following the cosine back up after ``T_max``). Keras ``CosineDecay`` and optax
    ``cosine_decay_schedule`` take a multiplier ``alpha`` instead of ``end_lr``
    (``end_lr = alpha * lr``).
    """

    name = "cosine_decay"

    def __init__(self, lr: float, decay_steps: int, end_lr: float = 0.0) -> None:
        self.lr = check_rate("lr", lr)
        self.decay_steps = check_steps("decay_steps", decay_steps)
        self.end_lr = check_rate("end_lr", end_lr)

    def _params(self):
        return {"lr": self.lr, "decay_steps": self.decay_steps, "end_lr": self.end_lr}

    def _values(self, t):
        fraction = ops.minimum(t, float(self.decay_steps)) / self.decay_steps
        return _half_cosine(self.lr, self.end_lr, fraction)


class CosineRestarts(Schedule):
    r"""Cosine annealing with warm restarts (SGDR; torch ``CosineAnnealingWarmRestarts``).

    Cycle :math:`i` lasts :math:`T_i = T_0 m^i` steps (:math:`T_0` =
    ``first_cycle_steps``, :math:`m` = ``cycle_mult``); within a cycle, at step
    :math:`t_c` of it, :math:`\text{lr} = \text{end\_lr} + (\text{lr} - \text{end\_lr})
    (1 + \cos(\pi t_c / T_i)) / 2`, and each cycle restarts at ``lr``.

    References
    ----------
    Loshchilov, Hutter (2016), "SGDR: Stochastic Gradient Descent with Warm Restarts",
    arXiv:1608.03983.
    """

    name = "cosine_restarts"

    def __init__(
        self, lr: float, first_cycle_steps: int, cycle_mult: int = 1, end_lr: float = 0.0
    ) -> None:
        self.lr = check_rate("lr", lr)
        self.first_cycle_steps = check_steps("first_cycle_steps", first_cycle_steps)
        self.cycle_mult = check_steps("cycle_mult", cycle_mult)
        self.end_lr = check_rate("end_lr", end_lr)

    def _params(self):
        return {
            "lr": self.lr,
            "first_cycle_steps": self.first_cycle_steps,
            "cycle_mult": self.cycle_mult,
            "end_lr": self.end_lr,
        }

    def _cycle_start(self, n):
        m = self.cycle_mult
        return self.first_cycle_steps * (ops.power(float(m), n) - 1.0) / (m - 1.0)

    def _values(self, t):
        t0, m = float(self.first_cycle_steps), self.cycle_mult
        if m > 1 and isinstance(t, float):  # the same steps as below, without array dispatch
            n = math.floor(math.log(t / t0 * (m - 1.0) + 1.0) / math.log(m))
            start = t0 * (m**n - 1.0) / (m - 1.0)
            if t < start:
                n, start = n - 1, t0 * (m ** (n - 1) - 1.0) / (m - 1.0)
            elif t >= t0 * (m ** (n + 1) - 1.0) / (m - 1.0):
                n, start = n + 1, t0 * (m ** (n + 1) - 1.0) / (m - 1.0)
            return _half_cosine(self.lr, self.end_lr, (t - start) / (t0 * float(m) ** n))
        if m == 1:
            n = ops.floor(t / t0)
            t_cycle, length = t - n * t0, t0
        else:
            n = ops.floor(ops.log(t / t0 * (m - 1.0) + 1.0) / math.log(m))
            # correct the rounding of the logarithm at cycle boundaries
            n = ops.where(t < self._cycle_start(n), n - 1.0, n)
            n = ops.where(t >= self._cycle_start(n + 1.0), n + 1.0, n)
            t_cycle, length = t - self._cycle_start(n), t0 * ops.power(float(m), n)
        return _half_cosine(self.lr, self.end_lr, t_cycle / length)


class OneCycle(Schedule):
    r"""The one-cycle policy's learning rate (torch ``OneCycleLR``).

    From ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of
    ``total_steps``, then down to ``max_lr / div_factor / final_div_factor`` at step
    ``total_steps - 1``; with ``three_phase`` it first comes back down to the initial rate
    symmetrically and then falls to the minimum. ``anneal`` is ``"cos"`` or ``"linear"``.
    Phase boundaries are torch's (``pct_start * total_steps - 1``, ...). After
    ``total_steps - 1`` the minimum rate holds (torch raises an error there).

    References
    ----------
    Smith, Topin (2017), "Super-Convergence", arXiv:1708.07120.
    """

    name = "one_cycle"

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal: str = "cos",
        three_phase: bool = False,
    ) -> None:
        self.max_lr = check_rate("max_lr", max_lr)
        self.total_steps = check_steps("total_steps", total_steps, minimum=2)
        self.pct_start = check_number(
            "pct_start", pct_start, "0 < pct_start < 1", lambda v: 0 < v < 1
        )
        self.div_factor = check_number("div_factor", div_factor, "0 < div_factor", lambda v: v > 0)
        self.final_div_factor = check_number(
            "final_div_factor", final_div_factor, "0 < final_div_factor", lambda v: v > 0
        )
        if anneal not in ("cos", "linear"):
            raise ValueError(f"Invalid anneal: {anneal!r} (expected 'cos' or 'linear')")
        self.anneal = anneal
        if not isinstance(three_phase, bool):
            raise TypeError(f"Invalid three_phase: {three_phase!r} (expected True or False)")
        self.three_phase = three_phase
        initial = self.max_lr / self.div_factor
        minimum = initial / self.final_div_factor
        up_end = self.pct_start * self.total_steps - 1.0
        last = float(self.total_steps - 1)
        if three_phase:
            self._phases = [
                (up_end, initial, self.max_lr),
                (2.0 * self.pct_start * self.total_steps - 2.0, self.max_lr, initial),
                (last, initial, minimum),
            ]
        else:
            self._phases = [(up_end, initial, self.max_lr), (last, self.max_lr, minimum)]
        ends = [end for end, _, _ in self._phases]
        self._begins = [0.0] + ends[:-1]
        if any(b <= a for a, b in zip([0.0] + ends, ends)):
            raise ValueError(
                f"one_cycle phases are empty with total_steps={self.total_steps} "
                f"and pct_start={self.pct_start}: each phase needs at least one step"
            )

    def _params(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
            "three_phase": self.three_phase,
        }

    def _anneal(self, start, end, fraction):
        if self.anneal == "cos":
            return _half_cosine(start, end, fraction)
        return (end - start) * fraction + start

    def _values(self, t):
        t = ops.minimum(t, float(self.total_steps - 1))
        begins = self._begins
        if isinstance(t, float):
            for (end, start_lr, end_lr), begin in zip(self._phases, begins):
                if t <= end or end == self._phases[-1][0]:
                    return self._anneal(start_lr, end_lr, (t - begin) / (end - begin))
        values = [
            self._anneal(start_lr, end_lr, (t - begin) / (end - begin))
            for (end, start_lr, end_lr), begin in zip(self._phases, begins)
        ]
        result = values[-1]
        for (end, _, _), value in zip(self._phases[-2::-1], values[-2::-1]):
            result = ops.where(t <= end, value, result)  # the first phase with t <= end
        return result


cosine_decay = CosineDecay
cosine_restarts = CosineRestarts
one_cycle = OneCycle
