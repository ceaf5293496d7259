"""Checkpoints: an optimizer's state and hyperparameters as plain arrays and numbers, and
their checked restore.

The hyperparameters are one JSON text under ``"hyperparameters"`` (a 0-d string array once
saved by ``np.savez``)::

    {"version": 1,
     "defaults": {...},             # the constructor's options (opt.defaults)
     "max_grad_norm": null, "skip_nonfinite": false,
     "partial": false,              # true when saved by a ZeRO shard (its groups only)
     "groups": [{"index": 0, "params": "no_decay",
                 "lr": 0.001 | {"schedule": schedule.to_dict()} | {"callable": "repr"},
                 "lr_scale": 1.0, "weight_decay": 0.0}, ...]}

A group's ``index`` is its position in the optimizer's ``param_groups`` (for a shard of
:meth:`fastopt.Optimizer.shard`, the position of the group it came from), ``params`` a
label for messages only: the layout itself is checked through ``group_bounds``.
"""

from __future__ import annotations

import copy
import json
import numbers
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ..kernels import blockwise
from ..kernels.precision import PRECISIONS
from ..schedules._base import Schedule
from .state import ABSMAX, decoded, encoded

FIXED_KEYS = ("algorithm", "dtype", "size", "step", "skipped_steps", "group_bounds")
HYPERPARAMETERS = "hyperparameters"
PRECISION = "state_precision"
OPTIONAL_KEYS = {HYPERPARAMETERS, PRECISION}
VERSION = 1
GROUP_VALUES = ("lr", "lr_scale", "weight_decay")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class CheckedState(NamedTuple):
    """What a load will write, once every check has passed."""

    step: int
    skipped_steps: int
    arrays: dict[str, np.ndarray]
    schedule_states: list[tuple[Any, dict]]


def group_bounds(groups):
    return [[g["start"], g["stop"]] for g in groups]


# -- saving ----------------------------------------------------------------------------------


def state_dict(optimizer):
    """See :meth:`fastopt.Optimizer.state_dict`."""
    sd = {
        "algorithm": type(optimizer).__name__,
        "dtype": str(optimizer.dtype),
        "size": optimizer.param.size,
        "step": optimizer.state.step,
        "skipped_steps": optimizer.skipped_steps,
        "group_bounds": np.array(group_bounds(optimizer.param_groups), np.int64),
        HYPERPARAMETERS: hyperparameters_entry(optimizer),
        PRECISION: optimizer.state_precision,
    }
    for name, value in optimizer.state.items():
        if name != "step":
            sd[name] = optimizer.backend.to_host(value)
    return sd


def hyperparameters_entry(optimizer):
    """The ``hyperparameters`` entry of a state_dict: :func:`hyperparameters` as JSON text.
    A wrapper holding the full optimizer of a shard (``DataParallel(zero=True)``) can
    record the full list of groups with it.
    """
    return json.dumps(hyperparameters(optimizer))


def hyperparameters(optimizer):
    """The JSON-safe hyperparameter record of an optimizer (see the module docstring)."""
    groups = list(optimizer.param_groups)
    sources = getattr(optimizer, "group_sources", None)
    indices = list(range(len(groups))) if sources is None else list(sources)
    return {
        "version": VERSION,
        "defaults": {str(k): plain(v) for k, v in optimizer.defaults.items()},
        "max_grad_norm": plain(optimizer.max_grad_norm),
        "skip_nonfinite": bool(optimizer.skip_nonfinite),
        "partial": sources is not None,
        "groups": [
            {
                "index": index,
                "params": group_label(group["params"]),
                "lr": lr_record(group["lr"]),
                "lr_scale": plain(group["lr_scale"]),
                "weight_decay": plain(group["weight_decay"]),
            }
            for index, group in zip(indices, groups)
        ],
    }


def plain(value):
    """A JSON-safe form of an option value: numbers as floats (so that ``0`` equals
    ``0.0``), sequences as lists, anything else as its repr without memory addresses.
    """
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return loose_repr(value)


