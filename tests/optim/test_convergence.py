"""Every optimizer trains a real network (the bundled UCI digits) and solves a real problem."""

import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt.cli import demo


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", sorted(demo.OPTIMIZERS))
def test_trains_the_digits_network(optimizer, dtype):
    result = demo.train(optimizer, epochs=8, dtype=dtype, verbose=False)
    costs = result["costs"]
    assert costs[-1] < 0.25 * costs[0]
    assert result["test_accuracy"] >= 0.93


def test_untrained_network_is_at_chance_level():
    result = demo.train("adam", lr=0.0, epochs=1, verbose=False)
    assert result["test_accuracy"] < 0.3


@pytest.mark.parametrize(
    "name, options",
    [
        ("SGD", {"lr": 0.1, "momentum": 0.5}),
        ("Adagrad", {"lr": 0.5}),
        ("RMSprop", {"lr": 0.01, "centered": True}),
        ("Adam", {"lr": 0.05}),
        ("AdamW", {"lr": 0.05}),
    ],
)
def test_least_squares_and_maximize(name, options, rng):
    a = rng.standard_normal((50, 8))
    x_true = rng.standard_normal(8)
    b = a @ x_true
    for maximize in (False, True):
        x = np.zeros(8)
        opt = getattr(fastopt, name)(x, maximize=maximize, **options)
        sign = -1.0 if maximize else 1.0  # maximize -|ax-b|^2 / 2
        for _ in range(600):
            opt.step(sign * a.T @ (a @ x - b) / len(b))
        tol = 0.02 if name == "AdamW" else 1e-3  # AdamW's decay pulls x towards 0
        np.testing.assert_allclose(x, x_true, atol=tol * 10, rtol=tol)


def test_demo_command_prints_costs_and_accuracy():
    out = subprocess.run(
        [sys.executable, "-m", "fastopt", "demo", "--optimizer", "sgd", "--epochs", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("digits: 1348 train / 449 test images")
    assert [line.split()[:2] for line in lines[1:4]] == [
        ["epoch", "1"],
        ["epoch", "2"],
        ["epoch", "3"],
    ]
    assert lines[-1].startswith("final: train accuracy")
    assert float(lines[-1].split("test accuracy ")[1].split(",")[0]) > 0.9
