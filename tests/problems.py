"""Small problems with known answers for the learning-rate tools' tests."""

import numpy as np

import fastopt


def quadratic(dim, top_curvature, dtype, seed=0):
    """f(x) = sum(lam * x^2) / 2 with curvatures from L/50 to L (L included)."""
    rng = np.random.default_rng(seed)
    lam = (
        np.geomspace(top_curvature / 50, top_curvature, dim)
        if dim > 1
        else np.array([top_curvature])
    )
    lam = lam.astype(dtype)
    x0 = rng.standard_normal(dim).astype(dtype) + dtype(0.5)

    def loss_grad(x, grad):
        np.multiply(lam, x, out=grad)
        return 0.5 * float(np.dot(grad, x))

    return x0, loss_grad


def logistic_problem(dtype=np.float64):
    images, labels = fastopt.datasets.load_digits()
    x = ((images - images.mean(0)) / (images.std(0) + 1.0)).astype(dtype)
    y = (labels >= 5).astype(dtype)

    def loss_grad(w, grad):
        z = x @ w[:-1] + w[-1]
        p = np.exp(-np.logaddexp(0, -z))  # sigmoid without overflow
        loss = np.mean(np.logaddexp(0, z) - y * z)
        r = (p - y) / len(y)
        grad[:-1] = x.T @ r
        grad[-1] = r.sum()
        return float(loss)

    return np.zeros(x.shape[1] + 1, dtype), loss_grad
