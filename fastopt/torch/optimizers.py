"""``torch.optim``-compatible optimizers that run fastopt's fused kernels over flat buffers.

Each class takes torch's constructor arguments and defaults, keeps torch's
``param_groups`` (so ``torch.optim.lr_scheduler`` and per-group options work) and torch's
per-parameter ``state`` (names, shapes, ``step`` as a float32 tensor), and applies the same
per-element update as the matching fastopt optimizer, one fused kernel call per contiguous
run of parameters (usually one per group). See ``docs/torch.md``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.autograd.graph import increment_version

from .._config import REDUCTION_BLOCK
from .._validation import check_number, scheduled_lr
from ..kernels import adagrad, adam, blockwise, rmsprop, sgd
from ..kernels.clipping import clipped_scale
from ..kernels.host import HOST, count_nonfinite, grad_sumsq_parallel, grad_sumsq_serial
from ..kernels.precision import check_precision, state_dtype
from ..optim.state import ABSMAX
from .flat import FlatBuffers, host_zeros

CODES = "_codes"
"""Suffix of a parameter's 8-bit codes in its state entry (``exp_avg_codes``, a uint8
tensor of the parameter's shape, beside ``exp_avg_absmax``, one scale per block)."""


class _Changes:
    """Whether an optimizer's ``state``, or an entry of it, changed since the last step
    looked at them.
    """

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        self.dirty = True


class _Tracked:
    """Dict methods that record a change before making it (for the two classes below)."""

    __slots__ = ()
    _changes: _Changes

    def __setitem__(self, key, value):
        self._changes.dirty = True
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self._changes.dirty = True
        super().__delitem__(key)

    def __ior__(self, other):
        self._changes.dirty = True
        return super().__ior__(other)

    def clear(self):
        self._changes.dirty = True
        super().clear()

    def pop(self, *args):
        self._changes.dirty = True
        return super().pop(*args)

    def popitem(self):
        self._changes.dirty = True
        return super().popitem()

    def setdefault(self, key, default=None):
        self._changes.dirty = True
        return super().setdefault(key, default)

    def update(self, *args, **kwargs):
        self._changes.dirty = True
        super().update(*args, **kwargs)


class StateEntry(_Tracked, dict):
    """A parameter's entry in ``opt.state``: a dict (``step`` and the state tensors) that
    tells its optimizer when it is changed, so that the step looks at the entries only
    then. Copies and pickles of it are plain dicts.
    """

    __slots__ = ("_changes",)

    def __init__(self, changes: _Changes, items: Mapping[Any, Any] | None = None) -> None:
        super().__init__()
        self._changes = changes
        if items:
            dict.update(self, items)

    def __reduce__(self):
        return dict, (dict(self),)


class OptimizerState(_Tracked, defaultdict):
    """``opt.state``: torch's ``defaultdict(dict)`` of the parameters' entries, which tells
    its optimizer when it or an entry is changed (a missing entry is created as an empty
    :class:`StateEntry`). Copies and pickles of it are plain ``defaultdict(dict)``.
    """

    __slots__ = ("_changes",)

    def __init__(self, changes: _Changes, items: Mapping[Any, Any] | None = None) -> None:
        super().__init__(dict)
        self._changes = changes
        if items is not None:
            if not isinstance(items, Mapping):
                raise TypeError(
                    f"opt.state must be a dict of the parameters' state entries, not a "
                    f"{type(items).__name__}"
                )
            dict.update(self, items)

    def __missing__(self, key):
        entry = self[key] = StateEntry(self._changes)
        return entry

    def __reduce__(self):
        return defaultdict, (dict,), None, None, iter(self.items())

    def copy(self):
        return defaultdict(dict, self)

    __copy__ = copy

    def __or__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = defaultdict(dict, other)
        merged.update(self)
        return merged


