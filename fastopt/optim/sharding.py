"""Sharding: the same optimizer over a contiguous slice of its parameters (ZeRO-1)."""

from ..kernels.blockwise import block_index
from .groups import shard_groups
from .state import ABSMAX


def shard(optimizer, start, stop):
    """See :meth:`fastopt.Optimizer.shard`."""
    if not optimizer.backend.pickles_buffers:
        raise NotImplementedError(
            "sharding (DataParallel(zero=True)) works on host "
            "buffers only; this optimizer is on the GPU"
        )
    twin = object.__new__(type(optimizer))
    twin.__dict__.update(optimizer.__getstate__())
    twin._defaults = optimizer.defaults
    twin._params = twin.param = optimizer.param[start:stop]
    twin._groups, twin.group_sources = shard_groups(optimizer.param_groups, start, stop)
    state = optimizer.state
    slices = {name: slice(start, stop) for name in state.buffers}
    if state.precision == "8bit":
        scales = slice(block_index(state.bounds, start), block_index(state.bounds, stop))
        slices.update({name + ABSMAX: scales for name in state.names()})
    bounds = [(g["start"], g["stop"]) for g in twin._groups]
    twin._state = state.rebuilt(
        state.step,
        {name: value[slices[name]].copy() for name, value in state.buffers.items()},
        bounds,
    )
    twin._build()
    return twin