def loose_repr(value):
    """``repr(value)`` without the memory addresses of default reprs (``<function f at
    0x7f...>`` reads ``<function f>``), so that it compares across processes.
    """
    return _ADDRESS.sub("", repr(value))


def lr_record(lr):
    """A learning rate for the record: a float, ``{"schedule": to_dict()}`` for a fastopt
    schedule, or ``{"callable": loose repr}`` for any other callable (a lambda, a function).
    """
    if isinstance(lr, Schedule) and lr.name:
        try:
            description = lr.to_dict()
            json.dumps(description)
        except (TypeError, ValueError, NotImplementedError):
            pass
        else:
            return {"schedule": description}
    if callable(lr):
        return {"callable": loose_repr(lr)}
    return plain(lr)


def group_label(selector):
    if isinstance(selector, slice):
        return f"slice({selector.start}, {selector.stop})"
    if isinstance(selector, (str, numbers.Integral)):
        return selector if isinstance(selector, str) else int(selector)
    return [s if isinstance(s, str) else loose_repr(s) for s in selector]


# -- loading ---------------------------------------------------------------------------------


def checked_state(optimizer, state_dict, strict=True):
    """A :class:`CheckedState` from a state_dict, after every check (the optimizer is not
    touched): ValueError naming what does not fit.
    """
    sd = dict(state_dict)
    name = type(optimizer).__name__
    size = optimizer.param.size
    names = optimizer.state.names()
    saved_precision = str(np.asarray(sd.get(PRECISION, "full"))[()])
    if saved_precision not in PRECISIONS:
        raise ValueError(
            f"state_dict has state_precision {saved_precision!r} (expected one of "
            + ", ".join(repr(p) for p in PRECISIONS)
            + ")"
        )
    scales = [n + ABSMAX for n in names] if saved_precision == "8bit" else []
    expected = {*FIXED_KEYS, *names, *scales}
    if set(sd) - OPTIONAL_KEYS != expected:
        raise ValueError(
            f"state_dict does not fit this {name}: expects keys "
            f"{sorted(expected | OPTIONAL_KEYS)} but got {sorted(sd)}"
        )
    dtype = str(np.asarray(sd["dtype"])[()])
    if dtype not in ("float32", "float64"):
        raise ValueError(f"state_dict has dtype {dtype!r} (expected float32 or float64)")
    algorithm = str(np.asarray(sd["algorithm"])[()])
    if algorithm != name:
        raise ValueError(
            f"state_dict is from an optimizer of type {algorithm}, but this optimizer is {name}"
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
    schedule_states = _checked_hyperparameters(optimizer, sd.get(HYPERPARAMETERS), strict)
    layout = optimizer.state.bounds
    entries = {}
    for buffer in names:
        entries[buffer] = _checked_array(sd, buffer, size, saved_precision)
        if saved_precision == "8bit":
            blocks = blockwise.absmax_size(layout)
            entries[buffer + ABSMAX] = _checked_array(sd, buffer + ABSMAX, blocks, "full")
    # converted here, so that a failing conversion raises before anything is copied
    arrays = converted(entries, names, saved_precision, optimizer)
    return CheckedState(step, skipped, arrays, schedule_states)


_KINDS = {
    "full": ("f", None, "a float array"),
    "bfloat16": ("u", np.uint16, "a uint16 array (bfloat16 state)"),
    "8bit": ("u", np.uint8, "a uint8 array (8-bit codes)"),
}


def _checked_array(sd, key, size, precision):
    value = np.asarray(sd[key])
    kind, dtype, what = _KINDS[precision]
    if value.shape != (size,) or value.dtype.kind != kind or (dtype and value.dtype != dtype):
        raise ValueError(
            f"state_dict[{key!r}] expects {what} of shape ({size},) but got "
            f"{value.dtype} {value.shape}"
        )
    return value


def converted(entries, names, saved_precision, optimizer):
    """The saved state entries in the optimizer's precision and dtype.

    The same precision is copied as is (a resume is bit-exact; a full-precision state of
    the other float dtype is cast, as torch does). Otherwise each buffer is decoded to
    its values (exactly) and stored in the optimizer's precision, rounded as a step
    stores: bfloat16 to nearest even, 8-bit to the nearest code of its block.
    """
    precision, dtype = optimizer.state_precision, optimizer.dtype
    if saved_precision == precision:
        return {
            key: value.astype(dtype if value.dtype.kind == "f" else value.dtype, copy=False)
            for key, value in entries.items()
        }
    bounds = optimizer.state.bounds
    arrays = {}
    for name in names:
        saved_dtype = entries[name].dtype if saved_precision == "full" else dtype
        values = decoded(name, entries, saved_precision, saved_dtype, bounds)
        arrays.update(encoded(name, values.astype(dtype), precision, dtype, bounds))
    return arrays


def apply(optimizer, checked):
    """Write a :class:`CheckedState` into the optimizer (nothing here can fail)."""
    for name, value in checked.arrays.items():
        optimizer.backend.copy_from_host(optimizer.state.buffers[name], value)
    optimizer.state.step = checked.step
    optimizer.skipped_steps = checked.skipped_steps
    for schedule, state in checked.schedule_states:
        schedule.load_state_dict(state)


def _checked_hyperparameters(optimizer, entry, strict):
    """Compare the saved hyperparameters with the optimizer's (when ``strict``); return the
    ``(schedule, state)`` pairs to restore (stateful schedules equal to the saved ones).
    """
    if entry is None:
        if strict:
            raise ValueError(
                "state_dict has no 'hyperparameters' entry (it was saved by an older "
                "fastopt), so its hyperparameters cannot be checked against this "
                f"{type(optimizer).__name__}'s: pass strict=False to load the state with "
                "this optimizer's hyperparameters"
            )
        return []
    saved = parse_hyperparameters(entry)
    current = hyperparameters(optimizer)
    saved_groups = {g["index"]: g for g in saved["groups"]}
    if not saved["partial"] and len(saved_groups) != len(saved["groups"]):
        raise ValueError("state_dict['hyperparameters'] lists a parameter group twice")
    differences, restores = [], []
    if strict:
        for key in sorted(set(saved["defaults"]) | set(current["defaults"])):
            a, b = saved["defaults"].get(key, _UNSET), current["defaults"].get(key, _UNSET)
            if not _same(a, b):
                differences.append(f"{key}: saved {_shown(a)}, current {_shown(b)}")
        for key in ("max_grad_norm", "skip_nonfinite"):
            if not _same(saved[key], current[key]):
                differences.append(
                    f"{key}: saved {_shown(saved[key])}, current {_shown(current[key])}"
                )
    for group, mine in zip(optimizer.param_groups, current["groups"]):
        theirs = saved_groups.get(mine["index"])
        if theirs is None:
            if saved["partial"]:
                continue  # a shard saved only its own groups
            raise ValueError(
                f"state_dict['hyperparameters'] has no parameter group {mine['index']}"
            )
        selector = group["params"]
        shown = f"slice({selector.start}, {selector.stop})" if isinstance(selector, slice) else None
        where = f"param_groups[{mine['index']}] ({shown or _shown(mine['params'])})"
        same_lr = _same_lr(theirs["lr"], mine["lr"])
        if strict:
            if not same_lr:
                differences.append(
                    f"{where} lr: saved {_shown_lr(theirs['lr'])}, current {_shown_lr(mine['lr'])}"
                )
            for key in ("lr_scale", "weight_decay"):
                if not _same(theirs[key], mine[key]):
                    differences.append(
                        f"{where} {key}: saved {_shown(theirs[key])}, current {_shown(mine[key])}"
                    )
        described = theirs["lr"].get("schedule") if isinstance(theirs["lr"], Mapping) else None
        state = described.get("state") if isinstance(described, Mapping) else None
        if same_lr and state is not None and hasattr(group["lr"], "load_state_dict"):
            restores.append((group["lr"], _checked_schedule_state(group["lr"], state, where)))
    if differences:
        raise ValueError(
            "state_dict was saved with other hyperparameters than this "
            f"{type(optimizer).__name__}'s: " + "; ".join(differences) + ". Build the "
            "optimizer with the saved values, or pass strict=False to load the state and "
            "keep this optimizer's hyperparameters"
        )
    return restores


def _checked_schedule_state(schedule, state, where):
    """The saved state of a stateful schedule, tried on a copy first."""
    trial = copy.copy(schedule)
    try:
        trial.load_state_dict(state)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"state_dict['hyperparameters'] has an invalid schedule state for {where}: {error}"
        ) from None
    return trial.state_dict()


