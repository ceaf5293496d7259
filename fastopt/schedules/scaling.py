"""Scaling the learning rate with the batch size."""

from __future__ import annotations

import math
import numbers


def scale_lr(lr: float, batch_size: int, base_batch_size: int, rule: str = "linear") -> float:
    r"""The learning rate for ``batch_size``, given one tuned at ``base_batch_size``.

    * ``rule="linear"``: :math:`\text{lr} \cdot b / b_0`. Goyal et al. (2017), "Accurate,
      Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677: "when the
      minibatch size is multiplied by k, multiply the learning rate by k", with a gradual
      warm-up to the scaled rate over the first epochs (the scaled rate is too large for
      the first, fast-changing steps). The rule suits SGD with momentum up to batches of a
      few thousand.
    * ``rule="sqrt"``: :math:`\text{lr} \cdot \sqrt{b / b_0}`, which keeps the variance of
      the update constant. Krizhevsky (2014), "One weird trick for parallelizing
      convolutional neural networks", arXiv:1404.5997; Hoffer, Hubara, Soudry (2017),
      "Train longer, generalize better", arXiv:1705.08741. It is the usual choice for
      adaptive methods (Adam, RMSprop), whose steps are already normalised by the
      gradient's scale.

    Both are starting points: check the result with a short learning-rate sweep.

    Examples
    --------
    >>> scale_lr(0.1, batch_size=1024, base_batch_size=256)
    0.4
    >>> scale_lr(1e-3, batch_size=1024, base_batch_size=256, rule="sqrt")
    0.002
    """
    if (
        not isinstance(lr, numbers.Real)
        or isinstance(lr, bool)
        or not (lr >= 0)
        or not math.isfinite(lr)
    ):
        raise ValueError(f"Invalid learning rate: {lr!r} (expected a finite number >= 0)")
    for name, value in (("batch_size", batch_size), ("base_batch_size", base_batch_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"Invalid {name}: {value!r} (expected an integer >= 1)")
    ratio = batch_size / base_batch_size
    if rule == "linear":
        return float(lr) * ratio
    if rule == "sqrt":
        return float(lr) * math.sqrt(ratio)
    raise ValueError(f"Invalid rule: {rule!r} (expected 'linear' or 'sqrt')")
