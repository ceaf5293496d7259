"""``opt.state``: the update count and the state buffers, under torch's names."""

from collections.abc import Mapping

from ..kernels.precision import decode


class OptimizerState(Mapping):
    """The state of an optimizer: ``state["step"]`` (updates applied) and one flat buffer
    per state name (``exp_avg``, ``sum``, ...).

    The kernels update these very buffers, so entries cannot be replaced: a new array
    bound here would be ignored by the update and then saved or loaded in its place.
    Write into a buffer (``opt.state["exp_avg"][:] = values``) or restore a whole state
    with :meth:`fastopt.Optimizer.load_state_dict`.

    With ``state_precision="bfloat16"`` a buffer is a ``uint16`` array of bfloat16 bit
    patterns; :meth:`decoded` gives its values as a float array of the parameter dtype.
    """

    __slots__ = ("buffers", "step", "precision", "dtype", "backend")

    def __init__(self, step, buffers, precision="full", dtype=None, backend=None):
        self.step = step
        self.buffers = dict(buffers)
        self.precision, self.dtype, self.backend = precision, dtype, backend

    def decoded(self, key):
        """The values of state buffer ``key`` as a new host float array of the parameter
        dtype (exact: a bfloat16 word is the upper half of a float32).
        """
        buffer = self.buffers[key]
        host = buffer if self.backend is None else self.backend.to_host(buffer)
        return decode(host, self.precision, self.dtype or host.dtype)

    def rebuilt(self, step, buffers):
        """A state of the same precision with other buffers."""
        return OptimizerState(step, buffers, self.precision, self.dtype, self.backend)

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
