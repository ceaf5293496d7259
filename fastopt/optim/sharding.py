"""Sharding: the same optimizer over a contiguous slice of its parameters (ZeRO-1)."""

from .groups import shard_groups


def shard(optimizer, start, stop):
    """See :meth:`fastopt.Optimizer.shard`."""
    if not optimizer.backend.pickles_buffers:
        raise NotImplementedError(
            "sharding (DataParallel(zero=True)) works on host "
            "buffers only; this optimizer is on the GPU"
        )
    twin = object.__new__(type(optimizer))
    twin.__dict__.update(optimizer.__getstate__())
    twin._params = twin.param = optimizer.param[start:stop]
    twin._groups, twin.group_sources = shard_groups(optimizer.param_groups, start, stop)
    state = optimizer.state
    twin._state = state.rebuilt(
        state.step, {name: value[start:stop].copy() for name, value in state.buffers.items()}
    )
    twin._build()
    return twin
