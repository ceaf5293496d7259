"""``opt.state``: the update count and the state buffers, under torch's names."""

from collections.abc import Mapping

import numpy as np

from ..kernels import blockwise
from ..kernels.precision import decode, encode, state_dtype

ABSMAX = "_absmax"
"""Suffix of the per-block scales of an 8-bit state buffer (``exp_avg_absmax``)."""


def encoded(name, values, precision, dtype, bounds):
    """``{entry: host array}`` holding a state buffer's ``values`` in ``precision``: the
    buffer itself, and for "8bit" its per-block scales (``name + ABSMAX``).
    """
    if precision == "8bit":
        signed = name not in blockwise.UNSIGNED_STATE
        codes, absmax = blockwise.quantize(np.asarray(values, dtype), signed, bounds)
        return {name: codes, name + ABSMAX: absmax}
    return {name: encode(values, precision, dtype)}


def decoded(name, entries, precision, dtype, bounds):
    """The values (a host array of ``dtype``) of a state buffer from its host entries."""
    if precision == "8bit":
        signed = name not in blockwise.UNSIGNED_STATE
        return blockwise.dequantize(entries[name], entries[name + ABSMAX], signed, bounds, dtype)
    return decode(entries[name], precision, dtype)


def allocate(backend, fills, size, precision, dtype, bounds):
    """The state buffers of ``fills`` (``{name: initial value}``) on ``backend``."""
    buffers = {}
    for name, fill in fills.items():
        if precision == "8bit":
            one = encoded(name, np.full(1, fill, dtype), precision, dtype, [(0, 1)])
            buffers[name] = backend.full(size, int(one[name][0]), np.uint8)
            blocks = blockwise.absmax_size(bounds)
            buffers[name + ABSMAX] = backend.full(blocks, float(one[name + ABSMAX][0]), dtype)
        else:
            word = encode(np.full(1, fill, dtype), precision, dtype)[0]
            buffers[name] = backend.full(size, word, state_dtype(precision, dtype))
    return buffers


class OptimizerState(Mapping):
    """The state of an optimizer: ``state["step"]`` (updates applied) and one flat buffer
    per state name (``exp_avg``, ``sum``, ...).

    The kernels update these very buffers, so entries cannot be replaced: a new array
    bound here would be ignored by the update and then saved or loaded in its place.
    Write into a buffer (``opt.state["exp_avg"][:] = values``) or restore a whole state
    with :meth:`fastopt.Optimizer.load_state_dict`.

    With ``state_precision="bfloat16"`` a buffer is a ``uint16`` array of bfloat16 bit
    patterns; with "8bit" a ``uint8`` array of codes plus ``name + "_absmax"``, one scale
    per block (see :mod:`fastopt.kernels.blockwise`). :meth:`decoded` gives a buffer's
    values as a float array of the parameter dtype.
    """

    __slots__ = ("buffers", "step", "precision", "dtype", "backend", "bounds")

    def __init__(self, step, buffers, precision="full", dtype=None, backend=None, bounds=()):
        self.step = step
        self.buffers = dict(buffers)
        self.precision, self.dtype, self.backend = precision, dtype, backend
        self.bounds = list(bounds)

    def names(self):
        """The state buffers' names (torch's), without the 8-bit scales."""
        return [key for key in self.buffers if not key.endswith(ABSMAX)]

    def decoded(self, key):
        """The values of state buffer ``key`` as a new host float array of the parameter
        dtype (exact: the value each code or word stands for).
        """
        to_host = (lambda a: a) if self.backend is None else self.backend.to_host
        entries = {k: to_host(v) for k, v in self.buffers.items() if k in (key, key + ABSMAX)}
        dtype = self.dtype or entries[key].dtype
        return decoded(key, entries, self.precision, dtype, self.bounds)

    def rebuilt(self, step, buffers, bounds=None):
        """A state of the same precision with other buffers (and group bounds)."""
        bounds = self.bounds if bounds is None else bounds
        return OptimizerState(step, buffers, self.precision, self.dtype, self.backend, bounds)

    def __getitem__(self, key):
        if key == "step":
            return self.step
        return self.buffers[key]

    def __iter__(self):
        yield "step"
        yield from self.buffers

    def __len__(self):
        return 1 + len(self.buffers)

    def __setitem__(self, key, value):
        if key in self.buffers and value is self.buffers[key]:
            return  # an in-place operator (state["sum"] *= 2) binds the same array back
        how = (
            f'write into it (opt.state["{key}"][:] = values)'
            if key in self.buffers
            else "it is not one of this optimizer's state entries"
        )
        raise TypeError(
            f"opt.state[{key!r}] cannot be rebound: the update kernels use the optimizer's "
            f"own buffers; {how}, or restore a whole state with load_state_dict()"
        )

    def __delitem__(self, key):
        raise TypeError(f"opt.state[{key!r}] cannot be removed")

    def __repr__(self):
        shown = "" if self.precision == "full" else f", precision={self.precision!r}"
        return f"OptimizerState(step={self.step}, buffers={sorted(self.buffers)}{shown})"
