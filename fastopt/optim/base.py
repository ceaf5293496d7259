"""The optimizer base: parameters, state buffers and the step path.

Parameter groups live in :mod:`.groups`, checkpoints in :mod:`.checkpoint`; each
algorithm's numerics in its module under :mod:`fastopt.kernels`. The step path holds a
backend (:mod:`fastopt.kernels.backend`) and never asks which one it is.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from .._validation import check_flag, check_lr, check_nonnegative, check_number
from ..buffers import FlatParams
from ..kernels import blockwise
from ..kernels._algorithm import Algorithm
from ..kernels.precision import check_precision, state_dtype
from . import checkpoint, sharding
from .groups import ParamGroups, hyperparameters, resolve_groups
from .params import LearningRate, Params, resolve_params
from .state import OptimizerState, allocate
from .step import StepPlan, read_norm


def fixed(name: str) -> property:
    """``opt.<name>``: a hyperparameter the constructor sets (as ``_<name>``) and that
    cannot be assigned afterwards: the step's scalars, its state layout and
    :meth:`Optimizer.state_dict` are built from it.
    """

    def refuse(self, value):
        raise AttributeError(
            f"{type(self).__name__}.{name} cannot be changed after the optimizer is built "
            f"(got {name}={value!r}): the step, its state and state_dict() are made from it; "
            "build a new optimizer with the new value (a group's 'lr', 'lr_scale' and "
            "'weight_decay' are edited through param_groups)"
        )

    return property(operator.attrgetter("_" + name), refuse, doc=f"The ``{name}`` option.")


class Optimizer:
    """Base class: holds a flat parameter buffer, its state and its parameter groups.

    Subclasses set ``algorithm`` (an entry of :data:`fastopt.kernels.ALGORITHMS`) and
    define ``_state_fill()`` (the state buffers in use and their initial values) and
    ``_scalars(lr, weight_decay, step)`` (the algorithm's host scalars for one group).

    After each update, ``last_lr`` is the learning rate the default group used (a float;
    None before the first update) and :attr:`last_lrs` every group's.

    Wrappers that reduce gradients themselves (:class:`fastopt.distributed.DataParallel`)
    use :meth:`gradient`, :meth:`step` (``grad_factor``, ``grad_norm_info``),
    :meth:`grad_norm_info`, :meth:`shard` and :meth:`release_state`.
    """

    algorithm: Algorithm
    defaults = fixed("defaults")
    maximize = fixed("maximize")
    skip_nonfinite = fixed("skip_nonfinite")
    max_grad_norm = fixed("max_grad_norm")
    _released = False
    _last_norm = None
    _last_lrs = None
    _reused_scalars = None

    def __init__(
        self,
        params: Params,
        *,
        lr: LearningRate,
        weight_decay: float,
        maximize: bool,
        param_groups=None,
        max_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        device: str = "auto",
        state_precision: str = "full",
    ) -> None:
        state_precision = check_precision(state_precision)
        self._params, self.param, self.backend = resolve_params(params, device)
        if state_precision == "8bit" and self.param.size < blockwise.MIN_SIZE:
            state_precision = "full"  # too small to gain: see fastopt.kernels.blockwise
        self.state_precision = state_precision
        self.dtype = np.dtype(self.param.dtype)
        self.state_dtype = state_dtype(state_precision, self.dtype)
        self._maximize = check_flag("maximize", maximize)
        self._skip_nonfinite = check_flag("skip_nonfinite", skip_nonfinite)
        if max_grad_norm is not None:
            max_grad_norm = check_number(
                "max_grad_norm", max_grad_norm, "0 < max_grad_norm", lambda v: v > 0
            )
        self._max_grad_norm = max_grad_norm
        self._defaults = MappingProxyType(dict(self._defaults))
        default = {
            "lr": check_lr(lr),
            "lr_scale": 1.0,
            "weight_decay": check_nonnegative("weight_decay value", weight_decay),
        }
        self._groups = resolve_groups(self._params, self.param.size, default, param_groups)
        size = self.param.size
        bounds = [(g["start"], g["stop"]) for g in self._groups]
        buffers = allocate(self.backend, self._state_fill(), size, self.state_precision,
                                 self.dtype, bounds)  # fmt: skip
        self._state = OptimizerState(0, buffers, self.state_precision, self.dtype, self.backend,
                                     bounds)  # fmt: skip
        self.skipped_steps = 0
        self.last_step_skipped = False
        self.last_lr = None
        self._build()

    def _state_fill(self):
        raise NotImplementedError

    def _scalars(self, lr, weight_decay, step):
        raise NotImplementedError

    def _build(self):
        """Precompute every per-group view so that a step creates no arrays, and compile
        (or load) every kernel the step will call: nothing can fail half-way through a
        step for a kernel not ready yet.
        """
        self._lock = threading.Lock()
        self._reused_scalars = None
        self._plan = StepPlan(self.backend, self.algorithm, self._params, self.param,
                              self._state, self._groups, self.state_precision)  # fmt: skip
        self._plan.prepare(self._scalars(0.0, 0.0, 1))
        self.backend.follow_fork(self)

    @property
    def state(self) -> OptimizerState:
        """``state["step"]`` and the state buffers (torch's names). The buffers are the
        ones the kernels update: write into them, they cannot be replaced.
        """
        return self._state

    @state.setter
    def state(self, value):
        raise AttributeError(
            "opt.state cannot be rebound: the kernels update the optimizer's own buffers; "
            'write into them (opt.state["exp_avg"][:] = values) or use load_state_dict()'
        )

    @property
    def param_groups(self) -> ParamGroups:
        """The parameter groups, in buffer order; ``lr``, ``lr_scale`` and
        ``weight_decay`` can be edited between steps.
        """
        return self._groups

    @param_groups.setter
    def param_groups(self, value):
        raise AttributeError(
            "opt.param_groups cannot be rebound: the groups are fixed when the optimizer "
            "is built; edit a group's 'lr', 'lr_scale' or 'weight_decay' instead"
        )

    # -- what the optimizer was built on ------------------------------------------------
    @property
    def params(self) -> Params:
        """The FlatParams or array this optimizer updates, as it was given."""
        return self._params

    @property
    def grad_buffer(self) -> Any:
        """The FlatParams' flat gradient buffer, or None for an optimizer on a plain array."""
        return self._params.grad if isinstance(self._params, FlatParams) else None

    @property
    def device(self) -> str:
        """Where the buffers live: "cpu" or "cuda"."""
        return self.backend.name

    @property
    def step_count(self) -> int:
        """Number of updates applied so far (skipped steps do not count)."""
        return self._state.step

    # -- the step ----------------------------------------------------------------------
    def step(
        self,
        grad: Any = None,
        *,
        grad_factor: float = 1.0,
        grad_norm_info: tuple[float, bool] | None = None,
    ) -> bool:
        """Apply one update in place.

        Parameters
        ----------
        grad : numpy.ndarray or device array, optional
            The gradient, with the shape and dtype of the parameters. Required when the
            optimizer was built on a plain array; by default a FlatParams' gradient
            buffer is used.
        grad_factor : float, default 1
            For wrappers that reduce gradients themselves: the factor the gradient still
            has to be multiplied by (``1/K`` for a sum over K data-parallel ranks). It is
            folded into the kernel's gradient scale (no extra pass over the gradient);
            clipping and :attr:`last_grad_norm` see the scaled gradient.
        grad_norm_info : (float, bool), optional
            ``(sum of squares, any non-finite value)`` of the unscaled gradient, when it
            was reduced elsewhere (an optimizer that sees one shard of the gradient). By
            default it is computed here when clipping or skipping needs it.

        Returns
        -------
        bool
            True if the update was applied; False if ``skip_nonfinite`` skipped it
            because the gradient had a NaN or infinite value (params and state are
            then untouched, and ``skipped_steps`` grows by one).
        """
        with self._lock:  # one step at a time: concurrent steps would lose updates
            if self._released:
                raise RuntimeError(
                    "this optimizer's state was sharded by DataParallel(zero=True): "
                    "step the DataParallel instead"
                )
            plan, state = self._plan, self._state
            t = state.step
            scale = -grad_factor if self._maximize else grad_factor
            if plan.single and self._max_grad_norm is None and not self._skip_nonfinite:
                # the common case: no lists, no loop, no norm; every check before the write
                lr, scalars = self._single_group_scalars(t)
                if grad is None:
                    kernel, param, group_grad, buffers = plan.segments[0]
                    if group_grad is None:
                        plan.grads(None)  # raises: a plain array needs grad=
                    kernel(param, group_grad, *buffers, plan.grad_scale(scale), *scalars)
                else:
                    plan.update_single(grad, scale, scalars)
                self.last_lr = lr
                state.step = t + 1
                self.last_step_skipped = False
                return True
            if grad is None and plan.grad_buffer is not None:
                flat_grad, group_grads = plan.grad_buffer, plan.buffer_grads
            else:
                flat_grad, group_grads = plan.grads(grad)
            # everything that can fail happens before the first write
            if plan.single:
                lr, scalars = self._single_group_scalars(t)
            else:
                calls = self._group_calls(t)
            if self.max_grad_norm is None and not self.skip_nonfinite:
                kernel_scale = plan.grad_scale(scale)
            else:
                kernel_scale, self._last_norm = plan.kernel_scale(
                    flat_grad, scale, grad_factor, self.max_grad_norm, self.skip_nonfinite,
                    grad_norm_info,
                )  # fmt: skip
                if kernel_scale is None:
                    self.skipped_steps += 1
                    self.last_step_skipped = True
                    return False
            if plan.single:
                kernel, param, _, buffers = plan.segments[0]
                kernel(param, group_grads[0], *buffers, kernel_scale, *scalars)
                self.last_lr = lr
            else:
                for (kernel, param, _, buffers), group_grad, (_, scalars) in zip(
                    plan.segments, group_grads, calls
                ):
                    kernel(param, group_grad, *buffers, kernel_scale, *scalars)
                self._last_lrs = lrs = [lr for lr, _ in calls]
                self.last_lr = lrs[self._lr_group()]
            state.step = t + 1
            self.last_step_skipped = False
            return True

    @property
    def last_lrs(self) -> list[float] | None:
        """Every parameter group's learning rate at the last update, in
        :attr:`param_groups` order (``lr_scale`` applied, a schedule evaluated), or None
        before the first update. :attr:`last_lr` is the default group's entry.
        """
        if self.last_lr is None:
            return None
        lrs = self._last_lrs
        return [self.last_lr] if lrs is None or self._plan.single else list(lrs)

    def _lr_group(self):
        """The index of the group :attr:`last_lr` reports: the first group named
        "default" (the elements in no explicit group, with the constructor's values), or
        the first group when every element is in an explicit group.
        """
        for index, group in enumerate(self._groups):
            selector = group["params"]
            if isinstance(selector, str) and selector == "default":
                return index
        return 0

    def _single_group_scalars(self, t):
        """``(lr, host scalars as a plain tuple)`` of the one group for the update after
        ``t`` updates. With constant hyperparameters the scalars are reused while
        :meth:`_step_key` is unchanged.
        """
        group = self._groups[0]
        lr, wd = hyper = hyperparameters(group, t)
        key = self._step_key(t + 1)
        reused = self._reused_scalars
        if reused is not None and reused[0] is hyper and reused[1] == key:
            return lr, reused[2]
        scalars = tuple(self._scalars(lr, wd, t + 1))
        if hyper is group.constant:  # kept alive here, so never mistaken for a new tuple
            self._reused_scalars = (hyper, key, scalars)
        return lr, scalars

    def _step_key(self, step):
        """What, besides lr and weight decay, the host scalars of update ``step`` depend
        on: equal keys give equal scalars (by default the step itself).
        """
        return step

    def _group_calls(self, t):
        """``(lr, host scalars)`` of every group for the update after ``t`` updates, all
        checked (a schedule is evaluated at ``t``).
        """
        scalars = self._scalars
        hyper = [hyperparameters(group, t) for group in self._groups]
        return [(lr, scalars(lr, wd, t + 1)) for lr, wd in hyper]

    def check_next_step(self) -> None:
        """Raise what the next :meth:`step` would raise for the hyperparameters (a
        schedule's value, an edited group), without stepping: for wrappers that must check
        before a collective operation.
        """
        self._group_calls(self._state.step)

    def gradient(self, grad: Any = None) -> Any:
        """The flat gradient a step would use: the FlatParams' buffer for None, else
        ``grad`` after the shape and dtype checks, as a flat view.
        """
        return self._plan.grads(grad)[0]

    def needs_grad_norm(self) -> bool:
        """Whether a step needs the gradient's norm or finiteness (clipping or skipping)."""
        return self.max_grad_norm is not None or self.skip_nonfinite

    @property
    def last_grad_norm(self) -> float | None:
        """The gradient's global norm at the last step (after the ``grad_factor`` of a
        data-parallel step), or None; computed only when clipping or skipping. On the GPU it
        stays on the device until read here.
        """
        self._last_norm = read_norm(self._last_norm)
        return self._last_norm

    def grad_norm_info(self, grad: Any) -> tuple[float, bool]:
        """``(sum of squares, any non-finite value)`` of a flat gradient (say, one shard of
        a gradient whose norm a wrapper reduces across processes).
        """
        return self._plan.grad_norm_info(grad)

    def zero_grad(self) -> None:
        """Zero the FlatParams gradient buffer."""
        if self.grad_buffer is None:
            raise RuntimeError(
                "this optimizer updates a plain array and has no gradient "
                "buffer: zero the gradient array you pass to step()"
            )
        self._params.zero_grad()

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer state and hyperparameters as plain arrays, numbers and text
        (``np.savez(f, **sd)`` works; :func:`fastopt.save_checkpoint` also saves the
        parameters).

        Keys: ``algorithm``, ``dtype``, ``size``, ``step``, ``skipped_steps``,
        ``group_bounds`` (one ``[start, stop)`` row per group), ``hyperparameters`` (a
        JSON text: the constructor's options (:attr:`defaults`), ``max_grad_norm``,
        ``skip_nonfinite`` and each group's ``lr``, ``lr_scale`` and ``weight_decay``;
        a schedule as its ``to_dict()``, another callable as its repr) and one copied host
        array per state buffer, with torch's names. Taken between steps: a step running in
        another thread finishes first, so the copy is never half one step, half the next.
        """
        with self._lock:
            return self._state_dict_between_steps()

    def _state_dict_between_steps(self) -> dict[str, Any]:
        """:meth:`state_dict` for a caller that holds the step lock."""
        if self._released:
            raise RuntimeError(
                "this optimizer's state was sharded by DataParallel(zero=True) "
                "and it holds none: call DataParallel.state_dict() (on every "
                "rank)"
            )
        return checkpoint.state_dict(self)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Restore a state saved by :meth:`state_dict` (also as loaded back by ``np.load``).

        Parameters
        ----------
        state_dict : mapping
            From :meth:`state_dict`, as is or through ``np.savez`` / ``np.load``.
        strict : bool, default True
            Require the saved hyperparameters to be this optimizer's: the constructor's
            options, ``max_grad_norm``, ``skip_nonfinite`` and each group's ``lr``,
            ``lr_scale`` and ``weight_decay`` (edits included). Schedules compare by their
            ``to_dict()``; other callables (a lambda, a function) by their repr without
            memory addresses, so any two lambdas compare equal. With False the state is
            loaded and this optimizer keeps its own hyperparameters; a state_dict saved
            without hyperparameters (by an older fastopt) loads only with False.

        Raises
        ------
        ValueError
            Naming every hyperparameter that differs (saved and current value), or what
            does not fit: another algorithm, size, group layout or option set (say,
            without ``max_exp_avg_sq`` for an amsgrad optimizer), a malformed count.

        Notes
        -----
        Everything is checked and converted before anything is copied: a load that
        raises (a failing conversion under ``np.errstate(over="raise")``, say) leaves the
        optimizer unchanged. State saved in the other float dtype is cast to this
        optimizer's dtype (as torch does); a resume is then no longer bit for bit. The
        state of a stateful schedule (:func:`fastopt.schedules.reduce_on_plateau`) equal
        to the saved one is restored into it.
        """
        strict = check_flag("strict", strict)
        if self._released:
            raise RuntimeError(
                "this optimizer's state was sharded by DataParallel(zero=True) and it holds "
                "none: call DataParallel.load_state_dict() (on every rank)"
            )
        with self._lock:
            checkpoint.apply(self, checkpoint.checked_state(self, state_dict, strict))

    # -- sharding ------------------------------------------------------------------------
    def shard(self, start: int, stop: int) -> Optimizer:
        """The same optimizer over ``param[start:stop]`` only: a view of these parameters,
        a copy of that share of the state, and the share of each parameter group
        (``group_sources[i]`` is the index of the group the shard's group ``i`` came from).
        It steps with a gradient of ``stop - start`` elements.
        """
        return sharding.shard(self, start, stop)

    def release_state(self) -> None:
        """Drop the full-size state buffers (a wrapper keeps sharded copies); the optimizer
        keeps its parameter groups, but :meth:`step` and :meth:`state_dict` raise.
        """
        self._state = self._state.rebuilt(self._state.step, {})
        self._released = True
        self._build()

    # -- copies ------------------------------------------------------------------------
    def __getstate__(self):
        if not self.backend.pickles_buffers:
            raise TypeError(
                "an optimizer on the GPU cannot be pickled or deep-copied: save "
                "state_dict() (host arrays) and load_state_dict() it into a new one"
            )
        state = dict(self.__dict__)
        for key in ("_plan", "param", "_lock", "_reused_scalars"):
            state.pop(key, None)
        state["_last_norm"] = self.last_grad_norm
        state["_defaults"] = dict(self._defaults)  # a mappingproxy does not pickle
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._defaults = MappingProxyType(dict(self._defaults))
        if "param" not in state:
            params = self._params
            self.param = params.data if isinstance(params, FlatParams) else params.reshape(-1)
        self._build()

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        where = "" if self.device == "cpu" else f", device={self.device!r}"
        return (
            f"{type(self).__name__}(size={self.param.size}, dtype={self.dtype}{where}, {options})"
        )

    def _options(self):
        """The repr's options: the default group's lr, :attr:`defaults`, clipping and
        skipping when set, and the explicit parameter groups' values that differ.
        """
        lr = self._groups[self._lr_group()]["lr"]
        options = {"lr": lr, **self.defaults}
        if self.state_precision != "full":
            options["state_precision"] = self.state_precision
        if self.max_grad_norm is not None:
            options["max_grad_norm"] = self.max_grad_norm
        if self.skip_nonfinite:
            options["skip_nonfinite"] = True
        reference = {"lr": lr, "lr_scale": 1.0, "weight_decay": self.defaults.get("weight_decay")}
        explicit = [
            group
            for group in self._groups
            if not (isinstance(group["params"], str) and group["params"] == "default")
        ]
        if explicit:
            shown = [_group_summary(group, reference) for group in explicit[:3]]
            if len(explicit) > 3:
                shown.append(f"... {len(explicit) - 3} more")
            options["param_groups"] = _Shown("[" + ", ".join(shown) + "]")
        return options


class _Shown(str):
    """Text shown as is in a repr."""

    def __repr__(self):
        return str(self)


def _group_summary(group, reference):
    """``{'params': 'no_decay', 'weight_decay': 0.0}``: a group's selector and the values
    that differ from the default group's.
    """
    selector = group["params"]
    if isinstance(selector, slice):
        label = f"slice({selector.start}, {selector.stop})"
    else:
        label = repr(selector)
    items = [f"'params': {label}"]
    for key in ("lr", "lr_scale", "weight_decay"):
        value, usual = group[key], reference[key]
        if value is not usual and not _equal(value, usual):
            items.append(f"{key!r}: {value!r}")
    return "{" + ", ".join(items) + "}"


def _equal(a, b):
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
