"""The names every update loop calls, bound by each backend when it compiles the loop.

An algorithm's loop (``loop`` in its module) is written once for both backends. It calls
functions that the backend supplies when it compiles it (:func:`fastopt._jit.bind`):

* ``element``: the algorithm's per-element update, compiled for that backend;
* ``indices(n)``: the indices this thread updates: ``prange(n)`` on the host (threaded or
  serial), a grid-stride range on the GPU;
* ``load_scale(grad_scale)``: the gradient scale as a number: the host passes a Python
  float, the GPU a one-element device array, so that a clipping factor computed on the
  device never travels through the host;
* ``load(word, f)`` and ``store(value)``: a state element as a number of type ``f`` (the
  parameter dtype) and back, for the optimizer's state precision
  (:mod:`fastopt.kernels.precision`): the identity for full precision.

The plain-Python definitions below make a loop runnable as ordinary Python (one thread
covering every element), which is what the CUDA simulator and the unit tests of the
binding do.
"""


def element(*args):  # pragma: no cover - always bound to an algorithm's element
    raise RuntimeError("an update loop was called without being compiled by a backend")


def indices(n):
    return range(n)


def load_scale(grad_scale):
    return grad_scale


def load(word, f):
    return word


def store(value):
    return value
