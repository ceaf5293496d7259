"""reduce_on_plateau: the one stateful schedule, fed the cost."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._json import json_number
from ._base import Schedule, check_number, check_rate, check_steps


class ReduceOnPlateau(Schedule):
    """Lower the learning rate when the cost stops improving (torch ``ReduceLROnPlateau``).

    Call :meth:`step` with the cost (typically once per epoch); calling the schedule
    returns the current rate, whatever the step. When ``patience`` consecutive costs fail
    to improve on the best one (by ``threshold``, relative or absolute), the rate is
    multiplied by ``factor`` (not below ``min_lr``; changes smaller than ``eps`` are
    skipped) and ``cooldown`` costs are ignored before counting again.

    Parameters
    ----------
    lr : float
    mode : {"min", "max"}
        Whether the cost should go down or (a score) up.
    factor : float, default 0.1
        In (0, 1).
    patience : int, default 10
    threshold : float, default 1e-4
    threshold_mode : {"rel", "abs"}
    cooldown : int, default 0
    min_lr : float, default 0
    eps : float, default 1e-8

    Notes
    -----
    Unlike every other schedule here, its value depends on the costs it was fed, so it
    cannot be joined or wrapped; save :meth:`state_dict` with your checkpoint (also part
    of :meth:`to_dict`). In :meth:`to_dict` the state is strict JSON: ``best`` starts at
    an infinity, written as the string ``"inf"`` or ``"-inf"`` (a NaN as None), which
    :meth:`load_state_dict` and ``fastopt.schedules.from_dict`` read back.
    """

    name = "reduce_on_plateau"
    stateful = True

    def __init__(
        self,
        lr: float,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        self.lr = check_rate("lr", lr)
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid mode: {mode!r} (expected 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"Invalid threshold_mode: {threshold_mode!r} (expected 'rel' or 'abs')"
            )
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = check_number("factor", factor, "0 < factor < 1", lambda v: 0 < v < 1)
        self.patience = check_steps("patience", patience, minimum=0)
        self.threshold = check_number("threshold", threshold, "0 <= threshold", lambda v: v >= 0)
        self.cooldown = check_steps("cooldown", cooldown, minimum=0)
        self.min_lr = check_rate("min_lr", min_lr)
        self.eps = check_number("eps", eps, "0 <= eps", lambda v: v >= 0)
        self.reset()

    def reset(self) -> None:
        """Back to the initial rate and a fresh history."""
        self.current_lr = self.lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_steps = 0
        self.cooldown_counter = 0
        self.num_steps = 0

    def _params(self):
        return {
            "lr": self.lr,
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "eps": self.eps,
        }

    def _values(self, t):
        return t * 0.0 + self.current_lr

    def _is_better(self, cost):
        if self.mode == "min":
            bound = (
                self.best * (1 - self.threshold)
                if self.threshold_mode == "rel"
                else self.best - self.threshold
            )
            return cost < bound
        bound = (
            self.best * (1 + self.threshold)
            if self.threshold_mode == "rel"
            else self.best + self.threshold
        )
        return cost > bound

    def step(self, cost: float) -> float:
        """Record one cost; returns the learning rate to use from now on."""
        cost = float(cost)
        self.num_steps += 1
        if self._is_better(cost):
            self.best = cost
            self.num_bad_steps = 0
        else:
            self.num_bad_steps += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_steps = 0
        if self.num_bad_steps > self.patience:
            new_lr = max(self.current_lr * self.factor, self.min_lr)
            if self.current_lr - new_lr > self.eps:
                self.current_lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_steps = 0
        return self.current_lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "current_lr": self.current_lr,
            "best": self.best,
            "num_bad_steps": self.num_bad_steps,
            "cooldown_counter": self.cooldown_counter,
            "num_steps": self.num_steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(
                f"reduce_on_plateau state expects keys {sorted(expected)} but got {sorted(state)}"
            )
        self.current_lr = _decoded("current_lr", state["current_lr"])
        self.best = _decoded("best", state["best"])
        for key in ("num_bad_steps", "cooldown_counter", "num_steps"):
            setattr(self, key, int(np.asarray(state[key])))

    def to_dict(self) -> dict[str, Any]:
        """The description and the state, as strict JSON data (see the class notes)."""
        state = self.state_dict()
        state["current_lr"] = json_number(state["current_lr"])
        state["best"] = json_number(state["best"])
        return {**super().to_dict(), "state": state}


_NONFINITE = {"inf": math.inf, "-inf": -math.inf}


def _decoded(name, value):
    """The float :func:`fastopt._json.json_number` wrote (or a number, or a 0-d array as
    np.load gives it).
    """
    if value is None:
        return math.nan
    if isinstance(value, str):
        if value not in _NONFINITE:
            raise ValueError(
                f"Invalid reduce_on_plateau state {name}: {value!r} (expected a number, or "
                "'inf' / '-inf' for an infinity)"
            )
        return _NONFINITE[value]
    return float(np.asarray(value))


reduce_on_plateau = ReduceOnPlateau
