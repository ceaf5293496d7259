"""PROBLEM on the command line: ``path/to/file.py:function`` or ``package.module:function``.

The function is called without arguments and returns the problem, in one of two forms:

* a tuple ``(loss_grad, params)`` or ``(loss_grad, params, batches)``;
* a mapping with the keys ``loss_grad``, ``params`` and optionally ``batches``.

``loss_grad``, ``params`` and ``batches`` are what :func:`fastopt.sweep` takes: for a
FlatParams, ``loss_grad(params, grad[, batch])`` returns the cost and writes the gradient
into the flat ``grad`` buffer (or through ``params.grads``); ``batches`` is a sequence of
mini-batches or a callable returning a fresh iterator over them.
"""

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

from .arguments import CommandError, UserCodeFailed

FORMS = "(loss_grad, params), (loss_grad, params, batches) or a dict with those keys"


class UserProblem(NamedTuple):
    loss_grad: Any
    params: Any
    batches: Any
    name: str


def load_problem(spec: str) -> UserProblem:
    """Import the function named by ``spec``, call it, and check what it returns.

    A malformed spec, a missing file, module or function, or a result of the wrong form
    raises :class:`CommandError`; an error raised by the user's own code (while importing
    the module or calling the function) raises :class:`UserCodeFailed` from it.
    """
    where, sep, function = spec.rpartition(":")
    if not sep or not where or not function.isidentifier():
        raise CommandError(
            f"PROBLEM must be path/to/file.py:function or package.module:function, got {spec!r}"
        )
    try:
        module = _import_file(where) if where.endswith(".py") else _import_module(where)
    except CommandError:
        raise
    except Exception as error:
        raise UserCodeFailed(f"importing {where} raised {type(error).__name__}") from error
    factory = getattr(module, function, None)
    if factory is None:
        raise CommandError(f"PROBLEM {spec}: {where} has no function {function!r}")
    if not callable(factory):
        raise CommandError(f"PROBLEM {spec}: {function!r} is not a function")
    try:
        problem = factory()
    except Exception as error:
        raise UserCodeFailed(f"{spec}() raised {type(error).__name__}") from error
    return _checked(problem, spec)


def _import_file(path):
    if not os.path.isfile(path):
        raise CommandError(f"PROBLEM file not found: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    name = "_fastopt_problem_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, folder)  # so that the file can import its neighbours
    try:
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def _import_module(name):
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = error.name
        if missing is not None and (name == missing or name.startswith(missing + ".")):
            raise CommandError(f"PROBLEM module not found: {name}") from None
        raise  # the module exists and its own import failed: the user's code


def _checked(problem, spec):
    if isinstance(problem, Mapping):
        unknown = set(problem) - {"loss_grad", "params", "batches"}
        if unknown or not {"loss_grad", "params"} <= set(problem):
            raise CommandError(
                f"PROBLEM {spec} returned a dict with keys {sorted(problem)}; expected "
                "loss_grad, params and optionally batches"
            )
        loss_grad, params, batches = (
            problem["loss_grad"],
            problem["params"],
            problem.get("batches"),
        )
    elif isinstance(problem, tuple) and len(problem) in (2, 3):
        loss_grad, params, batches = (*problem, None)[:3]
    else:
        raise CommandError(f"PROBLEM {spec} returned {type(problem).__name__}; expected {FORMS}")
    if not callable(loss_grad):
        raise CommandError(
            f"PROBLEM {spec}: loss_grad is a {type(loss_grad).__name__}, not a function; "
            f"expected {FORMS}"
        )
    return UserProblem(loss_grad, params, batches, spec)
