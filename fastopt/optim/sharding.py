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
    twin.param_groups, twin.group_sources = shard_groups(optimizer.param_groups, start, stop)
    twin.state = {
        name: value if name == "step" else value[start:stop].copy()
        for name, value in optimizer.state.items()
    }
    twin._build()
    return twin
