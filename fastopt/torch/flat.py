"""Moving a torch model's parameters into flat buffers, and keeping their gradients there.

One flat parameter buffer and one flat gradient buffer per dtype, filled parameter group
by parameter group, so that every group is one contiguous slice of each. On construction
each parameter's values are copied into its slice and ``p.data`` becomes a view of it;
``p.grad`` becomes a view of the gradient buffer, so ``backward()`` accumulates in place
and a step reads the gradient where autograd wrote it.

Gradients are tracked per parameter: a post-accumulate-grad hook marks a parameter as
having a gradient and, when autograd or a user replaced ``p.grad`` with another tensor
(after ``model.zero_grad()``, which sets it to None, or a hook), copies it into the flat
buffer and points ``p.grad`` back at the view. The step checks each parameter again
(identity of ``p.grad``, address of ``p.data``), so a gradient is never stale or missing.
A gradient written into the view in place (``p.grad.copy_(g)``) is seen by the view's
version counter: each gradient view is its own tensor over its slice of the buffer (not a
view of the whole buffer, whose counter all its views would share).
"""

from __future__ import annotations

import operator
import weakref
from typing import Any, NamedTuple

import numpy as np
import torch

SUPPORTED = (torch.float32, torch.float64)
_version = operator.attrgetter("_version")


class Slot(NamedTuple):
    """Where one parameter lives: its buffer (dtype), group and ``[start, stop)``; ``end``
    is where the next parameter may start (``stop``, or past the padding to an aligned
    start).
    """

    dtype: torch.dtype
    group: int
    start: int
    stop: int
    end: int


