"""The user's problem as the learning-rate tools see it: parameters, a gradient buffer,
``loss_grad`` and optional batches, with a snapshot that is always restored."""
import math

import numpy as np

from ._validation import check_buffer
from .buffers import FlatParams


class Problem:
    """``loss_grad(params, grad[, batch])`` returns the cost at ``params`` and writes the
    gradient into ``grad``. For a FlatParams, ``params`` is the FlatParams and ``grad`` its
    flat gradient buffer (the ``grads`` views write into it); for an array, ``grad`` is an
    array of the same shape."""

    def __init__(self, loss_grad, params, batches=None):
        if not callable(loss_grad):
            raise TypeError(f"loss_grad must be callable, got {type(loss_grad).__name__}")
        if isinstance(params, FlatParams):
            self.params, self.data, self.grad = params, params.data, params.grad
        elif isinstance(params, np.ndarray):
            check_buffer("params", params)
            if params.ndim != 1:
                raise ValueError(f"params must be a 1-D array (or a FlatParams), got shape "
                                 f"{params.shape}")
            self.params, self.data = params, params
            self.grad = np.zeros_like(params)
        else:
            raise TypeError("params must be a fastopt.FlatParams or a 1-D numpy array, got "
                            f"{type(params).__name__}")
        self.loss_grad = loss_grad
        if batches is not None and not (callable(batches) or hasattr(batches, "__len__")):
            raise TypeError("batches must be a sequence (used in the same order by every run) or "
                            "a callable returning a fresh iterator; a one-shot iterator cannot be "
                            "replayed for each learning rate")
        self.batches = batches
        self._saved = (self.data.copy(), self.grad.copy())

    def restore(self):
        """Put the parameters (and a FlatParams' gradient buffer) back bit for bit."""
        np.copyto(self.data, self._saved[0])
        np.copyto(self.grad, self._saved[1])

    def batch_stream(self):
        """A fresh iterator over the batches (None for full-batch problems)."""
        if self.batches is None:
            return None
        return iter(self.batches()) if callable(self.batches) else iter(self.batches)

    def cost(self, stream):
        """Evaluate ``loss_grad`` at the current parameters (on the next batch)."""
        self.grad.fill(0)
        if stream is None:
            value = self.loss_grad(self.params, self.grad)
        else:
            try:
                batch = next(stream)
            except StopIteration:
                raise ValueError("batches ran out before the run ended: give at least "
                                 "iterations + 1 batches") from None
            value = self.loss_grad(self.params, self.grad, batch)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"loss_grad must return the cost as a number, got {value!r}") from None

    def make_step(self, optimizer, lr, options):
        """A fresh optimizer's step on these parameters and this gradient buffer."""
        opt = optimizer(self.params, lr=lr, **options)
        if isinstance(self.params, FlatParams):
            return opt.step
        return lambda: opt.step(self.grad)


def diverged(cost, start, factor):
    """Non-finite, or above ``factor`` times the start (for a start <= 0: start plus
    (factor - 1) times its magnitude)."""
    if not math.isfinite(cost):
        return True
    return cost > start + (factor - 1.0) * abs(start)
