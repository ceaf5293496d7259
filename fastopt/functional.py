"""One update on caller-owned buffers: the kernels behind the optimizer classes.

For power users who manage their own state arrays (say, in a memory-mapped file): each
function validates its arguments, computes the step-dependent scalars on the host and runs
the same fused kernel as the classes, in place. ``step`` is the number of the update being
applied (1 for the first). All arrays must be C-contiguous, of the same dtype (float32 or
float64) and the same shape; state arrays must be writeable and must not overlap ``param``.

Compact state: with ``state_precision="bfloat16"`` every state array is a ``uint16`` array
of bfloat16 words (the upper half of a float32, as :func:`fastopt.to_bfloat16` makes them;
:func:`fastopt.from_bfloat16` reads them back), of the shape of ``param``. The update is the
one of an optimizer class built with the same ``state_precision``: the arithmetic runs in
the parameter dtype, ``param`` is updated with the unrounded new state, and each new state
value is stored rounded to nearest even. With ``state_precision="8bit"`` every state
argument is a pair ``(codes, absmax)``: ``uint8`` codes of the shape of ``param`` and one
scale per block of 256 elements (``absmax``, the parameter dtype, blocks from the first
element), as :func:`encode_8bit` makes them (zeros are codes 0 and scales 0);
:func:`decode_8bit` reads them back. ``"full"`` (the default) keeps state in the parameter
dtype.

On the GPU: when ``param`` is a device array (numba.cuda, CuPy, a detached torch CUDA
tensor), every array must be one, and the same CUDA kernel as the optimizer classes runs.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ._validation import check_betas, check_flag, check_lr, check_nonnegative, check_number
from .kernels import adagrad, adam, backend, blockwise, rmsprop, sgd
from .kernels.precision import check_eps, check_precision, state_dtype


def _precision(value):
    """A checked ``state_precision``."""
    return check_precision(value)


_workspaces = threading.local()


def _workspace(where, states, dtype):
    """The 8-bit kernels' workspace for this thread (kept, so a call allocates nothing)."""
    cache = _workspaces.__dict__.setdefault("by_key", {})
    key = (where.name, states, np.dtype(dtype).str)
    if key not in cache:
        cache[key] = where.block_workspace(states, dtype)
    return cache[key]


def _checked_scales(name, pair, where, size, dtype):
    """``(codes, absmax)`` of an 8-bit state argument, absmax checked."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise TypeError(
            f"{name} must be a (codes, absmax) pair with state_precision='8bit', but got "
            f"{type(pair).__name__} (fastopt.functional.encode_8bit makes one)"
        )
    codes, absmax = pair
    blocks = blockwise.blocks_of(size)
    if where.owns(absmax) and tuple(where.layout(absmax)[0]) != (blocks,):
        raise ValueError(
            f"{name} absmax must hold one scale per block of {blockwise.BLOCK} elements of "
            f"param ({size} elements, {blocks} blocks): expects shape ({blocks},) but got "
            f"{tuple(where.layout(absmax)[0])}"
        )
    flat = where.check_like(f"{name} absmax", absmax, (blocks,), dtype, "param")
    if not where.layout(absmax)[3]:
        raise ValueError(f"{name} absmax must be writeable, but the array is read-only")
    return codes, flat


def _float_values(name, values):
    """``values`` as a float32 or float64 ndarray (a TypeError for any other dtype)."""
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{name} must be float32 or float64 (the dtypes of 8-bit state's parameters), "
            f"but got {values.dtype}"
        )
    return values


def encode_8bit(values: np.ndarray, signed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, absmax)`` holding float ``values`` (float32 or float64) as 8-bit state
    (one group, blocks of 256 from the first element), rounded as a step rounds;
    ``signed=False`` for sums and averages of squares (see
    :mod:`fastopt.kernels.blockwise`). ``codes`` (uint8) has the shape of ``values``,
    ``absmax`` (their dtype) one scale per block.
    """
    values = _float_values("values", values)
    signed = check_flag("signed", signed)
    flat = np.ascontiguousarray(values).reshape(-1)
    codes, absmax = blockwise.quantize(flat, signed, [(0, flat.size)])
    return codes.reshape(values.shape), absmax