class FlatOptimizer(torch.optim.Optimizer):
    """The shared machinery; subclasses set ``algorithm``, ``_state_names(group)``,
    ``_scalars(group, step, first)``, ``_initial_state`` (what a new state buffer holds)
    and ``_group_defaults`` (the options torch's ``__setstate__`` adds to a loaded
    group that lacks them).

    Parameters that have no gradient at a step (``p.grad`` is None, or nothing reached
    them since ``zero_grad()``) are skipped, as torch skips them: no update, no weight
    decay, and their ``step`` does not advance.

    ``opt.state`` holds torch's entries, as views of the flat state buffers. When it or an
    entry is changed (cleared, replaced, another tensor bound), the next update of each
    parameter looks at its entry again first: an empty or missing entry starts the
    parameter afresh (state at its initial value, ``step`` 0), and a tensor that is not
    the view is checked and copied into the flat buffers, the entry then holding the
    views again.

    With ``state_precision="8bit"`` every parameter starts at a multiple of
    :data:`fastopt.kernels.blockwise.BLOCK` elements in the flat buffers, so each
    parameter's state is whole blocks of its own (as bitsandbytes quantises per tensor)
    and any run of parameters is a run of whole blocks; fewer than
    :data:`~fastopt.kernels.blockwise.MIN_SIZE` elements in all keep full state.
    """

    algorithm: Any

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        state_precision: str = "full",
    ) -> None:
        self._changes = _Changes()  # before torch's constructor sets self.state
        self.state_precision = self.requested_precision = check_precision(state_precision)
        if defaults.get("foreach") and defaults.get("fused"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        for key in ("capturable", "differentiable"):
            if defaults.get(key):
                raise ValueError(
                    f"{key}=True is not supported by fastopt.torch (it runs fused CPU "
                    "kernels outside autograd and CUDA graphs)"
                )
        if max_grad_norm is not None:
            max_grad_norm = check_number(
                "max_grad_norm", max_grad_norm, "0 < max_grad_norm", lambda v: v > 0
            )
        self.max_grad_norm = max_grad_norm
        self.skip_nonfinite = bool(skip_nonfinite)
        self.skipped_steps = 0
        super().__init__(params, defaults)
        if self.state_precision == "8bit" and _numel(self.param_groups) < blockwise.MIN_SIZE:
            self.state_precision = "full"  # too small to gain: see fastopt.kernels.blockwise
        for group in self.param_groups:
            self._check_group(group)
        eight_bit = self.state_precision == "8bit"
        self._flat = FlatBuffers(self.param_groups, blockwise.BLOCK if eight_bit else 1)
        self._workspaces: dict[torch.dtype, np.ndarray] = {}
        count = len(self._flat.params)
        self._steps = np.zeros(count, np.float32)  # torch's state["step"]
        self._step_views = torch.from_numpy(self._steps)
        self._step_tensors = list(self._step_views)  # each parameter's "step": the same view
        self._views: list[dict[str, torch.Tensor]] = [{} for _ in range(count)]
        # entries to look at before the parameter's next update, and the state names each
        # group's entries were last looked at for
        self._stale = np.ones(count, bool)
        self._any_stale = True
        self._names: list[tuple[str, ...] | None] = [None] * len(self.param_groups)
        self._members = [
            np.array([i for i, s in enumerate(self._flat.slots) if s.group == g], np.intp)
            for g in range(len(self.param_groups))
        ]
        self._buffers: dict[tuple[torch.dtype, str], torch.Tensor] = {}
        self._host_buffers: dict[tuple[torch.dtype, str], np.ndarray] = {}
        self._whole_runs = self._runs(np.ones(count, bool), self._steps)
        self._partials = {}
        self._eager_state()

    @property
    def state(self) -> OptimizerState:
        """The per-parameter state, as torch's: ``opt.state[p]`` is a dict of ``step`` and
        the state tensors, views of the flat state buffers. It can be changed as torch's can
        (cleared, replaced, an entry deleted or another tensor bound in it); the change
        takes effect at the parameter's next update (see :class:`FlatOptimizer`).
        """
        return self._state

    @state.setter
    def state(self, value: Mapping[Any, Any]) -> None:
        self._changes.dirty = True
        if not (isinstance(value, OptimizerState) and value._changes is self._changes):
            value = OptimizerState(self._changes, value)
        self._state = value

    # -- what subclasses define --------------------------------------------------------
    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def _scalars(self, group: dict[str, Any], step: int, first: bool) -> tuple:
        """The kernel's scalars for update ``step`` of a run of parameters; ``first``: the
        run's momentum buffers start from this gradient (SGD's first update, or its
        buffer created since).
        """
        raise NotImplementedError

    _group_defaults: dict[str, Any] = {}
    """What torch's ``__setstate__`` sets in a loaded group that lacks it."""
    _group_forced: dict[str, Any] = {}
    """What torch's ``__setstate__`` sets in every loaded group (AdamW's decoupling)."""

    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise torch's errors for a group's options (at construction and every step)."""
        _check_lr(group["lr"])
        _check_nonnegative("weight_decay value", group["weight_decay"])

    def _check_padding_eps(self, group: dict[str, Any]) -> None:
        if self.state_precision == "8bit" and group["eps"] == 0:
            raise ValueError(
                "eps=0 with state_precision='8bit' is not supported by fastopt.torch: each "
                "parameter's last block is padded with zeros, whose update is 0 / (0 + eps), "
                "NaN for eps=0, and the NaN would reach the block's scale; use eps > 0"
            )

    def _initial_state(self, group: dict[str, Any], name: str) -> float:
        return 0.0

    def _eager_state(self) -> None:
        """State torch creates at construction rather than at the first step (Adagrad)."""

    # -- the flat state --------------------------------------------------------------------
    def _buffer(self, dtype: torch.dtype, name: str) -> torch.Tensor:
        key = (dtype, name)
        if key not in self._buffers:
            size = self._flat.data[dtype].numel()
            if self.state_precision == "bfloat16":  # uint16 words, seen by torch as bfloat16
                words = np.zeros(size, np.uint16)
                self._buffers[key] = torch.from_numpy(words.view(np.int16)).view(torch.bfloat16)
                self._host_buffers[key] = words
            elif self.state_precision == "8bit":  # codes, and one scale per block
                codes = np.zeros(size, np.uint8)
                scales = host_zeros(size // blockwise.BLOCK, dtype)
                self._buffers[key] = torch.from_numpy(codes)
                self._buffers[(dtype, name + ABSMAX)] = torch.from_numpy(scales)
                self._host_buffers[key] = codes
                self._host_buffers[(dtype, name + ABSMAX)] = scales
            else:
                self._buffers[key] = torch.from_numpy(host_zeros(size, dtype))
                self._host_buffers[key] = self._buffers[key].numpy()
        return self._buffers[key]

    def _state_view(self, i: int, name: str) -> torch.Tensor:
        slot = self._flat.slots[i]
        return self._buffer(slot.dtype, name)[slot.start : slot.stop].view_as(self._flat.params[i])

    def _scale_view(self, i: int, name: str) -> torch.Tensor:
        """Parameter ``i``'s 8-bit scales: its own blocks (it starts on a block)."""
        slot = self._flat.slots[i]
        self._buffer(slot.dtype, name)  # allocates the codes and the scales on first use
        first = slot.start // blockwise.BLOCK
        blocks = blockwise.blocks_of(slot.stop - slot.start)
        return self._buffers[(slot.dtype, name + ABSMAX)][first : first + blocks]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's, while the optimizer is built; afterwards it raises: the parameters
        of every group must be in the flat buffers from the start.
        """
        if hasattr(self, "_flat"):
            raise RuntimeError(
                "fastopt.torch optimizers cannot add a parameter group after construction "
                "(their parameters are packed into flat buffers when built): pass every "
                "group to the constructor, with lr=0 for those to start later"
            )
        super().add_param_group(param_group)

    def _keys(self, i: int, name: str) -> tuple[tuple[str, torch.Tensor], ...]:
        """The keys and views state ``name`` of parameter ``i`` has in its entry: ``name``,
        or for "8bit" its codes and its scales (the same view objects every time).
        """
        views = self._views[i]
        if self.state_precision == "8bit":
            codes, scales = name + CODES, name + ABSMAX
            if codes not in views:
                views[codes], views[scales] = self._state_view(i, name), self._scale_view(i, name)
            return (codes, views[codes]), (scales, views[scales])
        if name not in views:
            views[name] = self._state_view(i, name)
        return ((name, views[name]),)

    def _bind(self, i: int, entry: dict[str, Any], names: tuple[str, ...]) -> None:
        """Point ``entry`` at parameter ``i``'s step and state views (not a change to
        track).
        """
        if self._has_step:
            dict.__setitem__(entry, "step", self._step_tensors[i])
        for name in names:
            for key, view in self._keys(i, name):
                dict.__setitem__(entry, key, view)

    def _fill(self, i: int, name: str) -> None:
        """Set state ``name`` of parameter ``i`` to its initial value."""
        group = self.param_groups[self._flat.slots[i].group]
        fill = self._initial_state(group, name)
        views = [view for _, view in self._keys(i, name)]
        if self.state_precision == "8bit":
            p = self._flat.params[i]
            values = np.full(p.numel(), fill, _numpy_dtype(p.dtype))
            self._store_8bit(*views, *_quantized(name, values))
        else:
            views[0].fill_(fill)

    def _new_entry(self, i: int, names: tuple[str, ...]) -> StateEntry:
        """A fresh entry for parameter ``i``: its state at the initial values (its step
        count is the caller's).
        """
        entry = StateEntry(self._changes)
        self._bind(i, entry, names)
        for name in names:
            self._fill(i, name)
        return entry

    _has_step = True

    # -- runs: contiguous parameters with a gradient and the same step count ---------------
    def _runs(
        self, active: np.ndarray, keys: np.ndarray
    ) -> list[tuple[int, torch.dtype, int, int, list[int]]]:
        """The runs of ``active`` parameters: contiguous, in one group, with equal ``keys``
        (their step counts).
        """
        runs: list[tuple[int, torch.dtype, int, int, list[int]]] = []
        open_runs: dict[torch.dtype, tuple[int, int, int, list[int]]] = {}
        for i, slot in enumerate(self._flat.slots):
            if not active[i]:
                continue
            current = open_runs.get(slot.dtype)
            if (
                current is not None
                and current[0] == slot.group
                and current[2] == slot.start
                and keys[current[3][0]] == keys[i]
            ):
                current[3].append(i)
                open_runs[slot.dtype] = (current[0], current[1], slot.end, current[3])
                continue
            if current is not None:
                runs.append((current[0], slot.dtype, current[1], current[2], current[3]))
            open_runs[slot.dtype] = (slot.group, slot.start, slot.end, [i])
        for dtype, (group, start, stop, members) in open_runs.items():
            runs.append((group, dtype, start, stop, members))
        return runs

    # -- the step ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Apply one update to every parameter that has a gradient.

        Returns the closure's loss when a closure is given (it is evaluated with grad
        enabled, as torch does), else None. Everything that can fail (a parameter that
        left the flat buffer, an option torch refuses, a state entry that cannot be used)
        raises before anything is written.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._flat.params:
            return loss  # only empty groups: nothing to update, as torch
        active = self._flat.refresh()
        if self._changes.dirty:
            self._stale[:] = self._any_stale = True
            self._changes.dirty = False
        for g, group in enumerate(self.param_groups):
            names = self._state_names(group)
            if names != self._names[g]:  # first step, or an option that needs other state
                self._stale[self._members[g]] = self._any_stale = True
                self._names[g] = names
        steps, first, plan = self._steps, None, None
        if self._any_stale:
            todo = np.flatnonzero(self._stale & active)
            if todo.size:
                plan = self._plan(todo)
                steps, first = plan.steps, plan.first
        if first is None and active.all() and steps.min() == steps.max():
            runs = self._whole_runs
        else:
            keys = steps if first is None else steps.astype(np.float64) * 2 + first
            runs = self._runs(active, keys)
        calls = []
        for group_index, dtype, start, stop, members in runs:
            group = self.param_groups[group_index]
            self._check_group(group)
            step = int(steps[members[0]]) + 1
            # SGD: a parameter's first update is always planned (its entry is stale)
            fresh = first is not None and bool(first[members[0]])
            calls.append((group, dtype, start, stop, members, self._scalars(group, step, fresh)))
        factor = self._grad_factor(runs)
        if factor is None:
            self.skipped_steps += 1
            return loss
        if plan is not None:
            self._apply(plan)
        for group, dtype, start, stop, members, scalars in calls:
            state = self._kernel_state(dtype, group, start, stop)
            scale = -factor if group["maximize"] else factor
            kernel = HOST.update_kernel(self.algorithm, stop - start, self.state_precision)
            kernel(
                self._flat.host_data[dtype][start:stop],
                self._flat.host_grad[dtype][start:stop],
                *state,
                scale,
                *scalars,
            )
            self._steps[members] += 1
        # the kernels wrote through NumPy: tell autograd, as torch's in-place update does,
        # so that a graph that saved a parameter refuses to backpropagate through it
        if runs is self._whole_runs:
            increment_version(self._flat.params)
        else:
            params = self._flat.params
            increment_version([params[i] for *_, members in runs for i in members])
        return loss

    # -- the state entries: looked at again after a change ------------------------------
    def _plan(self, todo: np.ndarray) -> _Plan:
        """What the step does to the entries of parameters ``todo`` (with a gradient, their
        entries possibly changed) before it updates them; raises, before anything is
        written, for an entry it cannot use.
        """
        steps = self._steps.copy()
        first = None if self._has_step else np.zeros(steps.size, bool)
        actions = []
        for i in map(int, todo):
            action = self._entry_plan(i)
            if action is None:
                continue
            actions.append(action)
            if action.step is not None:
                steps[i] = action.step
            if first is not None and action.first:
                first[i] = True
        return _Plan(todo, steps, first, actions)

    def _entry_plan(self, i: int) -> _Action | None:
        """What parameter ``i``'s entry needs (None: nothing, it holds the views)."""
        p = self._flat.params[i]
        group_index = self._flat.slots[i].group
        names = self._state_names(self.param_groups[group_index])
        if not names:
            return None  # no state (SGD without momentum): torch keeps no entry either
        entry = self.state.get(p)
        if entry is not None and not isinstance(entry, Mapping):
            raise TypeError(
                f"opt.state[p] of parameter {i} {tuple(p.shape)} is a "
                f"{type(entry).__name__}: an entry is a dict of 'step' and the state tensors"
            )
        if not entry:  # cleared, deleted, or never made: start afresh, as torch does
            return _Action(i, 0.0 if self._has_step else None, names, {}, (), True)
        where = f"opt.state[p] of parameter {i} {tuple(p.shape)}"
        step = None
        if self._has_step:
            value = entry.get("step")
            if value is None:
                raise ValueError(
                    f"{where} holds {sorted(map(str, entry))} but no 'step': an entry holds "
                    f"'step' and the state {list(names)}, or is empty (or deleted) to start "
                    "the parameter afresh"
                )
            if value is not self._step_tensors[i]:
                step = self._checked_step(i, value)
        fresh, copies, drop, missing = [], {}, [], []
        for name in names:
            keys = self._keys(i, name)
            value = entry.get(name) if self.state_precision == "8bit" else None
            if value is not None:  # values bound under torch's name: encoded
                values = self._checked_values(i, name, value).detach().reshape(-1)
                copies[name] = _quantized(name, values.to(p.dtype).numpy())
                drop.append(name)
                continue
            bound = [entry.get(key) for key, _ in keys]
            if all(value is view for value, (_, view) in zip(bound, keys)):
                continue
            if any(value is None for value in bound):
                (fresh if not self._has_step else missing).append(name)
            elif self.state_precision == "8bit":
                copies[name] = self._checked_codes_bound(i, name, *bound)
            else:
                copies[name] = self._checked_values(i, name, bound[0]).detach().clone()
        if missing:
            raise RuntimeError(
                f"param_groups[{group_index}] now needs the state {missing}, which the entry "
                f"of parameter {i} {tuple(p.shape)} does not hold: turn such options "
                "(amsgrad, centered, RMSprop's momentum) on before a parameter's first "
                "update, or delete its entry (del opt.state[p]) to start it afresh"
            )
        if step is None and not (fresh or copies) and isinstance(entry, StateEntry):
            return None
        # SGD: a momentum buffer created now starts from the gradient, as torch's does
        return _Action(i, step, tuple(fresh), copies, tuple(drop), bool(fresh))

    def _apply(self, plan: _Plan) -> None:
        """Carry out ``plan`` (checked): the entries then hold the views, with the values."""
        state = self.state
        for action in plan.actions:
            i = action.index
            p = self._flat.params[i]
            names = self._state_names(self.param_groups[self._flat.slots[i].group])
            entry = state.get(p)
            if not isinstance(entry, StateEntry):
                entry = StateEntry(self._changes, entry)
                dict.__setitem__(state, p, entry)
            for key in action.drop:
                dict.pop(entry, key, None)
            self._bind(i, entry, names)
            for name in action.fresh:
                self._fill(i, name)
            for name, value in action.copies.items():
                views = [view for _, view in self._keys(i, name)]
                if self.state_precision == "8bit":
                    self._store_8bit(*views, *value)
                else:
                    views[0].copy_(value)
            if action.step is not None:
                self._steps[i] = action.step
        self._stale[plan.todo] = False
        self._any_stale = bool(self._stale.any())

    def _checked_step(self, i: int, value: Any) -> float:
        """A ``step`` bound in parameter ``i``'s entry, as a number of updates."""
        number = None
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
            number = float(value)
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, bool
        ):
            number = float(value)
        if number is None or not (math.isfinite(number) and number >= 0 and number % 1 == 0):
            p = self._flat.params[i]
            raise ValueError(
                f"opt.state[p]['step'] of parameter {i} {tuple(p.shape)} is "
                f"{_describe(value)}: a step must be a whole number of updates, 0 or more "
                "(a one-element tensor or a number)"
            )
        return number

    def _checked_values(self, i: int, name: str, value: Any) -> torch.Tensor:
        """A state tensor bound in parameter ``i``'s entry under ``name``, checked."""
        p = self._flat.params[i]
        if not (
            isinstance(value, torch.Tensor) and value.is_floating_point() and value.shape == p.shape
        ):
            raise (ValueError if isinstance(value, torch.Tensor) else TypeError)(
                f"opt.state[p][{name!r}] of parameter {i} {tuple(p.shape)} is "
                f"{_describe(value)}: a state tensor bound in an entry must be a real "
                f"floating-point tensor of the parameter's shape {tuple(p.shape)} (its "
                "values are copied into the optimizer's flat state)"
            )
        return value

    def _checked_codes_bound(self, i: int, name: str, codes: Any, scales: Any) -> tuple:
        """8-bit codes and scales bound in parameter ``i``'s entry, as NumPy copies."""
        p = self._flat.params[i]
        where = f"of parameter {i} {tuple(p.shape)}"
        if not (
            isinstance(codes, torch.Tensor)
            and codes.dtype == torch.uint8
            and codes.shape == p.shape
        ):
            raise ValueError(
                f"opt.state[p][{name + CODES!r}] {where} is {_describe(codes)}: 8-bit codes "
                f"bound in an entry must be a torch.uint8 tensor of the parameter's shape "
                f"{tuple(p.shape)}"
            )
        blocks = blockwise.blocks_of(p.numel())
        if not (
            isinstance(scales, torch.Tensor)
            and scales.is_floating_point()
            and scales.numel() == blocks
        ):
            raise ValueError(
                f"opt.state[p][{name + ABSMAX!r}] {where} is {_describe(scales)}: the scales "
                f"bound in an entry must be a real floating-point tensor of one scale per "
                f"block of {blockwise.BLOCK} elements ({blocks})"
            )
        return (
            codes.detach().reshape(-1).numpy().copy(),
            scales.detach().reshape(-1).to(p.dtype).numpy().copy(),
        )

    def _kernel_state(self, dtype, group, start, stop):
        """The kernel's state arguments for ``[start, stop)``: a buffer per state name (an
        empty one for a name the group does not use); for "8bit" the codes, then the
        scales of the run's blocks, then a workspace.
        """
        names = self._state_names(group)
        param_dtype = self._flat.host_data[dtype].dtype
        unused = np.empty(0, state_dtype(self.state_precision, param_dtype))
        buffers = []
        for name in self.algorithm.state:
            if name in names:
                self._buffer(dtype, name)
            buffers.append(self._host_buffers[(dtype, name)][start:stop] if name in names
                           else unused)  # fmt: skip
        if self.state_precision != "8bit":
            return buffers
        no_scales = np.empty(0, param_dtype)
        blocks = slice(start // blockwise.BLOCK, stop // blockwise.BLOCK)
        for name in self.algorithm.state:
            buffers.append(self._host_buffers[(dtype, name + ABSMAX)][blocks] if name in names
                           else no_scales)  # fmt: skip
        if dtype not in self._workspaces:
            self._workspaces[dtype] = HOST.block_workspace(len(self.algorithm.state), param_dtype)
        return [*buffers, self._workspaces[dtype]]

    @staticmethod
    def _store_8bit(codes, scales, new_codes, new_scales):
        """Write NumPy codes and scales into a parameter's 8-bit state views."""
        codes.copy_(torch.from_numpy(new_codes).view_as(codes))
        scales.copy_(torch.from_numpy(new_scales))

    def _grad_factor(self, runs) -> float | None:
        """1, the clipping factor, or None to skip the step (a non-finite gradient)."""
        if self.max_grad_norm is None and not self.skip_nonfinite:
            return 1.0
        sumsq = 0.0
        for _, dtype, start, stop, _ in runs:
            grad = self._flat.host_grad[dtype][start:stop]
            partials = self._partials.setdefault(
                (dtype, start, stop), np.empty(-(-grad.size // REDUCTION_BLOCK), np.float64)
            )
            reduce = HOST.threaded(grad_sumsq_serial, grad_sumsq_parallel, grad.size)
            sumsq += reduce(grad, partials)
        if self.skip_nonfinite and not math.isfinite(sumsq):
            grads = [self._flat.host_grad[dtype][start:stop] for _, dtype, start, stop, _ in runs]
            if math.isnan(sumsq) or any(count_nonfinite(g) for g in grads):
                return None  # (an inf sum of finite float64 squares is not a reason)
        if self.max_grad_norm is None:
            return 1.0
        return clipped_scale(1.0, sumsq, 1.0, self.max_grad_norm)

    # -- gradients, checkpoints, copies ----------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient buffer in one pass. ``p.grad`` stays a view of it either
        way (a gradient kept without ``.clone()`` is zeroed too), so the next backward
        accumulates in place; with ``set_to_none`` (torch's default) a parameter then
        counts as having no gradient (and is skipped, as torch skips ``p.grad is None``)
        until a backward reaches it or a gradient is written into the view in place.
        Without it, every parameter that had a gradient steps a zero one, as in torch.
        """
        self._flat.zero_grad(set_to_none)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this optimizer or of the matching ``torch.optim`` one.

        torch's loader checks the groups and casts the tensors; the values are then copied
        into the flat state buffers, which the kernels update. A state_dict that fails a
        check (an option torch refuses, 8-bit entries of the wrong size) raises and leaves
        the optimizer as it was.
        """
        before = self.state, self.param_groups
        super().load_state_dict(state_dict)
        try:
            for group in self.param_groups:
                self._check_group(group)
            # copies first: loading an optimizer's own state_dict gives back its own views
            saved = {
                p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in entry.items()}
                for p, entry in self.state.items()
            }
            converted = []  # checked and converted to this precision before any write
            for p, loaded in saved.items():
                i = self._flat.index[id(p)]
                group = self.param_groups[self._flat.slots[i].group]
                names = self._state_names(group)
                values = {name: self._loaded_state(i, name, loaded) for name in names}
                converted.append((p, i, values, self._loaded_step(loaded)))
        except Exception:
            self.state, self.param_groups = before  # torch's loader replaced both
            raise
        self._steps[:] = 0
        state = OptimizerState(self._changes)
        for p, i, values, step in converted:
            entry = self._new_entry(i, tuple(values))
            for name, value in values.items():
                if value is None:
                    continue
                views = [view for _, view in self._keys(i, name)]
                if self.state_precision == "8bit":
                    self._store_8bit(*views, *value)
                else:
                    views[0].copy_(value)
            if entry:  # torch keeps no entry for a stateless parameter (SGD without momentum)
                dict.__setitem__(state, p, entry)
            self._steps[i] = step
        self.state = state  # the others start afresh at their next update

    def _loaded_state(self, i: int, name: str, loaded: dict[str, Any]) -> Any:
        """A loaded state buffer of parameter ``i`` in this optimizer's precision: ``(codes,
        scales)`` NumPy arrays for "8bit", else a tensor to copy (torch rounds it to
        bfloat16); None when absent. A saved 8-bit entry is decoded exactly, a float one
        encoded as a step encodes.
        """
        p = self._flat.params[i]
        if loaded.get(name + CODES) is not None:
            codes, scales = self._checked_codes(i, name, loaded)
            if self.state_precision == "8bit":
                return codes, scales
            return _decoded(name, codes, scales, p)
        value = loaded.get(name)
        if value is None:
            return None
        if value.numel() != p.numel():
            raise ValueError(
                f"the state of parameter {i} {tuple(p.shape)} has {name} with "
                f"{value.numel()} elements: it needs one per element ({p.numel()})"
            )
        if self.state_precision != "8bit":
            return value.reshape(p.shape)
        return _quantized(name, value.detach().reshape(-1).to(p.dtype).numpy())

    def _checked_codes(self, i: int, name: str, loaded: dict[str, Any]) -> tuple:
        """The saved 8-bit ``(codes, scales)`` of parameter ``i`` as NumPy arrays, checked:
        one code (an integer 0 to 255; torch's loader cast it to the parameter dtype) per
        element and one scale per block.
        """
        p = self._flat.params[i]
        codes, scales = loaded[name + CODES], loaded.get(name + ABSMAX)
        n, blocks = p.numel(), blockwise.blocks_of(p.numel())
        if scales is None or codes.numel() != n or scales.numel() != blocks:
            raise ValueError(
                f"the state of parameter {i} {tuple(p.shape)} has {name + CODES} with "
                f"{codes.numel()} elements and {name + ABSMAX} with "
                f"{None if scales is None else scales.numel()}: 8-bit state needs one "
                f"code per element ({n}) and one scale per block of {blockwise.BLOCK} "
                f"({blocks})"
            )
        flat = codes.detach().reshape(-1)
        as_codes = flat.to(torch.uint8)
        if not torch.equal(as_codes.to(flat.dtype), flat):
            raise ValueError(
                f"the state of parameter {i} {tuple(p.shape)}: {name + CODES} must hold "
                "8-bit codes (integers 0 to 255)"
            )
        return as_codes.numpy(), scales.detach().reshape(-1).to(p.dtype).numpy()

    def full_state_dict(self) -> dict[str, Any]:
        """:meth:`state_dict` with every state buffer as full-precision values (tensors of
        the parameter's dtype and shape, under torch's names), whatever this optimizer's
        ``state_precision``: what the matching ``torch.optim`` optimizer loads. As with
        :meth:`state_dict`, full-precision buffers are the optimizer's own views.
        """
        sd = self.state_dict()
        index = {}  # torch's numbering of the parameters (a tied one: its last place)
        for group, packed in zip(self.param_groups, sd["param_groups"]):
            index.update(zip(map(id, group["params"]), packed["params"]))
        for p, entry in self.state.items():
            full = {key: value for key, value in entry.items()
                    if not key.endswith((CODES, ABSMAX))}  # fmt: skip
            group = self.param_groups[self._flat.slots[self._flat.index[id(p)]].group]
            for name in self._state_names(group):
                if entry.get(name + CODES) is not None:
                    codes, scales = entry[name + CODES], entry[name + ABSMAX]
                    full[name] = _decoded(name, codes.reshape(-1).numpy(), scales.numpy(), p)
                elif entry.get(name) is not None:
                    full[name] = entry[name].to(p.dtype)
            sd["state"][index[id(p)]] = full
        return sd

    def _loaded_step(self, loaded: dict[str, Any]) -> float:
        step = loaded.get("step", 0)
        return float(step.item() if isinstance(step, torch.Tensor) else step)

    def __getstate__(self):
        raise TypeError(
            f"a fastopt.torch.{type(self).__name__} cannot be pickled or deep-copied (its "
            "parameters live in its flat buffers): save state_dict() and load it into a new "
            "optimizer built on the new model"
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        """As torch's, called by :meth:`load_state_dict` (the buffers stay): the loaded
        groups get the options that torch's own class adds to groups that lack them (a
        state_dict of an older torch), and AdamW's decoupled weight decay.
        """
        super().__setstate__(state)
        if "state" in self.__dict__:  # torch's loader sets it past the property
            self.state = self.__dict__.pop("state")
        for group in self.param_groups:
            for key, value in self._group_defaults.items():
                group.setdefault(key, value)
            group.update(self._group_forced)

    def state_dict(self) -> dict[str, Any]:
        """The state_dict, as torch's: ``state`` (each parameter's entry, as a plain dict
        of its tensors, numbered as torch numbers them) and ``param_groups``. Full-precision
        state tensors are the optimizer's own views (``.clone()`` to keep them).
        """
        sd = super().state_dict()
        sd["state"] = {
            k: dict(v) if isinstance(v, StateEntry) else v for k, v in sd["state"].items()
        }
        return sd


class _Action(NamedTuple):
    """What one parameter's entry needs before its update (see ``FlatOptimizer._plan``)."""

    index: int
    step: float | None  # the step count it resumes from (None: its own)
    fresh: tuple[str, ...]  # state to set to the initial value
    copies: dict[str, Any]  # state to copy in: a tensor, or for "8bit" (codes, scales)
    drop: tuple[str, ...]  # keys to remove (full values bound in an 8-bit entry)
    first: bool  # SGD: its momentum buffer starts from this gradient


class _Plan(NamedTuple):
    todo: np.ndarray  # the parameters looked at
    steps: np.ndarray  # every parameter's step count after the plan
    first: np.ndarray | None  # SGD: parameters whose momentum buffer starts now
    actions: list[_Action]


def _describe(value):
    """A short description of a value bound in a state entry, for errors."""
    if isinstance(value, torch.Tensor):
        number = f" ({value.item()!r})" if value.numel() == 1 else ""
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}{number}"
    if isinstance(value, (int, float)):
        return repr(value)
    return f"a {type(value).__name__}"


def _numel(param_groups):
    """The number of elements of the distinct parameters of ``param_groups``."""
    return sum({id(p): p.numel() for group in param_groups for p in group["params"]}.values())


def _numpy_dtype(dtype):
    """The NumPy dtype of a supported torch parameter dtype (float32 or float64)."""
    return np.dtype(np.float32 if dtype == torch.float32 else np.float64)


def _quantized(name, values):
    """``(codes, scales)`` of one parameter's state values (its own blocks)."""
    signed = name not in blockwise.UNSIGNED_STATE
    return blockwise.quantize(values, signed, [(0, values.size)])


def _decoded(name, codes, scales, p):
    """The values of one parameter's 8-bit state, as a tensor of ``p``'s dtype and shape."""
    signed = name not in blockwise.UNSIGNED_STATE
    values = blockwise.dequantize(codes, scales, signed, [(0, p.numel())], _numpy_dtype(p.dtype))
    return torch.from_numpy(values).view_as(p)


def _check_lr(lr):
    if callable(lr):
        return  # a fastopt schedule: its values are checked when evaluated
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    value = float(lr) if isinstance(lr, torch.Tensor) else lr
    if not 0.0 <= value:
        raise ValueError(f"Invalid learning rate: {lr}")


def _check_nonnegative(name, value):
    if not 0.0 <= value:
        raise ValueError(f"Invalid {name}: {value}")


def _lr(group, step):
    """The group's lr for update ``step`` (1 for the first): a number, a tensor, or a
    fastopt schedule evaluated at the updates applied so far (``step - 1``).
    """
    lr = group["lr"]
    if callable(lr):
        return scheduled_lr(lr, step - 1)
    return float(lr)


class SGD(FlatOptimizer):
    r"""torch.optim.SGD on fastopt's fused kernels (see :class:`fastopt.SGD` for the rule).

    Parameters
    ----------
    params : iterable of tensors or of dicts
        As for ``torch.optim.SGD``: parameters or parameter groups with their own options.
    lr, momentum, dampening, weight_decay, nesterov, maximize
        torch's options and defaults.
    foreach, fused : optional
        Accepted for compatibility and ignored: every update is one fused kernel.
    differentiable : bool, default False
        Must be False.
    max_grad_norm : float, optional
        Clip the gradient to this global norm inside the update (as
        ``torch.nn.utils.clip_grad_norm_`` followed by the step, with no extra pass).
    skip_nonfinite : bool, default False
        Skip the whole step when a gradient holds NaN or inf.
    state_precision : {"full", "bfloat16", "8bit"}, default "full"
        Store the state in bfloat16 (``torch.bfloat16`` tensors, half the memory) or as
        8-bit codes with one scale per block of 256 elements of each parameter
        (``state[p]["momentum_buffer_codes"]``, uint8, and
        ``state[p]["momentum_buffer_absmax"]``; about a quarter of the memory; under
        4,096 elements in all, full state; ``eps=0`` refused). See
        ``docs/low-precision.md``, ``docs/torch.md`` and :meth:`full_state_dict`.

    Notes
    -----
    State per parameter: ``momentum_buffer`` (with momentum), as torch; the first update
    copies the gradient into it without dampening. A parameter's values move into the
    optimizer's flat buffer on construction (``p.data`` becomes a view); see
    ``docs/torch.md``.
    """

    algorithm = sgd.ALGORITHM
    _has_step = False
    _group_defaults = {"nesterov": False, "maximize": False, "foreach": None,
                       "differentiable": False, "fused": False}  # fmt: skip

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        state_precision: str = "full",
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)  # fmt: skip
        super().__init__(
            params,
            defaults,
            max_grad_norm=max_grad_norm,
            skip_nonfinite=skip_nonfinite,
            state_precision=state_precision,
        )

    def _check_group(self, group):
        super()._check_group(group)
        _check_nonnegative("momentum value", group["momentum"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _scalars(self, group, step, first):
        return tuple(sgd.host_scalars(
            lr=_lr(group, step), weight_decay=float(group["weight_decay"]),
            momentum=float(group["momentum"]), dampening=float(group["dampening"]),
            nesterov=bool(group["nesterov"]), first_step=first,
        ))  # fmt: skip

    def _loaded_step(self, loaded):
        # torch's SGD keeps no step: a momentum buffer means the first update is done
        buffer = loaded.get("momentum_buffer", loaded.get("momentum_buffer" + CODES))
        return 1.0 if buffer is not None else 0.0


class Adagrad(FlatOptimizer):
    r"""torch.optim.Adagrad on fastopt's fused kernels (see :class:`fastopt.Adagrad`).

    Parameters
    ----------
    params : iterable of tensors or of dicts
    lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize
        torch's options and defaults.
    foreach, fused : optional
        Accepted and ignored. ``differentiable`` must be False.
    max_grad_norm, skip_nonfinite
        As for :class:`SGD`.

    Notes
    -----
    State: ``step`` and ``sum``, created at construction as torch does.
    """

    algorithm = adagrad.ALGORITHM
    _group_defaults = {"foreach": None, "maximize": False, "differentiable": False,
                       "fused": None}  # fmt: skip

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        state_precision: str = "full",
    ) -> None:
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)  # fmt: skip
        super().__init__(
            params,
            defaults,
            max_grad_norm=max_grad_norm,
            skip_nonfinite=skip_nonfinite,
            state_precision=state_precision,
        )

    def _check_group(self, group):
        super()._check_group(group)
        _check_nonnegative("lr_decay value", group["lr_decay"])
        _check_nonnegative("initial_accumulator_value value", group["initial_accumulator_value"])
        _check_nonnegative("epsilon value", group["eps"])
        self._check_padding_eps(group)

    def _state_names(self, group):
        return ("sum",)

    def _initial_state(self, group, name):
        return float(group["initial_accumulator_value"])

    def _eager_state(self):
        for i, p in enumerate(self._flat.params):
            dict.__setitem__(self.state, p, self._new_entry(i, ("sum",)))

    def _scalars(self, group, step, first):
        return tuple(adagrad.host_scalars(
            lr=_lr(group, step), lr_decay=float(group["lr_decay"]),
            weight_decay=float(group["weight_decay"]), eps=float(group["eps"]), step=step,
        ))  # fmt: skip


class RMSprop(FlatOptimizer):
    r"""torch.optim.RMSprop on fastopt's fused kernels (see :class:`fastopt.RMSprop`).

    Parameters
    ----------
    params : iterable of tensors or of dicts
    lr, alpha, eps, weight_decay, momentum, centered, maximize
        torch's options and defaults.
    foreach : optional
        Accepted and ignored. ``capturable`` and ``differentiable`` must be False.
    max_grad_norm, skip_nonfinite
        As for :class:`SGD`.

    Notes
    -----
    State: ``step``, ``square_avg``, ``momentum_buffer`` (with momentum) and ``grad_avg``
    (centered), as torch. torch has no fused RMSprop; this one is.
    """

    algorithm = rmsprop.ALGORITHM
    _group_defaults = {"momentum": 0, "centered": False, "foreach": None, "maximize": False,
                       "differentiable": False, "capturable": False}  # fmt: skip

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        state_precision: str = "full",
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)  # fmt: skip
        super().__init__(
            params,
            defaults,
            max_grad_norm=max_grad_norm,
            skip_nonfinite=skip_nonfinite,
            state_precision=state_precision,
        )

    def _check_group(self, group):
        super()._check_group(group)
        _check_nonnegative("epsilon value", group["eps"])
        self._check_padding_eps(group)
        _check_nonnegative("momentum value", group["momentum"])
        _check_nonnegative("alpha value", group["alpha"])
        if group["centered"] and self.requested_precision == "8bit":
            raise ValueError(
                "centered=True with state_precision='8bit' is not supported: square_avg and "
                "grad_avg are rounded on their own (up to 6% each), so square_avg - "
                "grad_avg**2 goes negative and its square root NaN, which then fills the "
                "whole block of state; use state_precision='bfloat16' (or 'full')"
            )

    def _state_names(self, group):
        names = ("square_avg",)
        if group["momentum"] > 0:
            names += ("momentum_buffer",)
        if group["centered"]:
            names += ("grad_avg",)
        return names

    def _scalars(self, group, step, first):
        return tuple(rmsprop.host_scalars(
            lr=_lr(group, step), alpha=float(group["alpha"]), eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]), momentum=float(group["momentum"]),
            centered=bool(group["centered"]),
        ))  # fmt: skip


