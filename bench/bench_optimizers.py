"""Step time of every optimizer, and of the same update in NumPy and torch, for asv.

One asv run shows the ratios: compare ``StepFastopt``, ``StepNumpy`` and ``StepTorch`` at
the same parameters (ratios between asv's separate processes are only indicative: for
same-process ratios use ``python -m fastopt bench``).
"""

import numpy as np

import fastopt
from fastopt.cli import bench as benchmark

from .common import CONFIGS, data, grid, import_torch, sizes

NAMES = list(CONFIGS)
DTYPES = ["float32", "float64"]
TORCH_NAMES = grid(NAMES, ["sgd_momentum", "rmsprop", "adam"])
TORCH_DTYPES = grid(DTYPES, ["float32"])


class StepFastopt:
    params = (NAMES, sizes(1e3, 1e5, 1e7), DTYPES)
    param_names = ["optimizer", "size", "dtype"]
    timer = __import__("timeit").default_timer

    def setup(self, name, size, dtype):
        p, self.g = data(size, dtype)
        self.step = benchmark.fastopt_stepper(name, p, self.g)
        self.step()  # compile (or load from the cache) and warm up

    def time_step(self, name, size, dtype):
        self.step()


class StepPrecision:
    """The compact-state steps (``state_precision``) of the memory-bound optimizers, with
    their full-precision step in the same grid for the ratio.
    """

    params = (
        grid(["sgd_momentum", "adagrad", "rmsprop", "adam", "adamw"], ["adam"]),
        sizes(1e5, 1e7),
        ["full", "bfloat16", "8bit"],
    )
    param_names = ["optimizer", "size", "state_precision"]

    def setup(self, name, size, precision):
        p, self.g = data(size, "float32")
        self.step = benchmark.fastopt_stepper(name, p, self.g, precision)
        self.step()

    def time_step(self, name, size, precision):
        self.step()


class StepNumpy:
    params = (NAMES, sizes(1e3, 1e5, 1e7), DTYPES)
    param_names = ["optimizer", "size", "dtype"]

    def setup(self, name, size, dtype):
        p, g = data(size, dtype)
        self.step = benchmark.numpy_stepper(name, p, g)
        self.step()

    def time_step(self, name, size, dtype):
        self.step()


class StepTorch:
    params = (TORCH_NAMES, sizes(1e3, 1e5, 1e7), TORCH_DTYPES, ["fused", "foreach"])
    param_names = ["optimizer", "size", "dtype", "mode"]

    def setup(self, name, size, dtype, mode):
        torch = import_torch()
        if torch is None:
            raise NotImplementedError("torch is not installed")
        torch.set_num_threads(fastopt.get_num_threads())
        p, g = data(size, dtype)
        self.step = benchmark.torch_stepper(torch, name, p, g, mode)
        if self.step is None:
            raise NotImplementedError(f"torch has no {mode} {CONFIGS[name][0]}")
        self.step()

    def time_step(self, name, size, dtype, mode):
        self.step()


class StepOptions:
    """Adam with global-norm clipping, the non-finite skip, and parameter groups."""

    params = (
        grid(["plain", "clip", "skip_nonfinite", "clip+skip", "groups3"], ["clip+skip", "groups3"]),
        sizes(1e5, 1e7),
    )
    param_names = ["variant", "size"]

    def setup(self, variant, size):
        p, g = data(size, np.float32)
        options = {
            "clip": {"max_grad_norm": 1.0},
            "skip_nonfinite": {"skip_nonfinite": True},
            "clip+skip": {"max_grad_norm": 1.0, "skip_nonfinite": True},
            "groups3": {
                "param_groups": [
                    {"params": slice(0, size // 3), "weight_decay": 0.0},
                    {"params": slice(size // 3, 2 * size // 3), "lr_scale": 0.1},
                ]
            },
        }.get(variant, {})
        self.opt, self.g = fastopt.Adam(p, lr=1e-3, **options), g
        self.opt.step(g)

    def time_step(self, variant, size):
        self.opt.step(self.g)


class Schedule:
    """A step driven by a schedule: the host-side cost of evaluating it."""

    params = (["constant", "warmup_cosine_decay", "one_cycle", "cosine_restarts"],)
    param_names = ["schedule"]

    def setup(self, name):
        S = fastopt.schedules
        self.schedule = {
            "constant": S.constant(1e-3),
            "warmup_cosine_decay": S.warmup_cosine_decay(1e-3, 100, 10_000),
            "one_cycle": S.one_cycle(1e-3, 10_000),
            "cosine_restarts": S.cosine_restarts(1e-3, 100, 2),
        }[name]
        p, self.g = data(1000, np.float32)
        self.opt = fastopt.Adam(p, lr=self.schedule)
        self.opt.step(self.g)

    def time_step_1k_params(self, name):
        self.opt.step(self.g)

    def track_evaluation_us(self, name):
        import timeit

        n = 20_000
        return timeit.timeit(lambda: self.schedule(5000), number=n) / n * 1e6

    track_evaluation_us.unit = "microseconds"