def decode_8bit(
    codes: np.ndarray, absmax: np.ndarray, signed: bool = True, dtype=np.float32
) -> np.ndarray:
    """The values (``dtype``, the shape of ``codes``) of 8-bit state made by
    :func:`encode_8bit` or a functional step.
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(f"codes must be uint8 8-bit codes, but got {codes.dtype}")
    absmax = _float_values("absmax", absmax)
    blocks = blockwise.blocks_of(codes.size)
    if absmax.shape != (blocks,):
        raise ValueError(
            f"absmax must hold one scale per block of {blockwise.BLOCK} codes ({codes.size} "
            f"codes, {blocks} blocks): expects shape ({blocks},) but got {absmax.shape}"
        )
    flat = np.ascontiguousarray(codes).reshape(-1)
    signed = check_flag("signed", signed)
    values = blockwise.dequantize(flat, absmax, signed, [(0, flat.size)], dtype)
    return values.reshape(codes.shape)


def _check_state_dtype(name, actual, precision, expected):
    """A TypeError naming a state array whose dtype ``actual`` does not fit ``precision``."""
    if actual == expected:
        return
    if precision == "bfloat16":
        raise TypeError(
            f"{name} must hold bfloat16 words with state_precision='bfloat16': expects "
            f"{expected} but got {actual} (fastopt.to_bfloat16 converts float values)"
        )
    if precision == "8bit":
        raise TypeError(
            f"{name} codes must be uint8 with state_precision='8bit': expects {expected} but "
            f"got {actual} (fastopt.functional.encode_8bit converts float values)"
        )
    hint = " (bfloat16 words? pass state_precision='bfloat16')" if actual == np.uint16 else ""
    raise TypeError(
        f"{name} must have the dtype of param: expects {expected} but got {actual}{hint}"
    )


def _prepare(param, grad, *, precision="full", unused=(), **state):
    """``(backend, flat views, precision)`` after the checks; a state named in ``unused``
    (off for these options) becomes an empty array, every other state must be given, with
    the dtype of ``precision`` (:func:`fastopt.kernels.precision.state_dtype`).
    """
    where = backend.of(param) or backend.host_backend()
    arrays = [where.check_buffer("param", param)]
    shape, dtype = where.layout(param)[:2]
    expected = state_dtype(precision, dtype)
    arrays.append(where.check_like("grad", grad, shape, dtype, "param"))
    size = arrays[0].size
    scales = []
    if where.overlaps(grad, param):
        raise ValueError(
            "grad must not share memory with param: the update writes param while it reads "
            "the gradient (some elements refer to a single memory location)"
        )
    given = {"param": param, "grad": grad}
    for name, array in state.items():
        if name in unused:
            arrays.append(where.empty(0, expected))
            scales.append(where.empty(0, dtype))
            continue
        if array is None:
            raise ValueError(f"{name} is required (got None)")
        if precision == "8bit":
            array, absmax = _checked_scales(name, array, where, size, dtype)
            scales.append(absmax)
            given[f"{name} absmax"] = absmax
        if where.owns(array) and tuple(where.layout(array)[0]) == tuple(shape):
            _check_state_dtype(name, np.dtype(where.layout(array)[1]), precision, expected)
        flat = where.check_like(name, array, shape, expected, "param")
        if not where.layout(array)[3]:
            raise ValueError(f"{name} must be writeable, but the array is read-only")
        for other, value in given.items():
            if where.overlaps(array, value):
                raise ValueError(f"{name} must not share memory with {other}")
        given[name] = array
        arrays.append(flat)
    if precision == "8bit":
        for name, absmax in list(given.items())[2:]:
            if name.endswith(" absmax"):
                for other, value in given.items():
                    if other != name and where.overlaps(absmax, value):
                        raise ValueError(f"{name} must not share memory with {other}")
        arrays += [*scales, _workspace(where, len(scales), dtype)]
    return where, arrays, precision


def _check_step(step):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(
            f"Invalid step: {step!r} (expected an integer >= 1, the number of this update)"
        )
    return int(step)


def _run(algorithm, prepared, maximize, scalars):
    """Run ``algorithm``'s kernel for the prepared arrays (without clipping)."""
    where, arrays, precision = prepared
    grad_scale = where.grad_scale(-1.0 if check_flag("maximize", maximize) else 1.0)
    where.update_kernel(algorithm, arrays[0].size, precision)(*arrays, grad_scale, *scalars)


def _lr(lr):
    lr = check_lr(lr)
    if callable(lr):
        raise TypeError(
            "the functional layer takes the learning rate as a number; evaluate the schedule first"
        )
    return lr


def sgd_(
    param: np.ndarray | Any,
    grad: np.ndarray | Any,
    momentum_buffer: np.ndarray | Any | None = None,
    *,
    lr: float = 1e-3,
    momentum: float = 0,
    dampening: float = 0,
    weight_decay: float = 0,
    nesterov: bool = False,
    maximize: bool = False,
    first_step: bool = False,
    state_precision: str = "full",
) -> None:
    """One SGD update in place (see :class:`fastopt.SGD`); ``first_step`` copies the
    gradient into ``momentum_buffer`` as torch does on the first update. With
    ``state_precision="bfloat16"``, ``momentum_buffer`` holds bfloat16 words
    (``uint16``); with "8bit", ``(codes, absmax)`` pairs (see the module docstring).
    """
    precision = _precision(state_precision)
    lr = _lr(lr)
    momentum = check_nonnegative("momentum value", momentum)
    dampening = check_number(
        "dampening value", dampening, "a finite number", lambda v: math.isfinite(v)
    )
    weight_decay = check_nonnegative("weight_decay value", weight_decay)
    nesterov = check_flag("nesterov", nesterov)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    first_step = check_flag("first_step", first_step)
    prepared = _prepare(
        param,
        grad,
        precision=precision,
        momentum_buffer=momentum_buffer,
        unused=() if momentum != 0 else ("momentum_buffer",),
    )
    _run(
        sgd.ALGORITHM,
        prepared,
        maximize,
        sgd.host_scalars(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            first_step=first_step,
        ),
    )