def parse_hyperparameters(entry):
    """The hyperparameter record from a state_dict entry: a JSON text (or a 0-d string
    array, as ``np.load`` gives it back) or the dict itself; ValueError if malformed.
    """
    if isinstance(entry, Mapping):
        record = entry
    else:
        text = np.asarray(entry)[()] if isinstance(entry, np.ndarray) else entry
        if not isinstance(text, str):
            raise ValueError(
                f"state_dict['hyperparameters'] must be a JSON text, but got {type(text).__name__}"
            )
        try:
            record = json.loads(text)
        except ValueError as error:
            raise ValueError(f"state_dict['hyperparameters'] is not valid JSON: {error}") from None
    problem = _malformed(record)
    if problem:
        raise ValueError(f"state_dict['hyperparameters'] is malformed: {problem}")
    return record


def _malformed(record):
    """What is wrong with a hyperparameter record, or None."""
    if not isinstance(record, Mapping):
        return f"expected a JSON object, got {type(record).__name__}"
    version = record.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return f"'version' is {version!r} (expected an integer)"
    if version > VERSION:
        return f"version {version} was written by a newer fastopt (this one reads {VERSION})"
    missing = {"defaults", "max_grad_norm", "skip_nonfinite", "partial", "groups"} - set(record)
    if missing:
        return f"missing {sorted(missing)}"
    if not isinstance(record["defaults"], Mapping):
        return "'defaults' is not an object"
    if not isinstance(record["groups"], list):
        return "'groups' is not a list"
    for i, group in enumerate(record["groups"]):
        if not isinstance(group, Mapping) or not {"index", *GROUP_VALUES} <= set(group):
            return f"groups[{i}] needs 'index', 'lr', 'lr_scale' and 'weight_decay'"
        if not isinstance(group["index"], int) or isinstance(group["index"], bool):
            return f"groups[{i}]['index'] is {group['index']!r} (expected an integer)"
    return None


