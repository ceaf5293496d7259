"""The step path's prepared parts: per-group kernels and views, the gradient checks and the
gradient scale (clipping, skipping), on whichever backend holds the buffers.
"""

import math
from typing import Any, NamedTuple

from ..buffers import FlatParams
from ..kernels.blockwise import blocks_of, segment_blocks
from ..kernels.clipping import clipped_scale
from ..kernels.precision import state_dtype
from .state import ABSMAX


class Segment(NamedTuple):
    """One parameter group's kernel call, prepared once: views, no per-step arrays."""

    kernel: Any
    param: Any
    grad: Any
    state: tuple


class StepPlan:
    """Everything a step needs that does not change between steps.

    Built from the optimizer's backend, algorithm, parameters (as given, and as a flat
    view), state and groups; rebuilt whenever those are replaced (a shard, a copy).
    """

    def __init__(self, backend, algorithm, params, param, state, groups, precision="full"):
        grad_buffer = params.grad if isinstance(params, FlatParams) else None
        grad_shape = (param.size,) if grad_buffer is not None else backend.layout(params)[0]
        owner = params.data if isinstance(params, FlatParams) else params
        self.backend, self.size, self.dtype = backend, param.size, param.dtype
        empty = backend.empty(0, state_dtype(precision, param.dtype))
        arrays = [state.get(name, empty) for name in algorithm.state]
        slices = [slice(g["start"], g["stop"]) for g in groups]
        per_segment = [tuple(a[s] if a.size else a for a in arrays) for s in slices]
        written = [param, *(a for a in arrays if a.size)]
        if precision == "8bit":
            # codes, then the per-block scales, then a workspace (fastopt.kernels.blockwise)
            no_scales = backend.empty(0, param.dtype)
            scales = [state.get(name + ABSMAX, no_scales) for name in algorithm.state]
            work = backend.block_workspace(len(algorithm.state), param.dtype)
            blocks = block_slices(slices)
            per_segment = [
                (*codes, *(a[b] if a.size else a for a in scales), work)
                for codes, b in zip(per_segment, blocks)
            ]
            written += [a for a in scales if a.size]
        self.segments = [
            Segment(
                backend.update_kernel(algorithm, s.stop - s.start, precision),
                param[s],
                None if grad_buffer is None else grad_buffer[s],
                segment_state,
            )
            for s, segment_state in zip(slices, per_segment)
        ]
        self.empty_state = tuple(a[:0] if a.ndim == 1 else a for a in per_segment[0])
        self.grad_buffer = grad_buffer
        self.buffer_grads = [segment.grad for segment in self.segments]
        self.grad_scale = backend.grad_scale
        self.gradient_views = backend.gradient_views(
            tuple(grad_shape), param.dtype, slices, owner, written
        )
        self.norm = self.info_norm = None
        self.single = len(self.segments) == 1
        self.update_single = self.gradient_views.updater(self.segments[0]) if self.single else None

    def prepare(self, scalars):
        """Compile (or load from the cache) every kernel a step calls, by calling each on
        empty buffers with scalars of the types a step passes: nothing is written.
        """
        empty = self.backend.empty(0, self.dtype)
        grad_scale = self.backend.grad_scale(1.0)
        for segment in self.segments:
            segment.kernel(empty, empty, *self.empty_state, grad_scale, *scalars)
        self.gradient_views.prepare()
        if self.single:
            self.update_single.prepare(scalars)

    def grads(self, grad):
        """``(flat gradient, one view per group)``: the gradient buffer's for None."""
        if grad is None:
            if self.grad_buffer is None:
                raise ValueError(
                    "step() needs grad= when the optimizer was built on a plain "
                    "array (only a FlatParams has a gradient buffer)"
                )
            return self.grad_buffer, self.buffer_grads
        return self.gradient_views.views(grad)

    def kernel_scale(self, grad, scale, factor, max_norm, skip_nonfinite, norm_info):
        """``(the kernels' grad_scale argument or None to skip, the norm to report)`` for a
        step that clips or skips (otherwise the argument is ``grad_scale(scale)``).

        The norm is reported as ``(GradNorm, factor)`` when it stays on the backend until
        asked for (:func:`read_norm`), or as a float when it came from ``norm_info``.
        """
        if norm_info is None:
            if self.norm is None:
                self.norm = self.backend.grad_norm(self.size)
            kernel_scale = self.norm.compute(grad, scale, factor, max_norm)
            reported = (self.norm, factor)
            nonfinite = skip_nonfinite and self.norm.nonfinite(grad)
        else:
            sumsq, nonfinite = norm_info
            reported = math.sqrt(sumsq) * factor
            kernel_scale = self.backend.grad_scale(
                scale if max_norm is None else clipped_scale(scale, sumsq, factor, max_norm)
            )
        return (None if nonfinite and skip_nonfinite else kernel_scale), reported

    def grad_norm_info(self, grad):
        """``(sum of squares, any non-finite value)`` of a flat gradient."""
        if self.info_norm is None:
            self.info_norm = self.backend.grad_norm(grad.size)
        self.info_norm.compute(grad, 1.0, 1.0, None)
        return self.info_norm.sumsq(), self.info_norm.nonfinite(grad)


def block_slices(slices):
    """The slice of the per-block scales of each group (blocks start at each group)."""
    bounds = [(s.start, s.stop) for s in slices]
    return [
        slice(first, first + blocks_of(stop - start))
        for start, stop, first in segment_blocks(bounds)
    ]


def read_norm(reported):
    """A reported norm (see :meth:`StepPlan.kernel_scale`) as a float or None."""
    if isinstance(reported, tuple):
        norm, factor = reported
        return math.sqrt(norm.sumsq()) * factor
    return reported
