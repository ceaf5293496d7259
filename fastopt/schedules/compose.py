"""Building schedules from schedules: join, linear warm-up, warm-up in front of any schedule,
and warm-up + cosine decay.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from . import _ops as ops
from ._base import Schedule, check_increasing, check_rate, check_steps
from .cosine import CosineDecay


def _check_schedule(name, schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"Invalid {name}: {schedule!r} (expected a fastopt schedule)")
    if getattr(schedule, "stateful", False):
        raise TypeError(f"Invalid {name}: {schedule.name} is stateful and cannot be composed")
    return schedule


class Join(Schedule):
    """``schedules[i]`` on ``[boundaries[i-1], boundaries[i])``, called with the steps
    since its boundary: ``schedules[i](t - boundaries[i-1])`` (optax ``join_schedules``).

    Examples
    --------
    >>> from fastopt import schedules as S
    >>> s = S.join([S.constant(0.1), S.cosine_decay(0.1, 100)], [10])
    >>> s(10) == S.cosine_decay(0.1, 100)(0)
    True
    """

    name = "join"

    def __init__(self, schedules: Sequence[Schedule], boundaries: Sequence[int]) -> None:
        schedules = list(schedules)
        self.schedules = [_check_schedule("schedule", s) for s in schedules]
        self.boundaries = check_increasing(
            "boundaries", boundaries, minimum=1, allow_empty=len(schedules) == 1
        )
        if len(self.schedules) != len(self.boundaries) + 1:
            raise ValueError(
                f"join needs one more schedule than boundaries: got "
                f"{len(self.schedules)} schedules for {len(self.boundaries)} "
                "boundaries"
            )

    def _params(self):
        return {"schedules": list(self.schedules), "boundaries": list(self.boundaries)}

    def _values(self, t):
        starts = [0] + self.boundaries
        if isinstance(t, float):
            index = bisect.bisect_right(self.boundaries, t)
            return self.schedules[index]._values(t - starts[index])
        result = self.schedules[-1]._values(ops.maximum(t - starts[-1], 0.0))
        for schedule, start, stop in zip(
            self.schedules[-2::-1], starts[-2::-1], self.boundaries[::-1]
        ):
            inner = schedule._values(ops.minimum(ops.maximum(t - start, 0.0), stop - start))
            result = ops.where(t < stop, inner, result)
        return result


class LinearWarmup(Schedule):
    r"""Linear from ``init_lr`` at step 0 to ``lr`` at ``warmup_steps``, then ``lr``.

    .. math:: \text{lr}_t = \text{init\_lr} + (\text{lr} - \text{init\_lr})
        \min(t, W) / W

    torch ``LinearLR(start_factor=init_lr/lr, end_factor=1, total_iters=warmup_steps)``;
    with the linear batch-size scaling rule, warm up to the scaled rate over the first
    few epochs (Goyal et al. 2017).
    """

    name = "linear_warmup"

    def __init__(self, lr: float, warmup_steps: int, init_lr: float = 0.0) -> None:
        self.lr = check_rate("lr", lr)
        self.warmup_steps = check_steps("warmup_steps", warmup_steps)
        self.init_lr = check_rate("init_lr", init_lr)

    def _params(self):
        return {"lr": self.lr, "warmup_steps": self.warmup_steps, "init_lr": self.init_lr}

    def _values(self, t):
        fraction = ops.minimum(t, float(self.warmup_steps)) / self.warmup_steps
        return self.init_lr + (self.lr - self.init_lr) * fraction


class Warmup(Schedule):
    """A linear warm-up from ``init_lr`` to ``schedule(0)`` over ``warmup_steps``, then
    ``schedule`` shifted: step ``t`` uses ``schedule(t - warmup_steps)``.
    """

    name = "warmup"

    def __init__(self, schedule: Schedule, warmup_steps: int, init_lr: float = 0.0) -> None:
        self.schedule = _check_schedule("schedule", schedule)
        self.warmup_steps = check_steps("warmup_steps", warmup_steps)
        self.init_lr = check_rate("init_lr", init_lr)
        self._joined = Join(
            [LinearWarmup(schedule(0), self.warmup_steps, self.init_lr), schedule],
            [self.warmup_steps],
        )

    def _params(self):
        return {
            "schedule": self.schedule,
            "warmup_steps": self.warmup_steps,
            "init_lr": self.init_lr,
        }

    def _values(self, t):
        return self._joined._values(t)


class WarmupCosineDecay(Schedule):
    r"""Linear warm-up to ``peak_lr``, then a half-cosine down to ``end_lr``.

    Steps ``0 .. warmup_steps`` rise linearly from ``init_lr`` to ``peak_lr``; the cosine
    then runs over the remaining ``total_steps - warmup_steps`` steps, reaching ``end_lr``
    at ``total_steps`` and staying there.

    Notes
    -----
    ``total_steps`` *includes* the warm-up, as optax's ``warmup_cosine_decay_schedule``
    ``decay_steps`` does (optax names the end ``end_value`` and the start ``init_value``).
    Keras' ``CosineDecay(warmup_steps=...)`` counts ``decay_steps`` *after* the warm-up, so
    Keras ``decay_steps=D`` is ``total_steps = warmup_steps + D`` here, and Keras gives the
    end as a fraction ``alpha`` of the peak. torch has no single scheduler for this
    (``SequentialLR(LinearLR, CosineAnnealingLR)``).
    """

    name = "warmup_cosine_decay"

    def __init__(
        self,
        peak_lr: float,
        warmup_steps: int,
        total_steps: int,
        init_lr: float = 0.0,
        end_lr: float = 0.0,
    ) -> None:
        self.peak_lr = check_rate("peak_lr", peak_lr)
        self.warmup_steps = check_steps("warmup_steps", warmup_steps, minimum=0)
        self.total_steps = check_steps("total_steps", total_steps)
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"Invalid warmup_steps: {self.warmup_steps} (expected "
                f"warmup_steps <= total_steps = {self.total_steps})"
            )
        self.init_lr = check_rate("init_lr", init_lr)
        self.end_lr = check_rate("end_lr", end_lr)
        parts, boundaries = [], []
        if self.warmup_steps:
            parts.append(LinearWarmup(self.peak_lr, self.warmup_steps, self.init_lr))
            boundaries.append(self.warmup_steps)
        if self.total_steps > self.warmup_steps:
            parts.append(
                CosineDecay(self.peak_lr, self.total_steps - self.warmup_steps, self.end_lr)
            )
        else:
            parts.append(_Fixed(self.end_lr))
        self._joined = Join(parts, boundaries)

    def _params(self):
        return {
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "init_lr": self.init_lr,
            "end_lr": self.end_lr,
        }

    def _values(self, t):
        return self._joined._values(t)


class _Fixed(Schedule):
    name = None

    def __init__(self, lr):
        self.lr = lr

    def _values(self, t):
        return t * 0.0 + self.lr


join = Join
linear_warmup = LinearWarmup
warmup = Warmup
warmup_cosine_decay = WarmupCosineDecay
