"""fastopt: fused in-place optimizers over flat NumPy parameter buffers."""

from ._threading import preload_tbb as _preload_tbb
from ._threading import preload_torch_openmp as _preload_torch_openmp

_preload_torch_openmp()
_preload_tbb()

from . import functional, schedules  # noqa: E402
from ._threading import get_num_threads, set_num_threads  # noqa: E402
from .buffers import FlatParams  # noqa: E402
from .checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from .cli import datasets  # noqa: E402
from .kernels.precision import from_bfloat16, to_bfloat16  # noqa: E402
from .lr import (  # noqa: E402
    CostEvent,
    CostIncreaseError,
    CostMonitor,
    CostWarning,
    GradCheckError,
    GradCheckResult,
    NonFiniteCostError,
    RangeTestFailed,
    RangeTestResult,
    SweepFailed,
    SweepResult,
    check_grad,
    lr_range_test,
    sweep,
)
from .optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop  # noqa: E402
from .schedules import plot_schedule, scale_lr  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "FlatParams",
    "Optimizer",
    "save_checkpoint",
    "load_checkpoint",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "datasets",
    "functional",
    "schedules",
    "scale_lr",
    "plot_schedule",
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
    "get_num_threads",
    "set_num_threads",
    "to_bfloat16",
    "from_bfloat16",
]
