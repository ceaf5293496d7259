"""The problem shared by the MPI scripts and the single-process reference in the tests."""

import numpy as np

import fastopt

STEPS = 12
CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ("Adam", {"lr": 0.05, "amsgrad": True, "max_grad_norm": 1.0}),
    ("AdamW", {"lr": 0.05, "skip_nonfinite": True}),
]


def global_batch(step, size=96, dim=37):
    rng = np.random.default_rng(step)
    x = rng.standard_normal((size, dim))
    y = x @ np.linspace(-1, 1, dim) + 0.5 + 0.1 * rng.standard_normal(size)
    return x, y


def make_optimizer(name, options):
    rng = np.random.default_rng(100)
    fp = fastopt.FlatParams(
        {"w": rng.standard_normal(37), "b": np.zeros(1)}, groups={"bias": ["b"]}
    )
    groups = [{"params": "bias", "weight_decay": 0.0}]
    if name == "RMSprop":
        groups = [{"params": "bias", "lr_scale": 0.5}]
    return fp, getattr(fastopt, name)(fp, param_groups=groups, **options)
