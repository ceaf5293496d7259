"""The finite-difference gradient check."""

import numpy as np
import pytest

import fastopt

from problems import quadratic


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_grad_passes_a_correct_gradient_and_catches_bugs(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 12))
    b = rng.standard_normal(30)
    fp = fastopt.FlatParams({"W": rng.standard_normal((3, 4)).astype(dtype)})

    def make(bug):
        def loss_grad(params, grad):
            w = params.data.astype(np.float64)
            r = np.tanh(a @ w) - b
            g = a.T @ (r * (1 - np.tanh(a @ w) ** 2)) / len(b)
            if bug == "sign":
                g[5] = -g[5]
            elif bug == "scale":
                g = 2 * g
            grad[:] = g
            return float(0.5 * np.mean(r**2))

        return loss_grad

    before = fp.data.copy()
    good = fastopt.check_grad(make(None), fp)
    assert good.ok and good.max_rel_error < good.tolerance
    assert len(good.coordinates) == 12
    sign = fastopt.check_grad(make("sign"), fp)
    assert not sign.ok and sign.worst_coordinate == 5 and sign.worst_name == "W[1, 1]"
    assert sign.max_rel_error > 0.5 and "FAILED" in sign.message
    scale = fastopt.check_grad(make("scale"), fp)
    assert not scale.ok and scale.max_rel_error == pytest.approx(0.5, rel=0.05)
    assert fp.data.tobytes() == before.tobytes()


def test_check_grad_samples_large_problems_and_includes_the_largest_entry():
    x0, loss_grad = quadratic(1000, 3.0, np.float64)
    result = fastopt.check_grad(loss_grad, x0, max_coordinates=20)
    assert len(result.coordinates) == 20 and result.ok
    assert int(np.argmax(np.abs(x0 * np.geomspace(3 / 50, 3, 1000)))) in result.coordinates
