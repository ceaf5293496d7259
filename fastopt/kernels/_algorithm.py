"""What a backend needs to know about an algorithm to run its update."""

from collections.abc import Callable
from typing import NamedTuple


class Algorithm(NamedTuple):
    """One update rule, as found in its module under :mod:`fastopt.kernels`.

    A kernel compiled from ``loop`` takes ``(param, grad, *state, grad_scale, *scalars)``:
    the state buffers in the order of ``state`` (an empty array for one an option does not
    use), the gradient scale, then the fields of ``scalars`` in order.
    """

    name: str
    state: tuple[str, ...]
    scalars: type
    host_scalars: Callable[..., tuple]
    element: Callable[..., tuple]
    loop: Callable[..., None]


new_scalars = tuple.__new__
"""``new_scalars(AdamScalars, values)`` builds the NamedTuple without its Python-level
``__new__``: host scalars are built once per group and step, on the step's hot path."""
