"""One-file checkpoints: parameters, optimizer state, hyperparameters and schedules, and
extra values, written atomically.

File format
-----------
A NumPy ``.npz`` archive (uncompressed, no pickled objects: ``np.load(path)`` reads it),
written at exactly the path given (no ``.npz`` is appended), with the entries:

``checkpoint``
    A JSON text: ``{"format": "fastopt-checkpoint", "version": 1, "params": "FlatParams"
    or "array", "extra": {name: JSON value}, "extra_arrays": [names],
    "extra_scalars": [names]}``.
``params.<key>``
    For a :class:`~fastopt.FlatParams`, its :meth:`~fastopt.FlatParams.state_dict`
    (``params.names``, ``params.shapes``, ``params.offsets``, ``params.dtype``,
    ``params.data``); for an array, ``params.data`` (the values, in the array's shape)
    and ``params.dtype``.
``optimizer.<key>``
    The optimizer's :meth:`~fastopt.Optimizer.state_dict`, with
    ``optimizer.hyperparameters`` (a JSON text) and one entry per state buffer.
``extra.<name>``
    Each NumPy array or NumPy scalar passed as an extra value.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import zipfile
from typing import Any

import numpy as np

from ._validation import check_flag
from .buffers import FlatParams
from .optim import checkpoint
from .optim.base import Optimizer

__all__ = ["save_checkpoint", "load_checkpoint"]

FORMAT = "fastopt-checkpoint"
VERSION = 1
MANIFEST = "checkpoint"


def save_checkpoint(
    path: str | os.PathLike, params: Any, optimizer: Optimizer, /, **extra: Any
) -> None:
    """Write the parameters, the optimizer's state, hyperparameters and schedules and
    ``extra`` values into one file, atomically.

    The file is written to a temporary file in the same directory, flushed and fsynced,
    then renamed over ``path`` (``os.replace``): a crash or an error mid-write leaves the
    previous file at ``path`` intact, and the temporary file is removed.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file, written as given (no ``.npz`` is appended).
    params : FlatParams or array
        What ``optimizer`` updates: the FlatParams or the array it was built on.
    optimizer : fastopt.Optimizer
        Its :meth:`~fastopt.Optimizer.state_dict` is saved.
    **extra
        Values to save with the checkpoint (an epoch, a data-loader position, a config, a
        random generator's state): JSON-serialisable values (None, bools, numbers,
        strings, and lists, tuples and dicts with string keys of these) or NumPy arrays
        and scalars. :func:`load_checkpoint` returns them: arrays and NumPy scalars as
        they were, JSON values as JSON gives them back (tuples as lists).

    Raises
    ------
    TypeError
        If ``optimizer`` is not a fastopt optimizer, or an extra value is neither
        JSON-serialisable nor a NumPy array (the message names it).
    ValueError
        If ``params`` is not what ``optimizer`` updates, or an extra value holds a
        circular reference.

    Notes
    -----
    Everything is checked and collected before the file is opened. See the module
    docstring of :mod:`fastopt.checkpoints` for the file format.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, fastopt
    >>> params = np.ones(3)
    >>> opt = fastopt.Adam(params, lr=0.1)
    >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> fastopt.save_checkpoint(path, params, opt, epoch=3)
    >>> fastopt.load_checkpoint(path, params, opt)["epoch"]
    3
    """
    _check_pair(params, optimizer)
    manifest, extra_arrays = _encoded_extra(extra)
    with optimizer._lock:  # a consistent pair, even with steps in other threads
        if isinstance(params, FlatParams):
            saved_params = params.state_dict()
            manifest["params"] = "FlatParams"
        else:
            values = optimizer.backend.to_host(optimizer.param)
            saved_params = {"data": values.reshape(tuple(params.shape)), "dtype": str(values.dtype)}
            manifest["params"] = "array"
        saved_optimizer = optimizer._state_dict_between_steps()
    arrays = {MANIFEST: json.dumps({"format": FORMAT, "version": VERSION, **manifest})}
    arrays.update({f"params.{k}": v for k, v in saved_params.items()})
    arrays.update({f"optimizer.{k}": v for k, v in saved_optimizer.items()})
    arrays.update({f"extra.{k}": v for k, v in extra_arrays.items()})
    _write_atomically(path, lambda file: np.savez(file, **arrays))


def load_checkpoint(
    path: str | os.PathLike, params: Any, optimizer: Optimizer, *, strict: bool = True
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` into ``params`` and
    ``optimizer``, and return its extra values.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.
    params : FlatParams or array
        What ``optimizer`` updates; the saved values are copied into it. A FlatParams
        must have the saved names and shapes, packed in the saved order (the optimizer
        state follows it; see :meth:`fastopt.FlatParams.load_state_dict`), an array the
        saved shape.
    optimizer : fastopt.Optimizer
        Of the saved algorithm, size and group layout.
    strict : bool, default True
        Require the saved hyperparameters and schedules to be the optimizer's (see
        :meth:`fastopt.Optimizer.load_state_dict`); with False the state is loaded and the
        optimizer keeps its own.

    Returns
    -------
    dict
        The ``extra`` values given to :func:`save_checkpoint`.

    Raises
    ------
    ValueError
        If the file is not a fastopt checkpoint, or what it holds does not fit ``params``
        or ``optimizer`` (names, shapes, dtype, algorithm, layout, hyperparameters): the
        message says what. Everything, parameters and optimizer, is checked before either
        is written: a load that raises leaves both unchanged.
    """
    _check_pair(params, optimizer)
    strict = check_flag("strict", strict)
    entries = _read(path)
    manifest = _manifest(path, entries)
    saved_params = _entries(entries, "params.")
    saved_optimizer = _entries(entries, "optimizer.")
    is_flat = isinstance(params, FlatParams)
    if manifest["params"] != ("FlatParams" if is_flat else "array"):
        raise ValueError(
            f"checkpoint {os.fsdecode(path)!r} holds parameters saved from a "
            f"{'FlatParams' if manifest['params'] == 'FlatParams' else 'plain array'}, but "
            f"params is a {'FlatParams' if is_flat else type(params).__name__}"
        )
    values = (
        params._checked_state(saved_params, same_layout=True)
        if is_flat
        else _checked_array(params, optimizer, saved_params)
    )
    extra = _decoded_extra(manifest, entries)
    with optimizer._lock:
        checkpoint.apply(optimizer, checkpoint.checked_state(optimizer, saved_optimizer, strict))
        if is_flat:
            params.backend.copy_from_host(params.data, values)
        else:
            optimizer.backend.copy_from_host(optimizer.param, values)
    return extra


