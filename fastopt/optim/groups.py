"""Parameter groups: contiguous segments of the flat buffer with their own hyperparameters."""

import math

from .._validation import check_lr, check_nonnegative, check_number, scheduled_lr
from ..buffers import FlatParams

GROUP_KEYS = ("params", "lr", "lr_scale", "weight_decay")
EDITABLE = ("lr", "lr_scale", "weight_decay")


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
        for key in EDITABLE:
            if key in spec:
                group[key] = check_group_value(key, spec[key])
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
    return ParamGroups(ParamGroup(group) for group in groups)


def group_slice(params, size, selector, index):
    if isinstance(selector, slice):
        start, stop, stride = selector.indices(size)
        beyond = [v for v in (selector.start, selector.stop) if v is not None and v > size]
        if beyond:
            raise ValueError(
                f"param_groups[{index}]['params'] slice {selector} reaches past the end of the "
                f"{size} parameters"
            )
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
    constant = group.constant
    if constant is not None:
        return constant
    lr, scale, weight_decay = group["lr"], group["lr_scale"], group["weight_decay"]
    if (
        type(scale) is float
        and type(lr) is float
        and lr >= 0
        and scale == 1.0
        and type(weight_decay) is float
        and weight_decay >= 0
    ):
        group.constant = (lr, weight_decay)  # until the next edit
        return group.constant
    lr = scheduled_lr(lr, t) if callable(lr) else check_lr(lr)
    if type(scale) is not float or scale != 1.0:
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
            shard.append(ParamGroup(dict(group, start=lo - start, stop=hi - start)))
            sources.append(index)
    return ParamGroups(shard), sources


def check_group_value(key, value):
    """A group value given to the constructor, checked by its rule."""
    check_editable(key)
    if key == "lr":
        return check_lr(value)
    if key == "lr_scale":
        return check_lr_scale(value)
    return check_nonnegative("weight_decay value", value)


def check_editable(key):
    if key not in EDITABLE:
        raise ValueError(
            f"parameter group key {key!r} cannot be set: only {list(EDITABLE)} can be "
            "edited between steps (a group's elements are fixed when the optimizer is built; "
            "build a new optimizer for another layout)"
        )


class ParamGroup(dict):
    """One entry of ``opt.param_groups``: a dict whose ``lr``, ``lr_scale`` and
    ``weight_decay`` can be edited between steps and whose ``params``, ``start`` and
    ``stop`` are fixed (setting any other key raises at once).

    An edited value is checked by the constructor's rules when the next step evaluates it:
    a bad one makes that step raise with params and state untouched.
    """

    __slots__ = ("constant",)

    def __init__(self, *args, **kwargs):
        dict.__init__(self, *args, **kwargs)
        self.constant = None  # (lr, weight_decay) once checked, while they are constants

    def __setitem__(self, key, value):
        check_editable(key)
        self.constant = None
        dict.__setitem__(self, key, value)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, other):
        self.update(other)
        return self

    def _refuse(self, *args, **kwargs):
        raise TypeError(
            "parameter group keys cannot be removed (edit 'lr', 'lr_scale' or "
            "'weight_decay' instead)"
        )

    __delitem__ = pop = popitem = clear = _refuse

    def __reduce__(self):
        return ParamGroup, (dict(self),)


class ParamGroups(list):
    """``opt.param_groups``: the list is fixed when the optimizer is built (its groups
    cover the flat buffer exactly once); edit a group's values instead.
    """

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise TypeError(
            "param_groups cannot be added, removed or replaced: the groups and their "
            "elements are fixed when the optimizer is built; edit a group's 'lr', "
            "'lr_scale' or 'weight_decay' (opt.param_groups[0]['lr'] = 0.01), or build a "
            "new optimizer"
        )

    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self):
        return ParamGroups, (list(self),)