class FlatBuffers:
    """The flat parameter and gradient buffers of one optimizer (see the module docstring).

    With ``align`` > 1 every parameter starts at a multiple of ``align`` elements; the
    padding after it holds zeros in both buffers (no view covers it), which stay zero
    through an update with ``eps > 0``. 8-bit state uses this so that each parameter's
    blocks are its own.
    """

    def __init__(self, param_groups: list[dict[str, Any]], align: int = 1) -> None:
        sizes: dict[torch.dtype, int] = {}
        self.params: list[torch.Tensor] = []
        self.slots: list[Slot] = []
        seen: set[int] = set()
        for group_index, group in enumerate(param_groups):
            for p in group["params"]:
                if id(p) in seen:
                    continue  # a tied weight listed twice is one parameter
                seen.add(id(p))
                check_parameter(p, len(self.params))
                start = sizes.get(p.dtype, 0)
                end = start + -(-p.numel() // align) * align
                sizes[p.dtype] = end
                self.params.append(p)
                self.slots.append(Slot(p.dtype, group_index, start, start + p.numel(), end))
        check_no_overlap(self.params)
        # NumPy allocates the buffers (torch wraps them, zero-copy): it asks the kernel
        # for huge pages on large arrays, which the update's streams run faster on
        self.host_data = {dtype: host_zeros(size, dtype) for dtype, size in sizes.items()}
        self.host_grad = {dtype: host_zeros(size, dtype) for dtype, size in sizes.items()}
        self.data = {dtype: torch.from_numpy(a) for dtype, a in self.host_data.items()}
        self.grad = {dtype: torch.from_numpy(a) for dtype, a in self.host_grad.items()}
        self.has_grad = np.zeros(len(self.params), bool)
        self.grad_views: list[torch.Tensor] = []
        # each view's version counter when its gradient was last cleared (see written())
        self.versions: list[int] = []
        self.addresses: list[int] = []
        self.index = {id(p): i for i, p in enumerate(self.params)}
        self.hooks: dict[int, Any] = {}
        # the hooks hold the buffers weakly and go with them: an optimizer that is no
        # longer used frees its buffers and stops copying gradients
        weakref.finalize(self, _remove_hooks, self.hooks)
        with torch.no_grad():
            for i, (p, slot) in enumerate(zip(self.params, self.slots)):
                data = self.data[slot.dtype][slot.start : slot.stop]
                data.copy_(p.detach().reshape(-1))
                # a tensor of its own over the slice (not a view made under no_grad, which
                # autograd would refuse to modify in place later)
                host = self.host_grad[slot.dtype][slot.start : slot.stop]
                grad = torch.from_numpy(host.reshape(tuple(p.shape)))
                if p.grad is not None:
                    grad.copy_(p.grad)
                    self.has_grad[i] = True
                p.data = data.view_as(p)
                self.grad_views.append(grad)
                self.addresses.append(p.data_ptr())
                if p.requires_grad:
                    p.grad = grad
                    self.hook(i)
        self.versions = list(map(_version, self.grad_views))

    def hook(self, i: int) -> None:
        """Follow parameter ``i``'s gradients (see the module docstring); a parameter
        frozen at construction is hooked when it is unfrozen.
        """
        buffers = weakref.ref(self)

        def arrived(p):
            flat = buffers()
            if flat is None:
                return
            grad = p.grad
            # a gradient that is part of a graph (backward(create_graph=True)) stays as it
            # is until the step, so that gradient penalties can differentiate through it
            if grad is not flat.grad_views[i] and not grad.requires_grad:
                flat.adopt(i, p)
            flat.has_grad[i] = True

        self.hooks[i] = self.params[i].register_post_accumulate_grad_hook(arrived)

    def adopt(self, i: int, p: torch.Tensor) -> None:
        """Copy a gradient tensor that is not the flat view into it, and point ``p.grad``
        back at the view.
        """
        grad = p.grad
        if grad.is_sparse:
            raise TypeError(
                f"parameter {i} {tuple(p.shape)} has a sparse gradient: fastopt.torch "
                "updates dense gradients only (use nn.Embedding(sparse=False))"
            )
        view = self.grad_views[i]
        with torch.no_grad():
            view.copy_(grad)
        p.grad = view

    def refresh(self) -> np.ndarray:
        """Check every parameter before a step; return which have a gradient.

        A ``p.grad`` replaced by another tensor is copied into the flat buffer; a
        parameter whose storage left the flat buffer (``model.half()``, ``.to(...)``,
        ``load_state_dict(assign=True)``) raises before anything is written.
        """
        has_grad = self.has_grad
        for i, p in enumerate(self.params):
            if p.data_ptr() != self.addresses[i]:
                raise RuntimeError(
                    f"parameter {i} {tuple(p.shape)} no longer lives in the optimizer's "
                    "flat buffer: was the model converted or moved after the optimizer was "
                    "built (.half(), .to(), share_memory(), load_state_dict(assign=True)), "
                    "or another fastopt.torch optimizer built on the same parameters? Build "
                    "one optimizer, after converting the model"
                )
            if i not in self.hooks and p.requires_grad:
                self.hook(i)  # unfrozen since construction
            grad = p.grad
            if grad is None:
                has_grad[i] = False
            elif grad is not self.grad_views[i]:
                self.adopt(i, p)
                has_grad[i] = True
            elif not has_grad[i] and self.written(i):
                has_grad[i] = True
        return has_grad

    def written(self, i: int) -> bool:
        """Whether a gradient was written into parameter ``i``'s view in place since its
        gradient was cleared (``p.grad.copy_(g)`` where torch would have ``p.grad`` None):
        its version counter moved and it holds a value that is not zero. In-place
        operations on every ``.grad`` (``clip_grad_norm_``, a gradient scaler's
        ``unscale_``) also move the counter of a parameter that backward did not reach;
        its gradient stays zero, and it stays skipped, as torch skips its None.
        """
        view = self.grad_views[i]
        if view._version == self.versions[i]:
            return False
        slot = self.slots[i]
        if self.host_grad[slot.dtype][slot.start : slot.stop].any():
            return True
        self.versions[i] = view._version  # still zero: not scanned again until written
        return False

    def zero_grad(self, set_to_none: bool) -> None:
        """Zero the flat gradient buffers in place (the views stay); with ``set_to_none``
        every parameter counts as having no gradient until the next backward reaches it
        (or a gradient is written into its view). Without it, every parameter that has a
        gradient keeps a zero one, which the next step applies, as torch does.
        """
        if len(self.hooks) < len(self.params):
            for i, p in enumerate(self.params):
                if i not in self.hooks and p.requires_grad:
                    self.hook(i)  # unfrozen since construction: backward must mark it
        if not set_to_none and not self.has_grad.all():
            for i, p in enumerate(self.params):
                if not self.has_grad[i] and p.grad is self.grad_views[i] and self.written(i):
                    self.has_grad[i] = True
        for grad in self.grad.values():
            grad.zero_()
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is not None and grad is not self.grad_views[i]:
                if set_to_none:
                    p.grad = self.grad_views[i] if p.requires_grad else None
                else:  # torch zeroes this tensor and steps it: the zeroed view stands in
                    p.grad = self.grad_views[i]
                    self.has_grad[i] = True
        if set_to_none:
            self.has_grad[:] = False
        self.versions = list(map(_version, self.grad_views))


def _remove_hooks(hooks):
    for handle in hooks.values():
        handle.remove()


def check_no_overlap(params: list[torch.Tensor]) -> None:
    """Raise if two distinct parameters overlap in memory: copied into separate places of
    the flat buffer, they would silently stop sharing their values.
    """
    extents = []
    for index, p in enumerate(params):
        if p.numel() == 0:
            continue
        size = p.element_size()
        start = p.untyped_storage().data_ptr() + p.storage_offset() * size
        span = 1 + sum((n - 1) * abs(stride) for n, stride in zip(p.shape, p.stride()))
        extents.append((start, start + span * size, index))
    extents.sort()
    reach, widest = 0, -1
    for start, stop, index in extents:
        if start < reach:
            a, b = sorted((widest, index))
            raise ValueError(
                f"parameters {a} {tuple(params[a].shape)} and {b} {tuple(params[b].shape)} "
                "overlap in memory (a tie made with `b.data = a.data`, or views of one "
                "tensor): fastopt.torch moves each parameter into its own place in a flat "
                "buffer, which would untie them. Tie weights by using one Parameter object "
                "in both places (`decoder.weight = encoder.weight`), or give each "
                "parameter its own storage (`.clone()`)"
            )
        if stop > reach:
            reach, widest = stop, index


def host_zeros(size: int, dtype: torch.dtype) -> np.ndarray:
    """A zeroed NumPy buffer of ``size`` elements of a torch float dtype."""
    return np.zeros(size, np.float32 if dtype == torch.float32 else np.float64)


def check_parameter(p: Any, index: int) -> None:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"parameter {index} is a {type(p).__name__}, not a torch.Tensor")
    where = f"parameter {index} {tuple(p.shape)}"
    if p.is_sparse or p.layout != torch.strided:
        raise TypeError(f"{where} is sparse: fastopt.torch updates dense parameters only")
    if p.is_complex():
        raise TypeError(f"{where} is complex: fastopt.torch updates real parameters only")
    if p.dtype not in SUPPORTED:
        raise TypeError(
            f"{where} is {p.dtype}: fastopt.torch updates float32 and float64 parameters "
            "(keep float16/bfloat16 copies for the forward pass and a float32 master copy "
            "for the optimizer)"
        )
    if p.device.type != "cpu":
        raise ValueError(
            f"{where} is on {p.device}: fastopt.torch runs on the CPU only for now "
            "(fastopt's CUDA backend is not wired to torch CUDA tensors yet)"
        )