def adagrad_(
    param: np.ndarray | Any,
    grad: np.ndarray | Any,
    state_sum: np.ndarray | Any,
    *,
    step: int,
    lr: float = 1e-2,
    lr_decay: float = 0,
    weight_decay: float = 0,
    eps: float = 1e-10,
    maximize: bool = False,
    state_precision: str = "full",
) -> None:
    """One Adagrad update in place (see :class:`fastopt.Adagrad`); with
    ``state_precision="bfloat16"``, ``state_sum`` holds bfloat16 words
    (``uint16``); with "8bit", ``(codes, absmax)`` pairs (see the module docstring).
    """
    precision = _precision(state_precision)
    step = _check_step(step)
    lr = _lr(lr)
    lr_decay = check_nonnegative("lr_decay value", lr_decay)
    weight_decay = check_nonnegative("weight_decay value", weight_decay)
    eps = check_eps(check_nonnegative("epsilon value", eps), precision)
    prepared = _prepare(param, grad, precision=precision, state_sum=state_sum)
    _run(
        adagrad.ALGORITHM,
        prepared,
        maximize,
        adagrad.host_scalars(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, step=step
        ),
    )


def rmsprop_(
    param: np.ndarray | Any,
    grad: np.ndarray | Any,
    square_avg: np.ndarray | Any,
    grad_avg: np.ndarray | Any | None = None,
    momentum_buffer: np.ndarray | Any | None = None,
    *,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum: float = 0,
    centered: bool = False,
    maximize: bool = False,
    state_precision: str = "full",
) -> None:
    """One RMSprop update in place (see :class:`fastopt.RMSprop`); with
    ``state_precision="bfloat16"`` every state array holds bfloat16 words
    (``uint16``); with "8bit", ``(codes, absmax)`` pairs (see the module docstring).
    """
    precision = _precision(state_precision)
    if precision == "8bit" and check_flag("centered", centered):
        raise ValueError(
            "centered=True with state_precision='8bit' is not supported (see fastopt.RMSprop): "
            "use state_precision='bfloat16'"
        )
    lr = _lr(lr)
    alpha = check_number("alpha value", alpha, "0 <= alpha <= 1", lambda v: 0 <= v <= 1)
    eps = check_eps(check_nonnegative("epsilon value", eps), precision)
    weight_decay = check_nonnegative("weight_decay value", weight_decay)
    momentum = check_nonnegative("momentum value", momentum)
    centered = check_flag("centered", centered)
    unused = (() if centered else ("grad_avg",)) + (() if momentum > 0 else ("momentum_buffer",))
    prepared = _prepare(
        param,
        grad,
        precision=precision,
        square_avg=square_avg,
        grad_avg=grad_avg,
        momentum_buffer=momentum_buffer,
        unused=unused,
    )
    _run(
        rmsprop.ALGORITHM,
        prepared,
        maximize,
        rmsprop.host_scalars(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
        ),
    )


def adam_(
    param: np.ndarray | Any,
    grad: np.ndarray | Any,
    exp_avg: np.ndarray | Any,
    exp_avg_sq: np.ndarray | Any,
    max_exp_avg_sq: np.ndarray | Any | None = None,
    *,
    step: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    state_precision: str = "full",
) -> None:
    """One Adam/AdamW update in place (see :class:`fastopt.Adam`); with
    ``state_precision="bfloat16"`` every state array holds bfloat16 words
    (``uint16``); with "8bit", ``(codes, absmax)`` pairs (see the module docstring).
    """
    precision = _precision(state_precision)
    step = _check_step(step)
    lr = _lr(lr)
    betas = check_betas(betas)
    eps = check_eps(check_nonnegative("epsilon value", eps), precision)
    weight_decay = check_nonnegative("weight_decay value", weight_decay)
    amsgrad = check_flag("amsgrad", amsgrad)
    decoupled = check_flag("decoupled_weight_decay", decoupled_weight_decay)
    prepared = _prepare(
        param,
        grad,
        precision=precision,
        exp_avg=exp_avg,
        exp_avg_sq=exp_avg_sq,
        max_exp_avg_sq=max_exp_avg_sq,
        unused=() if amsgrad else ("max_exp_avg_sq",),
    )
    _run(
        adam.ALGORITHM,
        prepared,
        maximize,
        adam.host_scalars(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled,
            amsgrad=amsgrad,
            step=step,
        ),
    )


def grad_norm(grad: np.ndarray | Any) -> float:
    """Global L2 norm of a gradient buffer, accumulated in float64 over fixed blocks (the
    same value for any thread count); on the GPU, by the optimizers' device reduction.
    """
    where = backend.of(grad) or backend.host_backend()
    flat = where.check_buffer("grad", grad, writeable=False)
    norm = where.grad_norm(flat.size)
    norm.compute(flat, 1.0, 1.0, None)
    return math.sqrt(norm.sumsq())
