"""The problem shared by the MPI scripts and the single-process reference in the tests."""

from typing import NamedTuple

import numpy as np

import fastopt

STEPS = 12


class Case(NamedTuple):
    """An optimizer, its options and the problem's number of features (``dim``)."""

    name: str
    options: dict
    dim: int = 37


# 8-bit state needs at least blockwise.MIN_SIZE (4096) parameters: those cases fit 5000
# features, with a third parameter group (slice(1, 1301)) so that no group boundary is a
# multiple of the 256-element block
WIDE = 5000
CASES = [
    Case("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    Case("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    Case("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    Case("Adam", {"lr": 0.05, "amsgrad": True, "max_grad_norm": 1.0}),
    Case("AdamW", {"lr": 0.05, "skip_nonfinite": True}),
    Case(
        "Adam", {"lr": 0.05, "amsgrad": True, "max_grad_norm": 1.0, "state_precision": "bfloat16"}
    ),  # fmt: skip
    Case(
        "RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "state_precision": "bfloat16"}
    ),  # fmt: skip
    Case(
        "Adam", {"lr": 0.01, "amsgrad": True, "max_grad_norm": 1.0, "state_precision": "8bit"}, WIDE
    ),  # fmt: skip
    Case("AdamW", {"lr": 0.01, "skip_nonfinite": True, "state_precision": "8bit"}, WIDE),
    Case(
        "SGD", {"lr": 0.002, "momentum": 0.9, "weight_decay": 0.01, "state_precision": "8bit"}, WIDE
    ),  # fmt: skip
    Case("Adagrad", {"lr": 0.05, "lr_decay": 0.01, "state_precision": "8bit"}, WIDE),
]
EIGHT_BIT = [i for i, case in enumerate(CASES) if case.options.get("state_precision") == "8bit"]


def global_batch(step, size=96, dim=37):
    rng = np.random.default_rng(step)
    x = rng.standard_normal((size, dim))
    y = x @ np.linspace(-1, 1, dim) + 0.5 + 0.1 * rng.standard_normal(size)
    return x, y


def make_optimizer(case):
    name, options, dim = case
    rng = np.random.default_rng(100)
    fp = fastopt.FlatParams(
        {"w": rng.standard_normal(dim), "b": np.zeros(1)}, groups={"bias": ["b"]}
    )
    groups = [{"params": "bias", "weight_decay": 0.0}]
    if name == "RMSprop":
        groups = [{"params": "bias", "lr_scale": 0.5}]
    if dim == WIDE:
        groups.append({"params": slice(1, 1301), "lr_scale": 0.5})
    return fp, getattr(fastopt, name)(fp, param_groups=groups, **options)


def gradient(fp, x, y):
    """The mean squared-error gradient of the linear model on ``(x, y)`` into ``fp.grad``."""
    w = fp.data
    r = x @ w[:-1] + w[-1] - y
    fp.grad[:-1] = x.T @ r / len(y)
    fp.grad[-1] = r.mean()
