"""Optimizers x option sets used across the tests (torch.optim's own test configurations)."""

import numpy as np

import fastopt

CONFIGS = {
    "SGD": [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "dampening": 0.5},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.9, "weight_decay": 0.1},
        {"weight_decay": 0.1, "maximize": True},
    ],
    "Adagrad": [
        {},
        {"lr_decay": 0.05},
        {"weight_decay": 0.1},
        {"initial_accumulator_value": 0.1, "eps": 1e-6},
        {"maximize": True, "lr_decay": 0.01},
    ],
    "RMSprop": [
        {},
        {"centered": True},
        {"momentum": 0.9},
        {"centered": True, "momentum": 0.5, "weight_decay": 0.1},
        {"alpha": 0.3, "centered": True},
        {"maximize": True, "eps": 1e-4},
    ],
    "Adam": [
        {},
        {"amsgrad": True},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"betas": (0.3, 0.9), "maximize": True},
        {"amsgrad": True, "weight_decay": 0.05, "eps": 1e-6},
    ],
    "AdamW": [
        {},
        {"amsgrad": True, "weight_decay": 0.3},
    ],
}

CASES = [(name, options) for name, configs in CONFIGS.items() for options in configs]
CASE_IDS = [f"{name}-{i}" for name, configs in CONFIGS.items() for i in range(len(configs))]
DTYPES = [np.float32, np.float64]


def make(name, params, **options):
    return getattr(fastopt, name)(params, **options)


def lr_schedule(t):
    """A learning rate that changes every step (and is not a round number)."""
    return 0.01 * (1.0 + 0.5 * np.sin(0.7 * t)) / (1.0 + 0.05 * t)


def gradients(rng, size, dtype, steps):
    """Random gradients whose scale changes from step to step; the first elements get a
    large alternating gradient, a tiny growing one and an exact zero.
    """
    grads = rng.standard_normal((steps, size)) * rng.choice([0.01, 1.0, 30.0], size=(steps, 1))
    t = np.arange(steps)
    special = [500.0 * (-1.0) ** t, 1e-3 * (t + 1), 0.0 * t]
    for column, values in enumerate(special[:size]):
        grads[:, column] = values
    return grads.astype(dtype)


QUADRATIC_STATE = {"sum", "square_avg", "exp_avg_sq", "max_exp_avg_sq"}


def assert_close_to_torch(actual, desired, grad_scale, name, rtol_ulps=16, atol_ulps=8):
    """Elementwise |actual - desired| <= rtol*|desired| + atol_i.

    torch's vectorised CPU loops use fused multiply-adds (lerp, add with alpha), so both
    sides round differently: by a few ulp of the quantities involved. ``atol_i`` is
    ``atol_ulps`` ulp of the element's largest gradient magnitude (squared for the
    second-moment buffers), so tiny values next to large gradients are judged on the
    scale their rounding happened at.
    """
    eps = np.finfo(actual.dtype).eps
    scale = grad_scale**2 if name in QUADRATIC_STATE else grad_scale
    limit = rtol_ulps * eps * np.abs(desired) + atol_ulps * eps * scale
    diff = np.abs(actual.astype(np.float64) - desired)
    same_nan = np.isnan(actual) == np.isnan(desired)
    bad = ~(diff <= limit) & ~(np.isnan(actual) & np.isnan(desired))
    assert same_nan.all() and not bad.any(), (
        f"{name}: {bad.sum()} of {actual.size} elements differ beyond tolerance; worst "
        f"index {np.argmax(np.where(bad, diff / limit, 0))}, "
        f"max diff/limit {np.nanmax(diff / limit):.3g}"
    )
