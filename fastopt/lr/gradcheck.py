"""check_grad: is the gradient right? Central finite differences on a sample of coordinates."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..buffers import FlatParams
from .problem import Problem

if TYPE_CHECKING:
    import numpy.typing as npt

DEFAULT_TOLERANCE = {np.dtype(np.float32): 1e-2, np.dtype(np.float64): 1e-5}


class GradCheckResult:
    """What :func:`check_grad` found.

    Attributes
    ----------
    coordinates : ndarray of int
        Flat indices that were checked.
    analytic, numeric, rel_errors : ndarray
        The gradient ``loss_grad`` wrote, the central difference, and their relative
        difference at each checked coordinate.
    max_rel_error : float
        The worst relative error; ``worst_coordinate`` is where (``worst_name`` gives the
        array name and index for a FlatParams).
    ok : bool
        ``max_rel_error <= tolerance``.
    """

    def __init__(
        self,
        coordinates: np.ndarray,
        analytic: np.ndarray,
        numeric: np.ndarray,
        rel_errors: np.ndarray,
        tolerance: float,
        names: Callable[[int], str | None],
    ) -> None:
        self.coordinates = coordinates
        self.analytic, self.numeric, self.rel_errors = analytic, numeric, rel_errors
        worst = int(np.argmax(rel_errors))
        self.max_rel_error = float(rel_errors[worst])
        self.worst_coordinate = int(coordinates[worst])
        self.worst_name = names(self.worst_coordinate)
        self.tolerance = tolerance
        self.ok = self.max_rel_error <= tolerance

    @property
    def message(self) -> str:
        where = (
            f"at {self.worst_name}" if self.worst_name else f"at coordinate {self.worst_coordinate}"
        )
        i = int(np.argmax(self.rel_errors))
        detail = (
            f"max relative error {self.max_rel_error:.2e} {where} (gradient "
            f"{self.analytic[i]:.6g}, finite difference {self.numeric[i]:.6g}) over "
            f"{len(self.coordinates)} coordinates"
        )
        if self.ok:
            return f"gradient check passed: {detail}"
        return (
            f"gradient check FAILED: {detail}, tolerance {self.tolerance:g}: the gradient "
            "is probably wrong"
        )

    def __repr__(self) -> str:
        return f"<GradCheckResult {self.message}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": bool(self.ok),
            "max_rel_error": self.max_rel_error,
            "worst_coordinate": self.worst_coordinate,
            "worst_name": self.worst_name,
            "tolerance": self.tolerance,
            "coordinates": self.coordinates.tolist(),
            "rel_errors": self.rel_errors.tolist(),
        }


def check_grad(
    loss_grad: Callable[..., float],
    params: FlatParams | np.ndarray | Any,
    *,
    max_coordinates: int = 50,
    coordinates: npt.ArrayLike | None = None,
    eps: float | None = None,
    tolerance: float | None = None,
    batch: Any = None,
    seed: int = 0,
) -> GradCheckResult:
    r"""Compare the gradient that ``loss_grad`` writes with central finite differences.

    For each checked coordinate :math:`i`, with step :math:`h = \epsilon^{1/3}
    \max(1, |x_i|)` (:math:`\epsilon` the dtype's machine epsilon),

    .. math:: n_i = \frac{f(x + h e_i) - f(x - h e_i)}{2h}, \qquad
        r_i = \frac{|g_i - n_i|}{\max(|g_i|, |n_i|, 10^{-3} \max_j |g_j|)}

    where the last term keeps coordinates whose gradient is (nearly) zero from dividing
    rounding noise by nothing.

    Parameters
    ----------
    loss_grad : callable
        ``loss_grad(params, grad)`` (or ``(params, grad, batch)``) returns the cost and
        writes the gradient into ``grad``, as for :func:`fastopt.sweep`.
    params : FlatParams or 1-D float ndarray or device array
        The point to check at; restored bit for bit afterwards.
    max_coordinates : int, default 50
        Check every coordinate when there are at most this many; otherwise a random
        sample of this size that always includes the largest gradient entry.
    coordinates : sequence of int, optional
        Exactly these flat indices instead.
    eps : float, optional
        A fixed finite-difference step instead of the rule above.
    tolerance : float, optional
        Largest acceptable relative error: 1e-5 for float64, 1e-2 for float32 parameters
        (float32 differences are too coarse for less).
    batch : optional
        A fixed batch passed as the third argument of ``loss_grad``.

    Returns
    -------
    GradCheckResult
    """
    problem = Problem(loss_grad, params)
    data, grad = problem.data, problem.grad
    evaluate = (
        (lambda: problem.loss_grad(problem.params, problem.grad))
        if batch is None
        else (lambda: problem.loss_grad(problem.params, problem.grad, batch))
    )
    try:
        problem.zero_grad()
        evaluate()
        analytic_all = problem.host(grad).astype(np.float64)
        if coordinates is None:
            if data.size <= max_coordinates:
                coordinates = np.arange(data.size)
            else:
                rng = np.random.default_rng(seed)
                sample = rng.choice(data.size, max_coordinates - 1, replace=False)
                coordinates = np.unique(np.append(sample, np.argmax(np.abs(analytic_all))))
        coordinates = np.asarray(coordinates, dtype=np.int64)
        if coordinates.size == 0 or coordinates.min() < 0 or coordinates.max() >= data.size:
            raise ValueError(f"coordinates must be flat indices in [0, {data.size})")
        machine_eps = np.finfo(data.dtype).eps
        numeric = np.empty(coordinates.size)
        for k, i in enumerate(coordinates):
            x = data[i]
            h = eps if eps is not None else machine_eps ** (1 / 3) * max(1.0, abs(float(x)))
            data[i] = x + data.dtype.type(h)
            plus = float(evaluate())
            up = data[i]
            data[i] = x - data.dtype.type(h)
            minus = float(evaluate())
            down = data[i]
            data[i] = x
            numeric[k] = (plus - minus) / (float(up) - float(down))
    finally:
        problem.restore()
    analytic = analytic_all[coordinates]
    floor = 1e-3 * max(float(np.max(np.abs(analytic_all))), 1e-300)
    rel = np.abs(analytic - numeric) / np.maximum(
        np.maximum(np.abs(analytic), np.abs(numeric)), floor
    )
    if tolerance is None:
        tolerance = DEFAULT_TOLERANCE[data.dtype]
    return GradCheckResult(coordinates, analytic, numeric, rel, tolerance, _namer(problem.params))


def _namer(params):
    if not isinstance(params, FlatParams):
        return lambda index: None

    def name(index):
        for key, s in params.slices.items():
            if s.start <= index < s.stop:
                shape = params.params[key].shape
                position = np.unravel_index(index - s.start, shape) if shape else ()
                return f"{key}[{', '.join(str(int(p)) for p in position)}]"
        return None

    return name
