"""FlatParams: many arrays packed into one contiguous parameter buffer and one gradient buffer."""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import FLOAT_DTYPES, check_float_dtype
from .kernels import backend as backends

if TYPE_CHECKING:
    import numpy.typing as npt

    from .kernels.backend import Backend


def _fixed(name, what, how):
    """A FlatParams attribute that reads as usual and cannot be rebound: optimizers hold
    views into these buffers, so a rebinding would silently stop training.
    """

    def get(self):
        return self.__dict__["_" + name]

    def refuse(self, value):
        if value is self.__dict__["_" + name]:
            return  # an in-place operator (fp.grad *= 2) binds the same array back
        raise AttributeError(
            f"FlatParams.{name} ({what}) cannot be rebound: optimizers update it in place; "
            f"write into it instead: {how}"
        )

    return property(get, refuse, doc=f"{what[0].upper()}{what[1:]} (read-only attribute).")


class _Views:
    """Views into a flat buffer. Assigning to an entry copies into the view (exactly as
    ``view[...] = value``, with NumPy's broadcasting and casting checks) and never
    replaces it; entries cannot be added or removed.
    """

    __slots__ = ()
    _what = "views"

    def _refuse(self, *args, **kwargs):
        raise TypeError(
            f"FlatParams {self._what} cannot be added, removed or replaced: write into them "
            f"(fp.{self._what}[name] = values copies into the buffer)"
        )


class NamedViews(_Views, dict):
    """``fp.params`` / ``fp.grads`` of a FlatParams built from a dict."""

    __slots__ = ("_what",)

    def __init__(self, names, views, what):
        dict.__init__(self, zip(names, views))
        self._what = what

    def __setitem__(self, key, value):
        dict.__getitem__(self, key)[...] = value

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    __delitem__ = pop = popitem = clear = setdefault = __ior__ = _Views._refuse

    def __reduce__(self):
        raise TypeError("FlatParams views are not pickled on their own: pickle the FlatParams")


class PositionalViews(_Views, list):
    """``fp.params`` / ``fp.grads`` of a FlatParams built from a list or tuple."""

    __slots__ = ("_what",)

    def __init__(self, views, what):
        list.__init__(self, views)
        self._what = what

    def __setitem__(self, key, value):
        if not isinstance(key, numbers.Integral):
            raise TypeError(f"FlatParams {self._what} indices must be integers, got {key!r}")
        list.__getitem__(self, key)[...] = value

    append = extend = insert = pop = remove = clear = sort = reverse = _Views._refuse
    __delitem__ = __iadd__ = __imul__ = _Views._refuse

    def __reduce__(self):
        raise TypeError("FlatParams views are not pickled on their own: pickle the FlatParams")


