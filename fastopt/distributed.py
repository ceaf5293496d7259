"""Data-parallel training over MPI (mpi4py): one collective per step on the flat gradient.

Needs the ``mpi`` extra (``pip install "fastopt[mpi]"``: mpi4py and Open MPI). Launch with
``mpiexec -n K python -m mpi4py your_script.py``: with ``-m mpi4py`` an exception on any
rank aborts the whole job instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .kernels import blockwise
from .optim import checkpoint
from .optim.base import Optimizer
from .optim.state import ABSMAX, decoded

if TYPE_CHECKING:
    from mpi4py import MPI


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError('fastopt.distributed needs mpi4py: pip install "fastopt[mpi]"') from None
    return MPI


def shard_bounds(size: int, ranks: int) -> tuple[list[int], list[int]]:
    """``(counts, starts)`` of contiguous, balanced slices of ``size`` elements, one per rank."""
    base, extra = divmod(size, ranks)
    counts = [base + (r < extra) for r in range(ranks)]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
    return counts, starts


class DataParallel:
    r"""Average the gradient across MPI ranks, then apply the fused update on every rank.

    Parameters
    ----------
    optimizer : fastopt.Optimizer
        Built on this rank's parameters (every rank builds the same optimizer).
        Parameters are broadcast from rank 0 here, so all ranks start identical.
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    zero : bool, default False
        ZeRO stage 1: each rank keeps optimizer state only for its contiguous 1/K of the
        flat buffer. A step reduce-scatters the gradient (each rank receives the sum for
        its slice), updates its slice, and all-gathers the parameters. The wrapped
        optimizer's full-size state is dropped (state memory per rank falls by K) and it
        refuses to step on its own; edit learning rates through :attr:`param_groups`.

    Notes
    -----
    Replicated mode sends one in-place ``Allreduce`` of the flat gradient per step
    (:math:`2(K-1)/K` of the buffer per rank with a ring algorithm); ZeRO-1 sends a
    ``Reduce_scatter`` plus an ``Allgatherv`` of the parameters, the same volume. The
    gradient is averaged (summed, divided by K), so each rank should compute the mean
    gradient over its part of a global batch split evenly. Clipping uses the global norm
    and a NaN or inf on any rank skips the step on all of them (``skip_nonfinite``).
    Scale the learning rate with the global batch (:func:`fastopt.scale_lr`).
    """

    def __init__(
        self, optimizer: Optimizer, comm: MPI.Comm | None = None, *, zero: bool = False
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"DataParallel wraps a fastopt optimizer, got {type(optimizer).__name__}"
            )
        if optimizer.device != "cpu":
            raise NotImplementedError(
                "DataParallel reduces host buffers; this optimizer is on "
                "the GPU (CUDA-aware MPI is not supported)"
            )
        MPI = _mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._mpi = MPI
        param = optimizer.param
        layouts = self.comm.allgather((param.size, param.dtype.str, type(optimizer).__name__))
        if len(set(layouts)) != 1:
            described = ", ".join(f"rank {r}: {n} x {d} {a}" for r, (n, d, a) in enumerate(layouts))
            raise ValueError(
                "DataParallel needs the same optimizer and parameter buffer on every "
                f"rank, but got {described}"
            )
        if zero and param.size < self.size:
            raise ValueError(
                f"ZeRO-1 needs at least one element per rank: {param.size} "
                f"parameters on {self.size} ranks"
            )
        self.comm.Bcast(param, root=0)
        self.param = param
        self._wrapped = optimizer
        self.zero = bool(zero)
        self.full_size = param.size
        self._full_groups = [[g["start"], g["stop"]] for g in optimizer.param_groups]
        self._grad_buffer = optimizer.grad_buffer
        if self.zero:
            bounds = optimizer.state.bounds
            if optimizer.state_precision == "8bit":  # shards own whole 8-bit blocks
                counts, starts = blockwise.aligned_cuts(bounds, param.size, self.size)
                if min(counts) == 0:
                    raise ValueError(
                        f"ZeRO-1 with 8-bit state needs at least one block of "
                        f"{blockwise.BLOCK} elements per rank (blocks start at each group's "
                        f"first element): {param.size} parameters in "
                        f"{blockwise.absmax_size(bounds)} blocks on {self.size} ranks"
                    )
                edges = [blockwise.block_index(bounds, p) for p in (*starts, param.size)]
                self._block_counts = [b - a for a, b in zip(edges, edges[1:])]
                self._block_starts = edges[:-1]
            else:
                counts, starts = shard_bounds(param.size, self.size)
            self._counts, self._starts = counts, starts
            start, stop = starts[self.rank], starts[self.rank] + counts[self.rank]
            self.optimizer = optimizer.shard(start, stop)
            # the wrapped optimizer keeps its parameter groups (edit them through
            # DataParallel.param_groups) but refuses to step
            optimizer.release_state()
            self._slice = slice(start, stop)
            self._shard_grad = np.empty(stop - start, param.dtype)
            from mpi4py.util.dtlib import from_numpy_dtype

            self._mpi_type = from_numpy_dtype(param.dtype)
            self._mpi_state_type = from_numpy_dtype(optimizer.state_dtype)
            self._block_slice = None
            if optimizer.state_precision == "8bit":
                first = self._block_starts[self.rank]
                self._block_slice = slice(first, first + self._block_counts[self.rank])
        else:
            self.optimizer = optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The parameter groups over the whole buffer (the same on every rank); edits to
        their ``lr``, ``lr_scale`` and ``weight_decay`` apply from the next step.
        """
        return self._wrapped.param_groups

    # -- the step --------------------------------------------------------------------
    def step(self, grad: np.ndarray | None = None) -> bool:
        """Sum the gradient over all ranks (in place; the 1/K of the average is applied
        inside the update kernel), then update. Returns what the optimizer's ``step``
        returns (False when a non-finite gradient was skipped).

        The gradient and the hyperparameters (schedules, edited groups) are checked before
        the collective: a step that raises leaves the gradient as it was, so a retry does
        not apply a sum twice.
        """
        flat = self._local_grad(grad)
        average = 1.0 / self.size  # folded into the update kernel's gradient scale
        if not self.zero:
            # everything that can fail is checked before the gradient is summed in place
            self.optimizer.check_next_step()
            if self.size > 1:
                self.comm.Allreduce(self._mpi.IN_PLACE, flat, op=self._mpi.SUM)
            return self.optimizer.step(grad, grad_factor=average)
        self._sync_groups()
        self.optimizer.check_next_step()
        shard = self._shard_grad
        self.comm.Reduce_scatter(flat, shard, recvcounts=self._counts, op=self._mpi.SUM)
        info = None
        if self.optimizer.needs_grad_norm():
            sumsq, nonfinite = self.optimizer.grad_norm_info(shard)
            sumsq = self.comm.allreduce(sumsq, op=self._mpi.SUM)
            nonfinite = self.comm.allreduce(bool(nonfinite), op=self._mpi.LOR)
            info = (sumsq, nonfinite)
        applied = self.optimizer.step(shard, grad_factor=average, grad_norm_info=info)
        if applied:
            self.comm.Allgatherv(
                self._mpi.IN_PLACE, [self.param, self._counts, self._starts, self._mpi_type]
            )
        return applied

    def _local_grad(self, grad):
        if grad is None:
            if self._grad_buffer is None:
                raise ValueError("step() needs grad= when the optimizer was built on a plain array")
            return self._grad_buffer
        flat = self._wrapped.gradient(grad)
        if not flat.flags.writeable:
            raise ValueError(f"rank {self.rank}: grad must be writeable (it is summed in place)")
        return flat

    @property
    def step_count(self) -> int:
        return self.optimizer.step_count

    def zero_grad(self) -> None:
        if self._grad_buffer is None:
            raise RuntimeError(
                "this optimizer updates a plain array and has no gradient "
                "buffer: zero the gradient array you pass to step()"
            )
        self._grad_buffer.fill(0)

    def state_bytes(self) -> int:
        """Bytes of optimizer state held by this rank."""
        return sum(v.nbytes for k, v in self.optimizer.state.items() if k != "step")

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The full state, the same on every rank and for any number of ranks: loadable by
        a single-process optimizer or a DataParallel on another number of ranks. In ZeRO
        mode every rank gathers the shards (a collective: call it on all ranks).
        """
        local = self.optimizer.state_dict()
        if not self.zero:
            return local
        full = dict(local, size=self.full_size, group_bounds=np.array(self._full_groups, np.int64))
        full[checkpoint.HYPERPARAMETERS] = checkpoint.hyperparameters_entry(self._wrapped)
        for name in self.optimizer.state.buffers:
            if name.endswith(ABSMAX):  # per-block scales of an 8-bit state
                counts, starts = self._block_counts, self._block_starts
                total = sum(counts)
                dtype, mpi_type = self.param.dtype, self._mpi_type
            else:
                total, counts, starts = self.full_size, self._counts, self._starts
                dtype, mpi_type = self.optimizer.state_dtype, self._mpi_state_type
            gathered = np.empty(total, dtype)
            self.comm.Allgatherv(local[name], [gathered, counts, starts, mpi_type])
            full[name] = gathered
        return full

    def _sync_groups(self) -> None:
        """Give the shard's groups the values edited through :attr:`param_groups`."""
        for group, source in zip(self.optimizer.param_groups, self.optimizer.group_sources):
            full = self._wrapped.param_groups[source]
            for key in ("lr", "lr_scale", "weight_decay"):
                group[key] = full[key]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load a full state (from :meth:`state_dict` or a single-process optimizer); see
        :meth:`fastopt.Optimizer.load_state_dict` for ``strict``.
        """
        if not self.zero:
            return self.optimizer.load_state_dict(state_dict, strict=strict)
        self._sync_groups()  # a strict load compares the values as edited now
        sd = dict(state_dict)
        size = int(np.asarray(sd.get("size", -1)))
        if size != self.full_size:
            raise ValueError(
                f"state_dict is for {size} parameters, but this optimizer has {self.full_size}"
            )
        bounds = np.asarray(sd.get("group_bounds", [])).tolist()
        if bounds != self._full_groups:
            raise ValueError(
                f"state_dict has parameter groups {bounds}, but this optimizer "
                f"has {self._full_groups}"
            )
        s = self._slice
        names = self.optimizer.state.names()
        saved_8bit = str(np.asarray(sd.get("state_precision", "full"))[()]) == "8bit"
        if saved_8bit and self._block_slice is None:
            # this run's shards need not fall on 8-bit blocks: decode the whole state first
            bounds = [tuple(b) for b in self._full_groups]
            for name in names:
                entries = {k: np.asarray(sd[k]) for k in (name, name + ABSMAX) if k in sd}
                if len(entries) == 2 and entries[name].shape == (self.full_size,):
                    sd[name] = decoded(name, entries, "8bit", self.param.dtype, bounds)
                    del sd[name + ABSMAX]
            sd["state_precision"] = "full"
            saved_8bit = False
        shard = dict(
            sd,
            size=s.stop - s.start,
            group_bounds=np.array(
                [[g["start"], g["stop"]] for g in self.optimizer.param_groups], np.int64
            ),
        )
        for name in names:
            for key in (name, name + ABSMAX) if saved_8bit else (name,):
                if key not in sd:
                    continue  # reported by the optimizer's own checks
                value = np.asarray(sd[key])
                scales = key.endswith(ABSMAX)
                expected = sum(self._block_counts) if scales else self.full_size
                if value.shape != (expected,):
                    raise ValueError(
                        f"state_dict[{key!r}] expects shape ({expected},) but got {value.shape}"
                    )
                shard[key] = value[self._block_slice if scales else s]
        self.optimizer.load_state_dict(shard, strict=strict)
