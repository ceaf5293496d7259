"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._validation import check_flag, check_nonnegative, check_number
from ..kernels import sgd
from .base import Optimizer, fixed
from .params import LearningRate, Params


class SGD(Optimizer):
    r"""Stochastic gradient descent (optionally with momentum), torch.optim.SGD's numerics.

    .. math::

        g &\leftarrow \pm g + \lambda\,\theta \\
        b_t &\leftarrow \begin{cases} g & t = 1 \\
            \mu\, b_{t-1} + (1 - \tau)\, g & t > 1 \end{cases} \\
        g &\leftarrow \begin{cases} g + \mu\, b_t & \text{nesterov} \\
            b_t & \text{otherwise} \end{cases} \\
        \theta &\leftarrow \theta - \gamma\, g

    with learning rate :math:`\gamma` (``lr``), momentum :math:`\mu`, dampening
    :math:`\tau` and weight decay :math:`\lambda`; the momentum lines apply only when
    :math:`\mu \ne 0`, and :math:`-g` is used when ``maximize``.

    Parameters
    ----------
    params : FlatParams or numpy.ndarray
        The parameters, updated in place. A plain array must be a writeable C-contiguous
        float32 or float64 array; its gradient is then passed to ``step(grad)``.
    lr : float or callable, default 1e-3
        Learning rate, or a schedule ``step -> lr`` evaluated once per step on the host
        (the first update uses ``lr(0)``).
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False
        Maximise the objective instead of minimising it.
    param_groups : list of dict, optional
        Contiguous parameter segments with their own ``lr``, ``lr_scale`` or
        ``weight_decay``: ``[{"params": "no_decay", "weight_decay": 0.0}]``. ``params`` is
        a FlatParams group name, a list of contiguous array names, or a slice of the flat
        buffer. Each group costs one kernel call.
    max_grad_norm : float, optional
        Clip the gradient to this global L2 norm (scale by
        ``min(1, max_grad_norm / (norm + 1e-6))``, as torch.nn.utils.clip_grad_norm_);
        the scale is applied inside the update kernel and the gradient buffer is not
        modified.
    skip_nonfinite : bool, default False
        Skip the whole step (params and state untouched, ``step()`` returns False) when
        the gradient contains NaN or inf. By default non-finite values propagate, as in
        torch. On the GPU this reads the gradient's norm back each step (one small
        synchronising copy), since the step must return whether it skipped.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where to run. "auto" follows the parameters: a FlatParams on the GPU or a device
        array (numba.cuda, CuPy, a detached torch CUDA tensor: anything with
        ``__cuda_array_interface__``) is updated in place by CUDA kernels, zero-copy;
        ``step(grad)`` then needs a device gradient. Needs the ``fastopt[cuda]`` extra.
    state_precision : {"full", "bfloat16", "8bit"}, default "full"
        How the state buffers are stored. "full": in the parameter dtype, bit-equal to
        torch. "bfloat16": as 16-bit words (``uint16`` arrays of bfloat16 bit patterns,
        half the memory of float32), rounded to nearest even on every store. "8bit": one
        ``uint8`` code per element and one scale per block of 256 elements (about a
        quarter of float32's memory; see :mod:`fastopt.kernels.blockwise`); buffers of
        fewer than 4,096 elements keep full state. The arithmetic always runs in the
        parameter dtype. ``opt.state.decoded(name)`` gives a buffer's values. See
        ``docs/low-precision.md`` for the numerics contract.

    Notes
    -----
    State: ``momentum_buffer`` (only when ``momentum != 0``) and ``step``. As in torch,
    the first update copies the gradient into the momentum buffer without dampening.
    optax's ``sgd`` has no dampening and no ``maximize``; Keras folds the learning rate
    into the momentum buffer (``v = mu v - lr g``), which differs from this (torch's)
    form when the learning rate changes between steps.

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> w = np.ones(3, np.float32)
    >>> opt = fastopt.SGD(w, lr=0.1, momentum=0.9)
    >>> opt.step(np.ones(3, np.float32))
    True
    >>> w
    array([0.9, 0.9, 0.9], dtype=float32)
    """

    algorithm = sgd.ALGORITHM
    momentum = fixed("momentum")
    dampening = fixed("dampening")
    nesterov = fixed("nesterov")

    def __init__(
        self,
        params: Params,
        lr: LearningRate = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        param_groups: Sequence[dict[str, Any]] | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        device: str = "auto",
        state_precision: str = "full",
    ) -> None:
        self._momentum = check_nonnegative("momentum value", momentum)
        self._dampening = check_number(
            "dampening value", dampening, "a finite number", lambda v: abs(v) < float("inf")
        )
        self._nesterov = check_flag("nesterov", nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening "
                f"(got momentum={momentum}, dampening={dampening})"
            )
        self._defaults = {
            "momentum": self.momentum,
            "dampening": self.dampening,
            "weight_decay": weight_decay,
            "nesterov": self.nesterov,
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
        return {"momentum_buffer": 0.0} if self.momentum != 0 else {}

    def _step_key(self, step):
        return step == 1  # first_step

    def _scalars(self, lr, weight_decay, step):
        return sgd.host_scalars(
            lr=lr,
            weight_decay=weight_decay,
            momentum=self.momentum,
            dampening=self.dampening,
            nesterov=self.nesterov,
            first_step=step == 1,
        )
