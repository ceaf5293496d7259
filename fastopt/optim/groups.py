"""Parameter groups: contiguous segments of the flat buffer with their own hyperparameters."""

import math

from .._validation import check_lr, check_nonnegative, check_number, scheduled_lr
from ..buffers import FlatParams

GROUP_KEYS = ("params", "lr", "lr_scale", "weight_decay")


def check_lr_scale(value):
    return check_number(
        "lr_scale value", value, "a finite number >= 0", lambda v: 0 <= v < math.inf
    )


def resolve_groups(params, size, default, param_groups):
    """Turn the user's group specs into sorted, non-overlapping [start, stop) groups.

    Elements in no group form default groups (one per gap) with the constructor's
    hyperparameters.
    """
    specs = []
    for index, spec in enumerate(param_groups or ()):
        if not isinstance(spec, dict) or "params" not in spec:
            raise TypeError(f"param_groups[{index}] must be a dict with a 'params' entry")
        unknown = set(spec) - set(GROUP_KEYS)
        if unknown:
            raise ValueError(
                f"param_groups[{index}] has unknown keys {sorted(unknown)}; "
                f"allowed: {list(GROUP_KEYS)}"
            )
        s = group_slice(params, size, spec["params"], index)
        group = dict(default)
        if "lr" in spec:
            group["lr"] = check_lr(spec["lr"])
        if "lr_scale" in spec:
            group["lr_scale"] = check_lr_scale(spec["lr_scale"])
        if "weight_decay" in spec:
            group["weight_decay"] = check_nonnegative("weight_decay value", spec["weight_decay"])
        group.update(params=spec["params"], start=s.start, stop=s.stop)
        specs.append(group)
    specs.sort(key=lambda g: g["start"])
    for a, b in zip(specs, specs[1:]):
        if b["start"] < a["stop"]:
            raise ValueError(
                f"parameter groups {a['params']!r} and {b['params']!r} overlap: "
                "some parameters appear in more than one parameter group"
            )
    groups, offset = [], 0
    for group in specs + [None]:
        start = size if group is None else group["start"]
        if start > offset:
            groups.append(dict(default, params="default", start=offset, stop=start))
        if group is not None:
            groups.append(group)
            offset = group["stop"]
    return groups


def group_slice(params, size, selector, index):
    if isinstance(selector, slice):
        start, stop, stride = selector.indices(size)
        if stride != 1 or stop <= start:
            raise ValueError(
                f"param_groups[{index}]['params'] slice {selector} must select a "
                "non-empty contiguous range"
            )
        return slice(start, stop)
    if isinstance(params, FlatParams):
        s = params.segment(selector)
        if s.stop <= s.start:
            raise ValueError(f"param_groups[{index}] selects no elements")
        return s
    raise TypeError(
        f"param_groups[{index}]['params'] must be a slice of the flat parameter "
        "array (array names need a FlatParams)"
    )


def hyperparameters(group, t):
    """The (lr, weight_decay) of a group for this step as checked Python floats (``t`` updates
    applied so far: a schedule is evaluated at ``t``).
    """
    lr, scale, weight_decay = group["lr"], group["lr_scale"], group["weight_decay"]
    if (
        type(lr) is float
        and lr >= 0
        and scale == 1.0
        and type(weight_decay) is float
        and weight_decay >= 0
    ):
        return lr, weight_decay
    lr = scheduled_lr(lr, t) if callable(lr) else check_lr(lr)
    if scale != 1.0:
        lr = lr * check_lr_scale(scale)
        if lr != lr:
            raise ValueError(f"Invalid learning rate: {group['lr']} x lr_scale {scale} is nan")
    return lr, check_nonnegative("weight_decay value", weight_decay)


def shard_groups(groups, start, stop):
    """The groups' share of ``[start, stop)``, re-based to start at 0, and the index of the
    group each came from.
    """
    shard, sources = [], []
    for index, group in enumerate(groups):
        lo, hi = max(group["start"], start), min(group["stop"], stop)
        if lo < hi:
            shard.append(dict(group, start=lo - start, stop=hi - start))
            sources.append(index)
    return shard, sources
