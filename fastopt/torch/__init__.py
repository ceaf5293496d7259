"""fastopt for PyTorch models: ``torch.optim``-compatible optimizers over flat buffers.

``fastopt.torch.Adam(model.parameters(), lr=1e-3)`` is a drop-in replacement for
``torch.optim.Adam`` on the CPU: the parameters move into one flat buffer per dtype, their
gradients into another, and every step is one fused fastopt kernel per parameter group.
Needs the ``torch`` extra; ``import fastopt`` alone never imports torch. See
``docs/torch.md``.
"""

try:
    import torch  # noqa: F401
except ImportError:
    raise ImportError(
        "fastopt.torch needs PyTorch, which is not installed: pip install 'fastopt[torch]'"
    ) from None

from .optimizers import SGD, Adagrad, Adam, AdamW, FlatOptimizer, RMSprop

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "FlatOptimizer"]
