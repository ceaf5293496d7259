"""Lazy matplotlib import shared by every plot function (the ``plot`` extra), and the
styles and axis limits the plots share (plain data: no matplotlib needed for those).
"""

from __future__ import annotations

from typing import Any

# matplotlib's qualitative "tab10" palette
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
# eight markers against ten colours: (colour, marker) pairs repeat only after 40 runs
MARKERS = ("o", "s", "^", "D", "v", "P", "*", "h")
LINESTYLES = ("-", "--", "-.", ":")


def pyplot(headless):
    """Import matplotlib.pyplot, switching to the Agg backend when only writing a file."""
    try:
        import matplotlib

        if headless:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plotting needs matplotlib: pip install "fastopt[plot]"') from None
    return plt


def finish(ax, path, created):
    """Write ``ax``'s figure to ``path`` (if given) and return ``ax``. A figure ``created``
    for the call is then closed, so that plotting to files in a loop does not pile up
    open figures in pyplot (the returned Axes still holds it).
    """
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=100)
        if created:
            pyplot(headless=False).close(ax.figure)
    return ax


def run_styles(n: int, points: int | None = None) -> list[dict[str, Any]]:
    """Line styles (``ax.plot`` keyword arguments) that keep ``n`` curves apart.

    Parameters
    ----------
    n : int
        Number of curves.
    points : int, optional
        Points per curve; when given, each style marks every few points (``markevery``),
        staggered from curve to curve so the markers of overlapping curves do not stack.

    Returns
    -------
    list of dict
        ``color``, ``linestyle``, ``marker`` (and ``markevery``) for each curve.

    Notes
    -----
    Colours come from the qualitative "tab10" palette in order, so neighbouring curves get
    unrelated hues instead of the near-identical shades of a sequential colormap; the
    markers cycle with period 8 and the line style changes with every ten curves, so no
    two of the first 40 curves share colour, marker and line style.
    """
    styles = []
    every = None if points is None else max(1, points // 6)
    for i in range(n):
        style = {
            "color": PALETTE[i % len(PALETTE)],
            "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)],
            "markersize": 5,
        }
        if every is not None:
            offset = i * every // n if n <= every else i % every
            style["markevery"] = (offset, every)
        styles.append(style)
    return styles


def clipped_ylim(
    low: float, start: float, top: float, *, log: bool, margin: float = 0.05
) -> tuple[float, float]:
    """Y limits that show a falling curve and cut off the spike at its end.

    Parameters
    ----------
    low : float
        The lowest value worth showing (the curve's floor).
    start : float
        The curve's starting value.
    top : float
        The highest value drawn.
    log : bool
        Limits for a log axis (``low`` must then be > 0).
    margin : float
        Padding on each side, as a fraction of the span (of its logarithm on a log axis).

    Returns
    -------
    (float, float)

    Notes
    -----
    The upper limit is ``min(top, 3 * start)`` on a log axis and ``min(top, start + (start
    - low))`` on a linear one (the fall from the start then fills at least half of the
    height): what rises above that is a divergence whose size says nothing more, and
    letting it set the scale flattens the part of the curve that matters.
    """
    if log:
        high = max(min(top, 3.0 * start), low)
        pad = (high / low) ** margin if high > low else 1.1
        return low / pad, high * pad
    drop = start - low
    if not drop > 0:
        drop = abs(start) or 1.0
    high = max(min(top, start + drop), low)
    pad = margin * (high - low) if high > low else 0.1 * (abs(low) or 1.0)
    return low - pad, high + pad
