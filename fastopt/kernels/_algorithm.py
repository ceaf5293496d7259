"""What a backend needs to know about an algorithm to run its update."""
from typing import Callable, NamedTuple


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
