"""RMSprop: gradients divided by a moving root-mean-square, optionally centered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._validation import check_flag, check_nonnegative, check_number
from ..kernels import rmsprop
from ..kernels.precision import check_eps
from .base import Optimizer, fixed
from .params import LearningRate, Params


class RMSprop(Optimizer):
    r"""RMSprop with torch.optim.RMSprop's numerics.

    .. math::

        g &\leftarrow \pm g + \lambda\,\theta \\
        v_t &= \alpha\, v_{t-1} + (1 - \alpha)\, g^2 \\
        \bar g_t &= \bar g_{t-1} + (1 - \alpha)(g - \bar g_{t-1})
            \quad\text{(centered only)} \\
        d &= \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centered)}, \quad
             \sqrt{v_t} + \epsilon \ \text{(otherwise)} \\
        b_t &= \mu\, b_{t-1} + g / d, \quad \theta \leftarrow \theta - \gamma\, b_t
            \quad\text{if } \mu > 0, \text{ else } \theta \leftarrow \theta - \gamma\, g / d

    Parameters
    ----------
    params : FlatParams or numpy.ndarray
    lr : float or callable, default 1e-2
    alpha : float, default 0.99
        Smoothing constant, in [0, 1].
    eps : float, default 1e-8
        Added outside the square root; must be positive with ``state_precision="8bit"``.
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False
        Normalise by an estimate of the gradient's variance instead of its second moment.
    maximize, param_groups, max_grad_norm, skip_nonfinite, device, state_precision
        As for :class:`fastopt.SGD`.

    Notes
    -----
    State: ``square_avg``, ``grad_avg`` (centered), ``momentum_buffer`` (momentum > 0)
    and ``step``. With momentum the learning rate multiplies the buffer from outside, so
    a changing lr rescales all past contributions. Keras uses ``rho=0.9``,
    ``epsilon=1e-7`` inside the square root and folds lr into the momentum buffer; optax
    defaults to ``decay=0.9`` with eps inside the square root (``eps_in_sqrt=True``).
    torch has no fused RMSprop kernel.

    References
    ----------
    Hinton, Srivastava, Swersky, "Neural Networks for Machine Learning", lecture 6e.
    Graves (2013), "Generating Sequences With Recurrent Neural Networks", arXiv:1308.0850
    (centered form).
    """

    algorithm = rmsprop.ALGORITHM
    alpha = fixed("alpha")
    eps = fixed("eps")
    momentum = fixed("momentum")
    centered = fixed("centered")

    def __init__(
        self,
        params: Params,
        lr: LearningRate = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
        param_groups: Sequence[dict[str, Any]] | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        device: str = "auto",
        state_precision: str = "full",
    ) -> None:
        self._alpha = check_number("alpha value", alpha, "0 <= alpha <= 1", lambda v: 0 <= v <= 1)
        self._eps = check_eps(check_nonnegative("epsilon value", eps), state_precision)
        self._momentum = check_nonnegative("momentum value", momentum)
        self._centered = check_flag("centered", centered)
        if self.centered and state_precision == "8bit":
            raise ValueError(
                "centered=True with state_precision='8bit' is not supported: square_avg and "
                "grad_avg are rounded on their own (up to 6% each), so square_avg - "
                "grad_avg**2 goes negative and its square root NaN, which then fills the "
                "whole block of state; use state_precision='bfloat16' (or 'full')"
            )
        self._defaults = {
            "alpha": self.alpha,
            "eps": self.eps,
            "weight_decay": weight_decay,
            "momentum": self.momentum,
            "centered": self.centered,
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
        fill = {"square_avg": 0.0}
        if self.centered:
            fill["grad_avg"] = 0.0
        if self.momentum > 0:
            fill["momentum_buffer"] = 0.0
        return fill

    def _step_key(self, step):
        return None  # the scalars do not depend on the step

    def _scalars(self, lr, weight_decay, step):
        return rmsprop.host_scalars(
            lr=lr,
            alpha=self.alpha,
            eps=self.eps,
            weight_decay=weight_decay,
            momentum=self.momentum,
            centered=self.centered,
        )
