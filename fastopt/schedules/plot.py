"""Plotting a schedule (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import TYPE_CHECKING

import numpy as np

from .._plotting import finish, pyplot

if TYPE_CHECKING:
    import numpy.typing as npt
    from matplotlib.axes import Axes


def plot_schedule(
    schedule: Callable[[np.ndarray], npt.ArrayLike],
    steps: int | npt.ArrayLike,
    *,
    ax: Axes | None = None,
    path: str | PathLike[str] | None = None,
    label: str | None = None,
) -> Axes:
    """Plot ``schedule`` over ``range(steps)`` (or the given integer steps).

    Returns the matplotlib Axes; writes a PNG (or any format matplotlib knows) to ``path``
    when given (a figure made for it is then closed; the returned Axes still holds it).
    """
    plt = pyplot(headless=ax is None and path is not None)
    t = np.arange(steps) if np.ndim(steps) == 0 else np.asarray(steps)
    created = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(t, schedule(t), label=label or repr(schedule))
    ax.set_xlabel("step (updates applied)")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return finish(ax, path, created)
