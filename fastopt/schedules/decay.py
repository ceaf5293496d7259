"""Constant, step, multistep, piecewise-constant, exponential, inverse-time and polynomial
decay: closed forms of the step count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from . import _ops as ops
from ._base import Schedule, check_increasing, check_number, check_rate, check_steps


class Constant(Schedule):
    """``lr`` at every step."""

    name = "constant"

    def __init__(self, lr: float) -> None:
        self.lr = check_rate("lr", lr)

    def _params(self):
        return {"lr": self.lr}

    def _values(self, t):
        return t * 0.0 + self.lr


class StepDecay(Schedule):
    r"""Multiply by ``gamma`` every ``step_size`` steps (torch ``StepLR``).

    .. math:: \text{lr}_t = \text{lr}\cdot\gamma^{\lfloor t / \text{step\_size}\rfloor}
    """

    name = "step_decay"

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.lr = check_rate("lr", lr)
        self.step_size = check_steps("step_size", step_size)
        self.gamma = check_number("gamma", gamma, "0 < gamma <= 1", lambda v: 0 < v <= 1)

    def _params(self):
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}

    def _values(self, t):
        return self.lr * ops.power(self.gamma, ops.floor(t / self.step_size))


class MultistepDecay(Schedule):
    r"""Multiply by ``gamma`` at each milestone (torch ``MultiStepLR``).

    .. math:: \text{lr}_t = \text{lr}\cdot\gamma^{\#\{m \in \text{milestones} : m \le t\}}
    """

    name = "multistep_decay"

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float = 0.1) -> None:
        self.lr = check_rate("lr", lr)
        self.milestones = check_increasing("milestones", milestones, minimum=1)
        self.gamma = check_number("gamma", gamma, "0 < gamma", lambda v: v > 0)

    def _params(self):
        return {"lr": self.lr, "milestones": list(self.milestones), "gamma": self.gamma}

    def _values(self, t):
        return self.lr * ops.power(self.gamma, ops.count_le(self.milestones, t))


class PiecewiseConstant(Schedule):
    """``values[i]`` on ``[boundaries[i-1], boundaries[i])``; ``values[0]`` before the first
    boundary and ``values[-1]`` from the last one on.

    Notes
    -----
    Keras' ``PiecewiseConstantDecay`` includes the right edge (``values[i]`` for
    ``boundaries[i-1] < t <= boundaries[i]``), one step later than here; optax's
    ``piecewise_constant_schedule`` takes *multiplicative* scales, not values.
    """

    name = "piecewise_constant"

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        self.boundaries = check_increasing("boundaries", boundaries, minimum=1)
        try:
            values = list(values)
        except TypeError:
            raise TypeError(f"Invalid values: {values!r} (expected a list of rates)") from None
        if len(values) != len(self.boundaries) + 1:
            raise ValueError(
                f"piecewise_constant needs one more value than boundaries: got "
                f"{len(values)} values for {len(self.boundaries)} boundaries"
            )
        self.values = [check_rate("value", v) for v in values]

    def _params(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values)}

    def _values(self, t):
        return ops.take(self.values, ops.count_le(self.boundaries, t))


class ExponentialDecay(Schedule):
    r"""Continuous (or staircase) exponential decay, optionally clipped at ``end_lr``.

    .. math:: \text{lr}_t = \text{lr}\cdot r^{t / \text{decay\_steps}}

    with the exponent floored when ``staircase``. ``end_lr`` is a floor when
    ``decay_rate < 1`` and a ceiling when ``decay_rate > 1`` (a growing schedule needs
    one). torch ``ExponentialLR(gamma)`` is ``exponential_decay(lr, gamma)``; Keras
    ``ExponentialDecay`` and optax ``exponential_decay`` use the same formula (optax's
    ``transition_steps`` is ``decay_steps``).
    """

    name = "exponential_decay"

    def __init__(
        self,
        lr: float,
        decay_rate: float,
        decay_steps: int = 1,
        staircase: bool = False,
        end_lr: float | None = None,
    ) -> None:
        self.lr = check_rate("lr", lr)
        self.decay_rate = check_number("decay_rate", decay_rate, "0 < decay_rate", lambda v: v > 0)
        self.decay_steps = check_steps("decay_steps", decay_steps)
        if not isinstance(staircase, bool):
            raise TypeError(f"Invalid staircase: {staircase!r} (expected True or False)")
        self.staircase = staircase
        self.end_lr = None if end_lr is None else check_rate("end_lr", end_lr)
        if self.decay_rate > 1 and self.end_lr is None:
            raise ValueError(
                f"Invalid end_lr: None (a growing exponential, decay_rate="
                f"{self.decay_rate}, needs end_lr as its ceiling)"
            )
        # past this exponent a growing schedule is at its ceiling: stop before overflowing
        self._max_exponent = math.inf
        if self.decay_rate > 1:
            self._max_exponent = (
                0.0
                if self.lr == 0
                else math.log(max(self.end_lr / self.lr, 1.0), self.decay_rate) + 1
            )

    def _params(self):
        return {
            "lr": self.lr,
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
            "staircase": self.staircase,
            "end_lr": self.end_lr,
        }

    def _values(self, t):
        exponent = t / self.decay_steps
        if self.staircase:
            exponent = ops.floor(exponent)
        exponent = ops.minimum(exponent, self._max_exponent)
        value = self.lr * ops.power(self.decay_rate, exponent)
        if self.end_lr is None:
            return value
        if self.decay_rate < 1:
            return ops.maximum(value, self.end_lr)
        return ops.minimum(value, self.end_lr)


class InverseTimeDecay(Schedule):
    r"""Inverse-time decay (Keras ``InverseTimeDecay``).

    .. math:: \text{lr}_t = \frac{\text{lr}}{1 + r\, t / \text{decay\_steps}}

    with :math:`t / \text{decay\_steps}` floored when ``staircase``. Adagrad's
    ``lr_decay`` is this schedule with ``decay_steps=1``, applied from update 1.
    """

    name = "inverse_time_decay"

    def __init__(
        self, lr: float, decay_rate: float, decay_steps: int = 1, staircase: bool = False
    ) -> None:
        self.lr = check_rate("lr", lr)
        self.decay_rate = check_number(
            "decay_rate", decay_rate, "0 <= decay_rate", lambda v: v >= 0
        )
        self.decay_steps = check_steps("decay_steps", decay_steps)
        if not isinstance(staircase, bool):
            raise TypeError(f"Invalid staircase: {staircase!r} (expected True or False)")
        self.staircase = staircase

    def _params(self):
        return {
            "lr": self.lr,
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
            "staircase": self.staircase,
        }

    def _values(self, t):
        p = t / self.decay_steps
        if self.staircase:
            p = ops.floor(p)
        return self.lr / (1.0 + self.decay_rate * p)


class PolynomialDecay(Schedule):
    r"""Polynomial decay from ``lr`` to ``end_lr`` (Keras ``PolynomialDecay``).

    .. math:: \text{lr}_t = (\text{lr} - \text{end\_lr})
        \left(1 - \frac{\min(t, D)}{D}\right)^{p} + \text{end\_lr}

    with :math:`D` = ``decay_steps`` and :math:`p` = ``power``. With ``cycle=True`` the
    decay restarts with a longer horizon instead of staying at ``end_lr``:
    :math:`D \leftarrow D \lceil t / D \rceil` (:math:`D` at :math:`t = 0`) and :math:`t` is
    not clipped. torch ``PolynomialLR(total_iters, power)`` is ``end_lr=0`` (torch's
    default ``total_iters`` is 5); optax's ``polynomial_schedule`` has no ``cycle``.
    """

    name = "polynomial_decay"

    def __init__(
        self,
        lr: float,
        decay_steps: int,
        end_lr: float = 0.0,
        power: float = 1.0,
        cycle: bool = False,
    ) -> None:
        self.lr = check_rate("lr", lr)
        self.decay_steps = check_steps("decay_steps", decay_steps)
        self.end_lr = check_rate("end_lr", end_lr)
        self.power = check_number("power", power, "0 < power", lambda v: v > 0)
        if not isinstance(cycle, bool):
            raise TypeError(f"Invalid cycle: {cycle!r} (expected True or False)")
        self.cycle = cycle

    def _params(self):
        return {
            "lr": self.lr,
            "decay_steps": self.decay_steps,
            "end_lr": self.end_lr,
            "power": self.power,
            "cycle": self.cycle,
        }

    def _values(self, t):
        horizon = float(self.decay_steps)
        if self.cycle:
            horizon = horizon * ops.maximum(ops.ceil(t / horizon), 1.0)
        else:
            t = ops.minimum(t, horizon)
        fraction = 1.0 - t / horizon
        return (self.lr - self.end_lr) * ops.power(fraction, self.power) + self.end_lr


constant = Constant
step_decay = StepDecay
multistep_decay = MultistepDecay
piecewise_constant = PiecewiseConstant
exponential_decay = ExponentialDecay
inverse_time_decay = InverseTimeDecay
polynomial_decay = PolynomialDecay
