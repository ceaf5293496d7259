"""``opt.state``: the update count and the state buffers, under torch's names."""

from collections.abc import Mapping


class OptimizerState(Mapping):
    """The state of an optimizer: ``state["step"]`` (updates applied) and one flat buffer
    per state name (``exp_avg``, ``sum``, ...).

    The kernels update these very buffers, so entries cannot be replaced: a new array
    bound here would be ignored by the update and then saved or loaded in its place.
    Write into a buffer (``opt.state["exp_avg"][:] = values``) or restore a whole state
    with :meth:`fastopt.Optimizer.load_state_dict`.
    """

    __slots__ = ("buffers", "step")

    def __init__(self, step, buffers):
        self.step = step
        self.buffers = dict(buffers)

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
        return f"OptimizerState(step={self.step}, buffers={sorted(self.buffers)})"
