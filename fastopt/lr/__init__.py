"""Choosing the learning rate: the sweep, the range test, the cost monitor and the gradient
check, over the problem abstraction they share (:mod:`fastopt.lr.problem`).
"""

from .gradcheck import GradCheckError, GradCheckResult, check_grad
from .monitor import CostEvent, CostIncreaseError, CostMonitor, CostWarning, NonFiniteCostError
from .range_test import RangeTestFailed, RangeTestResult, lr_range_test
from .sweep import SweepFailed, SweepResult, sweep

__all__ = [
    "sweep",
    "SweepResult",
    "SweepFailed",
    "lr_range_test",
    "RangeTestResult",
    "RangeTestFailed",
    "check_grad",
    "GradCheckResult",
    "GradCheckError",
    "CostMonitor",
    "CostEvent",
    "CostWarning",
    "CostIncreaseError",
    "NonFiniteCostError",
]
