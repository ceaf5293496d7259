"""Global-norm clipping as torch.nn.utils.clip_grad_norm_ does it, folded into the gradient
scale: one formula, evaluated on the host by :mod:`.host` and on the device by :mod:`.cuda`.
"""

import math


def clipped_scale(grad_scale, sumsq, norm_factor, max_norm):
    r"""``grad_scale`` times :math:`\min(1, \text{max\_norm} / (\lVert g\rVert + 10^{-6}))`.

    The norm is :math:`\sqrt{\text{sumsq}}` times ``norm_factor`` (the factor a
    data-parallel step applies to a summed gradient). In float64. A NaN norm gives a NaN
    scale, as torch's clip_grad_norm_ gives a NaN factor; ``max_norm = inf`` never clips.
    """
    norm = math.sqrt(sumsq) * norm_factor
    coefficient = max_norm / (norm + 1e-6)
    if coefficient >= 1.0:
        return grad_scale
    return grad_scale * coefficient
