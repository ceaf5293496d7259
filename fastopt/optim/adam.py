"""Adam and AdamW: bias-corrected moment estimates, with optional AMSGrad."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._validation import check_betas, check_flag, check_nonnegative
from ..kernels import adam
from ..kernels.precision import check_eps
from .base import Optimizer, fixed
from .params import LearningRate, Params


class Adam(Optimizer):
    r"""Adam (and AdamW, AMSGrad) with torch.optim.Adam's numerics.

    .. math::

        \theta &\leftarrow \theta\,(1 - \gamma\lambda)
            \ \text{(decoupled)}, \qquad g \leftarrow \pm g + \lambda\,\theta
            \ \text{(otherwise)} \\
        m_t &= m_{t-1} + (1 - \beta_1)(g - m_{t-1}) \\
        v_t &= \beta_2\, v_{t-1} + (1 - \beta_2)\, g^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(amsgrad)}, \quad v_t \ \text{(otherwise)} \\
        \theta &\leftarrow \theta - \frac{\gamma}{1 - \beta_1^t}\;
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with learning rate :math:`\gamma` (``lr``), ``betas`` :math:`(\beta_1, \beta_2)`,
    ``eps`` :math:`\epsilon` and weight decay :math:`\lambda`.

    Parameters
    ----------
    params : FlatParams or numpy.ndarray
    lr : float or callable, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
        Must be positive with ``state_precision="8bit"`` (see docs/low-precision.md).
    weight_decay : float, default 0
    amsgrad : bool, default False
        Keep the running maximum of the (uncorrected) second moment.
    decoupled_weight_decay : bool, default False
        Decay the parameters directly (AdamW) instead of adding an L2 term to the
        gradient.
    maximize, param_groups, max_grad_norm, skip_nonfinite, device, state_precision
        As for :class:`fastopt.SGD`.

    Notes
    -----
    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad) and ``step``.
    Like torch, eps is added *after* dividing :math:`\sqrt{v}` by
    :math:`\sqrt{1-\beta_2^t}`, and AMSGrad takes the maximum of the uncorrected
    :math:`v` (torch's documentation once showed the corrected one, pytorch#142323;
    the code, followed here, does not). Keras folds the corrections into the step
    (:math:`\gamma\sqrt{1-\beta_2^t}/(1-\beta_1^t)`) and adds ``epsilon=1e-7`` to the
    uncorrected :math:`\sqrt{v}`, so its eps is effectively scaled by
    :math:`\sqrt{1-\beta_2^t}`; optax's ``adam`` matches torch (with an extra
    ``eps_root`` inside the root, default 0). optax's ``adamw`` multiplies the decay by
    the learning rate as here, but defaults to ``weight_decay=1e-4``.

    References
    ----------
    Kingma, Ba (2014), "Adam: A Method for Stochastic Optimization", arXiv:1412.6980.
    Loshchilov, Hutter (2017), "Decoupled Weight Decay Regularization", arXiv:1711.05101.
    Reddi, Kale, Kumar (2018), "On the Convergence of Adam and Beyond" (AMSGrad).

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"w": np.zeros(4, np.float32)})
    >>> opt = fastopt.Adam(fp, lr=0.1)
    >>> fp.grads["w"][:] = 1.0
    >>> opt.step()
    True
    >>> fp.params["w"]
    array([-0.09999999, -0.09999999, -0.09999999, -0.09999999], dtype=float32)
    """

    algorithm = adam.ALGORITHM
    betas = fixed("betas")
    eps = fixed("eps")
    amsgrad = fixed("amsgrad")
    decoupled_weight_decay = fixed("decoupled_weight_decay")

    def __init__(
        self,
        params: Params,
        lr: LearningRate = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        param_groups: Sequence[dict[str, Any]] | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        device: str = "auto",
        state_precision: str = "full",
    ) -> None:
        self._betas = check_betas(betas)
        self._eps = check_eps(check_nonnegative("epsilon value", eps), state_precision)
        self._amsgrad = check_flag("amsgrad", amsgrad)
        self._decoupled_weight_decay = check_flag("decoupled_weight_decay", decoupled_weight_decay)
        self._defaults = {
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": weight_decay,
            "amsgrad": self.amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": self.decoupled_weight_decay,
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
        fill = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if self.amsgrad:
            fill["max_exp_avg_sq"] = 0.0
        return fill

    def _scalars(self, lr, weight_decay, step):
        return adam.host_scalars(
            lr=lr,
            betas=self.betas,
            eps=self.eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=self.decoupled_weight_decay,
            amsgrad=self.amsgrad,
            step=step,
        )


class AdamW(Adam):
    r"""Adam with decoupled weight decay (:math:`\theta \leftarrow \theta(1-\gamma\lambda)`).

    The same as ``Adam(..., decoupled_weight_decay=True)`` with torch.optim.AdamW's
    default ``weight_decay=1e-2``. See :class:`fastopt.Adam` for the update rule.
    """

    def __init__(
        self,
        params: Params,
        lr: LearningRate = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        param_groups: Sequence[dict[str, Any]] | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        device: str = "auto",
        state_precision: str = "full",
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
            param_groups=param_groups,
            max_grad_norm=max_grad_norm,
            skip_nonfinite=skip_nonfinite,
            device=device,
            state_precision=state_precision,
        )
