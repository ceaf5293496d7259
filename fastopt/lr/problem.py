"""The user's problem as the learning-rate tools see it: parameters, a gradient buffer,
``loss_grad`` and optional batches, with a snapshot that is always restored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..buffers import FlatParams
from ..kernels import backend as backends

if TYPE_CHECKING:
    import numpy as np

    from ..optim.base import Optimizer


class Problem:
    """``loss_grad(params, grad[, batch])`` returns the cost at ``params`` and writes the
    gradient into ``grad``. For a FlatParams, ``params`` is the FlatParams and ``grad`` its
    flat gradient buffer (the ``grads`` views write into it); for an array, ``grad`` is an
    array of the same shape. On the GPU (a FlatParams with ``device="cuda"``, or a 1-D
    device array) both are device arrays and the snapshot is kept on the device.
    """

    def __init__(
        self,
        loss_grad: Callable[..., float],
        params: FlatParams | np.ndarray | Any,
        batches: Sequence[Any] | Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        if not callable(loss_grad):
            raise TypeError(f"loss_grad must be callable, got {type(loss_grad).__name__}")
        if isinstance(params, FlatParams):
            self.params, self.data, self.grad = params, params.data, params.grad
            self.backend = params.backend
        else:
            self.backend = backends.of(params)
            if self.backend is None:
                raise TypeError(
                    "params must be a fastopt.FlatParams or a 1-D numpy or device "
                    f"array, got {type(params).__name__}"
                )
            self.data = self.backend.check_buffer("params", params)
            shape, dtype = self.backend.layout(params)[:2]
            if len(shape) != 1:
                raise ValueError(
                    f"params must be a 1-D array (or a FlatParams), got shape {tuple(shape)}"
                )
            self.params = params
            self.grad = self.backend.full(self.data.size, 0.0, dtype)
        self.loss_grad = loss_grad
        if batches is not None and not (callable(batches) or hasattr(batches, "__len__")):
            raise TypeError(
                "batches must be a sequence (used in the same order by every run) or "
                "a callable returning a fresh iterator; a one-shot iterator cannot be "
                "replayed for each learning rate"
            )
        self.batches = batches
        self._saved = (self.backend.copy_of(self.data), self.backend.copy_of(self.grad))

    def restore(self) -> None:
        """Put the parameters (and a FlatParams' gradient buffer) back bit for bit."""
        self.backend.copy(self.data, self._saved[0])
        self.backend.copy(self.grad, self._saved[1])

    def zero_grad(self) -> None:
        self.backend.fill(self.grad, 0.0)

    def host(self, array: np.ndarray | Any) -> np.ndarray:
        """``array`` as a host NumPy array (a copy when it lives on the GPU)."""
        return self.backend.to_host(array)

    def batch_stream(self, needed: int, what: str) -> BatchStream | None:
        """A fresh iterator over the batches (None for full-batch problems).

        Parameters
        ----------
        needed : int
            How many batches the caller takes from it, for the error when they run out.
        what : str
            What they are for, in that error (``"one per update"``).
        """
        if self.batches is None:
            return None
        source = self.batches() if callable(self.batches) else self.batches
        return BatchStream(iter(source), needed, what)

    def cost(self, stream: Iterator[Any] | None) -> float:
        """Evaluate ``loss_grad`` at the current parameters (on the next batch)."""
        self.zero_grad()
        if stream is None:
            value = self.loss_grad(self.params, self.grad)
        else:
            value = self.loss_grad(self.params, self.grad, next(stream))
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"loss_grad must return the cost as a number, got {value!r}") from None

    def make_step(
        self,
        optimizer: Callable[..., Optimizer],
        lr: float | Callable[[int], float],
        options: Mapping[str, Any],
    ) -> Callable[[], bool]:
        """A fresh optimizer's step on these parameters and this gradient buffer."""
        opt = optimizer(self.params, lr=lr, **options)
        if isinstance(self.params, FlatParams):
            return opt.step
        grad = self.grad
        return lambda: opt.step(grad)


class BatchStream:
    """An iterator over the user's batches that, when they run out, raises ValueError
    saying how many were given and how many are needed.
    """

    def __init__(self, source: Iterator[Any], needed: int, what: str) -> None:
        self.source, self.needed, self.what = source, needed, what
        self.taken = 0

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        try:
            batch = next(self.source)
        except StopIteration:
            raise ValueError(
                f"batches ran out after {self.taken}: give at least {self.needed} ({self.what})"
            ) from None
        self.taken += 1
        return batch


def diverged(cost: float, start: float, factor: float) -> bool:
    """Non-finite, or above ``factor`` times the start (for a start <= 0: start plus
    (factor - 1) times its magnitude).
    """
    if not math.isfinite(cost):
        return True
    return cost > start + (factor - 1.0) * abs(start)
