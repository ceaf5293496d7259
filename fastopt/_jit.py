"""The package's one jit policy.

Every compiled CPU function in fastopt goes through :func:`kernel`, :func:`element`,
:func:`serial_and_parallel` or :func:`reduction`, and the CUDA backend compiles with
:data:`CUDA_JIT_OPTIONS`, so caching, the error model and the floating-point flags are
decided here and nowhere else.

* ``cache=True``: compiled machine code is written next to the sources (or numba's cache
  dir) so a new process loads it instead of compiling.
* ``error_model="numpy"``: division by zero gives inf/nan like NumPy instead of raising;
  with numba's default ("python") the zero checks stop serial loops from vectorising.
* ``fastmath=False``: the update is memory-bound, fast-math brings no speed here and
  changes results (reciprocal estimates, reassociation) and would let the compiler assume
  no NaN, so a NaN gradient could be optimised away.
* Compilation is lazy: a kernel compiles (or loads from the cache) on its first call for
  each dtype; an optimizer calls each of its kernels once, on empty buffers, when it is
  built, so that no step can stop half-way for a kernel that is not ready.
* Without a writable cache location (a read-only install, no writable ``__pycache__``,
  ``NUMBA_CACHE_DIR`` or home), kernels are compiled in every process instead, after one
  ``RuntimeWarning``: see :func:`jit`.
* One exception, :func:`reduction`: a sum may be reassociated (``fastmath={"reassoc"}``
  and nothing else), so the gradient-norm reduction vectorises: 1.3 ms instead of 4.6 ms
  at 1e7 float32. NaN and inf still propagate; the order is fixed per compiled block, so
  the norm does not depend on the thread count.
"""

import types
import warnings

from numba import njit

JIT_OPTIONS = {"cache": True, "error_model": "numpy", "fastmath": False, "nogil": True}
CUDA_JIT_OPTIONS = {"cache": True, "fastmath": False}
"""The same policy for :mod:`fastopt.kernels.cuda` (the one module that imports numba.cuda,
so it applies these itself): numba-cuda's error model is already NumPy's."""


_warned_uncached = False


def jit(decorator, function, **options):
    """``decorator(**options)(function)``, without ``cache`` where no cache can be written.

    numba refuses ``cache=True`` when it finds no writable location ("no locator
    available"); ``import fastopt`` must still work there (a read-only site-packages, a
    container without a home), so the function is compiled uncached, with one warning
    for the whole package.
    """
    global _warned_uncached
    try:
        return decorator(**options)(function)
    except RuntimeError as error:
        if "no locator available" not in str(error) or not options.get("cache"):
            raise
        if not _warned_uncached:
            _warned_uncached = True
            warnings.warn(
                "fastopt: no writable location to cache compiled kernels "
                f"({error}); they are compiled in every process instead (set "
                "NUMBA_CACHE_DIR to a writable folder to cache them)",
                RuntimeWarning,
                stacklevel=2,
            )
        return decorator(**dict(options, cache=False))(function)


def kernel(function=None, *, parallel=False):
    """Compile a loop kernel with the package policy (``parallel=True`` enables prange)."""

    def decorate(fn):
        return jit(njit, fn, parallel=parallel, **JIT_OPTIONS)

    return decorate if function is None else decorate(function)


def reduction(function):
    """Compile a block reduction whose floating-point sum may be reassociated."""
    return jit(njit, function, cache=True, error_model="numpy", fastmath={"reassoc"}, nogil=True)


def element(function):
    """Compile a per-element update function for the CPU loops (inlined by LLVM)."""
    return jit(njit, function, **JIT_OPTIONS)


def bind(function, name, **names):
    """A copy of ``function`` named ``name`` whose global ``names`` are replaced.

    This is how one loop source serves several backends: an update loop calls
    ``element``, ``indices`` and ``load_scale`` (see :mod:`fastopt.kernels._names`), and
    each backend binds its own compiled versions before compiling the copy. The name keeps
    the compilations apart in numba's disk cache, which files entries by function name.
    """
    scope = dict(function.__globals__)
    scope.update(names)
    copy = types.FunctionType(
        function.__code__, scope, name, function.__defaults__, function.__closure__
    )
    copy.__qualname__ = name
    copy.__doc__ = function.__doc__
    return copy


def serial_and_parallel(loop, name, **names):
    """Compile one loop source twice: serially (``prange`` runs as ``range``) and threaded.

    Returns ``(serial, parallel)``, named ``{name}_serial`` and ``{name}_parallel``, with
    ``names`` bound as for :func:`bind`.
    """
    return (
        jit(njit, bind(loop, f"{name}_serial", **names), parallel=False, **JIT_OPTIONS),
        jit(njit, bind(loop, f"{name}_parallel", **names), parallel=True, **JIT_OPTIONS),
    )