class Adam(FlatOptimizer):
    r"""torch.optim.Adam on fastopt's fused kernels (see :class:`fastopt.Adam` for the rule).

    Parameters
    ----------
    params : iterable of tensors or of dicts
    lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay
        torch's options and defaults.
    foreach, fused : optional
        Accepted and ignored. ``capturable`` and ``differentiable`` must be False.
    max_grad_norm, skip_nonfinite
        As for :class:`SGD`.

    Notes
    -----
    State: ``step``, ``exp_avg``, ``exp_avg_sq`` and ``max_exp_avg_sq`` (amsgrad), as torch.
    """

    algorithm = adam.ALGORITHM
    _decoupled_default = False
    _group_defaults = {"amsgrad": False, "maximize": False, "foreach": None,
                       "capturable": False, "differentiable": False,
                       "decoupled_weight_decay": False, "fused": None}  # fmt: skip

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        state_precision: str = "full",
    ) -> None:
        if decoupled_weight_decay is None:
            decoupled_weight_decay = self._decoupled_default
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)  # fmt: skip
        super().__init__(
            params,
            defaults,
            max_grad_norm=max_grad_norm,
            skip_nonfinite=skip_nonfinite,
            state_precision=state_precision,
        )

    def _check_group(self, group):
        super()._check_group(group)
        _check_nonnegative("epsilon value", group["eps"])
        self._check_padding_eps(group)
        for index, beta in enumerate(group["betas"]):
            if not 0.0 <= float(beta) < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")

    def _state_names(self, group):
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if group["amsgrad"] else names

    def _scalars(self, group, step, first):
        beta1, beta2 = group["betas"]
        return tuple(adam.host_scalars(
            lr=_lr(group, step), betas=(float(beta1), float(beta2)), eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
            amsgrad=bool(group["amsgrad"]), step=step,
        ))  # fmt: skip


class AdamW(Adam):
    r"""torch.optim.AdamW on fastopt's fused kernels: :class:`Adam` with decoupled weight
    decay and torch's AdamW default ``weight_decay=1e-2``.
    """

    _decoupled_default = True
    _group_forced = {"decoupled_weight_decay": True}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        state_precision: str = "full",
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=True, max_grad_norm=max_grad_norm,
            skip_nonfinite=skip_nonfinite, state_precision=state_precision,
        )  # fmt: skip
