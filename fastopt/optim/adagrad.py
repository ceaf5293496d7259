"""Adagrad: per-parameter learning rates from the sum of squared gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._validation import check_nonnegative
from ..kernels import adagrad
from ..kernels.precision import check_eps
from .base import Optimizer, fixed
from .params import LearningRate, Params


class Adagrad(Optimizer):
    r"""Adagrad with torch.optim.Adagrad's numerics.

    .. math::

        g &\leftarrow \pm g + \lambda\,\theta \\
        \tilde\gamma_t &= \gamma / (1 + (t - 1)\,\eta) \\
        s_t &= s_{t-1} + g^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
        \theta &\leftarrow \theta - \tilde\gamma_t\, g / (\sqrt{s_t} + \epsilon)

    with learning rate :math:`\gamma` (``lr``), ``lr_decay`` :math:`\eta`, weight decay
    :math:`\lambda` and ``eps`` :math:`\epsilon` (added outside the square root).

    Parameters
    ----------
    params : FlatParams or numpy.ndarray
    lr : float or callable, default 1e-2
    lr_decay : float, default 0
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10
        Must be positive with ``state_precision="8bit"`` (see docs/low-precision.md).
    maximize, param_groups, max_grad_norm, skip_nonfinite, device, state_precision
        As for :class:`fastopt.SGD`.

    Notes
    -----
    State: ``sum`` and ``step``. The first update uses the full learning rate
    (:math:`t = 1`). optax's ``adagrad`` starts the accumulator at 0.1 and uses
    ``eps=1e-7`` inside the square root; Keras starts at 0.1 with ``epsilon=1e-7``.
    The accumulator only grows, so the effective step keeps shrinking ("decays too
    quickly"); RMSprop replaces the sum with a moving average.

    References
    ----------
    Duchi, Hazan, Singer (2011), "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 12.
    """

    algorithm = adagrad.ALGORITHM
    lr_decay = fixed("lr_decay")
    initial_accumulator_value = fixed("initial_accumulator_value")
    eps = fixed("eps")

    def __init__(
        self,
        params: Params,
        lr: LearningRate = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        param_groups: Sequence[dict[str, Any]] | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        device: str = "auto",
        state_precision: str = "full",
    ) -> None:
        self._lr_decay = check_nonnegative("lr_decay value", lr_decay)
        self._initial_accumulator_value = check_nonnegative(
            "initial_accumulator_value value", initial_accumulator_value
        )
        self._eps = check_eps(check_nonnegative("epsilon value", eps), state_precision)
        self._defaults = {
            "lr_decay": self.lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": self.initial_accumulator_value,
            "eps": self.eps,
            "maximize": maximize,
        }
        super().__init__(
            params,
            lr=lr,
            weight_decay=weight_decay,
            maximize=maximize,
            param_groups=param_groups,
            max_grad_norm=max_grad_norm,
            skip_nonfinite=skip_nonfinite,
            device=device,
            state_precision=state_precision,
        )

    def _state_fill(self):
        return {"sum": self.initial_accumulator_value}

    def _step_key(self, step):
        return step if self.lr_decay != 0 else None

    def _scalars(self, lr, weight_decay, step):
        return adagrad.host_scalars(
            lr=lr, lr_decay=self.lr_decay, weight_decay=weight_decay, eps=self.eps, step=step
        )