# -- checks --------------------------------------------------------------------------------


def _check_pair(params, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a fastopt optimizer, but got {type(optimizer).__name__}"
        )
    mine = optimizer.params
    same = params is mine or (
        type(params) is np.ndarray
        and type(mine) is np.ndarray
        and params.__array_interface__ == mine.__array_interface__
    )
    if not same:
        raise ValueError(
            f"params ({type(params).__name__}) is not what the optimizer updates "
            f"({type(mine).__name__}): pass the FlatParams or array the optimizer was "
            "built on (optimizer.params)"
        )


def _checked_array(params, optimizer, saved):
    """The saved values of a plain-array optimizer as a flat host array of its dtype."""
    if set(saved) != {"data", "dtype"}:
        raise ValueError(
            f"checkpoint params expects entries ['data', 'dtype'] but got {sorted(saved)}"
        )
    data = np.asarray(saved["data"])
    shape, dtype = tuple(params.shape), optimizer.dtype
    if data.shape != shape or data.dtype.kind != "f":
        raise ValueError(
            f"checkpoint params must be a float array of shape {shape}, but got "
            f"{data.dtype} {data.shape}"
        )
    try:
        with np.errstate(over="raise"):
            return data.astype(dtype, copy=False).reshape(-1)
    except FloatingPointError:
        raise ValueError(
            f"checkpoint params ({data.dtype}) has values beyond the range of {dtype}"
        ) from None


# -- extra values -----------------------------------------------------------------------------


