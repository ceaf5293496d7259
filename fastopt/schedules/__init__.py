"""Learning-rate schedules: pure, closed-form functions ``step -> lr``.

``t`` is the number of updates already applied (the first update uses ``schedule(0)``),
which equals torch's scheduler lr after ``t`` calls to ``scheduler.step()``. Schedules
accept an int or an integer array, have a readable ``repr``, round-trip through
``to_dict()`` / :func:`from_dict` and pickle.
"""

from ._base import Schedule, from_dict
from .compose import join, linear_warmup, warmup, warmup_cosine_decay
from .cosine import cosine_decay, cosine_restarts, one_cycle
from .decay import (
    constant,
    exponential_decay,
    inverse_time_decay,
    multistep_decay,
    piecewise_constant,
    polynomial_decay,
    step_decay,
)
from .plateau import reduce_on_plateau
from .plot import plot_schedule
from .scaling import scale_lr

__all__ = [
    "Schedule",
    "from_dict",
    "constant",
    "step_decay",
    "multistep_decay",
    "piecewise_constant",
    "exponential_decay",
    "inverse_time_decay",
    "polynomial_decay",
    "cosine_decay",
    "cosine_restarts",
    "one_cycle",
    "linear_warmup",
    "warmup",
    "warmup_cosine_decay",
    "join",
    "reduce_on_plateau",
    "scale_lr",
    "plot_schedule",
]
