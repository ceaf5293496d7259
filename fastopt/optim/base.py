"""The optimizer base: parameters, groups, state buffers, the step path and checkpoints."""
import math

import numpy as np

from .. import _config, _device
from .._config import REDUCTION_BLOCK
from .._validation import (check_buffer, check_device_buffer, check_device_like, check_flag,
                           check_like, check_lr, check_nonnegative, check_number,
                           scheduled_lr)
from ..buffers import FlatParams
from ..kernels import cpu

GROUP_KEYS = ("params", "lr", "lr_scale", "weight_decay")
_NORM_ON_DEVICE = object()


class Optimizer:
    """Base class: holds a flat parameter buffer, its state and its parameter groups.

    Subclasses define ``_kernels`` (serial, parallel CPU kernels), ``_cuda_kernel`` (the
    name of the kernel in :mod:`fastopt.kernels.cuda`), ``_state_fill()`` (state buffers in
    use and their initial values) and ``_host_scalars(lr, weight_decay, step, grad_scale)``
    (the kernel's scalar arguments, cast to the buffer dtype).

    On the GPU (``device="cuda"``) the parameters, gradient and state are device arrays;
    the same host scalars are passed to a CUDA kernel per group, and global-norm clipping
    is computed and applied on the device.
    """

    _kernels = None
    _cuda_kernel = None
    _released = False
    _backend = None
    device = "cpu"
    _last_grad_norm = None

    def __init__(self, params, *, lr, weight_decay, maximize, param_groups=None,
                 max_grad_norm=None, skip_nonfinite=False, device="auto"):
        self._params, self.param, self.device = _resolve_params(params, device)
        self._backend = _device.cuda_backend() if self.device == "cuda" else None
        self.dtype = np.dtype(self.param.dtype)
        self.maximize = check_flag("maximize", maximize)
        self.skip_nonfinite = check_flag("skip_nonfinite", skip_nonfinite)
        if max_grad_norm is not None:
            max_grad_norm = check_number("max_grad_norm", max_grad_norm, "0 < max_grad_norm",
                                         lambda v: v > 0)
        self.max_grad_norm = max_grad_norm
        default = {"lr": check_lr(lr), "lr_scale": 1.0,
                   "weight_decay": check_nonnegative("weight_decay value", weight_decay)}
        self.param_groups = _resolve_groups(self._params, self.param.size, default, param_groups)
        self.state = {"step": 0}
        for name, fill in self._state_fill().items():
            self.state[name] = (np.full(self.param.size, fill, self.dtype) if self._backend is None
                                else self._backend.full(self.param.size, fill, self.dtype))
        self.skipped_steps = 0
        self.last_step_skipped = False
        self.last_lr = None
        self._build()

    # -- structure -------------------------------------------------------------------
    def _state_fill(self):
        raise NotImplementedError

    def _host_scalars(self, lr, weight_decay, step, grad_scale):
        raise NotImplementedError

    def _kernel_state(self):
        """State buffers in kernel order; an empty array where an option is off."""
        raise NotImplementedError

    def _build(self):
        """Precompute every per-group view so that a step creates no arrays."""
        backend = self._backend
        empty = np.empty(0, self.dtype) if backend is None else backend.empty(0, self.dtype)
        state = [empty if a is None else a for a in self._kernel_state()]
        grad_buffer = self._params.grad if isinstance(self._params, FlatParams) else None
        serial, parallel = self._kernels
        self._segments = []
        for group in self.param_groups:
            s = slice(group["start"], group["stop"])
            if backend is not None:
                kernel = backend.launcher(getattr(backend, self._cuda_kernel), s.stop - s.start)
            elif s.stop - s.start >= _config.PARALLEL_MIN_SIZE:
                kernel = parallel
            else:
                kernel = serial
            grad = None if grad_buffer is None else grad_buffer[s]
            self._segments.append((group, s, kernel, self.param[s], grad,
                                   tuple(a[s] if a.size else a for a in state)))
        if backend is not None:
            self._norm = self._info_norm = self._device_grad = None
            self._no_clip = self._clip = (backend.empty(0, np.float64), 1.0, 0.0)
            return
        self._no_clip = self._clip = ()
        self._partials = np.empty(-(-self.param.size // REDUCTION_BLOCK), np.float64)
        parallel_reduce = self.param.size >= _config.PARALLEL_MIN_SIZE
        self._reduce = cpu.grad_sumsq_parallel if parallel_reduce else cpu.grad_sumsq_serial

    # -- the step ----------------------------------------------------------------------
    @property
    def step_count(self):
        """Number of updates applied so far (skipped steps do not count)."""
        return self.state["step"]

    def step(self, grad=None):
        """Apply one update in place.

        Parameters
        ----------
        grad : numpy.ndarray, optional
            The gradient, with the shape and dtype of the parameters. Required when the
            optimizer was built on a plain array; by default a FlatParams' gradient
            buffer is used.

        Returns
        -------
        bool
            True if the update was applied; False if ``skip_nonfinite`` skipped it
            because the gradient had a NaN or infinite value (params and state are
            then untouched, and ``skipped_steps`` grows by one).
        """
        if self._released:
            raise RuntimeError("this optimizer's state was sharded by DataParallel(zero=True): "
                               "step the DataParallel instead")
        return self._step(grad, None)

    def _step(self, grad, norm_info, grad_factor=1.0):
        """``step`` for a gradient that still has to be multiplied by ``grad_factor`` (a
        sum over ranks times 1/K), with its squared norm and non-finiteness given from
        outside (``(sumsq, any_nonfinite)`` of the unscaled gradient, for an optimizer that
        sees one shard of it) or computed here (None). The factor is folded into the
        kernel's gradient scale: no extra pass over the gradient."""
        flat_grad = self._flat_grad(grad)
        t = self.state["step"]
        hyper = [self._group_hyperparameters(group, t) for group in self.param_groups]
        self._clip = self._no_clip
        grad_scale = self._grad_scale(flat_grad, norm_info, grad_factor)
        if grad_scale is None:
            self.skipped_steps += 1
            self.last_step_skipped = True
            return False
        step = t + 1
        clip = self._clip
        group_grads = self._device_grad[2] if self._backend is not None and grad is not None \
            else None
        for index, ((_, s, kernel, param, group_grad, state), (lr, wd)) in enumerate(
                zip(self._segments, hyper)):
            if grad is not None:
                group_grad = flat_grad[s] if group_grads is None else group_grads[index]
            kernel(param, group_grad, *state, *clip,
                   *self._host_scalars(lr, wd, step, grad_scale))
        self.state["step"] = step
        self.last_step_skipped = False
        self.last_lr = hyper[0][0] if len(hyper) == 1 else [lr for lr, _ in hyper]
        return True

    def _flat_grad(self, grad):
        if grad is None:
            if not isinstance(self._params, FlatParams):
                raise ValueError("step() needs grad= when the optimizer was built on a plain "
                                 "array (only a FlatParams has a gradient buffer)")
            return self._params.grad
        if self._backend is not None:
            return self._flat_device_grad(grad)
        reference = self._params if isinstance(self._params, np.ndarray) else self.param
        check_like("grad", grad, reference)
        return grad if grad.ndim == 1 else grad.reshape(-1)

    def _flat_device_grad(self, grad):
        """The flat device view of a device gradient, checked. Wrapping costs more than a
        small update on a GPU, so the views of the last gradient are kept (without keeping
        its memory alive) and reused while the same object has the same address, shape and
        dtype."""
        cached = self._device_grad
        if cached is not None and _device.is_device_array(grad) and \
                cached[0] == self._backend.array_key(grad):
            return cached[1]
        if not _device.is_device_array(grad):
            raise TypeError("grad must be a device array (the parameters are on the GPU), but "
                            f"got {type(grad).__name__}: fastopt copies nothing per step, so "
                            "move it yourself (numba.cuda.to_device) or compute it on the GPU")
        shape = ((self.param.size,) if isinstance(self._params, FlatParams)
                 else tuple(self._params.shape))
        check_device_like("grad", self._backend.device_layout(grad), shape, self.dtype)
        flat = self._backend.unowned_view(grad).reshape(self.param.size)
        self._device_grad = (self._backend.array_key(grad), flat,
                             [flat[s] for _, s, *_ in self._segments])
        return flat

    def _group_hyperparameters(self, group, t):
        """This step's (lr, weight_decay) of a group as checked Python floats."""
        lr, scale, weight_decay = group["lr"], group["lr_scale"], group["weight_decay"]
        if (type(lr) is float and lr >= 0 and scale == 1.0
                and type(weight_decay) is float and weight_decay >= 0):
            return lr, weight_decay
        lr = scheduled_lr(lr, t) if callable(lr) else check_lr(lr)
        if scale != 1.0:
            lr = lr * check_lr_scale(scale)
            if lr != lr:
                raise ValueError(f"Invalid learning rate: {group['lr']} x lr_scale {scale} is nan")
        return lr, check_nonnegative("weight_decay value", weight_decay)

    def needs_grad_norm(self):
        """Whether a step needs the gradient's norm or finiteness (clipping or skipping)."""
        return self.max_grad_norm is not None or self.skip_nonfinite

    @property
    def last_grad_norm(self):
        """The gradient's global norm at the last step (after the ``grad_factor`` of a
        data-parallel step), or None; computed only when clipping or skipping. On the GPU it
        stays on the device until read here."""
        if self._last_grad_norm is _NORM_ON_DEVICE:
            self._last_grad_norm = math.sqrt(self._norm.read()) * self._norm_factor
        return self._last_grad_norm

    def grad_norm_info(self, grad):
        """``(sum of squares, any non-finite value)`` of a flat gradient."""
        if self._backend is not None:  # its own buffers: last_grad_norm reads self._norm
            if self._info_norm is None:
                self._info_norm = self._backend.GradNorm(self.param.size)
            self._info_norm.compute(grad)
            return self._info_norm.host_info(grad)
        sumsq = self._reduce(grad, self._partials)
        nonfinite = not math.isfinite(sumsq) and (math.isnan(sumsq) or
                                                  bool(cpu.count_nonfinite(grad)))
        return sumsq, nonfinite

    def _grad_scale(self, grad, norm_info=None, factor=1.0):
        scale = -factor if self.maximize else factor
        if not self.needs_grad_norm():
            return scale
        if self._backend is not None:
            return self._device_grad_scale(grad, scale, factor)
        sumsq, nonfinite = self.grad_norm_info(grad) if norm_info is None else norm_info
        norm = math.sqrt(sumsq) * factor
        self._last_grad_norm = norm
        if nonfinite and self.skip_nonfinite:
            return None
        if self.max_grad_norm is not None:
            coefficient = self.max_grad_norm / (norm + 1e-6)
            # a NaN norm gives a NaN factor, as torch's clip_grad_norm_ does
            scale *= coefficient if not coefficient >= 1.0 else 1.0
        return scale

    def _device_grad_scale(self, grad, scale, factor):
        """The GPU's ``_grad_scale``: the norm is reduced on the device and the update
        kernel computes the clipping factor from it; only ``skip_nonfinite`` reads it back
        (the step has to return whether it skipped)."""
        if self._norm is None:
            self._norm = self._backend.GradNorm(self.param.size)
        sumsq = self._norm.compute(grad)
        self._last_grad_norm, self._norm_factor = _NORM_ON_DEVICE, factor
        if self.skip_nonfinite and self._norm.host_info(grad)[1]:
            return None
        if self.max_grad_norm is not None:
            self._clip = (sumsq, factor, self.max_grad_norm)
        return scale

    def zero_grad(self):
        """Zero the FlatParams gradient buffer."""
        if not isinstance(self._params, FlatParams):
            raise RuntimeError("this optimizer updates a plain array and has no gradient "
                               "buffer: zero the gradient array you pass to step()")
        self._params.zero_grad()

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self):
        """The optimizer state as plain arrays and numbers (``np.savez(f, **sd)`` works).

        Keys: ``algorithm``, ``dtype``, ``size``, ``step``, ``skipped_steps``,
        ``group_bounds`` (one ``[start, stop)`` row per group) and one copied array per
        state buffer, with torch's names. Hyperparameters and schedules are not stored:
        they come from the constructor.
        """
        sd = {"algorithm": type(self).__name__, "dtype": str(self.dtype),
              "size": self.param.size, "step": self.state["step"],
              "skipped_steps": self.skipped_steps,
              "group_bounds": np.array([[g["start"], g["stop"]] for g in self.param_groups],
                                       np.int64)}
        for name, value in self.state.items():
            if name != "step":
                sd[name] = value.copy() if self._backend is None else self._backend.to_host(value)
        return sd

    def load_state_dict(self, state_dict):
        """Restore a state saved by :meth:`state_dict` (also as loaded back by ``np.load``).

        Everything is checked before anything is copied: a state_dict from another
        algorithm, size, group layout or option set (say, without ``max_exp_avg_sq`` for
        an amsgrad optimizer) raises ValueError and leaves the optimizer unchanged. State
        saved in the other float dtype is cast to this optimizer's dtype (as torch does);
        a resume is then no longer bit for bit.
        """
        sd = dict(state_dict)
        buffers = [n for n in self.state if n != "step"]
        expected = {"algorithm", "dtype", "size", "step", "skipped_steps", "group_bounds",
                    *buffers}
        if set(sd) != expected:
            raise ValueError(f"state_dict does not fit this {type(self).__name__}: expects keys "
                             f"{sorted(expected)} but got {sorted(sd)}")
        dtype = str(np.asarray(sd["dtype"])[()])
        if dtype not in ("float32", "float64"):
            raise ValueError(f"state_dict has dtype {dtype!r} (expected float32 or float64)")
        algorithm = str(np.asarray(sd["algorithm"])[()])
        if algorithm != type(self).__name__:
            raise ValueError(f"state_dict is from a {algorithm} optimizer, but this optimizer "
                             f"is {type(self).__name__}")
        size = int(np.asarray(sd["size"]))
        if size != self.param.size:
            raise ValueError(f"state_dict is for {size} parameters, but this optimizer has "
                             f"{self.param.size}")
        bounds = np.asarray(sd["group_bounds"])
        mine = [[g["start"], g["stop"]] for g in self.param_groups]
        if bounds.tolist() != mine:
            raise ValueError(f"state_dict has parameter groups {bounds.tolist()}, but this "
                             f"optimizer has {mine}")
        step, skipped = (np.asarray(sd[k]) for k in ("step", "skipped_steps"))
        for key, value in (("step", step), ("skipped_steps", skipped)):
            if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
                raise ValueError(f"Invalid {key} in state_dict: {value.tolist()!r} (expected an "
                                 "integer >= 0)")
        arrays = {}
        for name in buffers:
            value = np.asarray(sd[name])
            if value.shape != (self.param.size,) or value.dtype.kind != "f":
                raise ValueError(f"state_dict[{name!r}] expects a float array of shape "
                                 f"({self.param.size},) but got {value.dtype} {value.shape}")
            arrays[name] = value
        for name, value in arrays.items():
            if self._backend is None:
                np.copyto(self.state[name], value, casting="same_kind")
            else:
                self._backend.copy_from_host(self.state[name], value)
        self.state["step"] = int(step)
        self.skipped_steps = int(skipped)

    def _shard(self, start, stop):
        """The same optimizer over ``param[start:stop]`` only (with its share of the state
        and of the parameter groups), updating that view of this optimizer's parameters."""
        if self._backend is not None:
            raise NotImplementedError("sharding (DataParallel(zero=True)) works on host "
                                      "buffers only; this optimizer is on the GPU")
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__getstate__())
        twin._params = twin.param = self.param[start:stop]
        groups, sources = [], []
        for index, group in enumerate(self.param_groups):
            lo, hi = max(group["start"], start), min(group["stop"], stop)
            if lo < hi:
                groups.append(dict(group, start=lo - start, stop=hi - start))
                sources.append(index)
        twin.param_groups = groups
        twin._group_sources = sources
        twin.state = {name: value if name == "step" else value[start:stop].copy()
                      for name, value in self.state.items()}
        twin._build()
        return twin

    # -- copies ------------------------------------------------------------------------
    def __getstate__(self):
        if self._backend is not None:
            raise TypeError("an optimizer on the GPU cannot be pickled or deep-copied: save "
                            "state_dict() (host arrays) and load_state_dict() it into a new one")
        state = dict(self.__dict__)
        for key in ("_segments", "_partials", "_reduce", "_clip", "_no_clip", "param"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        if "last_grad_norm" in state:  # saved before it became a property
            state["_last_grad_norm"] = state.pop("last_grad_norm")
        self.__dict__.update(state)
        if "param" not in state:
            params = self._params
            self.param = params.data if isinstance(params, FlatParams) else params.reshape(-1)
        self._build()

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        where = "" if self._backend is None else ", device='cuda'"
        return (f"{type(self).__name__}(size={self.param.size}, dtype={self.dtype}{where}, "
                f"{options})")

    def _options(self):
        return {"lr": self.param_groups[0]["lr"], **self.defaults}


def check_lr_scale(value):
    return check_number("lr_scale value", value, "a finite number >= 0",
                        lambda v: 0 <= v < math.inf)


def _resolve_params(params, device):
    """``(params, flat parameter array, device)`` after the placement and layout checks."""
    if isinstance(params, FlatParams):
        return params, params.data, _device.resolve(device, params.device)
    if isinstance(params, np.ndarray):
        _device.resolve(device, "cpu")
        check_buffer("params", params)
        return params, params.reshape(-1), "cpu"
    if _device.is_device_array(params):
        _device.resolve(device, "cuda")
        backend = _device.cuda_backend()
        layout = backend.device_layout(params)
        check_device_buffer("params", layout)
        return params, backend.as_device_array(params).reshape(math.prod(layout[0])), "cuda"
    raise TypeError("params argument given to the optimizer should be a fastopt.FlatParams, "
                    "a numpy.ndarray or a device array (numba.cuda, CuPy, a torch CUDA "
                    f"tensor), but got {type(params).__name__}")


def _resolve_groups(params, size, default, param_groups):
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
            raise ValueError(f"param_groups[{index}] has unknown keys {sorted(unknown)}; "
                             f"allowed: {list(GROUP_KEYS)}")
        s = _group_slice(params, size, spec["params"], index)
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
            raise ValueError(f"parameter groups {a['params']!r} and {b['params']!r} overlap: "
                             "some parameters appear in more than one parameter group")
    groups, offset = [], 0
    for group in specs + [None]:
        start = size if group is None else group["start"]
        if start > offset:
            groups.append(dict(default, params="default", start=offset, stop=start))
        if group is not None:
            groups.append(group)
            offset = group["stop"]
    return groups


def _group_slice(params, size, selector, index):
    if isinstance(selector, slice):
        start, stop, stride = selector.indices(size)
        if stride != 1 or stop <= start:
            raise ValueError(f"param_groups[{index}]['params'] slice {selector} must select a "
                             "non-empty contiguous range")
        return slice(start, stop)
    if isinstance(params, FlatParams):
        s = params.segment(selector)
        if s.stop <= s.start:
            raise ValueError(f"param_groups[{index}] selects no elements")
        return s
    raise TypeError(f"param_groups[{index}]['params'] must be a slice of the flat parameter "
                    "array (array names need a FlatParams)")
