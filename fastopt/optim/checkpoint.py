"""Checkpoints: an optimizer's state as plain arrays and numbers, and its checked restore."""

import numpy as np

FIXED_KEYS = ("algorithm", "dtype", "size", "step", "skipped_steps", "group_bounds")


def group_bounds(groups):
    return [[g["start"], g["stop"]] for g in groups]


def state_dict(optimizer):
    """See :meth:`fastopt.Optimizer.state_dict`."""
    sd = {
        "algorithm": type(optimizer).__name__,
        "dtype": str(optimizer.dtype),
        "size": optimizer.param.size,
        "step": optimizer.state.step,
        "skipped_steps": optimizer.skipped_steps,
        "group_bounds": np.array(group_bounds(optimizer.param_groups), np.int64),
    }
    for name, value in optimizer.state.items():
        if name != "step":
            sd[name] = optimizer.backend.to_host(value)
    return sd


def checked_state(optimizer, state_dict):
    """``(step, skipped_steps, {buffer name: host array})`` from a state_dict, after every
    check (the optimizer is not touched): ValueError naming what does not fit.
    """
    sd = dict(state_dict)
    name = type(optimizer).__name__
    size = optimizer.param.size
    buffers = list(optimizer.state.buffers)
    expected = {*FIXED_KEYS, *buffers}
    if set(sd) != expected:
        raise ValueError(
            f"state_dict does not fit this {name}: expects keys "
            f"{sorted(expected)} but got {sorted(sd)}"
        )
    dtype = str(np.asarray(sd["dtype"])[()])
    if dtype not in ("float32", "float64"):
        raise ValueError(f"state_dict has dtype {dtype!r} (expected float32 or float64)")
    algorithm = str(np.asarray(sd["algorithm"])[()])
    if algorithm != name:
        raise ValueError(
            f"state_dict is from a {algorithm} optimizer, but this optimizer is {name}"
        )
    saved_size = _count(sd, "size")
    if saved_size != size:
        raise ValueError(
            f"state_dict is for {saved_size} parameters, but this optimizer has {size}"
        )
    bounds = np.asarray(sd["group_bounds"])
    mine = group_bounds(optimizer.param_groups)
    if bounds.tolist() != mine:
        raise ValueError(
            f"state_dict has parameter groups {bounds.tolist()}, but this optimizer has {mine}"
        )
    step, skipped = _count(sd, "step"), _count(sd, "skipped_steps")
    arrays = {}
    for buffer in buffers:
        value = np.asarray(sd[buffer])
        if value.shape != (size,) or value.dtype.kind != "f":
            raise ValueError(
                f"state_dict[{buffer!r}] expects a float array of shape "
                f"({size},) but got {value.dtype} {value.shape}"
            )
        # converted here, so that a failing conversion raises before anything is copied
        arrays[buffer] = value.astype(optimizer.dtype, copy=False)
    return step, skipped, arrays


def _count(sd, key):
    """An integer >= 0 stored under ``key`` (a Python or NumPy integer, or a 0-d integer
    array as ``np.load`` gives it back).
    """
    value = sd[key]
    array = np.asarray(value) if value is not None else None
    if (
        array is None
        or isinstance(value, (bool, np.bool_))
        or array.shape != ()
        or array.dtype.kind not in "iu"
        or int(array) < 0
    ):
        shown = value.tolist() if isinstance(value, np.ndarray) else value
        raise ValueError(f"Invalid {key} in state_dict: {shown!r} (expected an integer >= 0)")
    return int(array)
