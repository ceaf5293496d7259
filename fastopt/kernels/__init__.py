"""Update kernels and the backends that run them.

One module per algorithm (:mod:`.sgd`, :mod:`.adagrad`, :mod:`.rmsprop`, :mod:`.adam`)
holds all of its numerics: the per-element update (``<name>_element``, in torch.optim's
order of operations), the host-side scalars of a step (a NamedTuple, from
``host_scalars``) and the update loop (``loop``), written once and compiled by each
backend. Every kernel takes ``(param, grad, *state, grad_scale, *scalars)``.

The backends (:mod:`.host`: NumPy buffers and njit loops; :mod:`.cuda`: device buffers and
numba.cuda kernels, loaded on first use) offer the same operations behind
:class:`fastopt.kernels.backend.Backend`; :mod:`.backend` says which one holds an array.
"""

from . import adagrad, adam, rmsprop, sgd
from ._algorithm import Algorithm

ALGORITHMS: dict[str, Algorithm] = {
    m.ALGORITHM.name: m.ALGORITHM for m in (sgd, adagrad, rmsprop, adam)
}

__all__ = ["Algorithm", "ALGORITHMS"]