class FlatParams:
    """Arrays of any shapes packed into one flat parameter buffer plus a gradient buffer.

    Packing copies the arrays once. After that, ``params`` and ``grads`` hold views (same
    names or positions, same shapes) into the flat buffers ``data`` and ``grad``: model
    code reads and writes per-layer arrays while an optimizer updates the whole buffer in
    one pass, and nothing is copied per step.

    Parameters
    ----------
    arrays : dict of str to array_like, or sequence of array_like
        The initial values. A dict gives named views (``params["W"]``); a list or tuple
        gives positional views (``params[0]``).
    dtype : {None, numpy.float32, numpy.float64}, optional
        Buffer dtype. By default all arrays must already share one of the two float
        dtypes; with an explicit dtype, real arrays of any dtype are converted.
    groups : dict of str to list, optional
        Named parameter groups, e.g. ``{"no_decay": ["b1", "b2"]}``. Each group's arrays
        are packed next to each other, so the group is one contiguous segment
        (``segments["no_decay"]``) that an optimizer updates with one kernel call.
        Arrays in no group form the segment ``"default"``, packed last.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where the flat buffers live. "auto" puts them on the GPU if any of the arrays is a
        device array (numba.cuda, CuPy, a torch CUDA tensor: anything with
        ``__cuda_array_interface__``), else in host memory. On the GPU, ``data``, ``grad``
        and the views are numba.cuda device arrays: wrap them zero-copy with
        ``cupy.asarray(...)`` or ``torch.as_tensor(..., device="cuda")`` to compute
        gradients into ``grads[name]``.

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> fp = fastopt.FlatParams({"W": np.zeros((3, 2), np.float32),
    ...                          "b": np.zeros(2, np.float32)})
    >>> fp.size, fp.params["W"].shape, np.shares_memory(fp.params["W"], fp.data)
    (8, (3, 2), True)
    """

    def __init__(
        self,
        arrays: dict[str, Any] | list[Any] | tuple[Any, ...],
        *,
        dtype: npt.DTypeLike | None = None,
        groups: dict[str, str | int | Sequence[str | int]] | None = None,
        device: str = "auto",
    ) -> None:
        keyed = isinstance(arrays, dict)
        if keyed:
            names, values = list(arrays), [arrays[k] for k in arrays]
        elif isinstance(arrays, (list, tuple)):
            names, values = list(range(len(arrays))), list(arrays)
        else:
            raise TypeError(
                f"FlatParams expects a dict or a list of arrays, but got {type(arrays).__name__}"
            )
        if not names:
            raise ValueError("FlatParams got an empty parameter list")
        backends.check_device(device)
        sources = [backends.of(v) if backends.is_device_array(v) else None for v in values]
        if device == "auto":
            device = "cuda" if any(sources) else "cpu"
        self._backend = backends.get(device)
        layouts = [
            _DeviceLayout(src.layout(v)) if src else np.asarray(v)
            for v, src in zip(values, sources)
        ]
        dtype = _common_dtype(names, layouts, dtype)
        order = _packing_order(names, groups)
        self._keyed = keyed
        self._names = tuple(names)
        self._shapes = {n: v.shape for n, v in zip(names, layouts)}
        self._layout(order, dtype)
        for name, value, layout, source in zip(names, values, layouts, sources):
            self._pack(name, layout if source is None else value, source)

    def _pack(self, name, value, source):
        """Copy one array into its slice of ``data``: host values are converted to the
        buffer dtype; device arrays must be contiguous (and, for device buffers, of the
        buffer dtype).
        """
        s = self._slices[name]
        if s.stop == s.start:
            return
        if source is None:
            self._backend.copy_from_host(self.data[s], value.reshape(-1))
            return
        shape, dtype, contiguous, _ = source.layout(value)
        if not contiguous:
            raise ValueError(f"array {name!r} is a strided device array: pass a contiguous one")
        flat = source.check_like(name, value, shape, dtype).reshape(s.stop - s.start)
        if source is self._backend:
            if dtype != self.dtype:
                raise TypeError(
                    f"device array {name!r} has dtype {dtype}, but the buffers "
                    f"are {self.dtype}: convert it on the device first"
                )
            source.copy(self.data[s], flat)
        else:
            self._backend.copy_from_host(self.data[s], source.to_host(flat))

    def _layout(self, order, dtype):
        self._order = order
        self._slices, self._segments, offset = {}, {}, 0
        for group, members in order:
            start = offset
            for name in members:
                size = int(np.prod(self._shapes[name], dtype=np.int64))
                self._slices[name] = slice(offset, offset + size)
                offset += size
            self._segments[group] = slice(start, offset)
        if offset == 0:
            raise ValueError("FlatParams got only empty arrays (total size 0)")
        self._data = self._backend.full(offset, 0.0, dtype)
        self._grad = self._backend.full(offset, 0.0, dtype)
        self._rebuild_views()

    def _rebuild_views(self):
        self._params = self._views(self._data, "params")
        self._grads = self._views(self._grad, "grads")

    def _views(self, flat, what):
        views = [flat[self._slices[n]].reshape(self._shapes[n]) for n in self._names]
        return NamedViews(self._names, views, what) if self._keyed else PositionalViews(views, what)

    data = _fixed("data", "the flat parameter buffer", "fp.data[:] = values")
    grad = _fixed("grad", "the flat gradient buffer", "fp.grad[:] = values")
    params = _fixed("params", "the per-array parameter views", 'fp.params["W"] = values')
    grads = _fixed("grads", "the per-array gradient views", 'fp.grads["W"] = values')

    def view(self, flat: np.ndarray | Any) -> Any:
        """Views with the packed names and shapes into any flat array of this layout.

        Use it to look at optimizer state per layer:
        ``fp.view(opt.state["exp_avg"])["W"]``.
        """
        array = isinstance(flat, np.ndarray) or backends.is_device_array(flat)
        if not array or tuple(flat.shape) != (self.size,):
            shape = getattr(flat, "shape", type(flat).__name__)
            raise ValueError(f"view expects a 1-D array of shape ({self.size},) but got {shape}")
        views = [flat[self._slices[n]].reshape(self._shapes[n]) for n in self._names]
        return dict(zip(self._names, views)) if self._keyed else views

    @property
    def size(self) -> int:
        """Total number of elements in the flat buffers."""
        return self.data.size

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def device(self) -> str:
        """Where the buffers live: "cpu" or "cuda"."""
        return self._backend.name

    @property
    def backend(self) -> Backend:
        """The backend holding the buffers (see :mod:`fastopt.kernels.backend`)."""
        return self._backend

    def to(self, device: str) -> FlatParams:
        """A copy of these buffers (parameters and gradients) on ``device`` ("cpu" or
        "cuda"), with the same names, shapes and groups.
        """
        backends.check_device(device)
        if device == "auto":
            raise ValueError("FlatParams.to needs 'cpu' or 'cuda' (got 'auto')")
        backend = backends.get(device)
        copy = object.__new__(FlatParams)
        copy.__dict__.update(self.__dict__)
        copy._backend = backend
        copy._data, copy._grad = (
            backend.copy_of(buffer)
            if backend is self._backend
            else backend.from_host(self._backend.to_host(buffer))
            for buffer in (self._data, self._grad)
        )
        copy._rebuild_views()
        return copy

    @property
    def names(self) -> tuple[str | int, ...]:
        """Array names (or positions) in the order they were given."""
        return self._names

    @property
    def slices(self) -> dict[str | int, slice]:
        """Mapping of array name to its ``slice`` of the flat buffers."""
        return dict(self._slices)

    @property
    def segments(self) -> dict[str, slice]:
        """Mapping of group name to its contiguous ``slice`` of the flat buffers."""
        return dict(self._segments)

    def segment(self, names: str | int | Iterable[str | int]) -> slice:
        """The contiguous slice covering ``names`` (a group name or a list of array names)."""
        if isinstance(names, str) and names in self._segments:
            return self._segments[names]
        if isinstance(names, (str, numbers.Integral)):
            names = [names]
        names = list(names)
        if not names:
            raise ValueError("a parameter group needs at least one array name")
        missing = [n for n in names if n not in self._slices]
        if missing:
            raise KeyError(
                f"unknown array names {missing}; known: {list(self._names)} and "
                f"groups {list(self._segments)}"
            )
        parts = sorted((self._slices[n].start, self._slices[n].stop) for n in names)
        for (_, stop), (start, _) in zip(parts, parts[1:]):
            if stop != start:
                raise ValueError(
                    f"arrays {list(names)} are not contiguous in the flat buffer; "
                    "pack them together with FlatParams(..., groups={name: [...]})"
                )
        return slice(parts[0][0], parts[-1][1])

    def zero_grad(self) -> None:
        """Set the whole gradient buffer to zero (in place)."""
        self._backend.fill(self.grad, 0.0)

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The parameters as plain host arrays and text (``np.savez(f, **sd)`` works).

        Returns
        -------
        dict
            ``names``: the array names in the order given (a string array for a
            FlatParams built from a dict, an int64 array of positions for one built from
            a list); ``shapes``: a JSON text, one ``[d0, d1, ...]`` list per name in that
            order; ``offsets``: int64, where each array starts in ``data``; ``dtype``:
            the buffer dtype's name; ``data``: a host copy of the flat parameter buffer.
            The gradient buffer is not saved.

        Raises
        ------
        TypeError
            If the names are neither all strings nor all integers (they would not
            survive ``np.savez``).
        """
        names = list(self._names)
        if all(isinstance(n, str) for n in names):
            saved_names = np.array(names, dtype=str)
        elif all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in names):
            saved_names = np.array(names, dtype=np.int64)
        else:
            raise TypeError(
                "FlatParams.state_dict() needs names that are all strings or all integers, "
                f"but got {names!r}"
            )
        return {
            "names": saved_names,
            "shapes": json.dumps([list(self._shapes[n]) for n in names]),
            "offsets": np.array([self._slices[n].start for n in names], np.int64),
            "dtype": str(self.dtype),
            "data": self._backend.to_host(self._data).reshape(-1),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Copy parameters saved by :meth:`state_dict` (also as loaded back by ``np.load``)
        into the existing buffer.

        The saved arrays must be this FlatParams' arrays: the same names (in any order:
        each array is copied into its own view, so the packing and groups may differ) with
        the same shapes. Float data of the other float dtype is converted to the buffer
        dtype; a float64 value beyond float32's range raises. Everything is checked and
        converted before anything is copied: a load that raises leaves the parameters
        unchanged. The gradient buffer is not touched.

        An optimizer's state follows the flat layout, not the names: to resume training,
        pack the arrays as they were saved (same order and groups);
        :func:`fastopt.load_checkpoint` requires it.

        Raises
        ------
        ValueError
            Naming what does not fit: missing or unexpected keys or names, a shape, the
            dtype, the size of ``data`` or a malformed entry.
        """
        self._backend.copy_from_host(self._data, self._checked_state(state_dict))

    def _checked_state(self, state_dict, same_layout=False):
        """The host values :meth:`load_state_dict` copies, in this buffer's layout and
        dtype, after every check (nothing is touched). With ``same_layout`` the saved
        arrays must also be packed as here (for an optimizer state laid out alike).
        """
        sd = dict(state_dict)
        expected = {"names", "shapes", "offsets", "dtype", "data"}
        if set(sd) != expected:
            raise ValueError(
                f"FlatParams state_dict expects keys {sorted(expected)} but got {sorted(sd)}"
            )
        dtype = np.asarray(sd["dtype"])[()]
        dtype = str(dtype) if isinstance(dtype, str) else dtype  # np.str_ from np.load
        if not isinstance(dtype, str) or dtype not in ("float32", "float64"):
            raise ValueError(
                f"FlatParams state_dict has dtype {dtype!r} (expected 'float32' or 'float64')"
            )
        names = np.asarray(sd["names"])
        if names.ndim != 1 or names.dtype.kind not in "Uiu":
            raise ValueError(
                "FlatParams state_dict['names'] must be a 1-D array of strings or integers, "
                f"but got {names.dtype} {names.shape}"
            )
        names = names.tolist()
        saved, mine = set(names), set(self._names)
        if len(saved) != len(names):
            raise ValueError(f"FlatParams state_dict['names'] repeats a name: {names!r}")
        if saved != mine:
            raise ValueError(
                f"FlatParams state_dict holds arrays {names!r}, but this FlatParams has "
                f"{list(self._names)!r} (missing {sorted(mine - saved, key=repr)!r}, "
                f"unexpected {sorted(saved - mine, key=repr)!r})"
            )
        shapes = _saved_shapes(sd["shapes"], len(names))
        wrong = [
            f"{n!r}: saved {s}, this FlatParams has {self._shapes[n]}"
            for n, s in zip(names, shapes)
            if s != tuple(self._shapes[n])
        ]
        if wrong:
            raise ValueError("FlatParams state_dict has other shapes: " + "; ".join(wrong))
        data = np.asarray(sd["data"])
        if data.ndim != 1 or data.dtype.kind != "f":
            raise ValueError(
                "FlatParams state_dict['data'] must be a 1-D float array, but got "
                f"{data.dtype} {data.shape}"
            )
        if str(data.dtype) != dtype:
            raise ValueError(
                f"FlatParams state_dict['data'] is {data.dtype}, but state_dict['dtype'] "
                f"says {dtype}"
            )
        if data.size != self.size:
            raise ValueError(
                f"FlatParams state_dict['data'] has {data.size} elements, but the arrays' "
                f"shapes add up to {self.size}"
            )
        offsets = np.asarray(sd["offsets"])
        if offsets.shape != (len(names),) or offsets.dtype.kind not in "iu":
            raise ValueError(
                f"FlatParams state_dict['offsets'] must be {len(names)} integers, but got "
                f"{offsets.dtype} {offsets.shape}"
            )
        spans = sorted(
            (int(o), int(o) + self._slices[n].stop - self._slices[n].start, n)
            for n, o in zip(names, offsets.tolist())
        )
        for (_, stop, a), (start, _, b) in zip(spans, spans[1:]):
            if start < stop:
                raise ValueError(
                    f"FlatParams state_dict['offsets'] overlap: arrays {a!r} and {b!r}"
                )
        if spans[0][0] < 0 or spans[-1][1] > data.size:
            raise ValueError(
                f"FlatParams state_dict['offsets'] {offsets.tolist()} fall outside "
                f"'data' ({data.size} elements)"
            )
        packed_alike = all(start == self._slices[n].start for start, _, n in spans)
        if same_layout and not packed_alike:
            saved = [n for _, _, n in spans]
            order = sorted(self._names, key=lambda n: self._slices[n].start)
            raise ValueError(
                f"FlatParams state_dict packs its arrays as {saved!r}, but this FlatParams "
                f"packs them as {order!r}: the optimizer state follows the saved packing; "
                "build the FlatParams with the saved arrays order and groups"
            )
        try:
            with np.errstate(over="raise"):
                if packed_alike:
                    return data.astype(self.dtype, copy=False)
                values = np.empty(self.size, self.dtype)
                for start, stop, n in spans:
                    values[self._slices[n]] = data[start:stop]
        except FloatingPointError:
            raise ValueError(
                f"FlatParams state_dict['data'] ({data.dtype}) has values beyond the range "
                f"of this FlatParams' {self.dtype}"
            ) from None
        return values

    def __getitem__(self, name: str | int) -> Any:
        return self.params[name]

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n!r}: {self._shapes[n]}" for n in self._names)
        where = "" if self.device == "cpu" else f", device={self.device!r}"
        return f"FlatParams({{{shapes}}}, size={self.size}, dtype={self.dtype}{where})"

    def __getstate__(self) -> dict[str, Any]:
        if not self._backend.pickles_buffers:
            raise TypeError(
                "a FlatParams on the GPU cannot be pickled or deep-copied: "
                "use .to('cpu') (and .to('cuda') to come back)"
            )
        state = dict(self.__dict__)
        del state["_params"], state["_grads"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for old in ("data", "grad"):  # pickled before the buffers became fixed
            if old in state:
                state["_" + old] = state.pop(old)
        state.pop("params", None), state.pop("grads", None)
        self.__dict__.update(state)
        if self.__dict__.get("_backend") is None:  # pickled before backends were objects
            self._backend = backends.host_backend()
        self._rebuild_views()


def _saved_shapes(entry, count):
    """The shapes of a FlatParams state_dict: a JSON text (or a 0-d string array, as
    ``np.load`` gives it back) or a sequence of sequences, ``count`` tuples of ints >= 0.
    """
    value = np.asarray(entry)[()] if isinstance(entry, np.ndarray) else entry
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise ValueError(
                f"FlatParams state_dict['shapes'] is not valid JSON: {error}"
            ) from None
    try:
        shapes = [tuple(shape) for shape in value]
    except TypeError:
        shapes = None
    if (
        shapes is None
        or len(shapes) != count
        or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0
            for shape in shapes
            for d in shape
        )
    ):
        raise ValueError(
            f"FlatParams state_dict['shapes'] must list {count} shapes of integers >= 0, "
            f"but got {value!r}"
        )
    return [tuple(int(d) for d in shape) for shape in shapes]