def _encoded_extra(extra):
    """``(manifest entries, {name: array})`` for the extra values, after every check."""
    values, arrays, scalars = {}, {}, []
    for name, value in extra.items():
        if isinstance(value, (np.ndarray, np.generic)):
            if type(value) is not np.ndarray and not isinstance(value, np.generic):
                raise TypeError(
                    f"extra value {name!r} is a {type(value).__name__}, an ndarray subclass: "
                    f"pass np.asarray({name})"
                )
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise TypeError(
                    f"extra value {name!r} is an object array, which cannot be saved "
                    "without pickling: save its values as JSON or as a numeric array"
                )
            arrays[name] = array
            if isinstance(value, np.generic):
                scalars.append(name)
        else:
            _check_json(name, value)
            values[name] = value
    return {"extra": values, "extra_arrays": sorted(arrays), "extra_scalars": scalars}, arrays


def _check_json(name, value):
    try:
        json.dumps(value)
    except ValueError as error:  # a circular reference
        raise ValueError(f"extra value {name!r} cannot be saved: {error}") from None
    except TypeError:
        pass  # the walk below names the culprit
    _walk_json(f"extra value {name!r}", value)


def _walk_json(where, value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _walk_json(f"{where}[{index}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has the key {key!r}: the keys of a saved dict must be strings"
                )
            _walk_json(f"{where}[{key!r}]", item)
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}: extra values must be JSON-serialisable "
        "(None, bools, numbers, strings, lists and dicts with string keys) or NumPy arrays"
    )


def _decoded_extra(manifest, entries):
    extra = dict(manifest["extra"])
    for name in manifest["extra_arrays"]:
        key = f"extra.{name}"
        if key not in entries:
            raise ValueError(f"checkpoint lists the extra array {name!r} but has no {key!r}")
        extra[name] = entries[key]
    for name in manifest["extra_scalars"]:
        if name in extra and isinstance(extra[name], np.ndarray):
            extra[name] = extra[name][()]
    return extra


# -- the file ------------------------------------------------------------------------------


def _read(path):
    """Every entry of a checkpoint file, in memory."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{os.fsdecode(path)!r} is not a fastopt checkpoint: {error}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{os.fsdecode(path)!r} is not a fastopt checkpoint (a single .npy array, not "
            "an .npz archive)"
        )
    try:
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"checkpoint {os.fsdecode(path)!r} cannot be read: {error}") from None


def _manifest(path, entries):
    shown = repr(os.fsdecode(path))
    if MANIFEST not in entries:
        raise ValueError(
            f"{shown} is not a fastopt checkpoint (no {MANIFEST!r} entry); np.load() it "
            "to read its arrays"
        )
    try:
        manifest = json.loads(str(entries[MANIFEST][()]))
    except ValueError as error:
        raise ValueError(f"checkpoint {shown} has a malformed manifest: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{shown} is not a fastopt checkpoint (format {manifest!r})")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"checkpoint {shown} has version {version!r}; this fastopt reads version "
            f"{VERSION} and older"
        )
    expected = {"params": str, "extra": dict, "extra_arrays": list, "extra_scalars": list}
    for key, kind in expected.items():
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"checkpoint {shown} has a malformed manifest: {key!r}")
    return manifest


def _entries(entries, prefix):
    return {k[len(prefix) :]: v for k, v in entries.items() if k.startswith(prefix)}


def _write_atomically(path, write):
    """Call ``write(file)`` on a new temporary file next to ``path``, flush and fsync it,
    then rename it over ``path``; on any error the temporary file is removed and ``path``
    is left as it was.
    """
    target = os.path.abspath(os.fsdecode(path))
    directory, name = os.path.split(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            descriptor = os.open(temporary, flags, 0o666)  # the umask applies, as for open()
            break
        except FileExistsError:
            continue
    try:
        file = os.fdopen(descriptor, "wb")
    except BaseException:
        os.close(descriptor)
        os.unlink(temporary)
        raise
    try:
        with file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename durable (POSIX); skipped where a directory cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