class _Unset:
    def __repr__(self):
        return "(not set)"


_UNSET = _Unset()


def _same(a, b):
    """Equality of JSON-safe values, with NaN equal to NaN and tuples equal to lists."""
    if a is _UNSET or b is _UNSET:
        return a is b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _same_lr(saved, current):
    """Whether two lr records describe the same learning rate: equal floats, equal
    schedule descriptions (a stateful schedule's ``state`` aside: it is restored, not
    compared), or callables with equal reprs once memory addresses are dropped.
    """
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        if "schedule" in saved and "schedule" in current:
            return _same(_stateless(saved["schedule"]), _stateless(current["schedule"]))
        if "callable" in saved and "callable" in current:
            return _ADDRESS.sub("", str(saved["callable"])) == current["callable"]
        return False
    return (
        not isinstance(saved, Mapping)
        and not isinstance(current, Mapping)
        and _same(saved, current)
    )


def _stateless(description):
    if isinstance(description, Mapping):
        return {k: v for k, v in description.items() if k != "state"}
    return description


def _shown(value):
    """A recorded value as Python would print it (lists as tuples: betas read (0.9, 0.999))."""
    if isinstance(value, list):
        return "(" + ", ".join(_shown(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, Mapping):
        return json.dumps(value)
    return repr(value)


def _shown_lr(record):
    """A learning rate as the user wrote it: a number, a schedule's repr, a callable's."""
    if isinstance(record, Mapping):
        if "schedule" in record:
            from ..schedules import from_dict

            try:
                return repr(from_dict(dict(record["schedule"])))
            except (TypeError, ValueError, KeyError):
                return json.dumps(record["schedule"])
        if "callable" in record:
            return str(record["callable"])
    return _shown(record)


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