class _DeviceLayout:
    """Shape and dtype of a device array, for the packing checks (no host copy)."""

    def __init__(self, layout):
        self.shape, self.dtype = layout[0], layout[1]


def _common_dtype(names, values, dtype):
    for name, value in zip(names, values):
        kind = value.dtype.kind
        if kind not in "fiub" or (dtype is None and kind == "f" and value.dtype.itemsize < 4):
            raise TypeError(
                f"array {name!r} has dtype {value.dtype}: FlatParams holds "
                "float32 or float64 parameters"
            )
    if dtype is not None:
        return check_float_dtype("FlatParams dtype", dtype)
    dtypes = {v.dtype for v in values}
    if len(dtypes) != 1 or next(iter(dtypes)) not in FLOAT_DTYPES:
        found = ", ".join(f"{n!r}: {v.dtype}" for n, v in zip(names, values))
        raise TypeError(
            f"FlatParams expects arrays of one float dtype (float32 or float64) "
            f"but got {found}; pass dtype=np.float32 or dtype=np.float64 to convert"
        )
    return dtypes.pop()


def _packing_order(names, groups):
    if groups is None:
        return [("default", list(names))]
    if not isinstance(groups, dict):
        raise TypeError(
            f"groups must be a dict of group name to array names, got {type(groups).__name__}"
        )
    seen, order = set(), []
    for group, members in groups.items():
        if group == "default":
            raise ValueError(
                "'default' is the name of the ungrouped segment; choose another group name"
            )
        members = [members] if isinstance(members, (str, numbers.Integral)) else list(members)
        for name in members:
            if name not in names:
                raise KeyError(f"group {group!r} names unknown array {name!r}")
            if name in seen:
                raise ValueError(f"array {name!r} appears in more than one group")
            seen.add(name)
        order.append((group, members))
    rest = [n for n in names if n not in seen]
    if rest:
        order.append(("default", rest))
    return order
